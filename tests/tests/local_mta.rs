//! Mail through the local MTA counts: a private Postfix relays to a counting smtp-sink in the
//! test's netns, and a non-root UID in the test cgroup hands it mail through `sendmail` (each
//! execution of the setgid `postdrop` is one submission) and over SMTP to its loopback smtpd.
//! Both are charged to the submitting UID, with its direct connects, in one budget; suspensions
//! and the kill switch stop every path; the MTA's own deliveries are never refused.
//!
//! Where the kernel runs BPF LSM programs (Debian's kernels, `cargo xtask vm-test`), a
//! submission over budget fails in `execve` with EPERM; where it does not (this machine's kernel
//! refuses trampoline programs), the agent's tracepoint fallback kills `postdrop` before it runs.
//! Each test asserts what the hook in use guarantees.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use antispam_tests::*;

/// The budget of the tests: submissions a minute (and the burst).
const N: usize = 3;

/// What a mail test runs: fields drop in declaration order (the agent first, then Postfix,
/// the sink, the cgroup, the netns and the directory).
struct Mail {
    agent: Option<Agent>,
    pf: PrivatePostfix,
    sink: SmtpSink,
    cg: TestCgroup,
    ns: TestNetns,
    dir: TestDir,
}

impl Drop for Mail {
    fn drop(&mut self) {
        self.agent = None;
        self.dir.remove_pins();
    }
}

