//! The agent's life: it attaches exactly its programs to the cgroup it was given (three, and the
//! exec hook where the kernel runs BPF LSM); they keep enforcing when the agent stops, and
//! `antispam uninstall` removes them all.

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
fn enforcement_outlives_the_agent_and_uninstall_removes_everything() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lifecycle");
    let uid = unique_uid();
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);

    // The exec hook is attached to the cgroup only as BPF LSM (bpftool names an lsm_cgroup
    // attachment by its hook); the tracepoint fallback is a global attachment.
    let hook = agent.status_json()["sendmail"]["hook"].clone();
    // Nothing per packet: the packet program runs only with --packet-accounting or while
    // sessions could not be ended.
    let mut want = vec![
        "antispam_connect4",
        "antispam_connect6",
        "antispam_sock_create",
    ];
    match hook.as_str() {
        Some("lsm") => want.push("bpf_lsm_bprm_creds_for_exec"),
        Some("tracepoint") => {}
        other => panic!("exec hook {other:?}, want lsm or tracepoint"),
    }
    let mut names = attached(&fx.cg);
    names.sort();
    assert_eq!(
        names, want,
        "attached to the test cgroup (exec hook {hook})"
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

    // SIGTERM (systemctl stop/restart): the agent goes, enforcement stays.
    let status = agent.stop().expect("agent exits on SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        agent.stderr().contains("keep enforcing"),
        "stderr:\n{}",
        agent.stderr()
    );
    assert_eq!(
        attached(&fx.cg).len(),
        want.len(),
        "still attached after SIGTERM"
    );
    assert!(
        tcp_probe_once(&fx.cg, uid, server).is_eperm(),
        "the UID's bucket is still empty with no agent running"
    );

    // `antispam uninstall` removes it all, and says so in the audit log.
    let out = std::process::Command::new(antispam_bin())
        .args(["uninstall", "--reason", "decommission", "--pin-dir"])
        .arg(fx.dir.pins())
        .arg("--audit-log")
        .arg(&agent.audit_path)
        .arg("--socket")
        .arg(&agent.control_path)
        .output()
        .expect("antispam uninstall");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("unpinned"), "{text}");
    assert!(
        attached(&fx.cg).is_empty(),
        "nothing attached after uninstall: {:?}",
        attached(&fx.cg)
    );
    let left: Vec<&String> = ids.iter().filter(|id| loaded(id)).collect();
    assert!(left.is_empty(), "programs still loaded: {left:?}");
    assert!(!fx.dir.pins().exists(), "pin directory removed");
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "no enforcement once uninstalled"
    );
    assert_eq!(
        agent.audit_names().last().map(String::as_str),
        Some("uninstall")
    );
    let verify = std::process::Command::new(antispam_bin())
        .args(["audit", "verify"])
        .arg(&agent.audit_path)
        .output()
        .expect("antispam audit verify");
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn uninstall_through_a_running_agent_stops_it() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("lifecycle");
    let policy = fx.policy("ports = [25]\n");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let (code, out) = ctl(&agent, &["uninstall", "--reason", "moving hosts"]);
    assert_eq!(code, Some(0), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while agent.alive() {
        assert!(std::time::Instant::now() < deadline, "agent still running");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(attached(&fx.cg).is_empty(), "{:?}", attached(&fx.cg));
    let names = agent.audit_names();
    assert_eq!(
        names[names.len() - 2..],
        ["uninstall".to_string(), "agent_stop".to_string()],
        "{names:?}"
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
