//! Messages, not only connections: a private Postfix configured with the lines of
//! docs/mta-policy-service.md (read from the page itself, so the documentation and the test
//! cannot drift apart) asks the agent's policy service about every recipient and message,
//! over SMTP (policy delegation) and from sendmail/pickup (milter). Real clients: swaks, the
//! `smtp_messages` client (several messages in one SMTP session), Postfix's own `sendmail`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use antispam_tests::*;

/// The fenced block after `<!-- antispam-test: NAME -->` in docs/mta-policy-service.md.
fn doc_block(name: &str) -> String {
    doc_block_in("docs/mta-policy-service.md", name)
}

/// The fenced block after `<!-- antispam-test: NAME -->` in the page `page`.
fn doc_block_in(page: &str, name: &str) -> String {
    let path = workspace_root().join(page);
    let doc =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let marker = format!("<!-- antispam-test: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} missing in {}", path.display()));
    let rest = &doc[at + marker.len()..];
    let start = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let end = body.find("```").expect("the block's closing fence");
    body[..end].to_string()
}

/// The documented socket path, as the documented lines say it.
const DOC_SOCKET: &str = "/run/antispam/mta/mta.sock";

/// Everything a test runs; fields drop in order (agent, Postfix, sink, cgroups, netns, dir).
struct Mta {
    agent: Option<Agent>,
    pf: PrivatePostfix,
    sink: SmtpSink,
    /// The cgroup the agent is attached to, where the clients run.
    cg: TestCgroup,
    _ns: TestNetns,
    dir: TestDir,
    socket: PathBuf,
    policy: PathBuf,
}

impl Drop for Mta {
    fn drop(&mut self) {
        self.agent = None;
        self.dir.remove_pins();
    }
}

impl Mta {
    fn start(policy: &str) -> Mta {
        Mta::start_with(policy, |_| String::new())
    }

    /// Like `start`, with `more(dir)` appended to the documented main.cf lines.
    fn start_with(policy: &str, more: impl FnOnce(&TestDir) -> String) -> Mta {
        let dir = TestDir::new();
        let ns = TestNetns::new();
        let cg = TestCgroup::new("mtapol");
        let sink = SmtpSink::start_counting(&ns, IpAddr::V4(ns.addr_v4()), 25, &dir);
        let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
        let socket = dir.path().join("mta").join("mta.sock");
        let lines = doc_block("postfix-main.cf");
        assert!(lines.contains(DOC_SOCKET), "{lines}");
        assert_eq!(
            doc_block_in("docs/shared-hosting.md", "postfix-main.cf"),
            lines,
            "docs/shared-hosting.md gives other main.cf lines than docs/mta-policy-service.md"
        );
        let lines = lines.replace(DOC_SOCKET, &socket.display().to_string()) + &more(&dir);
        let pf = PrivatePostfix::start_configured(&dir, sink.addr(), Some(listen), None, &lines);
        let text = policy
            .replace("{smtpd}", &listen.port().to_string())
            .replace("{cg}", &cg.relative());
        let policy = dir.write("policy.toml", &text);
        let mut m = Mta {
            agent: None,
            pf,
            sink,
            cg,
            _ns: ns,
            dir,
            socket,
            policy,
        };
        m.start_agent();
        m
    }

    fn start_agent(&mut self) {
        let sock = self.socket.display().to_string();
        self.agent = Some(Agent::start_with(
            &self.policy,
            &self.cg,
            &self.dir,
            &["--mta-socket", &sock],
        ));
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    fn smtpd(&self) -> SocketAddr {
        self.pf.smtp_addr().expect("smtpd")
    }

    /// `count` messages in one SMTP session as `uid`, each to `rcpts`; one JSON value per
    /// message.
    fn session(&self, uid: u32, count: usize, rcpts: &[&str]) -> Vec<serde_json::Value> {
        session_in(&self.cg, self.smtpd(), uid, count, rcpts)
    }

    /// The policy service's records (`"event"` = `message` or `recipient`) so far.
    fn records(&self, event: &str) -> Vec<serde_json::Value> {
        self.agent()
            .events()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    fn wait_records(&self, event: &str, uid: u32, n: usize) -> Vec<serde_json::Value> {
        let mut got = Vec::new();
        poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
            got = self
                .records(event)
                .into_iter()
                .filter(|e| e["uid"] == uid)
                .collect();
            (got.len() >= n).then_some(())
        });
        got
    }

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
}

fn session_in(
    cg: &TestCgroup,
    addr: SocketAddr,
    uid: u32,
    count: usize,
    rcpts: &[&str],
) -> Vec<serde_json::Value> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_smtp_messages"));
    cmd.arg(addr.to_string())
        .arg(format!("uid{uid}@example.test"))
        .arg(count.to_string())
        .arg(rcpts.join(","));
    client::as_user_in_cgroup(&mut cmd, cg, uid);
    let (st, out, _) = client::run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| s.success()),
        "smtp_messages: {st:?}\n{out}"
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.last().is_some_and(|l| l["quit"].is_string()),
        "the session ended: {out}"
    );
    lines.into_iter().filter(|l| l["i"].is_u64()).collect()
}

