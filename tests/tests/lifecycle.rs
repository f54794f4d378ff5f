//! The agent's life: it attaches exactly its three programs to the cgroup it was given, and a
//! SIGTERM leaves nothing behind in the kernel (links, programs), with enforcement ending.

use antispam_tests::*;

/// (id, name) of the programs attached directly to `cg`, from `bpftool cgroup show`.
fn attached_ids(cg: &TestCgroup) -> Vec<(String, String)> {
    let out = run_ok(
        "bpftool",
        &["cgroup", "show", &cg.path().display().to_string()],
    );
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.first()?.to_string(), cols.last()?.to_string()))
        })
        .collect()
}

fn attached(cg: &TestCgroup) -> Vec<String> {
    attached_ids(cg).into_iter().map(|(_, name)| name).collect()
}

/// Is a program with this id still loaded in the kernel?
fn loaded(id: &str) -> bool {
    run_quiet("bpftool", &["prog", "show", "id", id])
}

#[test]
fn sigterm_detaches_everything_and_ends_enforcement() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lifecycle");
    let uid = unique_uid();
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);

    let mut names = attached(&fx.cg);
    names.sort();
    assert_eq!(
        names,
        ["antispam_connect4", "antispam_connect6", "antispam_egress"],
        "attached to the test cgroup"
    );
    let ids: Vec<String> = attached_ids(&fx.cg).into_iter().map(|(id, _)| id).collect();
    assert!(
        ids.iter().all(|id| loaded(id)),
        "attached programs are loaded: {ids:?}"
    );

    let server = fx.smtp_v4();
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "first connect within the burst"
    );
    assert!(
        tcp_probe_once(&fx.cg, uid, server).is_eperm(),
        "second connect over 1/hour"
    );

    let status = agent.stop().expect("agent exits on SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        agent.stderr().contains("programs detached"),
        "stderr:\n{}",
        agent.stderr()
    );
    assert!(
        attached(&fx.cg).is_empty(),
        "nothing attached after SIGTERM: {:?}",
        attached(&fx.cg)
    );
    let left: Vec<&String> = ids.iter().filter(|id| loaded(id)).collect();
    assert!(
        left.is_empty(),
        "programs still loaded after SIGTERM: {left:?}"
    );
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "no enforcement once the agent is gone"
    );
}

#[test]
fn refuses_to_start_on_a_bad_policy_or_a_non_cgroup() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lifecycle");
    let bad = fx.policy("ports = [25]\n[default]\nrate = \"lots\"\n");
    let (code, err) = run_refused(&[], &bad, fx.cg.path(), &fx.dir, None);
    assert_eq!(code, Some(2), "bad policy: exit 2; stderr:\n{err}");
    assert!(
        err.contains(&format!("{}:3:8: malformed rate", bad.display())),
        "stderr:\n{err}"
    );
    assert!(
        attached(&fx.cg).is_empty(),
        "nothing attached after a refused start"
    );

    let good = fx.policy("ports = [25]\n");
    let (code, err) = run_refused(&[], &good, std::path::Path::new("/tmp"), &fx.dir, None);
    assert_eq!(code, Some(2), "not a cgroup: exit 2; stderr:\n{err}");
    assert!(
        err.contains("is not a directory of the cgroup v2 hierarchy"),
        "stderr:\n{err}"
    );
}
