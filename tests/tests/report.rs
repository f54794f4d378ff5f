//! `antispam report`: after a real agent has refused connects, suspended and lifted a UID,
//! switched the kill switch on and off and reloaded its policy, the report lists exactly that,
//! from the audit log and the event log the audit log names; a tampered copy of the audit log
//! makes it exit 1 with the broken line.

use std::{path::Path, process::Command};

use antispam_tests::*;

/// Runs an operator's command against the agent and checks that it succeeds.
fn operate(agent: &Agent, args: &[&str]) {
    let (code, out) = ctl(agent, args);
    assert_eq!(code, Some(0), "antispam {args:?}: {out}");
}

/// `antispam report --since 1h --audit-log AUDIT --format FORMAT`: (exit code, stdout, stderr).
fn report(audit: &Path, format: &str) -> (Option<i32>, String, String) {
    let out = Command::new(antispam_bin())
        .args(["report", "--since", "1h", "--format", format, "--audit-log"])
        .arg(audit)
        .output()
        .expect("antispam report");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_report_lists_what_the_agent_and_its_operators_did() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("report");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 2\n");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let uid = unique_uid();
    let u = uid.to_string();

    // Two connects within the burst, then three refused by the rate limit…
    for _ in 0..2 {
        assert!(tcp_probe_once(&fx.cg, uid, server).ok, "within the burst");
    }
    for _ in 0..3 {
        assert!(
            tcp_probe_once(&fx.cg, uid, server).is_eperm(),
            "over the limit"
        );
    }
    // …one refused while the UID is suspended, one while the kill switch is on.
    operate(
        &agent,
        &["suspend", "--uid", &u, "--reason", "report test: spam run"],
    );
    assert!(tcp_probe_once(&fx.cg, uid, server).is_eperm());
    operate(
        &agent,
        &["unsuspend", "--uid", &u, "--reason", "mailbox cleaned"],
    );
    operate(
        &agent,
        &["kill-switch", "on", "--reason", "report test outbreak"],
    );
    assert!(tcp_probe_once(&fx.cg, uid, server).is_eperm());
    operate(&agent, &["kill-switch", "off", "--reason", "contained"]);

    std::fs::write(
        &policy,
        "ports = [25]\n[default]\nrate = \"2/hour\"\nburst = 2\n",
    )
    .unwrap();
    let reloaded_sha = sha256sum(&policy);
    agent.reload();
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_generation", &[]) == Some(2.0)
    });
    assert_eq!(
        metric_value(&m, "antispam_policy_generation", &[]),
        Some(2.0)
    );
    assert!(agent.stop().expect("exits").success());

    let (code, json, err) = report(&agent.audit_path, "json");
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    let audit = std::fs::read_to_string(&agent.audit_path).unwrap();
    let records = audit.lines().count() as u64;
    assert_eq!(
        records, 7,
        "start, suspend, unsuspend, 2 kill switch, reload, stop:\n{audit}"
    );
    assert_eq!(r["chain"]["status"], "verified", "{r:#}");
    assert_eq!(r["chain"]["records"], records);

    let v = &r["violations"];
    assert_eq!(v["unavailable"], serde_json::Value::Null, "{v:#}");
    let log = std::path::absolute(&agent.log_path).unwrap();
    assert_eq!(v["sources"][0]["path"], log.display().to_string());
    assert_eq!(v["denied"]["total"], 5, "{v:#}");
    let by_uid = v["denied"]["by_uid"].as_array().unwrap();
    assert_eq!(by_uid.len(), 1, "only the test's UID was refused: {v:#}");
    assert_eq!(by_uid[0]["uid"], uid);
    assert_eq!(by_uid[0]["count"], 5);
    let reasons = serde_json::json!({"rate_limit_uid": 3, "suspended": 1, "kill_switch": 1});
    assert_eq!(by_uid[0]["reasons"], reasons);
    assert_eq!(v["denied"]["by_cgroup"][0]["cgroup"], fx.cg.relative());
    assert_eq!(v["would_deny"]["total"], 0);

    let s = r["suspensions"].as_array().unwrap();
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["target"], serde_json::json!({"uid": uid}));
    assert_eq!(s[0]["status"], "unsuspended");
    assert_eq!(s[0]["began"]["details"]["reason"], "report test: spam run");
    assert_eq!(s[0]["ended"]["details"]["by"]["user"], "root");
    assert_eq!(s[0]["ended"]["details"]["reason"], "mailbox cleaned");

    let k = r["kill_switch"].as_array().unwrap();
    let changes: Vec<(bool, &str)> = k
        .iter()
        .map(|e| {
            (
                e["details"]["on"] == true,
                e["details"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [(true, "report test outbreak"), (false, "contained")]
    );

    let reloads = r["policy"]["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 1);
    assert_eq!(reloads[0]["details"]["policy_sha256"], reloaded_sha);
    assert_eq!(reloads[0]["details"]["generation"], 2);
    let agent_events: Vec<&str> = r["agent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(agent_events, ["agent_start", "agent_stop"]);
    assert_eq!(r["break_glass"]["grants"], serde_json::json!([]));
    assert_eq!(r["control_refusals"], serde_json::json!([]));

    let (code, md, err) = report(&agent.audit_path, "markdown");
    assert_eq!(code, Some(0), "{err}");
    eprintln!("{md}");
    for expected in [
        format!("Hash chain **verified**: {records} records"),
        format!(
            "| {uid} | - | 5 | direct (5) | kill_switch (1), rate_limit_uid (3), suspended (1) |"
        ),
        format!("| uid {uid} | manual | report test: spam run | root (uid 0, pid "),
        "unsuspended by root (uid 0, pid ".into(),
        "| yes | root (uid 0, pid ".into(),
        "| report test outbreak |".into(),
        format!("| {reloaded_sha} |"),
    ] {
        assert!(md.contains(&expected), "missing {expected:?} in:\n{md}");
    }

    // A copy with the kill switch's "off" record edited: exit 1, the line named.
    let line = audit
        .lines()
        .position(|l| l.contains("\"contained\""))
        .unwrap()
        + 1;
    let tampered = fx.dir.write(
        "tampered.jsonl",
        &audit.replace("\"contained\"", "\"false alarm\""),
    );
    let (code, md, err) = report(&tampered, "markdown");
    assert_eq!(code, Some(1), "a broken chain fails: {err}");
    let warning =
        format!("**WARNING: the hash chain is BROKEN at line {line}: record {line} was altered");
    assert!(md.contains(&warning), "{md}");
    assert!(
        err.contains(&format!(":{line}: audit chain BROKEN")),
        "{err}"
    );
    let (code, json, _) = report(&tampered, "json");
    assert_eq!(code, Some(1));
    let r: serde_json::Value = serde_json::from_str(&json).expect("still a JSON report");
    assert_eq!(r["chain"]["status"], "broken");
    assert_eq!(r["chain"]["line"], line);
}