impl Mail {
    /// A Postfix with a loopback smtpd, a sink, a cgroup and an agent on `policy` (where
    /// `{smtpd}` is the smtpd's port). With `postfix_in_cgroup`, the whole MTA runs inside the
    /// test cgroup, so its own connects are decided too.
    fn start(policy: &str, postfix_in_cgroup: bool) -> Mail {
        let dir = TestDir::new();
        let ns = TestNetns::new();
        let cg = TestCgroup::new("mta");
        let sink = SmtpSink::start_counting(&ns, IpAddr::V4(ns.addr_v4()), 25, &dir);
        let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
        let pf = PrivatePostfix::start_with(
            &dir,
            sink.addr(),
            Some(listen),
            postfix_in_cgroup.then_some(&cg),
        );
        let text = policy.replace("{smtpd}", &listen.port().to_string());
        let path = dir.write("policy.toml", &text);
        let agent = Agent::start(&path, &cg, &dir);
        Mail {
            agent: Some(agent),
            pf,
            sink,
            cg,
            ns,
            dir,
        }
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    fn smtpd(&self) -> SocketAddr {
        self.pf.smtp_addr().expect("smtpd")
    }

    /// How the agent decides executions of postdrop here: "lsm" or "tracepoint".
    fn hook(&self) -> String {
        let s = self.agent().status_json();
        let hook = ev_str(&s["sendmail"], "hook").to_string();
        assert!(
            hook == "lsm" || hook == "tracepoint",
            "mail through sendmail is not decided here: {}",
            s["sendmail"]
        );
        hook
    }

    fn sendmail(&self, uid: u32, i: usize) -> SendmailResult {
        self.pf
            .sendmail_as(&self.cg, uid, "rcpt@example.test", &format!("message {i}"))
    }

    /// Waits until the sink has `n` messages, then checks that no more arrive for a while.
    fn delivered_exactly(&self, n: usize) {
        let got = self.sink.wait_messages(n, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            (got, self.sink.messages()),
            (n, n),
            "messages at the sink\n{}",
            self.pf.diagnostics()
        );
    }

    fn events(&self, uid: u32, path: &str, min: usize) -> Vec<serde_json::Value> {
        self.agent()
            .wait_events(|e| by_uid(uid)(e) && ev_str(e, "path") == path, min)
    }
}

fn verdicts(events: &[serde_json::Value]) -> (usize, usize) {
    let allowed = events
        .iter()
        .filter(|e| ev_str(e, "verdict") == "allowed")
        .count();
    (allowed, events.len() - allowed)
}

/// A refused `sendmail`: under BPF LSM, execve of postdrop fails with EPERM; under the
/// fallback, postdrop is killed before it runs. Either way sendmail fails at once.
fn assert_refused(r: &SendmailResult, hook: &str, what: &str) {
    assert!(!r.ok, "{what}: sendmail succeeded: {}", r.output);
    assert!(
        r.elapsed < bound(Duration::from_secs(1)),
        "{what}: took {:?}; output: {}",
        r.elapsed,
        r.output
    );
    eprintln!("{what}: refused in {:?}: {}", r.elapsed, r.output.trim());
    if hook == "lsm" {
        assert!(r.eperm, "{what}: no EPERM in: {}", r.output);
    }
}

fn policy(rate: &str) -> String {
    format!(
        r#"ports = [25, {{smtpd}}]
[default]
rate = "{rate}"
[[allow]]
users = ["postfix"]
"#
    )
}

#[test]
fn sendmail_delivers_exactly_the_budget() {
    if !require_kernel() {
        return;
    }
    let m = Mail::start(&policy(&format!("{N}/hour")), false);
    let hook = m.hook();
    let uid = unique_uid();
    let mut results = Vec::new();
    for i in 0..3 * N {
        results.push(m.sendmail(uid, i));
    }
    for (i, r) in results.iter().enumerate() {
        if i < N {
            assert!(r.ok, "sendmail {i} within the budget failed: {}", r.output);
        } else {
            assert_refused(r, &hook, &format!("sendmail {i}"));
        }
    }
    let slowest = results[N..].iter().map(|r| r.elapsed).max().unwrap();
    eprintln!("hook {hook}: refused sendmail runs took at most {slowest:?}");
    eprintln!(
        "what the caller of a refused sendmail sees ({:?}): {}",
        results[N].status,
        results[N].output.trim()
    );
    m.delivered_exactly(N);
    assert!(
        m.pf.wait_queue_empty(Duration::from_secs(10)),
        "{} files left in the queue\n{}",
        m.pf.queue_files(),
        m.pf.diagnostics()
    );
    let ev = m.events(uid, "sendmail", 3 * N);
    assert_eq!(verdicts(&ev), (N, 2 * N), "{}", show(&ev));
    for e in &ev {
        assert_eq!(ev_str(e, "program"), "/usr/sbin/postdrop", "{e}");
        assert!(e["dst"].is_null(), "{e}");
        let reason = ev_str(e, "reason");
        assert!(
            reason == "within_limit" || reason == "rate_limit_uid",
            "{e}"
        );
        // Under BPF LSM the decision is made while the caller (sendmail) still runs.
        if hook == "lsm" {
            assert_eq!(ev_str(e, "comm"), "sendmail", "{e}");
        }
    }
    let metrics = m.agent().metrics();
    let denied = metric_value(
        &metrics,
        "antispam_mail_attempts_total",
        &[
            ("path", "sendmail"),
            ("verdict", "denied"),
            ("reason", "rate_limit_uid"),
        ],
    );
    assert_eq!(denied, Some((2 * N) as f64), "{metrics}");

    // `antispam report` counts the attempts by path, from the event log.
    let out = std::process::Command::new(antispam_bin())
        .args(["report", "--since", "1h", "--format", "json", "--audit-log"])
        .arg(&m.agent().audit_path)
        .output()
        .expect("antispam report");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let sendmail = &r["violations"]["by_path"]["sendmail"];
    assert_eq!(
        (sendmail["allowed"].as_u64(), sendmail["denied"].as_u64()),
        (Some(N as u64), Some(2 * N as u64)),
        "{:#}",
        r["violations"]
    );
    let by_uid = &r["violations"]["denied"]["by_uid"][0];
    assert_eq!(by_uid["uid"], uid, "{by_uid}");
    assert_eq!(by_uid["paths"]["sendmail"], 2 * N as u64, "{by_uid}");
}

#[test]
fn smtp_to_the_local_mta_is_charged_to_the_submitter() {
    if !require_kernel() {
        return;
    }
    let m = Mail::start(&policy(&format!("{N}/hour")), false);
    let uid = unique_uid();
    let mut refused = 0;
    for i in 0..3 * N {
        let r =
            m.pf.submit_smtp_as(&m.cg, uid, "rcpt@example.test", &format!("smtp {i}"));
        if i < N {
            assert!(r.ok, "SMTP submission {i} failed: {}", r.output);
        } else {
            assert!(r.eperm, "SMTP submission {i} not refused: {}", r.output);
            assert!(r.elapsed < bound(Duration::from_secs(1)), "{:?}", r.elapsed);
            refused += 1;
        }
    }
    assert_eq!(refused, 2 * N);
    m.delivered_exactly(N);
    let ev = m.events(uid, "local_smtp", 3 * N);
    assert_eq!(verdicts(&ev), (N, 2 * N), "{}", show(&ev));
    assert!(ev.iter().all(|e| ev_str(e, "dst") == "127.0.0.1"
        && ev_u64(e, "dport") == Some(u64::from(m.smtpd().port()))));
}

#[test]
fn one_budget_for_direct_sendmail_and_local_smtp() {
    if !require_kernel() {
        return;
    }
    // 4 an hour (no refill within the test, however slow the machine), every path together.
    let m = Mail::start(&policy("4/hour"), false);
    let hook = m.hook();
    let uid = unique_uid();
    let direct = || swaks(&m.cg, uid, IpAddr::V4(m.ns.addr_v4()), 25);
    let local = |i: usize| {
        m.pf.submit_smtp_as(&m.cg, uid, "rcpt@example.test", &format!("mixed {i}"))
    };
    assert!(m.sendmail(uid, 0).ok);
    assert!(local(1).ok);
    assert!(direct().ok);
    assert!(m.sendmail(uid, 3).ok);
    // The budget is spent, whichever path comes next.
    assert_refused(&m.sendmail(uid, 4), &hook, "sendmail after 4");
    assert!(local(5).eperm);
    assert!(direct().eperm);
    let ev = m
        .agent()
        .wait_events(|e| by_uid(uid)(e) && ev_str(e, "verdict") == "denied", 3);
    let mut paths: Vec<&str> = ev.iter().map(|e| ev_str(e, "path")).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["direct", "local_smtp", "sendmail"], "{}", show(&ev));
    assert!(ev.iter().all(|e| ev_str(e, "reason") == "rate_limit_uid"));
}

