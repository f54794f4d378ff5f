//! Repeat offenders: strikes within the window suspend automatically, each suspension of the
//! same offender lasts longer, and the history and the suspension in force survive a restart.

use std::time::{Duration, Instant};

use antispam_tests::*;

fn audit(agent: &Agent) -> Vec<serde_json::Value> {
    agent.audit_events()
}

/// Waits (≤ 3 s) until the agent lists `uid` as suspended; returns how long that took.
fn wait_suspended(agent: &Agent, uid: u32, yes: bool) -> Duration {
    let t = Instant::now();
    loop {
        let st = agent.status_json();
        let listed = st["suspensions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["target"] == format!("uid {uid}")));
        if listed == yes {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "suspended={yes} not reached:\n{st:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects until three are refused by the rate limit (the strikes); all must be refused.
fn three_strikes(fx: &Fixture, uid: u32) {
    let server = fx.smtp_v4();
    let mut refused = 0;
    for _ in 0..4 {
        let a = tcp_probe_once(&fx.cg, uid, server);
        if a.is_eperm() {
            refused += 1;
        }
        if refused == 3 {
            return;
        }
    }
    panic!("expected three refused connects, got {refused}");
}

fn strike_suspensions(agent: &Agent) -> Vec<u64> {
    audit(agent)
        .iter()
        .filter(|r| r["event"] == "suspend" && r["details"]["trigger"] == "strikes")
        .map(|r| r["details"]["for_secs"].as_u64().unwrap())
        .collect()
}

#[test]
fn repeat_offenders_are_suspended_longer_each_time_across_restarts() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("strikes");
    let policy = fx.policy(
        r#"ports = [25]
[default]
rate = "1/hour"
burst = 1

[suspension]
strikes = 3
window = "10m"
durations = ["1s", "2s", "3s"]
"#,
    );
    let uid = unique_uid();
    let server = fx.smtp_v4();
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);

    // First offence: the burst, then three refusals → suspended for 1 s.
    assert!(tcp_probe_once(&fx.cg, uid, server).ok);
    three_strikes(&fx, uid);
    let took = wait_suspended(&agent, uid, true);
    eprintln!("third strike → suspension in force: {took:?}");
    let a = tcp_probe_once(&fx.cg, uid, server);
    assert!(a.is_eperm(), "suspended");
    assert_eq!(
        agent
            .wait_events(|e| ev_str(e, "reason") == "suspended", 1)
            .len(),
        1
    );
    assert_eq!(strike_suspensions(&agent), [1]);
    wait_suspended(&agent, uid, false);

    // Second offence: 2 s. Restart the agent while it is in force.
    three_strikes(&fx, uid);
    wait_suspended(&agent, uid, true);
    assert_eq!(strike_suspensions(&agent), [1, 2]);
    assert!(agent.stop().expect("stops").success());
    let agent2 = Agent::start(&policy, &fx.cg, &fx.dir);
    let restored = audit(&agent2);
    assert!(
        restored.iter().any(|r| r["event"] == "suspension_restored"),
        "{restored:#?}"
    );
    assert!(
        tcp_probe_once(&fx.cg, uid, server).is_eperm(),
        "the suspension survived the restart"
    );
    wait_suspended(&agent2, uid, false);

    // Third offence, after the restart: the history was kept, so 3 s, not 1 s. The bucket was
    // kept too (pinned maps): no fresh burst, the next three connects are refused, three strikes.
    three_strikes(&fx, uid);
    wait_suspended(&agent2, uid, true);
    assert_eq!(
        strike_suspensions(&agent2),
        [3],
        "escalation continues after the restart"
    );
    let m = agent2.metrics();
    assert_eq!(
        metric_value(&m, "antispam_suspensions_total", &[("trigger", "strikes")]),
        Some(1.0)
    );
    let other = unique_uid();
    assert!(
        tcp_probe_once(&fx.cg, other, server).ok,
        "other UIDs unaffected"
    );
}

#[test]
fn a_rule_with_its_own_suspension_settings_uses_them() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("strikes-per-rule");
    // The rate limit needs 3 strikes; one connect to the spam trap is enough.
    let policy = fx.policy(
        r#"ports = [25]
[default]
rate = "1/hour"
burst = 1

[suspension]
strikes = 3
window = "10m"
durations = ["1h"]

[[block]]
destinations = ["127.0.0.98/32"]
suspension = { strikes = 1, window = "1m", durations = ["2s"] }
"#,
    );
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let (trapped, limited) = (unique_uid(), unique_uid());
    let trap: std::net::SocketAddr = "127.0.0.98:25".parse().unwrap();
    assert!(tcp_probe_once(&fx.cg, trapped, trap).is_eperm());
    wait_suspended(&agent, trapped, true);
    assert!(
        tcp_probe_once(&fx.cg, trapped, fx.smtp_v4()).is_eperm(),
        "suspended after one hit on the trap"
    );
    assert_eq!(strike_suspensions(&agent), [2], "the block rule's duration");

    // One rate-limit refusal is one strike of three: no suspension.
    assert!(tcp_probe_once(&fx.cg, limited, fx.smtp_v4()).ok);
    assert!(tcp_probe_once(&fx.cg, limited, fx.smtp_v4()).is_eperm());
    std::thread::sleep(Duration::from_millis(300));
    wait_suspended(&agent, limited, false);
}
