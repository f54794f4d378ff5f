//! The MTA policy service with a real Exim 4 (Debian's exim4-daemon-light, unpacked with
//! `apt-get download` + `dpkg -x` into the cache directory, never installed: Debian's Exim
//! conflicts with the Postfix the other tests use), configured with the ACL lines of
//! docs/mta-policy-service.md read from the page itself. The instance runs in a private mount
//! namespace whose /etc, /usr/sbin and library directory are overlays adding its passwd/group
//! entries (user Debian-exim), /etc/exim4/exim4.conf, and the binary (setuid root, as
//! installed), so nothing of the host changes.

use std::{
    net::{IpAddr, SocketAddr},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::{fs::PermissionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use antispam_tests::*;

const DOC_SOCKET: &str = "/run/antispam/mta/mta.sock";
/// The Exim user's UID inside the instance's namespace (no such user on the host). Its group is
/// the host's `nogroup`, which the agent is told with `--mta-group`.
const EXIM_UID: u32 = 64998;
const EXIM_GROUP: &str = "nogroup";

fn doc_block(name: &str) -> String {
    let path = workspace_root().join("docs/mta-policy-service.md");
    let doc =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let marker = format!("<!-- antispam-test: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} missing"));
    let rest = &doc[at + marker.len()..];
    let body = &rest[rest.find("```").expect("a fenced block")..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_string()
}

/// Exim unpacked under the cache directory (fetched once, like `cargo xtask setup` fetches its
/// tools); None, said loudly, when it cannot be had.
fn exim_root() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or("/root".into())).join(".cache"),
            PathBuf::from,
        )
        .join("antispam")
        .join("exim");
    let root = cache.join("root");
    if root.join("usr/sbin/exim4").exists() {
        return Some(root);
    }
    std::fs::create_dir_all(&cache).ok()?;
    let ok = Command::new("apt-get")
        .args(["download", "-q", "exim4-daemon-light", "libidn12"])
        .current_dir(&cache)
        .status()
        .is_ok_and(|s| s.success());
    let debs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if !ok || debs.is_empty() {
        return None;
    }
    let tmp = cache.join("root.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for deb in &debs {
        run_ok(
            "dpkg",
            &["-x", &deb.display().to_string(), &tmp.display().to_string()],
        );
    }
    std::fs::rename(&tmp, &root).ok()?;
    Some(root)
}

fn require_exim() -> Option<PathBuf> {
    if !require_kernel() {
        return None;
    }
    let root = exim_root();
    if root.is_none() {
        let why = "Exim could not be fetched (apt-get download exim4-daemon-light)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("### SKIPPING Exim test: {why}");
    }
    root
}

/// A private Exim: a daemon on a loopback port relaying everything to `relay`.
struct PrivateExim {
    child: Option<Child>,
    ns: OwnedFd,
    base: PathBuf,
    listen: SocketAddr,
}

