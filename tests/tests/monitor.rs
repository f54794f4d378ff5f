//! mode = "monitor": decide, count and log, never refuse.

use std::net::IpAddr;

use antispam_tests::*;

#[test]
fn monitor_mode_never_refuses_but_records_would_deny() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("monitor");
    let blocked_ns = TestNetns::new();
    let blocked_sink = SmtpSink::start(&blocked_ns, IpAddr::V4(blocked_ns.addr_v4()), 25);
    let (uid, uid_b) = (unique_uid(), unique_uid());
    let policy = fx.policy(&format!(
        r#"mode = "monitor"
ports = [25]

[default]
rate = "1/minute"
burst = 2

[[block]]
destinations = ["{}/32"]
"#,
        blocked_ns.addr_v4()
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);

    let r = connect_probe_as(&fx.cg, uid, fx.smtp_v4(), 5, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.ok),
        "monitor mode must not refuse: {r:?}"
    );
    let s = swaks(&fx.cg, uid, fx.smtp_v4().ip(), 25);
    assert!(s.ok, "monitor mode must not refuse swaks:\n{}", s.output);
    let r = connect_probe_as(
        &fx.cg,
        uid_b,
        blocked_sink.addr(),
        2,
        ProbeOptions::default(),
    );
    assert!(
        r.iter().all(|x| x.ok),
        "monitor mode must not refuse block-listed destinations: {r:?}"
    );

    let ev = agent.wait_events(by_uid(uid), 6);
    assert_eq!(ev.len(), 6, "{}", show(&ev));
    assert!(
        ev.iter().all(|e| ev_str(e, "verdict") == "allowed"),
        "{}",
        show(&ev)
    );
    let would: Vec<_> = ev
        .iter()
        .filter(|e| e["would_deny"].as_bool() == Some(true))
        .collect();
    assert_eq!(
        would.len(),
        4,
        "connects 3..6 are over burst 2:\n{}",
        show(&ev)
    );
    assert!(
        would
            .iter()
            .all(|e| ev_str(e, "reason") == "rate_limit_uid"),
        "{}",
        show(&ev)
    );
    let fine: Vec<_> = ev
        .iter()
        .filter(|e| e["would_deny"].as_bool() == Some(false))
        .collect();
    assert_eq!(fine.len(), 2, "{}", show(&ev));
    assert!(
        fine.iter().all(|e| ev_str(e, "reason") == "within_limit"),
        "{}",
        show(&ev)
    );

    let evb = agent.wait_events(by_uid(uid_b), 2);
    assert_eq!(evb.len(), 2, "{}", show(&evb));
    for e in &evb {
        assert_eq!(e["would_deny"].as_bool(), Some(true), "{e}");
        assert_eq!(
            (ev_str(e, "verdict"), ev_str(e, "reason")),
            ("allowed", "blocklist_destination"),
            "{e}"
        );
    }

    let m = wait_metrics(&agent, |m| {
        metric_sum(m, "antispam_smtp_would_deny_total", &[]) >= 6.0
    });
    assert_eq!(
        metric_value(
            &m,
            "antispam_smtp_would_deny_total",
            &[("reason", "rate_limit_uid")]
        ),
        Some(4.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "antispam_smtp_would_deny_total",
            &[("reason", "blocklist_destination")]
        ),
        Some(2.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "antispam_smtp_connections_total",
            &[("verdict", "denied")]
        ),
        0.0,
        "metrics:\n{m}"
    );
    let uid_s = uid.to_string();
    assert_eq!(
        metric_sum(
            &m,
            "antispam_uid_smtp_connections_total",
            &[("uid", &uid_s), ("verdict", "would_deny")]
        ),
        4.0,
        "metrics:\n{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "antispam_uid_smtp_connections_total",
            &[("uid", &uid_s), ("verdict", "denied")]
        ),
        0.0,
        "metrics:\n{m}"
    );
}
