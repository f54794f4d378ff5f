//! The sealed audit log: `antispam audit setup-keys` makes the key, the agent seals every record
//! with a key that evolves every epoch and erases the old one, and a root who rewrites a copy of
//! the log with every SHA-256 hash recomputed fails `audit verify --key`, at the record it
//! changed. The head is published (metrics, status, checkpoint lines), and a log cut after a
//! checkpoint fails `audit verify --expect-head`.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use antispam_tests::*;
use serde_json::{json, Value};

fn antispam(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(antispam_bin())
        .args(args)
        .output()
        .expect("antispam");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(path: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["audit", "verify"];
    let p = path.display().to_string();
    args.push(&p);
    args.extend_from_slice(extra);
    antispam(&args)
}

/// SHA-256 by coreutils, an implementation independent of the agent's.
fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What a root does to hide a record: `edit` applied to the records, then every hash computed
/// again the way the chain does (SHA-256 of the previous hash and the record's canonical JSON
/// without "hash" and "seal"). The seals are left as they were: only the key makes them.
fn rewrite(text: &str, edit: impl Fn(usize, &mut serde_json::Map<String, Value>)) -> String {
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(Value::Object(mut rec)) = serde_json::from_str::<Value>(line) else {
            panic!("line {}: not a record: {line}", i + 1);
        };
        edit(i, &mut rec);
        rec.insert("prev".into(), json!(prev));
        let mut content = rec.clone();
        content.remove("hash");
        content.remove("seal");
        let mut data = prev.as_bytes().to_vec();
        data.extend_from_slice(Value::Object(content).to_string().as_bytes());
        let hash = sha256_hex(&data);
        rec.insert("hash".into(), json!(hash));
        prev = hash;
        out.push_str(&Value::Object(rec).to_string());
        out.push('\n');
    }
    out
}