impl PrivateExim {
    /// `users`: test UIDs given passwd entries in the namespace (Exim's sendmail wants a name).
    fn start(
        dir: &TestDir,
        root: &Path,
        relay: SocketAddr,
        acls: &str,
        users: &[u32],
    ) -> PrivateExim {
        let base = dir.path().join(format!("exim-{}", next_seq()));
        let (etc, sbin, spool) = (base.join("etc"), base.join("sbin"), base.join("spool"));
        for d in [&base, &etc.join("exim4"), &sbin, &spool] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let nogroup = nix::unistd::Group::from_name(EXIM_GROUP)
            .ok()
            .flatten()
            .expect("group nogroup")
            .gid
            .as_raw();
        let mut passwd = std::fs::read_to_string("/etc/passwd").expect("passwd")
            + &format!("Debian-exim:x:{EXIM_UID}:{nogroup}:Exim:/nonexistent:/usr/sbin/nologin\n");
        for u in users {
            passwd.push_str(&format!(
                "u{u}:x:{u}:{u}:test user:/nonexistent:/usr/sbin/nologin\n"
            ));
        }
        let group = std::fs::read_to_string("/etc/group").expect("group")
            + &format!("Debian-exim:x:{nogroup}:\n");
        std::fs::write(etc.join("passwd"), passwd).expect("write passwd");
        std::fs::write(etc.join("group"), group).expect("write group");
        nix::unistd::chown(&spool, Some(EXIM_UID.into()), Some(nogroup.into())).expect("chown");
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
        let conf = format!(
            "# A private Exim of antispam's tests (tests/tests/mta_exim.rs).\n\
             primary_hostname = exim-test.example.test\n\
             spool_directory = {spool}\n\
             log_file_path = {spool}/%slog\n\
             local_interfaces = <; {ip}\n\
             daemon_smtp_ports = {port}\n\
             host_lookup =\n\
             rfc1413_hosts =\n\
             tls_advertise_hosts =\n\
             queue_run_max = 1\n\
             {acls}\n\
             begin routers\n\
             relay:\n  driver = manualroute\n  route_list = * {rip}::{rport}\n  transport = relay\n  self = send\n\
             begin transports\n\
             relay:\n  driver = smtp\n  allow_localhost\n",
            spool = spool.display(),
            ip = listen.ip(),
            port = listen.port(),
            rip = relay.ip(),
            rport = relay.port(),
        );
        std::fs::write(etc.join("exim4/exim4.conf"), conf).expect("write exim4.conf");
        let bin = sbin.join("exim4");
        std::fs::copy(root.join("usr/sbin/exim4"), &bin).expect("copy exim4");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
        std::os::unix::fs::symlink("exim4", sbin.join("sendmail")).expect("symlink");
        let lib = root.join("usr/lib/x86_64-linux-gnu");
        let script = format!(
            "mount -t overlay overlay -o lowerdir={etc}:/etc /etc && \
             mount -t overlay overlay -o lowerdir={sbin}:/usr/sbin /usr/sbin && \
             mount -t overlay overlay -o lowerdir={lib}:/usr/lib/x86_64-linux-gnu \
               /usr/lib/x86_64-linux-gnu && \
             exec /usr/sbin/exim4 -bdf -q1s",
            etc = etc.display(),
            sbin = sbin.display(),
            lib = lib.display()
        );
        let out = std::fs::File::create(base.join("daemon.out")).expect("daemon.out");
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                &script,
            ])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn unshare for Exim");
        let pid = child.id();
        let mut exim = None;
        let own = std::fs::metadata("/proc/self/ns/mnt").map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.ino()
        });
        poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            use std::os::unix::fs::MetadataExt as _;
            let f = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
            let ino = f.metadata().ok()?.ino();
            (Some(ino) != own.as_ref().ok().copied()
                && std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200))
                    .is_ok())
            .then(|| exim = Some(OwnedFd::from(f)))
        });
        let mut e = PrivateExim {
            child: Some(child),
            ns: exim.unwrap_or_else(|| {
                panic!(
                    "private Exim not listening on {listen}\n{}",
                    std::fs::read_to_string(base.join("daemon.out")).unwrap_or_default()
                )
            }),
            base,
            listen,
        };
        e.listen = listen;
        e
    }

    fn log(&self) -> String {
        let spool = self.base.join("spool");
        ["mainlog", "rejectlog", "paniclog"]
            .iter()
            .map(|n| {
                format!(
                    "--- {n} ---\n{}",
                    std::fs::read_to_string(spool.join(n)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n--- daemon ---\n"
            + &std::fs::read_to_string(self.base.join("daemon.out")).unwrap_or_default()
    }

    /// `/usr/sbin/sendmail -t -i` (Exim's) as `uid` in `cg`, inside the instance's namespace.
    fn sendmail_as(&self, cg: &TestCgroup, uid: u32, to: &str) -> (Option<i32>, String) {
        let ns = self.ns.try_clone().expect("dup ns");
        let mut cmd = Command::new("/usr/sbin/sendmail");
        cmd.args(["-i", "-f", &format!("uid{uid}@example.test"), "--"])
            .args(to.split(' '))
            .current_dir("/");
        // SAFETY: one raw syscall on an fd opened before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        client::as_user_in_cgroup(&mut cmd, cg, uid);
        let msg = format!(
            "From: uid{uid}@example.test\nTo: {to}\nSubject: by Exim's sendmail\n\nhello\n"
        );
        let (st, out, _) =
            client::run_bounded_input(&mut cmd, msg.as_bytes(), Duration::from_secs(30));
        (st.and_then(|s| s.code()), out)
    }
}

impl Drop for PrivateExim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The daemon is the exec'd shell: SIGTERM ends it; its children (deliveries) are
            // short-lived and bounded by their own timeouts.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
                c.try_wait().ok().flatten()
            });
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `count` messages in one SMTP session (the smtp_messages client) as `uid` in `cg`.
fn session(
    cg: &TestCgroup,
    addr: SocketAddr,
    uid: u32,
    count: usize,
    rcpts: &[&str],
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp_messages"));
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
    out.lines()
        .filter(|l| l.starts_with("{\"i\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Exim's mainlog names the record's queue id.
fn exim_logged(exim: &PrivateExim, r: &serde_json::Value) -> bool {
    let id = r["queue_id"].as_str().unwrap_or_default();
    !id.is_empty() && exim.log().contains(&format!(" {id} "))
}

/// A reply as one line: Exim wraps long texts over several `451-` lines (and may end with an
/// empty one); smtp_messages joins them with " | ".
fn one_line(reply: &str) -> String {
    let parts: Vec<&str> = reply
        .split(" | ")
        .map(|l| l.get(4..).unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    format!("{} {}", reply.get(..3).unwrap_or_default(), parts.join(" "))
}

fn accepted(m: &serde_json::Value) -> bool {
    m["end"].as_str().is_some_and(|e| e.starts_with("250"))
}

#[test]
fn exim_asks_the_agent_about_every_message_with_the_documented_acls() {
    let Some(root) = require_exim() else {
        return;
    };
    const N: usize = 3;
    let dir = TestDir::new();
    let ns = TestNetns::new();
    let cg = TestCgroup::new("mtaexim");
    let sink = SmtpSink::start_counting(&ns, IpAddr::V4(ns.addr_v4()), 25, &dir);
    let socket = dir.path().join("mta").join("mta.sock");
    let acls = doc_block("exim.conf");
    assert!(acls.contains(DOC_SOCKET), "{acls}");
    let acls = acls.replace(DOC_SOCKET, &socket.display().to_string());
    let (uid, other) = (unique_uid(), unique_uid());
    let exim = PrivateExim::start(&dir, &root, sink.addr(), &acls, &[uid, other]);
    let policy = dir.write(
        "policy.toml",
        &format!(
            "ports = [25, {}]\n[default]\nrate = \"100/minute\"\nmessages = \"{N}/minute\"\n\
             recipients = \"8/minute\"\n[[allow]]\nusers = [\"postfix\", {EXIM_UID}]\n",
            exim.listen.port()
        ),
    );
    let sock = socket.display().to_string();
    let agent = Agent::start_with(
        &policy,
        &cg,
        &dir,
        &["--mta-socket", &sock, "--mta-group", EXIM_GROUP],
    );
    // SMTP: one session, N + 2 messages of 2 recipients; N accepted, the rest deferred at RCPT
    // with the agent's text.
    let msgs = session(
        &cg,
        exim.listen,
        uid,
        N + 2,
        &["a@example.test", "b@example.test"],
    );
    for (i, m) in msgs.iter().enumerate() {
        if i < N {
            assert!(accepted(m), "message {i}: {m}\n{}", exim.log());
        } else {
            let r = one_line(m["rcpt"][0].as_str().unwrap_or_default());
            let want = format!(
                "451 antispam: message limit {N}/minute of uid {uid} (default) reached; try again in "
            );
            assert!(
                r.starts_with(&want),
                "message {i}: {r}\nexpected: {want}\n{}",
                exim.log()
            );
            eprintln!("Exim, message {i}: {r}");
        }
    }
    let got = sink.wait_messages(N, Duration::from_secs(30));
    assert_eq!(got, N, "delivered\n{}", exim.log());
    let records = |event: &str| -> Vec<serde_json::Value> {
        agent
            .events()
            .into_iter()
            .filter(|e| e["event"] == event && e["uid"] == uid)
            .collect()
    };
    let mut recs = Vec::new();
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        recs = records("message");
        (recs.len() >= N).then_some(())
    });
    assert_eq!(recs.len(), N, "{recs:#?}");
    let log = exim.log();
    for r in &recs {
        assert_eq!(
            (r["mta"].as_str(), r["path"].as_str(), r["verdict"].as_str()),
            (Some("exim"), Some("local_smtp"), Some("allowed")),
            "{r}"
        );
        assert_eq!(r["recipients"], 2, "{r}");
        assert_eq!(r["cgroup"], cg.relative(), "{r}");
        let id = r["queue_id"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty() && log.contains(&format!("{id} <= uid{uid}@example.test")),
            "{id}\n{log}"
        );
    }
    assert_eq!(
        records("recipient").len(),
        4,
        "2 messages x 2 recipients refused"
    );
    // Exim's sendmail as the same UID: acl_not_smtp, charged to $originator_uid. The budget
    // is spent, so it is refused: sendmail exits 1 and (Exim's default, -oem) mails the error
    // to the sender, whose domain the test's router sends to the sink too.
    let (code, out) = exim.sendmail_as(&cg, uid, "c@example.test");
    eprintln!("Exim's sendmail over the budget: exit {code:?} {out}");
    assert_eq!(code, Some(1), "{out}\n{}", exim.log());
    let log = exim.log();
    let text = format!("antispam: message limit {N}/minute of uid {uid} (default) reached");
    assert!(
        log.contains(&format!("rejected by non-SMTP ACL: {text}")),
        "{log}"
    );
    let got = sink.wait_messages(N + 1, Duration::from_secs(30));
    assert_eq!(got, N + 1, "the error message\n{}", exim.log());
    assert!(
        sink.message_texts()
            .iter()
            .any(|t| t.contains(&text) && t.contains("Mail Delivery System")
                || t.contains(&text) && t.contains("X-Mail-Args: FROM:<>")),
        "{:#?}",
        sink.message_texts()
    );
    // Another UID's sendmail is within its own budget: accepted and delivered.
    let (code, out) = exim.sendmail_as(&cg, other, "d@example.test");
    assert_eq!(code, Some(0), "{out}\n{}", exim.log());
    let got = sink.wait_messages(N + 2, Duration::from_secs(30));
    assert_eq!(got, N + 2, "delivered\n{}", exim.log());
    let mut mine = Vec::new();
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        mine = agent
            .events()
            .into_iter()
            .filter(|e| e["event"] == "message" && e["path"] == "sendmail")
            .collect();
        (mine.len() >= 3).then_some(())
    });
    let who: Vec<(u64, &str, &str)> = mine
        .iter()
        .map(|r| {
            (
                r["uid"].as_u64().unwrap_or(0),
                r["verdict"].as_str().unwrap_or(""),
                r["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // The error message Exim made (as its own user) is asked about too, and allowed.
    assert_eq!(
        who,
        [
            (uid as u64, "denied", "message_limit"),
            (EXIM_UID as u64, "allowed", "allowlist_user"),
            (other as u64, "allowed", "within_limit")
        ],
        "{mine:#?}"
    );
    assert!(
        mine.iter().all(|r| exim_logged(&exim, r)),
        "queue ids in Exim's log\n{mine:#?}\n{}",
        exim.log()
    );
    // Recipients are counted at RCPT within a message (recipient_count=$recipients_count):
    // of 9, the 9th does not fit a budget of 8 and is refused at RCPT; the message goes on
    // with 8, which fit.
    let third = unique_uid();
    let rcpts: Vec<String> = (0..9).map(|i| format!("r{i}@example.test")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let msgs = session(&cg, exim.listen, third, 1, &rcpts);
    let replies: Vec<String> = msgs[0]["rcpt"]
        .as_array()
        .expect("rcpt replies")
        .iter()
        .map(|r| one_line(r.as_str().unwrap_or_default()))
        .collect();
    assert!(
        replies[..8].iter().all(|r| r.starts_with("250")),
        "{replies:#?}"
    );
    assert!(
        replies[8].starts_with(&format!(
            "451 antispam: recipient limit 8/minute of uid {third} (default) reached"
        )),
        "{replies:#?}"
    );
    assert!(accepted(&msgs[0]), "{}\n{}", msgs[0], exim.log());
    let mut big = Vec::new();
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        big = agent
            .events()
            .into_iter()
            .filter(|e| e["event"] == "message" && e["uid"] == third)
            .collect();
        (!big.is_empty()).then_some(())
    });
    assert_eq!(
        (big.len(), big[0]["recipients"].as_u64()),
        (1, Some(8)),
        "{big:#?}"
    );
    drop(agent);
    // With the agent stopped, the documented failure string applies: SMTP deferred.
    let msgs = session(&cg, exim.listen, uid, 1, &["a@example.test"]);
    let r = one_line(msgs[0]["rcpt"][0].as_str().unwrap_or_default());
    assert!(
        r.starts_with("451 antispam policy service unavailable"),
        "{r}\n{}",
        exim.log()
    );
    // sendmail: acl_not_smtp has no "defer": refused (exit 1), nothing kept in the queue.
    let (code, out) = exim.sendmail_as(&cg, other, "e@example.test");
    assert_eq!(code, Some(1), "{out}\n{}", exim.log());
    assert!(
        exim.log()
            .contains("rejected by non-SMTP ACL: antispam policy service unavailable"),
        "{}",
        exim.log()
    );
    drop(exim);
    dir.remove_pins();
}
