//! Break glass: two different operators are needed, the override lifts the limit, the
//! suspension and the kill switch for its target only, ends on time or at once when revoked, and
//! every step is audited.

use std::time::{Duration, Instant};

use antispam_tests::*;

/// "nogroup" (gid 65534) stands in for the operators group: it exists on every Debian host.
const OPERATORS: u32 = 65534;

fn start(fx: &Fixture) -> Agent {
    let policy = fx.policy(
        "ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n\
         [[block]]\ndestinations = [\"127.0.0.99/32\"]\n",
    );
    Agent::start_with(&policy, &fx.cg, &fx.dir, &["--operators-group", "nogroup"])
}

/// The break-glass id printed by `request`.
fn request_id(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("bg-"))
        .unwrap_or_else(|| panic!("no id in {out}"))
        .trim_end_matches(|c: char| !c.is_ascii_hexdigit())
        .to_string()
}

#[test]
fn break_glass_needs_two_people_lifts_limits_and_suspension_and_expires() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("breakglass");
    let agent = start(&fx);
    let server = fx.smtp_v4();
    let (alice, bob, mallory, user) = (unique_uid(), unique_uid(), unique_uid(), unique_uid());
    let u = user.to_string();
    let as_alice = |args: &[&str]| ctl_as(&agent, alice, alice, &[OPERATORS], args);
    let as_bob = |args: &[&str]| ctl_as(&agent, bob, bob, &[OPERATORS], args);

    // The UID spends its one connect, then is suspended on top.
    assert!(tcp_probe_once(&fx.cg, user, server).ok);
    assert!(tcp_probe_once(&fx.cg, user, server).is_eperm());
    let (code, out) = ctl(&agent, &["suspend", "--uid", &u, "--reason", "outbreak"]);
    assert_eq!(code, Some(0), "{out}");

    // Alice asks; nothing changes until someone else approves.
    let (code, out) = as_alice(&[
        "break-glass",
        "request",
        "--uid",
        &u,
        "--ttl",
        "3s",
        "--reason",
        "payroll mail must go out",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let id = request_id(&out);
    assert!(tcp_probe_once(&fx.cg, user, server).is_eperm(), "pending");
    // A second request for the same UID is refused while one is pending.
    let (code, out) = as_bob(&[
        "break-glass",
        "request",
        "--uid",
        &u,
        "--ttl",
        "1h",
        "--reason",
        "again",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&id), "{out}");
    // Alice cannot approve her own request.
    let (code, out) = as_alice(&["break-glass", "approve", &id]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot approve"), "{out}");
    // Someone outside the operators group cannot approve either.
    let (code, out) = ctl_as(
        &agent,
        mallory,
        mallory,
        &[],
        &["break-glass", "approve", &id],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("permission denied"), "{out}");
    assert!(
        tcp_probe_once(&fx.cg, user, server).is_eperm(),
        "still refused"
    );

    // Bob approves: limit and suspension are lifted for this UID only, at once.
    let (code, out) = as_bob(&["break-glass", "approve", &id]);
    let granted = Instant::now();
    assert_eq!(code, Some(0), "{out}");
    for _ in 0..5 {
        assert!(tcp_probe_once(&fx.cg, user, server).ok, "overridden");
    }
    // Destination block lists still apply.
    let blocked: std::net::SocketAddr = "127.0.0.99:25".parse().unwrap();
    assert!(tcp_probe_once(&fx.cg, user, blocked).is_eperm());
    let other = unique_uid();
    assert!(tcp_probe_once(&fx.cg, other, server).ok);
    assert!(
        tcp_probe_once(&fx.cg, other, server).is_eperm(),
        "other UIDs keep their limit"
    );
    let ev = agent.wait_events(|e| ev_str(e, "reason") == "break_glass", 5);
    assert_eq!(ev.len(), 5);
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "antispam_break_glass_active", &[]),
        Some(1.0),
        "{m}"
    );
    let (code, out) = ctl(&agent, &["break-glass", "list", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    assert_eq!(list["active"][0]["id"], id.as_str());
    assert_eq!(list["active"][0]["requester"], alice.to_string());
    assert_eq!(list["active"][0]["approver"], bob.to_string());

    // It ends by itself: the kernel stops honouring it at its end time.
    let deadline = granted + Duration::from_millis(3500);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = tcp_probe_once(&fx.cg, user, server);
    assert!(after.is_eperm(), "expired, still suspended: {after:?}");
    let ev = agent.wait_events(|e| ev_str(e, "reason") == "suspended", 1);
    assert!(!ev.is_empty());

    let deadline = Instant::now() + Duration::from_secs(3);
    while !agent
        .audit_names()
        .iter()
        .any(|n| n == "break_glass_expired")
    {
        assert!(Instant::now() < deadline, "expiry audited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let audit = agent.audit_events();
    let steps: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with("break_glass"))
        .collect();
    let names: Vec<&str> = steps.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "break_glass_requested",
            "break_glass_refused",
            "break_glass_approved",
            "break_glass_expired"
        ],
        "{audit:#?}"
    );
    assert_eq!(steps[0]["details"]["requester"]["uid"], alice);
    assert_eq!(steps[0]["details"]["reason"], "payroll mail must go out");
    assert_eq!(steps[1]["details"]["by"]["uid"], alice);
    assert_eq!(steps[2]["details"]["approver"]["uid"], bob);
    assert_eq!(steps[2]["details"]["requester"]["uid"], alice);
    assert!(steps[2]["details"]["expires_at"].is_string());
}

#[test]
fn break_glass_passes_the_kill_switch_and_revoking_ends_it_at_once() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("breakglass-revoke");
    let agent = start(&fx);
    let server = fx.smtp_v4();
    let (alice, bob, user) = (unique_uid(), unique_uid(), unique_uid());
    let u = user.to_string();
    let (code, out) = ctl(&agent, &["kill-switch", "on", "--reason", "outbreak"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, user, server).is_eperm());

    let (code, out) = ctl_as(
        &agent,
        bob,
        bob,
        &[OPERATORS],
        &[
            "break-glass",
            "request",
            "--uid",
            &u,
            "--ttl",
            "1h",
            "--reason",
            "status page mail",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let id = request_id(&out);
    let (code, out) = ctl_as(
        &agent,
        alice,
        alice,
        &[OPERATORS],
        &["break-glass", "approve", &id],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        tcp_probe_once(&fx.cg, user, server).ok,
        "through the kill switch"
    );
    assert!(
        tcp_probe_once(&fx.cg, unique_uid(), server).is_eperm(),
        "the kill switch holds for everyone else"
    );
    let status = agent.status_json();
    assert_eq!(
        status["break_glass"]["active"][0]["id"],
        id.as_str(),
        "{status:#}"
    );

    let t = Instant::now();
    let (code, out) = ctl_as(
        &agent,
        alice,
        alice,
        &[OPERATORS],
        &["break-glass", "revoke", &id, "--reason", "sent"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        tcp_probe_once(&fx.cg, user, server).is_eperm(),
        "revoked at once"
    );
    eprintln!("revoke → refused connect: {:?}", t.elapsed());
    let (code, out) = ctl(&agent, &["break-glass", "approve", &id]);
    assert_eq!(code, Some(1), "gone: {out}");
    let m = agent.metrics();
    for (step, n) in [("requested", 1.0), ("approved", 1.0), ("revoked", 1.0)] {
        assert_eq!(
            metric_value(&m, "antispam_break_glass_total", &[("step", step)]),
            Some(n),
            "{step}"
        );
    }
    let names = agent.audit_names();
    assert!(
        names.ends_with(&[
            "break_glass_requested".to_string(),
            "break_glass_approved".to_string(),
            "break_glass_revoked".to_string()
        ]),
        "{names:?}"
    );
}