#[test]
fn suspension_and_kill_switch_stop_every_path() {
    if !require_kernel() {
        return;
    }
    let m = Mail::start(&policy("100/minute"), false);
    let hook = m.hook();
    let uid = unique_uid();
    let uid_s = uid.to_string();
    let every_path = |expect_ok: bool, when: &str| {
        let t0 = Instant::now();
        let s = m.sendmail(uid, 0);
        let l =
            m.pf.submit_smtp_as(&m.cg, uid, "rcpt@example.test", "suspension test");
        let d = swaks(&m.cg, uid, IpAddr::V4(m.ns.addr_v4()), 25);
        if expect_ok {
            assert!(
                s.ok && l.ok && d.ok,
                "{when}: {}\n{}\n{}",
                s.output,
                l.output,
                d.output
            );
        } else {
            assert_refused(&s, &hook, when);
            assert!(l.eperm, "{when}: local SMTP: {}", l.output);
            assert!(d.eperm, "{when}: direct: {}", d.output);
        }
        eprintln!("{when}: three paths tried in {:?}", t0.elapsed());
    };
    every_path(true, "before");
    let (code, out) = ctl(
        m.agent(),
        &["suspend", "--uid", &uid_s, "--reason", "spam run"],
    );
    assert_eq!(code, Some(0), "{out}");
    every_path(false, "suspended");
    let (code, out) = ctl(
        m.agent(),
        &["unsuspend", "--uid", &uid_s, "--reason", "cleaned"],
    );
    assert_eq!(code, Some(0), "{out}");
    every_path(true, "unsuspended");
    let (code, out) = ctl(m.agent(), &["kill-switch", "on", "--reason", "outbreak"]);
    assert_eq!(code, Some(0), "{out}");
    every_path(false, "kill switch");
    let (code, out) = ctl(m.agent(), &["kill-switch", "off", "--reason", "over"]);
    assert_eq!(code, Some(0), "{out}");
    every_path(true, "kill switch off");
    // What was submitted while allowed is delivered: 3 rounds of sendmail + local SMTP.
    m.delivered_exactly(6);
    let reasons: Vec<String> = m
        .agent()
        .events()
        .iter()
        .filter(|e| by_uid(uid)(e) && ev_str(e, "verdict") == "denied")
        .map(|e| format!("{} {}", ev_str(e, "path"), ev_str(e, "reason")))
        .collect();
    for expected in [
        "sendmail suspended",
        "local_smtp suspended",
        "direct suspended",
        "sendmail kill_switch",
        "local_smtp kill_switch",
        "direct kill_switch",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "{expected} missing: {reasons:?}"
        );
    }
}

