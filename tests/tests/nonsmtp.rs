//! Non-SMTP traffic is never refused nor logged, even when the SMTP budget is used up.

use std::net::{IpAddr, SocketAddr};

use antispam_tests::*;

#[test]
fn non_smtp_ports_and_udp_are_untouched() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("nonsmtp");
    let s8080 = SmtpSink::start(&fx.ns, IpAddr::V4(fx.ns.addr_v4()), 8080);
    // 587 is SMTP by default, but this policy says only 25 is.
    let s587 = SmtpSink::start(&fx.ns, IpAddr::V4(fx.ns.addr_v4()), 587);
    let uid = unique_uid();
    let policy = fx.policy(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "1/minute"
burst = 1
"#,
    );
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);

    let r = connect_probe_as(&fx.cg, uid, fx.smtp_v4(), 2, ProbeOptions::default());
    assert!(
        r[0].ok && r[1].is_eperm(),
        "burst 1 on port 25 is now used up: {r:?}"
    );

    let r = connect_probe_as(&fx.cg, uid, s8080.addr(), 20, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.ok),
        "port 8080 must never be refused: {r:?}"
    );
    let r = connect_probe_as(&fx.cg, uid, s587.addr(), 5, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.ok),
        "port 587 is not in ports = [25]: {r:?}"
    );
    let udp25 = SocketAddr::new(IpAddr::V4(fx.ns.addr_v4()), 25);
    for i in 0..5 {
        udp_send_as(&fx.cg, uid, udp25)
            .unwrap_or_else(|e| panic!("UDP to port 25 #{i} refused: {e}"));
    }
    let udp25_v6 = SocketAddr::new(IpAddr::V6(fx.ns.addr_v6()), 25);
    udp_send_as(&fx.cg, uid, udp25_v6)
        .unwrap_or_else(|e| panic!("UDP/IPv6 to port 25 refused: {e}"));

    // Give the agent time to drain, then check only the two TCP/25 connects were logged.
    let _ = agent.wait_events(by_uid(uid), 2);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let ev: Vec<_> = agent
        .events()
        .into_iter()
        .filter(|e| by_uid(uid)(e))
        .collect();
    assert_eq!(
        ev.len(),
        2,
        "only the TCP/25 connects may be logged:\n{}",
        show(&ev)
    );
    assert!(
        ev.iter().all(|e| ev_u64(e, "dport") == Some(25)),
        "{}",
        show(&ev)
    );
    let m = agent.metrics();
    assert_eq!(
        metric_sum(&m, "antispam_smtp_connections_total", &[]),
        2.0,
        "metrics:\n{m}"
    );
}