fn accepted(m: &serde_json::Value) -> bool {
    m["end"].as_str().is_some_and(|e| e.starts_with("250"))
}

/// The first 4xx/5xx reply of a message (at RCPT or at the end of data).
fn refusal(m: &serde_json::Value) -> Option<String> {
    let rcpt = m["rcpt"].as_array().into_iter().flatten();
    rcpt.chain(std::iter::once(&m["end"]))
        .filter_map(|r| r.as_str())
        .find(|r| r.starts_with('4') || r.starts_with('5'))
        .map(str::to_string)
}

fn policy(extra: &str) -> String {
    format!(
        r#"ports = [25, {{smtpd}}]
[default]
rate = "100/minute"
{extra}
[[allow]]
users = ["postfix"]
"#
    )
}

/// The queue ids Postfix's maillog gives messages from `uid` (pickup: `uid=N`) or with the
/// sender `uid<N>@example.test`.
fn queue_ids_of(log: &str, uid: u32) -> Vec<String> {
    let from = format!("from=<uid{uid}@example.test>");
    log.lines()
        .filter(|l| l.contains(&from) || l.contains(&format!("uid={uid} ")))
        .filter_map(|l| {
            let after = l.split(": ").nth(1)?;
            let id = after.split(':').next()?;
            (id.len() >= 8 && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| id.to_string())
        })
        .collect()
}

#[test]
fn one_smtp_session_gets_exactly_its_message_budget() {
    if !require_kernel() {
        return;
    }
    const N: usize = 3;
    let m = Mta::start(&policy(&format!("messages = \"{N}/minute\"")));
    let uid = unique_uid();
    let t0 = Instant::now();
    let msgs = m.session(uid, N + 3, &["rcpt@example.test"]);
    eprintln!(
        "{} messages in one session in {:?}",
        msgs.len(),
        t0.elapsed()
    );
    for (i, msg) in msgs.iter().enumerate() {
        if i < N {
            assert!(accepted(msg), "message {i} within the budget: {msg}");
        } else {
            let r = refusal(msg).unwrap_or_else(|| panic!("message {i} not refused: {msg}"));
            // Postfix puts the recipient before the text (docs/mta-policy-service.md).
            let text = format!(
                "451 4.7.1 <rcpt@example.test>: Recipient address rejected: antispam: message limit {N}/minute of uid {uid} (default) reached; try again in "
            );
            assert!(r.starts_with(&text), "message {i}: {r}\nexpected: {text}");
            eprintln!("message {i}: {r}");
            assert!(!accepted(msg), "{msg}");
        }
    }
    // Refused at SMTP: returned to the client, nothing of them is queued or delivered.
    m.delivered_exactly(N);
    assert!(m.pf.wait_queue_empty(Duration::from_secs(10)));
    let recs = m.wait_records("message", uid, N);
    assert_eq!(recs.len(), N, "{}", show(&recs));
    let ids = queue_ids_of(&m.pf.log(), uid);
    for r in &recs {
        assert_eq!(r["path"], "local_smtp", "{r}");
        assert_eq!(r["verdict"], "allowed", "{r}");
        assert_eq!(r["recipients"], 1, "{r}");
        assert_eq!(r["recipient_domains"][0], "example.test", "{r}");
        assert!(r.get("recipient_addresses").is_none(), "privacy: {r}");
        assert_eq!(r["cgroup"], m.cg.relative(), "{r}");
        let q = r["queue_id"].as_str().unwrap_or_default();
        assert!(
            ids.iter().any(|i| i == q),
            "queue id {q} not in the maillog ({ids:?})"
        );
    }
    let refused = m.wait_records("recipient", uid, 3);
    assert_eq!(refused.len(), 3, "{}", show(&refused));
    assert!(refused
        .iter()
        .all(|r| r["reason"] == "message_limit" && r["action"] == "defer"));
    let metrics = m.agent().metrics();
    let v = |name, labels: &[(&str, &str)]| metric_value(&metrics, name, labels);
    assert_eq!(
        v(
            "antispam_messages_total",
            &[("path", "local_smtp"), ("verdict", "allowed")]
        ),
        Some(N as f64),
        "{metrics}"
    );
    assert_eq!(
        v("antispam_recipients_total", &[("verdict", "denied")]),
        Some(3.0)
    );
    // The kernel saw one connection, the policy service N + 3 messages.
    let ev = m.agent().wait_events(
        |e| e["event"].is_null() && by_uid(uid)(e) && ev_str(e, "path") == "local_smtp",
        1,
    );
    assert_eq!(ev.len(), 1, "{}", show(&ev));
    let queries = v("antispam_mta_queries_total", &[]).unwrap_or(0.0);
    let secs = v("antispam_mta_decision_seconds_total", &[]).unwrap_or(0.0);
    eprintln!(
        "policy service: {queries} questions, {:.1} µs per decision on average",
        secs * 1e6 / queries.max(1.0)
    );
}