/// The last checkpoint line in the agent's log: (seq, hash).
fn last_checkpoint(stderr: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("antispam-audit-checkpoint "))
        .unwrap_or_else(|| panic!("no checkpoint line in:\n{stderr}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    (field("seq=").parse().expect("seq"), field("hash="))
}

#[test]
fn a_sealed_log_rewritten_by_root_fails_verify_with_the_key_and_a_cut_fails_the_checkpoint() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("sealed_audit");
    let audit = fx.dir.path().join("audit.jsonl");
    let key_file = fx.dir.path().join("audit.key");
    let a = audit.display().to_string();

    // Key set-up: the key file is root's only, the verification key is printed once.
    let (code, out, err) = antispam(&["audit", "setup-keys", "--audit-log", &a, "--epoch", "10s"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let vk = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AS1-"))
        .unwrap_or_else(|| panic!("no verification key in {out}"))
        .to_string();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first_key: Value = serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap())
        .expect("key file is JSON");
    assert!(!std::fs::read_to_string(&key_file)
        .unwrap()
        .contains(&vk[4..12].to_ascii_lowercase()));
    let (code, _, err) = antispam(&["audit", "setup-keys", "--audit-log", &a]);
    assert_eq!(
        code,
        Some(2),
        "a second set-up does not replace the key: {err}"
    );

    let policy = fx.policy("ports = [25]\n[default]\nrate = \"10/minute\"\n");
    let mut agent = Agent::spawn(
        &policy,
        &fx.cg,
        &fx.dir,
        &Launch {
            audit_path: Some(audit.clone()),
            extra: &["--audit-checkpoint-every", "2s"],
            ..Launch::default()
        },
    );
    agent
        .wait_ready(bound(Duration::from_secs(10)))
        .expect("agent ready");
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "antispam_audit_sealed", &[]),
        Some(1.0),
        "{m}"
    );
    let status = agent.status_json();
    assert_eq!(
        status["audit"]["seal_key"].as_str().map(str::len),
        Some(16),
        "{status}"
    );
    let head_hash = status["audit"]["head_hash"].as_str().unwrap().to_string();
    let head_seq = status["audit"]["head_sequence"].as_u64().unwrap();
    assert_eq!(
        metric_value(
            &m,
            "antispam_audit_head_info",
            &[("seq", &head_seq.to_string()), ("hash", &head_hash)]
        ),
        Some(1.0),
        "the metrics carry the head's hash: {m}"
    );

    // Records in the first epoch, then wait for the key to evolve (the agent does it on its
    // own, with nothing written), then records in a later epoch.
    let u = unique_uid().to_string();
    let (code, out) = ctl(
        &agent,
        &["suspend", "--uid", &u, "--reason", "spam run INC-1"],
    );
    assert_eq!(code, Some(0), "{out}");
    let epoch0 = metric_value(&agent.metrics(), "antispam_audit_seal_epoch", &[]).unwrap();
    let t = Instant::now();
    while metric_value(&agent.metrics(), "antispam_audit_seal_epoch", &[]) == Some(epoch0) {
        assert!(
            t.elapsed() < bound(Duration::from_secs(15)),
            "the key never evolved"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let now_key: Value =
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert!(
        now_key["epoch"].as_u64() > first_key["epoch"].as_u64(),
        "{now_key}"
    );
    assert_ne!(
        now_key["key"], first_key["key"],
        "the old key is replaced on disk"
    );
    let (code, out) = ctl(&agent, &["unsuspend", "--uid", &u, "--reason", "cleaned"]);
    assert_eq!(code, Some(0), "{out}");
    // A periodic checkpoint after the unsuspend.
    let records_now = agent.audit_events().len() as u64;
    let t = Instant::now();
    while last_checkpoint(&agent.stderr()).0 < records_now {
        assert!(
            t.elapsed() < bound(Duration::from_secs(10)),
            "no checkpoint of the head"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stderr = agent.stderr();
    assert!(
        stderr.contains("why=sealing key evolved to epoch"),
        "{stderr}"
    );
    let (cp_seq, cp_hash) = last_checkpoint(&stderr);
    assert!(agent.stop().expect("exits").success());

    // The log as written verifies, epoch by epoch, and holds the checkpoint.
    let text = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "sealing_started", "{text}");
    assert!(
        events
            .iter()
            .all(|e| e["seal"].is_string() && e["epoch"].is_u64()),
        "{text}"
    );
    let cp = format!("{cp_seq}:{cp_hash}");
    let (code, out, err) = verify(&audit, &["--key", &vk, "--expect-head", &cp]);
    assert_eq!(code, Some(0), "{out}{err}");
    eprintln!("verify --key --expect-head:\n{out}");
    assert!(
        out.contains("sealed ok") && out.contains("verify with the key"),
        "{out}"
    );
    assert!(out.contains("holds the checkpoint"), "{out}");
    let epochs = out.lines().filter(|l| l.contains("sealed ok")).count();
    assert!(epochs >= 2, "records in two epochs at least: {out}");

    // Root rewrites the suspension's reason in a copy and recomputes every hash.
    let at = events
        .iter()
        .position(|e| e["event"] == "suspend")
        .expect("the suspend record");
    let forged = rewrite(&text, |i, rec| {
        if i == at {
            rec["details"]["reason"] = json!("routine maintenance");
        }
    });
    assert_ne!(forged, text);
    let copy = fx.dir.write("forged.jsonl", &forged);
    let (code, out, err) = verify(&copy, &[]);
    assert_eq!(
        code,
        Some(0),
        "without the key the recomputed chain passes: {out}{err}"
    );
    let (code, out, err) = verify(&copy, &["--key", &vk]);
    assert_eq!(code, Some(1), "{out}{err}");
    let seq = events[at]["seq"].as_u64().unwrap();
    let epoch = events[at]["epoch"].as_u64().unwrap();
    eprintln!("verify --key on the rewritten copy:\n{out}{err}");
    let named = format!(":{}: seal broken at record {seq}, epoch {epoch}:", at + 1);
    assert!(err.contains(&named), "names the record: {err}");

    // With every seal stripped as well, it still fails.
    let stripped = rewrite(&text, |_, rec| {
        rec.remove("seal");
        rec.remove("epoch");
    });
    let copy = fx.dir.write("stripped.jsonl", &stripped);
    let (code, out, err) = verify(&copy, &["--key", &vk]);
    assert_eq!(code, Some(1), "{out}{err}");

    // A copy cut after the checkpoint: a valid shorter chain, refused against the checkpoint.
    let cut: String = text
        .lines()
        .take(cp_seq as usize - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let copy = fx.dir.write("cut.jsonl", &cut);
    let (code, out, err) = verify(&copy, &["--key", &vk]);
    assert_eq!(
        code,
        Some(0),
        "the cut copy's chain and seals hold: {out}{err}"
    );
    let (code, out, err) = verify(&copy, &["--key", &vk, "--expect-head", &cp]);
    assert_eq!(code, Some(1), "{out}{err}");
    eprintln!("verify --expect-head on the cut copy:\n{out}{err}");
    assert!(
        err.contains(&format!("the log ends at record {}", cp_seq - 1)),
        "{err}"
    );
    // A wrong key fails too, and so does a malformed one (exit 2).
    let mut other = vk.clone();
    let flip = if other.as_bytes()[4] == b'0' {
        "1"
    } else {
        "0"
    };
    other.replace_range(4..5, flip);
    let (code, _, err) = verify(&audit, &["--key", &other]);
    assert_eq!(code, Some(1), "{err}");
    let (code, _, err) = verify(&audit, &["--key", "AS1-nonsense"]);
    assert_eq!(code, Some(2), "{err}");
}
