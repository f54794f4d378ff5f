//! The audit log: the agent's start, reloads (applied and refused) and stop are a hash chain
//! that `antispam audit verify` checks, and any edit, removal or reordering is found.

use std::process::Command;

use antispam_tests::*;

fn verify(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(antispam_bin())
        .args(["audit", "verify", &path.display().to_string()])
        .output()
        .expect("antispam audit verify");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn audit_chain_records_the_agents_life_and_exposes_tampering() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("audit");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"10/minute\"\n");
    let first_sha = sha256sum(&policy);
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);

    std::fs::write(
        &policy,
        "ports = [25, 587]\n[default]\nrate = \"20/minute\"\n",
    )
    .unwrap();
    let second_sha = sha256sum(&policy);
    agent.reload();
    wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_generation", &[]) == Some(2.0)
    });
    std::fs::write(&policy, "ports = [25]\n[default]\nrate = \"twenty\"\n").unwrap();
    agent.reload();
    wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_reloads_total", &[("result", "error")]) == Some(1.0)
    });
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "antispam_audit_records_written_total", &[]),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "antispam_audit_head_sequence", &[]),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&m, "antispam_audit_write_failures_total", &[]),
        Some(0.0)
    );
    assert!(agent.stop().expect("exits").success());

    let path = agent.audit_path.clone();
    let text = std::fs::read_to_string(&path).expect("audit log written");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON record"))
        .collect();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "agent_start",
            "policy_reload",
            "policy_reload_refused",
            "agent_stop"
        ],
        "{text}"
    );
    assert_eq!(records[0]["details"]["policy_sha256"], first_sha.as_str());
    assert_eq!(records[1]["details"]["policy_sha256"], second_sha.as_str());
    assert_eq!(records[1]["details"]["previous_sha256"], first_sha.as_str());
    assert_eq!(records[1]["details"]["generation"], 2);
    let problems = records[2]["details"]["problems"].to_string();
    assert!(
        problems.contains(":3:8: malformed rate"),
        "the refusal names file:line:column: {problems}"
    );
    assert_eq!(
        records[2]["details"]["in_force_sha256"],
        second_sha.as_str()
    );
    assert_eq!(records[3]["details"]["reason"], "SIGTERM");

    let (code, out, err) = verify(&path);
    assert_eq!(code, Some(0), "intact chain: {err}");
    assert!(out.contains("ok: 4 records"), "{out}");

    let lines: Vec<&str> = text.lines().collect();
    let tampered = |name: &str, content: String| {
        let p = fx.dir.write(name, &content);
        let (code, _, err) = verify(&p);
        assert_eq!(code, Some(1), "{name} must fail verification");
        err
    };
    let err = tampered(
        "edited.jsonl",
        text.replace("\"generation\":2", "\"generation\":9"),
    );
    assert!(
        err.contains(":2: chain broken: record 2 was altered"),
        "{err}"
    );
    let err = tampered(
        "deleted.jsonl",
        [lines[0], lines[2], lines[3]].join("\n") + "\n",
    );
    assert!(
        err.contains(":2: chain broken: record 3 follows record 1: records 2 to 2 were removed"),
        "{err}"
    );
    let err = tampered(
        "reordered.jsonl",
        [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n",
    );
    assert!(err.contains(":2: chain broken:"), "{err}");
}

#[test]
fn agent_refuses_to_run_without_a_writable_audit_log() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("audit");
    let policy = fx.policy("ports = [25]\n");
    let blocker = fx.dir.write("not-a-dir", "");
    let audit = blocker.join("audit.jsonl");
    let (code, err) = run_refused(&[], &policy, fx.cg.path(), &fx.dir, Some(&audit));
    assert_eq!(code, Some(2), "stderr:\n{err}");
    assert!(err.contains("audit log:"), "{err}");
    let attached = run_ok(
        "bpftool",
        &["cgroup", "show", &fx.cg.path().display().to_string()],
    );
    assert_eq!(attached.lines().count(), 0, "nothing attached: {attached}");
}
