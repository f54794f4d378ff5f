//! Signed policies (`antispam run --policy-signers FILE`): configuration management pushes one
//! policy to every host, and a host loads only what a listed key signed (`ssh-keygen -Y sign
//! -n antispam-policy`, a detached FILE.sig beside the policy and each block list). Unsigned,
//! unlisted-key and stale signatures are refused as a syntax error is: the agent does not
//! start, or the policy in force stays, and the refusal names the file.

use std::{path::Path, process::Command, time::Duration};

use antispam_tests::*;

/// Signs `file` with `key` as an operator would: FILE.sig, namespace antispam-policy.
fn sign(key: &str, file: &Path) {
    ssh::sign_file(key, "antispam-policy", file);
}

fn generation(agent: &Agent) -> Option<f64> {
    metric_value(&agent.metrics(), "antispam_policy_generation", &[])
}

/// Waits until the policy generation is `g`, at most 5 s.
fn wait_generation(agent: &Agent, g: f64) -> bool {
    poll_until(
        bound(Duration::from_secs(5)),
        Duration::from_millis(50),
        || (generation(agent) == Some(g)).then_some(()),
    )
    .is_some()
}

/// Waits until the agent's stderr has `what`, at most 5 s.
fn wait_stderr(agent: &Agent, what: &str) {
    let said = poll_until(
        bound(Duration::from_secs(5)),
        Duration::from_millis(50),
        || agent.stderr().contains(what).then_some(()),
    );
    assert!(said.is_some(), "no {what:?} in stderr:\n{}", agent.stderr());
}

#[test]
fn only_a_policy_a_listed_key_signed_is_loaded() {
    if !require_kernel() {
        return;
    }
    if !ssh::available() {
        return;
    }
    let fx = Fixture::new("signed-policy");
    let (ops_key, ops_pub, _) = ssh::key(fx.dir.path(), "ops");
    let (eve_key, _, _) = ssh::key(fx.dir.path(), "eve");
    let signers = fx.dir.write(
        "allowed_signers",
        &format!("ops@example.org namespaces=\"antispam-policy\" {ops_pub}\n"),
    );
    let signers_arg = signers.display().to_string();
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");

    // Unsigned: the agent does not start, and says which file and how to sign it.
    let launch = Launch {
        extra: &["--policy-signers", &signers_arg],
        ..Launch::default()
    };
    let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    let st = agent
        .wait_exit(bound(Duration::from_secs(10)))
        .expect("an unsigned policy: the agent refuses to start");
    let err = agent.stderr();
    assert_ne!(st.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("{}:1:1", policy.display())) && err.contains("antispam-policy"),
        "names the file and how to sign it: {err}"
    );
    let attached = run_ok(
        "bpftool",
        &["cgroup", "show", &fx.cg.path().display().to_string()],
    );
    assert!(
        !attached.contains("antispam"),
        "nothing attached: {attached}"
    );

    // Signed by a key that is not listed: refused too.
    sign(&eve_key, &policy);
    let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    agent
        .wait_exit(bound(Duration::from_secs(10)))
        .expect("a policy signed by an unlisted key: refused");
    assert!(
        agent
            .stderr()
            .contains("is not in the allowed signers file"),
        "{}",
        agent.stderr()
    );

    // Signed by ops: it loads, and the log says who signed.
    sign(&ops_key, &policy);
    let agent = Agent::start_with(
        &policy,
        &fx.cg,
        &fx.dir,
        &["--policy-signers", &signers_arg],
    );
    assert!(
        agent.stderr().contains("signed by ops@example.org"),
        "{}",
        agent.stderr()
    );
    let server = fx.smtp_v4();
    let uid = unique_uid();
    assert!(tcp_probe_once(&fx.cg, uid, server).ok);
    assert!(
        tcp_probe_once(&fx.cg, uid, server).is_eperm(),
        "1/hour is in force"
    );
    let g = generation(&agent).expect("generation");

    // Changed without a new signature (a stale .sig): refused, the policy in force stays.
    std::fs::write(
        &policy,
        "ports = [25]\n[default]\nrate = \"100/minute\"\nburst = 100\n",
    )
    .unwrap();
    agent.reload();
    wait_stderr(&agent, "does not verify");
    assert_eq!(
        generation(&agent),
        Some(g),
        "the refused policy is not in force"
    );
    assert!(
        tcp_probe_once(&fx.cg, uid, server).is_eperm(),
        "still 1/hour"
    );

    // Its signature arrives a moment later (config management writes two files): the change of
    // the .sig alone brings it in, without a SIGHUP.
    sign(&ops_key, &policy);
    assert!(
        wait_generation(&agent, g + 1.0),
        "the signed policy is in force:\n{}",
        agent.stderr()
    );
    // (Budgets survive reloads: the first UID's bucket is still empty; a new UID has 100.)
    let fresh = unique_uid();
    assert!(
        tcp_probe_once(&fx.cg, fresh, server).ok && tcp_probe_once(&fx.cg, fresh, server).ok,
        "100/minute is in force"
    );

    // A block list it names needs its own signature.
    let list = fx.dir.write("blocked.txt", "192.0.2.0/24\n");
    std::fs::write(
        &policy,
        format!(
            "ports = [25]\n[default]\nrate = \"100/minute\"\nburst = 100\n[[block]]\nfiles = [\"{}\"]\n",
            list.display()
        ),
    )
    .unwrap();
    sign(&ops_key, &policy);
    agent.reload();
    wait_stderr(&agent, "block list");
    assert_eq!(
        generation(&agent),
        Some(g + 1.0),
        "an unsigned block list: refused"
    );
    sign(&ops_key, &list);
    agent.reload();
    assert!(
        wait_generation(&agent, g + 2.0),
        "policy and block list signed:\n{}",
        agent.stderr()
    );

    // Every refusal is in the audit log.
    let audit = std::fs::read_to_string(&agent.audit_path).unwrap();
    let refused = audit
        .lines()
        .filter(|l| l.contains("policy_refused") || l.contains("reload_refused"))
        .count();
    assert!(refused >= 2, "refused reloads audited:\n{audit}");
}

#[test]
fn check_verifies_signatures_as_the_agent_will() {
    if !ssh::available() {
        return;
    }
    let dir = TestDir::new();
    let (ops_key, ops_pub, _) = ssh::key(dir.path(), "ops");
    let signers = dir.write("allowed_signers", &format!("ops@example.org {ops_pub}\n"));
    let policy = dir.write("policy.toml", "ports = [25]\n");
    let check = |expect_ok: bool| {
        let out = Command::new(antispam_bin())
            .args(["check", "--policy-signers"])
            .arg(&signers)
            .arg(&policy)
            .output()
            .expect("antispam check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), expect_ok, "{text}");
        text
    };
    let text = check(false);
    assert!(text.contains("policy.toml.sig cannot be read"), "{text}");
    sign(&ops_key, &policy);
    let text = check(true);
    assert!(text.contains("signed by ops@example.org"), "{text}");
}
