//! An agent killed with SIGKILL leaves enforcement in place (pinned programs and maps); the
//! next agent takes over without a gap and keeps the buckets, counters and suspensions.

use std::time::{Duration, Instant};

use antispam_tests::*;

#[test]
fn sigkill_and_restart_keep_enforcement_buckets_counters_and_suspensions() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("restart");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let mut first = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let (spent, suspended) = (unique_uid(), unique_uid());

    assert!(tcp_probe_once(&fx.cg, spent, server).ok);
    assert!(tcp_probe_once(&fx.cg, spent, server).is_eperm());
    let s = suspended.to_string();
    let (code, out) = ctl(&first, &["suspend", "--uid", &s, "--reason", "spam run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, suspended, server).is_eperm());
    let denied_before = metric_sum(
        &first.metrics(),
        "antispam_smtp_connections_total",
        &[("verdict", "denied")],
    );

    // The agent dies. Nothing changes for the processes it limits.
    first.kill();
    assert!(tcp_probe_once(&fx.cg, spent, server).is_eperm(), "bucket");
    assert!(
        tcp_probe_once(&fx.cg, suspended, server).is_eperm(),
        "suspension"
    );

    // A new agent starts while the spent UID keeps trying, once a millisecond: not one of its
    // connects may get through during the takeover.
    let cg = &fx.cg;
    let (attempts, second, took) = std::thread::scope(|s| {
        let prober = s.spawn(move || {
            connect_probe_as(
                cg,
                spent,
                server,
                1000,
                ProbeOptions {
                    interval: Duration::from_millis(1),
                    ..Default::default()
                },
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let second = Agent::start(&policy, &fx.cg, &fx.dir);
        let took = t.elapsed();
        (prober.join().expect("prober"), second, took)
    });
    let through = attempts.iter().filter(|a| a.ok).count();
    eprintln!(
        "restart took {took:?}; {} connects during it, {through} got through",
        attempts.len()
    );
    assert_eq!(through, 0, "no gap in enforcement during the takeover");
    assert!(attempts.iter().all(|a| a.is_eperm()));

    // The new agent adopted the state: still suspended (and shown), still out of tokens, the
    // kernel's counters go on from where they were, the generation counts on.
    assert!(tcp_probe_once(&fx.cg, suspended, server).is_eperm());
    assert!(tcp_probe_once(&fx.cg, spent, server).is_eperm());
    let st = second.status_json();
    assert_eq!(
        st["suspensions"][0]["target"],
        format!("uid {suspended}"),
        "{st:#}"
    );
    assert_eq!(st["generation"], 2, "{st:#}");
    let m = second.metrics();
    let denied_after = metric_sum(
        &m,
        "antispam_smtp_connections_total",
        &[("verdict", "denied")],
    );
    assert!(
        denied_before >= 2.0 && denied_after >= denied_before + 1002.0,
        "counters kept: {denied_before} before, {denied_after} after"
    );
    let start = second
        .audit_events()
        .into_iter()
        .find(|r| r["event"] == "agent_start")
        .expect("agent_start");
    assert_eq!(start["details"]["took_over"], true, "{start}");
    // Unsuspending through the new agent works on the adopted entry.
    let (code, out) = ctl(&second, &["unsuspend", "--uid", &s, "--reason", "clean"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, suspended, server).ok);
}
