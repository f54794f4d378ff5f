//! Per-cgroup limits on top of per-UID limits.

use antispam_tests::*;

#[test]
fn cgroup_budget_is_shared_and_uid_budget_follows_the_uid() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("root");
    let a = fx.cg.child("a");
    let b = fx.cg.child("b");
    let (u1, u2, u3) = (unique_uid(), unique_uid(), unique_uid());
    let policy = fx.policy(&format!(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "1/minute"
burst = 3

[[limit]]
cgroups = ["{a}"]
rate = "1/minute"
burst = 4
"#,
        a = a.relative()
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();

    // u1 in a: 3 (its UID burst; cgroup a has used 3 of 4).
    let r = connect_probe_as(&a, u1, server, 3, ProbeOptions::default());
    assert!(
        r.iter().all(|x| x.ok),
        "u1 in a, within both budgets: {r:?}"
    );
    // u2 in a: the 4th connect of cgroup a passes, the 5th is refused by the cgroup budget
    // although u2 has used only one of its own 3.
    let r = connect_probe_as(&a, u2, server, 2, ProbeOptions::default());
    eprintln!("u2 in a: {r:?}");
    assert!(r[0].ok, "u2 in a: cgroup a still had 1 left: {r:?}");
    assert!(
        r[1].is_eperm(),
        "u2 in a: cgroup a budget (4) used up, expected EPERM: {r:?}"
    );
    // u1 in b (no cgroup limit): its own UID budget is used up.
    let r = connect_probe_as(&b, u1, server, 1, ProbeOptions::default());
    assert!(
        r[0].is_eperm(),
        "u1 in b: UID budget (3) used up in a, expected EPERM: {r:?}"
    );
    // u3 in b: only the UID budget applies.
    let r = connect_probe_as(&b, u3, server, 4, ProbeOptions::default());
    let pattern: Vec<bool> = r.iter().map(|x| x.ok).collect();
    assert_eq!(pattern, [true, true, true, false], "u3 in b: {r:?}");

    let ev = agent.wait_events(|e| ev_str(e, "verdict") == "denied", 3);
    let find = |uid: u32, cg: &TestCgroup| {
        ev.iter()
            .find(|e| ev_u64(e, "uid") == Some(uid as u64) && ev_str(e, "cgroup") == cg.relative())
            .unwrap_or_else(|| {
                panic!(
                    "no denied event for uid {uid} in {}:\n{}",
                    cg.relative(),
                    show(&ev)
                )
            })
            .clone()
    };
    let e2 = find(u2, &a);
    assert_eq!(ev_str(&e2, "reason"), "rate_limit_cgroup", "{e2}");
    assert_eq!(ev_u64(&e2, "cgroup_id"), Some(a.id()), "{e2}");
    let e1 = find(u1, &b);
    assert_eq!(ev_str(&e1, "reason"), "rate_limit_uid", "{e1}");
    assert_eq!(ev_u64(&e1, "cgroup_id"), Some(b.id()), "{e1}");
    let e3 = find(u3, &b);
    assert_eq!(ev_str(&e3, "reason"), "rate_limit_uid", "{e3}");
    assert_eq!(ev.len(), 3, "exactly three refusals:\n{}", show(&ev));

    let m = wait_metrics(&agent, |m| {
        metric_sum(
            m,
            "antispam_cgroup_smtp_connections_total",
            &[("cgroup", &a.relative()), ("verdict", "denied")],
        ) >= 1.0
    });
    let a_rel = a.relative();
    let val = |cg: &str, verdict: &str| {
        metric_sum(
            &m,
            "antispam_cgroup_smtp_connections_total",
            &[("cgroup", cg), ("verdict", verdict)],
        )
    };
    assert_eq!(
        val(&a_rel, "allowed"),
        4.0,
        "cgroup a allowed; metrics:\n{m}"
    );
    assert_eq!(val(&a_rel, "denied"), 1.0, "cgroup a denied; metrics:\n{m}");
    assert_eq!(
        val(&b.relative(), "allowed"),
        3.0,
        "cgroup b allowed; metrics:\n{m}"
    );
    assert_eq!(
        val(&b.relative(), "denied"),
        2.0,
        "cgroup b denied; metrics:\n{m}"
    );
}
