//! Limits on IPv6 and on IPv4-mapped IPv6 connects.

use std::net::{IpAddr, SocketAddr};

use antispam_tests::*;

fn limit_policy(fx: &Fixture, extra: &str) -> std::path::PathBuf {
    fx.policy(&format!(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "1/minute"
burst = 2
{extra}"#
    ))
}

#[test]
fn limit_applies_on_ipv6() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("ipv6");
    let s6 = SmtpSink::start(&fx.ns, IpAddr::V6(fx.ns.addr_v6()), 25);
    let uid = unique_uid();
    let agent = Agent::start(&limit_policy(&fx, ""), &fx.cg, &fx.dir);

    let r = swaks(&fx.cg, uid, s6.addr().ip(), 25);
    assert!(r.ok, "swaks over IPv6 within the burst:\n{}", r.output);
    let r = connect_probe_as(&fx.cg, uid, s6.addr(), 3, ProbeOptions::default());
    eprintln!("v6 attempts 2..4: {r:?}");
    let oks: Vec<bool> = r.iter().map(|x| x.ok).collect();
    assert_eq!(oks, [true, false, false], "{r:?}");
    assert!(r[1].is_eperm() && r[1].micros < 100_000, "{r:?}");
    let r = swaks(&fx.cg, uid, s6.addr().ip(), 25);
    assert!(
        !r.ok && r.eperm,
        "swaks over IPv6 over the limit:\n{}",
        r.output
    );

    let ev = agent.wait_events(by_uid(uid), 5);
    assert_eq!(ev.len(), 5, "{}", show(&ev));
    let v6 = fx.ns.addr_v6().to_string();
    for e in &ev {
        assert_eq!(ev_str(e, "dst"), v6, "{e}");
        assert_eq!(ev_str(e, "family"), "ipv6", "{e}");
        assert_eq!(ev_u64(e, "dport"), Some(25), "{e}");
    }
    let denied: Vec<_> = ev
        .iter()
        .filter(|e| ev_str(e, "verdict") == "denied")
        .collect();
    assert_eq!(denied.len(), 3, "{}", show(&ev));
    assert!(
        denied
            .iter()
            .all(|e| ev_str(e, "reason") == "rate_limit_uid"),
        "{}",
        show(&ev)
    );
}

#[test]
fn limit_applies_on_ipv4_mapped_ipv6_and_shows_ipv4() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("ipv6");
    let uid = unique_uid();
    let agent = Agent::start(&limit_policy(&fx, ""), &fx.cg, &fx.dir);
    let mapped = SocketAddr::new(IpAddr::V6(fx.ns.addr_v4_mapped()), 25);

    let r = connect_probe_as(&fx.cg, uid, mapped, 4, ProbeOptions::default());
    eprintln!("mapped attempts ({mapped}): {r:?}");
    let oks: Vec<bool> = r.iter().map(|x| x.ok).collect();
    assert_eq!(oks, [true, true, false, false], "{r:?}");
    assert!(r[2].is_eperm(), "{r:?}");

    let ev = agent.wait_events(by_uid(uid), 4);
    assert_eq!(ev.len(), 4, "{}", show(&ev));
    for e in &ev {
        assert_eq!(
            ev_str(e, "dst"),
            fx.ns.addr_v4().to_string(),
            "mapped dst shown as IPv4: {e}"
        );
    }
}

#[test]
fn ipv4_mapped_connect_hits_ipv4_block_list() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("ipv6");
    let uid = unique_uid();
    let extra = format!("\n[[block]]\ndestinations = [\"{}/32\"]\n", fx.ns.addr_v4());
    let agent = Agent::start(&limit_policy(&fx, &extra), &fx.cg, &fx.dir);
    let mapped = SocketAddr::new(IpAddr::V6(fx.ns.addr_v4_mapped()), 25);
    let r = connect_probe_as(&fx.cg, uid, mapped, 1, ProbeOptions::default());
    assert!(
        r[0].is_eperm(),
        "::ffff:{} is IPv4 for block lists: {r:?}",
        fx.ns.addr_v4()
    );
    let ev = agent.wait_events(by_uid(uid), 1);
    assert_eq!(ev.len(), 1, "{}", show(&ev));
    assert_eq!(
        ev_str(&ev[0], "reason"),
        "blocklist_destination",
        "{}",
        ev[0]
    );
}
