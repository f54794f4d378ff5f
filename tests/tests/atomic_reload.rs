//! A reload switches the whole policy at once: while a UID connects without pause and the policy
//! flips back and forth, every decision matches one policy entirely (its generation and its
//! rule), never the rules of one with the generation of the other.

use std::time::Duration;

use antispam_tests::*;

/// 20,000 other UIDs, so that writing a policy takes long enough (tens of ms) for a connect to
/// land in the middle of it.
const BULK: &str = "[[limit]]\nusers = [\"70000-89999\"]\nrate = \"10/minute\"\n";

#[test]
fn every_decision_sees_one_whole_policy_during_reloads() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("atomic-reload");
    let uid = unique_uid();
    // Odd generations: the UID is allow-listed. Even ones: limited (never reached).
    let allow = format!("ports = [25]\n[[allow]]\nusers = [{uid}]\n{BULK}");
    let limit = format!(
        "ports = [25]\n[[limit]]\nusers = [{uid}]\nrate = \"1000/second\"\nburst = 100000\n{BULK}"
    );
    let policy = fx.policy(&allow);
    let agent = Agent::start_with(&policy, &fx.cg, &fx.dir, &["--no-reload-on-change"]);
    let server = fx.smtp_v4();

    let reloads = 8;
    let cg = &fx.cg;
    let attempts = std::thread::scope(|s| {
        let prober = s.spawn(move || {
            connect_probe_as(
                cg,
                uid,
                server,
                1000,
                ProbeOptions {
                    interval: Duration::from_millis(1),
                    ..Default::default()
                },
            )
        });
        for g in 2..2 + reloads {
            let text = if g % 2 == 0 { &limit } else { &allow };
            std::fs::write(&policy, text).unwrap();
            agent.reload();
            wait_metrics(&agent, |m| {
                metric_value(m, "antispam_policy_generation", &[]) == Some(g as f64)
            });
        }
        prober.join().expect("prober")
    });
    assert!(attempts.iter().all(|a| a.ok), "never refused");

    let events = agent.wait_events(by_uid(uid), 1000);
    assert_eq!(events.len(), 1000, "every connect logged");
    let mut seen = std::collections::BTreeSet::new();
    let mixed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            let g = ev_u64(e, "generation").unwrap();
            seen.insert(g);
            let want = if g % 2 == 1 {
                "allowlist_user"
            } else {
                "within_limit"
            };
            ev_str(e, "reason") != want
        })
        .collect();
    assert!(
        mixed.is_empty(),
        "{} decisions mixed two policies:\n{}",
        mixed.len(),
        show(&mixed.into_iter().cloned().collect::<Vec<_>>())
    );
    assert!(
        seen.len() >= 3,
        "the connects spanned several generations: {seen:?}"
    );
}