#[test]
fn every_recipient_counts_on_every_path() {
    if !require_kernel() {
        return;
    }
    let m = Mta::start(&policy(r#"recipients = "5/minute""#));
    let uid = unique_uid();
    // sendmail with 3 recipients: 3 of 5.
    let r = m.pf.sendmail_as(
        &m.cg,
        uid,
        "a@example.test b@example.test c@example.test",
        "one",
    );
    assert!(r.ok, "{}", r.output);
    let recs = m.wait_records("message", uid, 1);
    assert_eq!(recs.len(), 1, "{}", show(&recs));
    assert_eq!(
        (recs[0]["path"].as_str(), recs[0]["recipients"].as_u64()),
        (Some("sendmail"), Some(3))
    );
    assert_eq!(recs[0]["verdict"], "allowed", "{}", recs[0]);
    // sendmail with 3 more: only 2 are left, the whole message is refused (temporarily) and
    // stays in Postfix's queue.
    let r = m.pf.sendmail_as(
        &m.cg,
        uid,
        "d@example.test e@example.test f@example.test",
        "two",
    );
    assert!(
        r.ok,
        "sendmail hands the message to the queue: {}",
        r.output
    );
    let recs = m.wait_records("message", uid, 2);
    assert_eq!(recs.len(), 2, "{}", show(&recs));
    let refused = &recs[1];
    assert_eq!(refused["verdict"], "denied", "{refused}");
    assert_eq!(refused["reason"], "recipient_limit", "{refused}");
    assert_eq!(refused["recipients"], 3, "{refused}");
    let text =
        format!("antispam: recipient limit 5/minute of uid {uid} (default) reached; try again in ");
    assert!(
        refused["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&text),
        "{refused}"
    );
    m.delivered_exactly(1);
    assert!(
        m.pf.queue_files() > 0,
        "the refused message is kept\n{}",
        m.pf.diagnostics()
    );
    let log =
        m.pf.wait_log(Duration::from_secs(5), |l| l.contains("milter-reject"));
    assert!(
        log.contains(&text),
        "Postfix logs the refusal with its text\n{log}"
    );
    // Over SMTP, 2 recipients still fit; a third is refused at RCPT.
    let msgs = m.session(
        uid,
        1,
        &["g@example.test", "h@example.test", "i@example.test"],
    );
    let rc: Vec<&str> = msgs[0]["rcpt"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        rc[0].starts_with("250") && rc[1].starts_with("250"),
        "{rc:?}"
    );
    assert!(
        rc[2].starts_with("451 4.7.1 <i@example.test>: Recipient address rejected: antispam: recipient limit 5/minute"),
        "{rc:?}"
    );
    assert!(accepted(&msgs[0]), "{}", msgs[0]);
    let recs = m.wait_records("message", uid, 3);
    assert_eq!(
        recs[2]["recipients"], 2,
        "the accepted recipients are charged: {}",
        recs[2]
    );
    assert_eq!(recs[2]["path"], "local_smtp");
    m.delivered_exactly(2);
    let metrics = m.agent().metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "antispam_recipients_total",
            &[("verdict", "allowed")]
        ),
        Some(5.0),
        "{metrics}"
    );
}

#[test]
fn sendmail_and_local_smtp_messages_are_recorded_and_reported() {
    if !require_kernel() {
        return;
    }
    let m = Mta::start(&policy(r#"messages = "10/minute""#));
    let uid = unique_uid();
    let r = m.pf.sendmail_as(
        &m.cg,
        uid,
        "x@one.example.test, y@two.example.test",
        "by sendmail",
    );
    assert!(r.ok, "{}", r.output);
    let s =
        m.pf.submit_smtp_as(&m.cg, uid, "z@three.example.test", "by SMTP");
    assert!(s.ok, "{}", s.output);
    m.delivered_exactly(2);
    let recs = m.wait_records("message", uid, 2);
    assert_eq!(recs.len(), 2, "{}", show(&recs));
    let log = m.pf.log();
    let ids = queue_ids_of(&log, uid);
    let by = |path: &str| {
        recs.iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no {path} record: {}", show(&recs)))
    };
    let sm = by("sendmail");
    assert_eq!(sm["recipients"], 2, "{sm}");
    assert_eq!(
        sm["recipient_domains"],
        serde_json::json!(["one.example.test", "two.example.test"])
    );
    let ls = by("local_smtp");
    assert_eq!(
        ls["client"].as_str().map(|c| c.starts_with("127.0.0.1:")),
        Some(true),
        "{ls}"
    );
    for r in [sm, ls] {
        assert_eq!(r["uid"], uid, "{r}");
        assert_eq!(r["sender_domain"], "example.test", "{r}");
        let q = r["queue_id"].as_str().unwrap_or_default();
        assert!(ids.iter().any(|i| i == q), "{q} not among {ids:?}\n{log}");
        assert!(r["size"].as_u64().unwrap_or(0) > 0, "{r}");
    }
    let out = std::process::Command::new(antispam_bin())
        .args(["report", "--since", "1h", "--format", "json", "--audit-log"])
        .arg(&m.agent().audit_path)
        .output()
        .expect("antispam report");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let msgs = &rep["violations"]["messages"];
    assert_eq!(msgs["by_path"]["sendmail"]["allowed"], 1, "{msgs:#}");
    assert_eq!(msgs["by_path"]["local_smtp"]["allowed"], 1, "{msgs:#}");
    assert_eq!(msgs["by_path"]["sendmail"]["recipients"], 2, "{msgs:#}");
    let key = msgs["by_uid"]
        .as_array()
        .and_then(|a| a.iter().find(|k| k["uid"] == uid))
        .unwrap_or_else(|| panic!("{msgs:#}"));
    assert_eq!(
        (key["messages"].as_u64(), key["recipients"].as_u64()),
        (Some(2), Some(3)),
        "{key}"
    );
    let md = std::process::Command::new(antispam_bin())
        .args(["report", "--since", "1h", "--audit-log"])
        .arg(&m.agent().audit_path)
        .output()
        .expect("antispam report");
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("Messages through the local MTA"), "{md}");
}

#[test]
fn with_the_agent_stopped_postfix_defers_and_keeps_the_mail() {
    if !require_kernel() {
        return;
    }
    let mut m = Mta::start(&policy(r#"messages = "10/minute""#));
    let uid = unique_uid();
    let mut agent = m.agent.take().expect("agent");
    agent.stop();
    assert!(!m.socket.exists(), "the socket goes with the agent");
    // SMTP: refused for now with the documented text; nothing queued.
    let msgs = m.session(uid, 1, &["rcpt@example.test"]);
    let r = refusal(&msgs[0]).unwrap_or_else(|| panic!("{}", msgs[0]));
    assert!(
        r.starts_with("451 4.7.1 ")
            && r.ends_with("antispam policy service unavailable, try again later"),
        "{r}"
    );
    eprintln!("with the agent stopped, SMTP gets: {r}");
    // sendmail: accepted into the queue, not delivered, kept.
    let s =
        m.pf.sendmail_as(&m.cg, uid, "kept@example.test", "while the agent is down");
    assert!(s.ok, "{}", s.output);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(m.sink.messages(), 0, "{}", m.pf.diagnostics());
    assert!(
        m.pf.queue_files() > 0,
        "kept in the queue\n{}",
        m.pf.diagnostics()
    );
    eprintln!(
        "postfix with the agent down:\n{}",
        m.pf.log()
            .lines()
            .filter(|l| l.contains("milter") || l.contains("policy"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Back: the kept message is delivered and counted (pickup rescans within 60 s).
    drop(agent);
    m.start_agent();
    let got = m.sink.wait_messages(1, Duration::from_secs(90));
    assert_eq!(got, 1, "{}", m.pf.diagnostics());
    let recs = m.wait_records("message", uid, 1);
    assert_eq!(recs.len(), 1, "{}", show(&recs));
    assert_eq!(recs[0]["path"], "sendmail");
    // And SMTP works again.
    let msgs = m.session(uid, 1, &["rcpt@example.test"]);
    assert!(accepted(&msgs[0]), "{}", msgs[0]);
}

#[test]
fn the_socket_is_the_mtas_alone() {
    if !require_kernel() {
        return;
    }
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let m = Mta::start(&policy(""));
    let postfix_gid = nix::unistd::Group::from_name("postfix")
        .ok()
        .flatten()
        .expect("group postfix")
        .gid
        .as_raw();
    let dir = m.socket.parent().unwrap();
    for (path, mode) in [(dir, 0o750), (m.socket.as_path(), 0o660)] {
        let md = std::fs::metadata(path).unwrap();
        assert_eq!(
            (md.permissions().mode() & 0o7777, md.uid(), md.gid()),
            (mode, 0, postfix_gid),
            "{}",
            path.display()
        );
    }
    // An unprivileged user cannot even reach the socket.
    let uid = unique_uid();
    let out = connect_as(&m.socket, uid, uid, &[]);
    assert!(out.contains("Permission denied"), "{out}");
    // A user in the group passes the file permissions; the agent's own check agrees.
    let out = connect_as(&m.socket, uid, uid, &[postfix_gid]);
    assert!(out.contains("connected"), "{out}");
    let metrics = m.agent().metrics();
    assert_eq!(
        metric_value(&metrics, "antispam_mta_peers_refused_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "antispam_mta_service_up", &[]),
        Some(1.0)
    );
}

/// Connects to a Unix socket as `uid`/`gid` with `groups`, sends one policy request and
/// prints what happened.
fn connect_as(socket: &Path, uid: u32, gid: u32, groups: &[u32]) -> String {
    use std::os::unix::process::CommandExt as _;
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n  s.connect({:?})\n  print('connected')\n  s.sendall(b'request=smtpd_access_policy\\nprotocol_state=RCPT\\n\\n')\n  print(s.recv(100))\nexcept Exception as e:\n  print(e)\n",
        socket.display().to_string()
    );
    let groups = groups.to_vec();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(script).env("HOME", "/tmp");
    // SAFETY: raw syscalls only, on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (_, out, _) = client::run_bounded(&mut cmd, Duration::from_secs(10));
    out
}

#[test]
fn suspensions_and_the_kill_switch_refuse_messages_too() {
    if !require_kernel() {
        return;
    }
    let m = Mta::start(&policy(r#"messages = "100/minute""#));
    // A client outside the agent's cgroup: the kernel does not decide its connects, the policy
    // service (which covers the whole host's MTA) still decides its messages.
    let outside = TestCgroup::new("mtapol-outside");
    let uid = unique_uid();
    let uid_s = uid.to_string();
    let one = |cg: &TestCgroup| session_in(cg, m.smtpd(), uid, 1, &["rcpt@example.test"]).remove(0);
    assert!(accepted(&one(&outside)));
    let (code, out) = ctl(
        m.agent(),
        &["suspend", "--uid", &uid_s, "--reason", "spam run"],
    );
    assert_eq!(code, Some(0), "{out}");
    let r = refusal(&one(&outside)).expect("refused while suspended");
    assert!(
        r.contains(&format!(
            "Recipient address rejected: antispam: uid {uid} is suspended from sending mail"
        )),
        "{r}"
    );
    let (code, out) = ctl(
        m.agent(),
        &["unsuspend", "--uid", &uid_s, "--reason", "cleaned"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(accepted(&one(&outside)));
    let (code, out) = ctl(m.agent(), &["kill-switch", "on", "--reason", "outbreak"]);
    assert_eq!(code, Some(0), "{out}");
    let r = refusal(&one(&outside)).expect("refused under the kill switch");
    assert!(r.contains("kill switch"), "{r}");
    let (code, out) = ctl(m.agent(), &["kill-switch", "off", "--reason", "over"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(accepted(&one(&outside)));
    let reasons: Vec<String> = m
        .records("recipient")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(reasons, ["suspended", "kill_switch"], "{reasons:?}");
    m.delivered_exactly(3);
}

#[test]
fn a_permanent_refusal_returns_the_mail_and_a_restart_does_not_refill_the_budget() {
    if !require_kernel() {
        return;
    }
    let mut m = Mta::start(&policy(
        "messages = \"2/hour\"\n[mta]\nrefusal = \"permanent\"",
    ));
    let uid = unique_uid();
    // Within the budget: one message over SMTP, one through sendmail.
    let msgs = m.session(uid, 1, &["rcpt@example.test"]);
    assert!(accepted(&msgs[0]), "{}", msgs[0]);
    let r = m.pf.sendmail_as(&m.cg, uid, "first@example.test", "within");
    assert!(r.ok, "{}", r.output);
    m.delivered_exactly(2);
    assert_eq!(m.wait_records("message", uid, 2).len(), 2);
    // The buckets are on disk: a restarted agent does not hand out 2 more.
    m.agent = None;
    m.start_agent();
    let text =
        format!("antispam: message limit 2/hour of uid {uid} (default) reached; try again in ");
    // SMTP: refused for good at RCPT, returned to the client, nothing queued.
    let msgs = m.session(uid, 1, &["rcpt@example.test"]);
    let r = refusal(&msgs[0]).unwrap_or_else(|| panic!("not refused: {}", msgs[0]));
    let want = format!("550 5.7.1 <rcpt@example.test>: Recipient address rejected: {text}");
    assert!(r.starts_with(&want), "{r}\nexpected: {want}");
    eprintln!("after a restart, over the budget, permanent: {r}");
    // sendmail: cleanup rejects it for good; Postfix returns it to its sender (a bounce to
    // uid<N>@example.test, relayed to the sink) and keeps nothing.
    let r =
        m.pf.sendmail_as(&m.cg, uid, "second@example.test", "over the budget");
    assert!(
        r.ok,
        "sendmail hands the message to the queue: {}",
        r.output
    );
    let got = m.sink.wait_messages(3, Duration::from_secs(30));
    assert_eq!(got, 3, "the bounce arrives\n{}", m.pf.diagnostics());
    let from = format!("uid{uid}@example.test");
    let bounces: Vec<String> = m
        .sink
        .message_texts()
        .into_iter()
        .filter(|t| t.contains("MAILER-DAEMON") && t.contains(&from))
        .collect();
    assert_eq!(bounces.len(), 1, "{:#?}", m.sink.message_texts());
    assert!(
        bounces[0].contains("second@example.test") && bounces[0].contains("5.7.1"),
        "the bounce names the recipient and the refusal\n{}",
        bounces[0]
    );
    assert!(
        m.pf.wait_queue_empty(Duration::from_secs(10)),
        "nothing kept\n{}",
        m.pf.diagnostics()
    );
    let log = m.pf.log();
    assert!(
        log.lines()
            .any(|l| l.contains("milter-reject") && l.contains("5.7.1") && l.contains(&text)),
        "Postfix logs the permanent refusal with its text\n{log}"
    );
    let recs = m.wait_records("message", uid, 1);
    let refused: Vec<&serde_json::Value> =
        recs.iter().filter(|r| r["verdict"] == "denied").collect();
    assert_eq!(refused.len(), 1, "{}", show(&recs));
    assert_eq!(
        (
            &refused[0]["path"],
            &refused[0]["action"],
            &refused[0]["reason"]
        ),
        (
            &serde_json::json!("sendmail"),
            &serde_json::json!("reject"),
            &serde_json::json!("message_limit")
        ),
        "{}",
        refused[0]
    );
    let rcpt = m.wait_records("recipient", uid, 1);
    assert_eq!(rcpt.len(), 1, "{}", show(&rcpt));
    assert_eq!(rcpt[0]["action"], "reject", "{}", rcpt[0]);
    let originals = m
        .sink
        .message_texts()
        .iter()
        .filter(|t| !t.contains("MAILER-DAEMON"))
        .count();
    assert_eq!(originals, 2, "only the 2 within the budget were sent on");
}

#[test]
fn a_hundred_messages_in_one_session_are_each_decided_and_recorded() {
    if !require_kernel() {
        return;
    }
    const N: usize = 100;
    let m = Mta::start(&policy(r#"messages = "1000/minute""#));
    let uid = unique_uid();
    let rcpts = ["a@example.test", "b@example.test"];
    // One message first, so that Postfix's smtpd, cleanup and trivial-rewrite are running.
    let warm = m.session(uid, 1, &rcpts[..1]);
    assert!(accepted(&warm[0]), "{}", warm[0]);
    let t0 = Instant::now();
    let msgs = m.session(uid, N, &rcpts);
    let took = t0.elapsed();
    assert_eq!(msgs.len(), N);
    assert!(msgs.iter().all(accepted), "{}", show(&msgs));
    let recs = m.wait_records("message", uid, N + 1);
    assert_eq!(recs.len(), N + 1, "one record per message");
    let recs = &recs[1..];
    assert!(recs.iter().all(|r| r["recipients"] == 2), "{}", show(recs));
    let mut us: Vec<u64> = recs
        .iter()
        .filter_map(|r| r["decision_us"].as_u64())
        .collect();
    us.sort_unstable();
    let metrics = m.agent().metrics();
    let v = |name| metric_value(&metrics, name, &[]).unwrap_or(0.0);
    let (queries, secs) = (
        v("antispam_mta_queries_total"),
        v("antispam_mta_decision_seconds_total"),
    );
    assert_eq!(
        queries,
        (2 + N * 3) as f64,
        "each recipient and the end of each message"
    );
    eprintln!(
        "{N} messages of 2 recipients in one SMTP session: {took:?} ({:.2} ms a message); \
         decisions at the end of a message: median {} µs, p99 {} µs, max {} µs; all {queries} \
         questions: mean {:.1} µs",
        took.as_secs_f64() * 1e3 / N as f64,
        us[N / 2],
        us[N * 99 / 100],
        us[N - 1],
        secs * 1e6 / queries
    );
    // Generous: a decision is a sock_diag request and a bucket update, tens of µs here.
    assert!(us[N * 99 / 100] < 20_000, "p99 {} µs", us[N * 99 / 100]);
    m.delivered_exactly(N + 1);
    // For comparison, the same sessions to a Postfix that does not ask the agent.
    let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
    let plain = PrivatePostfix::start_configured(&m.dir, m.sink.addr(), Some(listen), None, "");
    assert!(accepted(&session_in(&m.cg, listen, uid, 1, &rcpts[..1])[0]));
    let t0 = Instant::now();
    let msgs = session_in(&m.cg, listen, uid, N, &rcpts);
    let base = t0.elapsed();
    assert!(msgs.iter().all(accepted));
    assert_eq!(
        m.records("message").len(),
        N + 1,
        "that Postfix asks nobody"
    );
    eprintln!(
        "the same session to a Postfix without the policy service: {base:?} ({:.2} ms a message)",
        base.as_secs_f64() * 1e3 / N as f64
    );
    drop(plain);
}

/// A Cyrus SASL configuration for the instance's smtpd: the `sasldb` auxprop plugin (Debian's
/// libsasl2-modules-db) over a Berkeley DB file holding `logins` (name, password) in realm
/// example.test, written with Perl's DB_File in the format `saslpasswd2` writes (key
/// `name\0realm\0userPassword`). Returns the main.cf lines; `sasl_conf` writes smtpd.conf.
fn cyrus_sasl(dir: &TestDir, logins: &[(&str, &str)]) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let sasl = dir.path().join("sasl");
    std::fs::create_dir_all(&sasl).expect("mkdir sasl");
    std::fs::set_permissions(&sasl, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let db = sasl.join("sasldb2");
    let mut script = String::from(
        "use DB_File; use Fcntl; tie my %h, 'DB_File', $ARGV[0], O_RDWR|O_CREAT, 0644, $DB_HASH \
         or die \"sasldb: $!\";\n",
    );
    for (name, password) in logins {
        script.push_str(&format!(
            "$h{{\"{name}\\0example.test\\0userPassword\"}} = '{password}';\n"
        ));
    }
    script.push_str("untie %h;\n");
    let out = std::process::Command::new("perl")
        .arg("-e")
        .arg(&script)
        .arg(&db)
        .output()
        .expect("perl");
    assert!(out.status.success(), "writing the sasldb: {out:?}");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    "\nsmtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\nsmtpd_sasl_path = smtpd\n\
     smtpd_sasl_local_domain = example.test\n"
        .to_string()
}

/// Cyrus' smtpd.conf for `cyrus_sasl`, in the instance's `/etc/postfix/sasl/` (Debian's
/// Postfix looks there and in /usr/lib/sasl only: it ignores `cyrus_sasl_config_path`). smtpd
/// reads it when it starts, at the first connection.
fn sasl_conf(m: &Mta) {
    let dir = m.pf.root().join("conf").join("sasl");
    std::fs::create_dir_all(&dir).expect("mkdir conf/sasl");
    let db = m.dir.path().join("sasl").join("sasldb2");
    std::fs::write(
        dir.join("smtpd.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
            db.display()
        ),
    )
    .expect("write smtpd.conf");
}

/// One message with swaks over SMTP AUTH PLAIN as `login`; swaks' exit status and output.
fn swaks_auth(m: &Mta, uid: u32, login: &str, password: &str) -> (bool, String) {
    let addr = m.smtpd();
    let mut cmd = std::process::Command::new("swaks");
    cmd.args([
        "--server",
        &addr.ip().to_string(),
        "--port",
        &addr.port().to_string(),
    ])
    .args([
        "--auth",
        "PLAIN",
        "--auth-user",
        login,
        "--auth-password",
        password,
    ])
    .args([
        "--from",
        &format!("uid{uid}@example.test"),
        "--to",
        "rcpt@example.test",
    ])
    .args(["--timeout", "5"]);
    client::as_user_in_cgroup(&mut cmd, &m.cg, uid);
    let (st, out, _) = client::run_bounded(&mut cmd, Duration::from_secs(20));
    (st.is_some_and(|s| s.success()), out)
}

#[test]
fn sasl_logins_have_budgets_of_their_own() {
    if !require_kernel() {
        return;
    }
    let logins = [("newsletter", "n-secret"), ("other", "o-secret")];
    let m = Mta::start_with(
        &policy("\n[[limit]]\nsasl_users = [\"newsletter@*\"]\nmessages = \"2/minute\""),
        |dir| cyrus_sasl(dir, &logins),
    );
    sasl_conf(&m);
    let uid = unique_uid();
    // Postfix reports the login with its realm (smtpd_sasl_local_domain): sasl_username is
    // "newsletter@example.test", which the rule's pattern matches.
    // A wrong password is Postfix's business: refused before the agent is asked.
    let (ok, out) = swaks_auth(&m, uid, "newsletter", "wrong");
    assert!(!ok && out.contains("535"), "{out}");
    for i in 0..2 {
        let (ok, out) = swaks_auth(&m, uid, "newsletter", "n-secret");
        assert!(
            ok,
            "message {i} of newsletter within its budget\n{out}\n{}",
            m.pf.diagnostics()
        );
    }
    let (ok, out) = swaks_auth(&m, uid, "newsletter", "n-secret");
    let text = "451 4.7.1 <rcpt@example.test>: Recipient address rejected: antispam: message \
                limit 2/minute of SASL user newsletter@example.test (limit[0]) reached; try again in ";
    assert!(
        !ok && out.contains(text),
        "third message of newsletter\n{out}"
    );
    // The same UID logged in as another user: a budget of its own (none: no rule names it),
    // so the refusal above was the login's, not the UID's.
    for i in 0..3 {
        let (ok, out) = swaks_auth(&m, uid, "other", "o-secret");
        assert!(ok, "message {i} of other\n{out}");
    }
    m.delivered_exactly(5);
    let recs = m.wait_records("message", uid, 5);
    let of = |login: &str| {
        recs.iter()
            .filter(|r| r["sasl_username"] == login)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (
            of("newsletter@example.test").len(),
            of("other@example.test").len()
        ),
        (2, 3),
        "{}",
        show(&recs)
    );
    for r in &recs {
        assert_eq!(
            (r["path"].as_str(), r["verdict"].as_str()),
            (Some("local_smtp"), Some("allowed")),
            "{r}"
        );
        assert_eq!(
            r["cgroup"],
            m.cg.relative(),
            "charged to the UID's cgroup too: {r}"
        );
    }
    assert_eq!(
        of("newsletter@example.test")[0]["rule"],
        "limit[0]",
        "{}",
        of("newsletter@example.test")[0]
    );
    let refused = m.wait_records("recipient", uid, 1);
    assert_eq!(refused.len(), 1, "{}", show(&refused));
    assert_eq!(
        (
            refused[0]["sasl_username"].as_str(),
            refused[0]["reason"].as_str()
        ),
        (Some("newsletter@example.test"), Some("message_limit")),
        "{}",
        refused[0]
    );
    let out = std::process::Command::new(antispam_bin())
        .args(["report", "--since", "1h", "--format", "json", "--audit-log"])
        .arg(&m.agent().audit_path)
        .output()
        .expect("antispam report");
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let by = &rep["violations"]["messages"]["by_sasl_user"];
    let news = by
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|k| k["sasl_username"] == "newsletter@example.test")
        })
        .unwrap_or_else(|| panic!("{by:#}"));
    assert_eq!(
        (
            news["messages"].as_u64(),
            news["refused_recipients"].as_u64()
        ),
        (Some(2), Some(1)),
        "{news}"
    );
}

#[test]
fn monitor_mode_refuses_no_message_and_records_what_it_would_have() {
    if !require_kernel() {
        return;
    }
    let m = Mta::start(&format!(
        "mode = \"monitor\"\n{}",
        policy(r#"messages = "1/minute""#)
    ));
    let uid = unique_uid();
    let msgs = m.session(uid, 3, &["rcpt@example.test"]);
    assert!(msgs.iter().all(accepted), "{}", show(&msgs));
    m.delivered_exactly(3);
    let recs = m.wait_records("message", uid, 3);
    let verdicts: Vec<(&str, bool, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["verdict"].as_str().unwrap_or_default(),
                r["would_deny"].as_bool().unwrap_or_default(),
                r["action"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("allowed", false, "dunno"),
            ("would_deny", true, "dunno"),
            ("would_deny", true, "dunno")
        ],
        "{}",
        show(&recs)
    );
    assert!(recs[1..].iter().all(|r| r["reason"] == "message_limit"));
    let metrics = m.agent().metrics();
    let v = |name, labels: &[(&str, &str)]| metric_value(&metrics, name, labels);
    assert_eq!(
        v(
            "antispam_messages_total",
            &[("path", "local_smtp"), ("verdict", "would_deny")]
        ),
        Some(2.0),
        "{metrics}"
    );
    // Each recipient once: not at RCPT and again with its message.
    assert_eq!(
        v("antispam_recipients_total", &[("verdict", "would_deny")]),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        v("antispam_recipients_total", &[("verdict", "denied")]),
        Some(0.0)
    );
}

#[test]
fn a_cgroup_rule_gives_its_cgroup_one_message_budget_for_all_its_users() {
    if !require_kernel() {
        return;
    }
    let m = Mta::start(&policy(
        "\n[[limit]]\ncgroups = [\"{cg}/shop\"]\nrate = \"100/minute\"\nmessages = \"2/minute\"",
    ));
    let shop = m.cg.child("shop");
    // The agent follows new cgroups (inotify): wait until it has filed this one.
    let filed = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let metrics = m.agent().metrics();
        (metric_value(&metrics, "antispam_cgroups_covered", &[]) >= Some(1.0)).then_some(())
    });
    assert!(
        filed.is_some(),
        "the agent did not cover {}",
        shop.relative()
    );
    let (a, b) = (unique_uid(), unique_uid());
    let one =
        |cg: &TestCgroup, uid| session_in(cg, m.smtpd(), uid, 1, &["rcpt@example.test"]).remove(0);
    assert!(accepted(&one(&shop, a)));
    assert!(accepted(&one(&shop, b)));
    // Two UIDs, one cgroup budget: the third message of the cgroup is refused, whoever sends.
    let r = refusal(&one(&shop, a)).expect("the cgroup's third message is refused");
    let want = format!(
        "451 4.7.1 <rcpt@example.test>: Recipient address rejected: antispam: message limit \
         2/minute of cgroup {} (limit[0]) reached; try again in ",
        shop.relative()
    );
    assert!(r.starts_with(&want), "{r}\nexpected: {want}");
    // Outside the rule's cgroup (its parent) the same UID is not limited: no UID budget.
    assert!(accepted(&one(&m.cg, a)));
    m.delivered_exactly(3);
    let recs = m.wait_records("message", a, 2);
    assert_eq!(recs.len(), 2, "{}", show(&recs));
    assert_eq!(recs[0]["cgroup"], shop.relative(), "{}", recs[0]);
    assert_eq!(recs[0]["rule"], "limit[0]", "{}", recs[0]);
    assert_eq!(recs[1]["cgroup"], m.cg.relative(), "{}", recs[1]);
    assert_eq!(recs[1]["reason"], "no_limit", "{}", recs[1]);
}
