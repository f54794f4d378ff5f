//! Allow-lists (users, destinations) and block-lists (destinations, files).

use std::net::IpAddr;

use antispam_tests::*;

#[test]
fn allowlisted_user_is_never_limited() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lists");
    let (vip, normal) = (unique_uid(), unique_uid());
    let policy = fx.policy(&format!(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "1/minute"
burst = 1

[[allow]]
users = [{vip}]
"#
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let r = connect_probe_as(&fx.cg, vip, fx.smtp_v4(), 10, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.ok),
        "allow-listed uid {vip} must never be refused: {r:?}"
    );
    let r = connect_probe_as(&fx.cg, normal, fx.smtp_v4(), 2, ProbeOptions::default());
    assert!(
        r[0].ok && r[1].is_eperm(),
        "uid {normal} has burst 1: {r:?}"
    );

    let ev = agent.wait_events(by_uid(vip), 10);
    assert_eq!(ev.len(), 10, "{}", show(&ev));
    for e in &ev {
        assert_eq!(
            (ev_str(e, "verdict"), ev_str(e, "reason")),
            ("allowed", "allowlist_user"),
            "{e}"
        );
    }
}

#[test]
fn allowlisted_destination_is_never_limited() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lists");
    let s6 = SmtpSink::start(&fx.ns, IpAddr::V6(fx.ns.addr_v6()), 25);
    let uid = unique_uid();
    let policy = fx.policy(&format!(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "1/minute"
burst = 1

[[allow]]
destinations = ["{v4}/32"]
"#,
        v4 = fx.ns.addr_v4()
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let r = connect_probe_as(&fx.cg, uid, fx.smtp_v4(), 10, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.ok),
        "allow-listed destination must never be refused: {r:?}"
    );
    // Another destination is limited as usual.
    let r = connect_probe_as(&fx.cg, uid, s6.addr(), 3, ProbeOptions::default());
    let oks: Vec<bool> = r.iter().map(|x| x.ok).collect();
    assert_eq!(
        oks,
        [true, false, false],
        "non-allow-listed destination, burst 1: {r:?}"
    );
    assert!(r[1].is_eperm(), "{r:?}");

    let ev = agent.wait_events(by_uid(uid), 13);
    let to_v4: Vec<_> = ev
        .iter()
        .filter(|e| ev_str(e, "dst") == fx.ns.addr_v4().to_string())
        .collect();
    assert_eq!(to_v4.len(), 10, "{}", show(&ev));
    for e in to_v4 {
        assert_eq!(
            (ev_str(e, "verdict"), ev_str(e, "reason")),
            ("allowed", "allowlist_destination"),
            "{e}"
        );
    }
}

#[test]
fn blocklisted_destination_is_always_refused() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lists");
    let s6 = SmtpSink::start(&fx.ns, IpAddr::V6(fx.ns.addr_v6()), 25);
    let other_ns = TestNetns::new();
    let other_sink = SmtpSink::start(&other_ns, IpAddr::V4(other_ns.addr_v4()), 25);
    let uid = unique_uid();
    // v4 is blocked inline, v6 through a block file (with comments).
    let blockfile = fx.dir.write(
        "blocklist.txt",
        &format!(
            "# test block list\n; another comment\n{}/128\n",
            fx.ns.addr_v6()
        ),
    );
    let policy = fx.policy(&format!(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "100/second"
burst = 100

[[block]]
destinations = ["{v4}/32"]
files = ["{file}"]
"#,
        v4 = fx.ns.addr_v4(),
        file = blockfile.display()
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let r = connect_probe_as(&fx.cg, uid, fx.smtp_v4(), 3, ProbeOptions::default());
    eprintln!("blocked v4: {r:?}");
    assert!(
        r.iter().all(|x| x.is_eperm()),
        "block-listed v4 must be refused from the first connect: {r:?}"
    );
    let r = connect_probe_as(&fx.cg, uid, s6.addr(), 2, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.is_eperm()),
        "v6 blocked via files = [...] must be refused: {r:?}"
    );
    // A destination that is not on the list still works.
    let r = connect_probe_as(&fx.cg, uid, other_sink.addr(), 1, ProbeOptions::default());
    assert!(r[0].ok, "a non-blocked destination must work: {r:?}");
    let ev = agent.wait_events(by_uid(uid), 6);
    assert_eq!(ev.len(), 6, "{}", show(&ev));
    for e in ev
        .iter()
        .filter(|e| ev_str(e, "dst") != other_ns.addr_v4().to_string())
    {
        assert_eq!(
            (ev_str(e, "verdict"), ev_str(e, "reason")),
            ("denied", "blocklist_destination"),
            "{e}"
        );
    }
}
