//! Per-container policy: cgroup rules that follow containers as they come and go.
//!
//! The cgroups here are shaped like Docker's and Kubernetes' (but live under the test's own
//! cgroup, which is the agent's attach point).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use antispam_tests::*;

/// Waits until the agent's status lists `rel` as covered by a cgroup rule and the kernel's map
/// holds it; returns how long that took from `since`.
fn wait_covered(agent: &Agent, rel: &str, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let st = agent.status_json();
        let listed = st["cgroup_rules"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["cgroup"] == rel));
        if listed {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "cgroup {rel} not covered within 3 s; status:\n{st:#}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `n` connects as `uid` in `cg`; returns "o" for each success and "E" for each EPERM.
fn pattern(cg: &TestCgroup, uid: u32, server: SocketAddr, n: u32) -> String {
    connect_probe_as(cg, uid, server, n, ProbeOptions::default())
        .iter()
        .map(|a| {
            if a.ok {
                'o'
            } else if a.is_eperm() {
                'E'
            } else {
                panic!("connect failed with errno {} (not EPERM)", a.errno)
            }
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn containers_started_after_the_agent_follow_their_rules() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("containers");
    let base = fx.cg.relative();
    // UIDs are never the limit here (100/second): only the cgroup rules are.
    let policy = fx.policy(&format!(
        r#"ports = [25]
[default]
rate = "100/second"
burst = 100

[[limit]]
cgroups = ["{base}/kubepods"]
rate = "1/hour"
burst = 4

[[limit]]
cgroups = ["{base}/kubepods/pod-special"]
rate = "1/hour"
burst = 1

[[limit]]
cgroups = ["{base}/docker-*.scope"]
rate = "1/hour"
burst = 2

[[limit]]
cgroups = ["{base}/batch-*"]
rate = "1/hour"
burst = 3
shared = true
"#
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();

    // Docker-like: each container its own budget of 2, created after the agent started.
    let t = Instant::now();
    let a = fx.cg.child("docker-a.scope");
    let took = wait_covered(&agent, &a.relative(), t);
    eprintln!("cgroup created → rule enforced in {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "covered in {took:?}, want < 1 s"
    );
    let b = fx.cg.child("docker-b.scope");
    wait_covered(&agent, &b.relative(), Instant::now());
    assert_eq!(
        pattern(&a, unique_uid(), server, 3),
        "ooE",
        "docker-a: its own budget of 2"
    );
    assert_eq!(
        pattern(&b, unique_uid(), server, 3),
        "ooE",
        "docker-b: its own budget of 2"
    );

    // Kubernetes-like: the kubepods rule covers pods created later, which share its bucket…
    let kube = fx.cg.child("kubepods");
    let pod_x = kube.child("pod-x");
    let c1 = pod_x.child("c1");
    let pod_y = kube.child("pod-y");
    wait_covered(&agent, &c1.relative(), Instant::now());
    wait_covered(&agent, &pod_y.relative(), Instant::now());
    assert_eq!(pattern(&c1, unique_uid(), server, 3), "ooo");
    assert_eq!(
        pattern(&pod_y, unique_uid(), server, 2),
        "oE",
        "pods share kubepods' 4"
    );
    // …unless a more specific rule matches: pod-special has its own budget of 1.
    let special = kube.child("pod-special");
    wait_covered(&agent, &special.relative(), Instant::now());
    assert_eq!(
        pattern(&special, unique_uid(), server, 2),
        "oE",
        "the more specific rule wins"
    );

    // shared = true: all batch-* cgroups draw on one budget of 3.
    let s1 = fx.cg.child("batch-1");
    let s2 = fx.cg.child("batch-2");
    wait_covered(&agent, &s2.relative(), Instant::now());
    assert_eq!(pattern(&s1, unique_uid(), server, 2), "oo");
    assert_eq!(
        pattern(&s2, unique_uid(), server, 2),
        "oE",
        "batch-1 and batch-2 share 3"
    );

    // Events and metrics name the cgroup by its path.
    let refused = agent.wait_events(|e| ev_str(e, "reason") == "rate_limit_cgroup", 5);
    assert_eq!(refused.len(), 5, "{}", show(&refused));
    assert!(
        refused.iter().any(|e| ev_str(e, "cgroup") == a.relative()),
        "{}",
        show(&refused)
    );
    assert!(
        refused
            .iter()
            .any(|e| ev_str(e, "cgroup") == pod_y.relative()),
        "{}",
        show(&refused)
    );
    let m = agent.metrics();
    let denied_a = metric_value(
        &m,
        "antispam_cgroup_smtp_connections_total",
        &[("cgroup", &a.relative()), ("verdict", "denied")],
    );
    assert_eq!(denied_a, Some(1.0), "per-cgroup metric by path:\n{m}");

    // Status shows which bucket each cgroup draws on.
    let st = agent.status_json();
    let entry = |rel: &str| {
        st["cgroup_rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cgroup"] == rel)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry(&c1.relative())["bucket"], kube.relative(), "{st:#}");
    assert_eq!(
        entry(&special.relative())["bucket"],
        special.relative(),
        "{st:#}"
    );
    assert!(
        entry(&s1.relative())["bucket"]
            .as_str()
            .unwrap()
            .ends_with("(shared)"),
        "{st:#}"
    );
}

#[test]
fn same_uid_in_two_containers() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("containers");
    let base = fx.cg.relative();
    let policy = fx.policy(&format!(
        r#"ports = [25]
[default]
rate = "1/hour"
burst = 3

[[limit]]
cgroups = ["{base}/docker-*.scope"]
rate = "1/hour"
burst = 2
"#
    ));
    let a = fx.cg.child("docker-a.scope");
    let b = fx.cg.child("docker-b.scope");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let uid = unique_uid();
    // a: 2 fit its budget; the 3rd is refused by the cgroup (the UID's token is given back).
    assert_eq!(pattern(&a, uid, server, 3), "ooE");
    // b: its own cgroup budget is full, but the UID has 1 of 3 left.
    assert_eq!(pattern(&b, uid, server, 2), "oE");
    let ev = agent.wait_events(by_uid(uid), 5);
    let reasons: Vec<&str> = ev.iter().map(|e| ev_str(e, "reason")).collect();
    assert_eq!(
        reasons,
        [
            "within_limit",
            "within_limit",
            "rate_limit_cgroup",
            "within_limit",
            "rate_limit_uid"
        ],
        "{}",
        show(&ev)
    );
}

#[test]
fn churn_leaves_no_stale_state_and_memory_flat() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("churn");
    let base = fx.cg.relative();
    let policy = fx.policy(&format!(
        r#"ports = [25]
[default]
rate = "1000/second"
burst = 1000

[[limit]]
cgroups = ["{base}/docker-*.scope"]
rate = "1000/second"
burst = 1000
"#
    ));
    let steady = fx.cg.child("docker-steady.scope");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let pid = agent.pid().expect("agent pid");
    let server = fx.smtp_v4();

    // Traffic runs in a long-lived container during the whole churn.
    let traffic = {
        let cg_path = steady.path().to_path_buf();
        let uid = unique_uid();
        std::thread::spawn(move || {
            let cg = TestCgroup::adopt(&cg_path);
            let opts = ProbeOptions {
                interval: Duration::from_millis(20),
                ..Default::default()
            };
            connect_probe_as(&cg, uid, server, 400, opts)
        })
    };

    let churn = |rounds: usize, per_round: usize, tag: &str| {
        let t = Instant::now();
        for r in 0..rounds {
            let kids: Vec<TestCgroup> = (0..per_round)
                .map(|i| fx.cg.child(&format!("docker-{tag}-{r}-{i}.scope")))
                .collect();
            // A few of them send mail, so the kernel holds state for them.
            if r % 5 == 0 {
                wait_covered(&agent, &kids[0].relative(), Instant::now());
                assert!(tcp_probe_once(&kids[0], unique_uid(), server).ok);
            }
            drop(kids);
        }
        t.elapsed()
    };

    let warm = churn(10, 100, "warm");
    let settle = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = agent.status_json();
            let rules = st["kernel_maps"]["cgroup_rules"].as_u64().unwrap();
            let cgroups = st["tracked"]["cgroups"].as_u64().unwrap();
            // Left: docker-steady's rule; state for the attach cgroup and docker-steady at most.
            if rules == 1 && cgroups <= 2 && st["cgroups_covered"] == 1 {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: stale entries remain:\n{st:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    settle("after warm-up");
    let rss_before = rss_kib(pid);
    let took = churn(100, 100, "main");
    let st = settle("after churn");
    let rss_after = rss_kib(pid);
    eprintln!(
        "churn: 1,000 + 10,000 cgroups created and removed ({warm:?} + {took:?}); agent RSS {rss_before} KiB → {rss_after} KiB; kernel maps after: {}",
        st["kernel_maps"]
    );
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "agent memory grew from {rss_before} KiB to {rss_after} KiB over 10,000 cgroups"
    );
    assert!(st["cgroups_followed"].as_u64().unwrap() <= 3, "{st:#}");

    let attempts = traffic.join().expect("traffic thread");
    let failed = attempts.iter().filter(|a| !a.ok).count();
    assert_eq!(
        failed, 0,
        "traffic in the steady container during churn: {failed} failures"
    );
    assert_eq!(attempts.len(), 400);
}