#[test]
fn the_mtas_own_deliveries_are_never_refused() {
    if !require_kernel() {
        return;
    }
    // Postfix runs inside the cgroup: its connects to the relay are decided, as user postfix.
    let m = Mail::start(&policy("2/hour"), true);
    let uid = unique_uid();
    assert!(m.sendmail(uid, 0).ok);
    assert!(m.sendmail(uid, 1).ok);
    let (code, out) = ctl(m.agent(), &["kill-switch", "on", "--reason", "outbreak"]);
    assert_eq!(code, Some(0), "{out}");
    // Queued before the kill switch: delivered by Postfix, whose user is allow-listed.
    m.delivered_exactly(2);
    let postfix = m
        .agent()
        .events()
        .into_iter()
        .filter(|e| ev_str(e, "user") == "postfix")
        .collect::<Vec<_>>();
    assert!(!postfix.is_empty(), "the MTA's connects are decided");
    assert!(
        postfix
            .iter()
            .all(|e| ev_str(e, "verdict") == "allowed" && ev_str(e, "reason") == "allowlist_user"),
        "{}",
        show(&postfix)
    );
}

/// A privileged submission program that executes itself again (Exim does, to deliver what it
/// received) is one submission, not two; a copy that is not privileged cannot use this. Under
/// the fallback the second execution is charged too (the hook sees the task only after it
/// runs the new program: docs/shared-hosting.md).
#[test]
fn a_privileged_program_executing_itself_is_one_submission() {
    if !require_kernel() {
        return;
    }
    let dir = TestDir::new();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setuid = bin.join("reexec-root");
    let plain = bin.join("reexec-plain");
    for (path, mode) in [(&setuid, 0o4755), (&plain, 0o755)] {
        std::fs::copy(reexec_bin(), path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cg = TestCgroup::new("reexec");
    let policy = dir.write(
        "policy.toml",
        &format!(
            r#"ports = [25]
[sendmail]
programs = ["{}", "{}"]
[default]
rate = "10/minute"
"#,
            setuid.display(),
            plain.display()
        ),
    );
    let agent = Agent::start(&policy, &cg, &dir);
    let hook = ev_str(&agent.status_json()["sendmail"], "hook").to_string();
    let uid = unique_uid();
    for p in [&setuid, &plain] {
        let mut cmd = std::process::Command::new(p);
        antispam_tests::client::as_user_in_cgroup(&mut cmd, &cg, uid);
        let (status, out, _) =
            antispam_tests::client::run_bounded(&mut cmd, Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: {out}",
            p.display()
        );
    }
    let ev = agent.wait_events(|e| by_uid(uid)(e) && ev_str(e, "path") == "sendmail", 4);
    let of = |p: &PathBuf, reason: &str| {
        ev.iter()
            .filter(|e| ev_str(e, "program") == p.display().to_string())
            .filter(|e| ev_str(e, "reason") == reason)
            .count()
    };
    assert_eq!(
        of(&plain, "within_limit"),
        2,
        "unprivileged: charged twice\n{}",
        show(&ev)
    );
    let (charged, exempt) = if hook == "lsm" { (1, 1) } else { (2, 0) };
    assert_eq!(
        of(&setuid, "within_limit"),
        charged,
        "{hook}\n{}",
        show(&ev)
    );
    let metrics = agent.metrics();
    let exempted = metric_value(
        &metrics,
        "antispam_mail_attempts_total",
        &[
            ("path", "sendmail"),
            ("verdict", "allowed"),
            ("reason", "mta_program"),
        ],
    );
    assert_eq!(exempted.unwrap_or(0.0), exempt as f64, "{hook}\n{metrics}");
    drop(agent);
    dir.remove_pins();
}

/// The reexec helper binary built from this package.
fn reexec_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reexec"))
}
