//! A private Postfix instance for tests (DESIGN.md "A private Postfix for tests").
//!
//! The instance has its own config, queue and data directories under the test's `TestDir`.
//! It runs in a private mount namespace (`unshare -m --propagation private`) in which its config
//! directory is bind-mounted over `/etc/postfix`: the host's setgid `sendmail`/`postdrop`, run
//! inside that namespace, then submit to this instance, while the host's `/etc/postfix`, the
//! system's queue and the system's Postfix (if any) never see it. `postfix start-fg` is the
//! guarded child; Drop stops the instance and kills whatever is left in its mount namespace.
//!
//! Every message is relayed to `relay_to` (an smtp-sink in a `TestNetns`, or loopback): no DNS,
//! no local delivery, no connection caching (one message, one connection to the relay), and
//! retries after 1-2 s. Optionally an smtpd listens on a loopback address and relays for
//! loopback clients.
//!
//! Postfix facts that matter here (Postfix 3.7, Debian 12):
//! - `maillog_file` must sit under a `maillog_file_prefixes` entry, or Postfix exits without a
//!   word (it can only say why to syslog).
//! - Every Postfix program re-reads a main.cf modified less than 2 s ago (300 ms sleeps) until
//!   it looks settled: a freshly written main.cf made each start and each sendmail take ~2 s
//!   more. The files are written with an mtime in the past.
//! - `data_directory` must be owned by the mail owner: it is left for `post-install` (run by
//!   `postfix start-fg`) to create, or master dies on "open lock file ... Permission denied".
//! - `sendmail` without `-f` needs a passwd entry for the calling UID ("fatal: no login name
//!   found for user ID N", exit 75). Test UIDs have none, so `sendmail_as` always passes
//!   `-f uid<N>@example.test`; `postdrop` itself accepts any UID (`authorized_submit_users =
//!   static:anyone` never looks the UID up) and pickup logs `uid=N`.

use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::client::{self, SwaksResult};
use crate::{TestCgroup, TestDir};

/// Where the host keeps Postfix's configuration (compiled into the setgid programs).
const HOST_CONFIG: &str = "/etc/postfix";

/// The metadata files of the host's `/etc/postfix` that `post-install` and the dynamic map
/// loader read (`meta_directory` is the config directory). Nothing else of the host's
/// configuration (main.cf, master.cf, sasl/, keys) is copied.
const META_FILES: &[&str] = &[
    "dynamicmaps.cf",
    "dynamicmaps.cf.d",
    "main.cf.proto",
    "makedefs.out",
    "master.cf.proto",
    "postfix-files",
    "postfix-files.d",
    "postfix-script",
    "post-install",
];

/// Queue directories that hold messages not yet delivered.
const QUEUES: &[&str] = &["maildrop", "incoming", "active", "deferred", "hold"];

/// What one `sendmail` run did.
#[derive(Debug)]
pub struct SendmailResult {
    /// Exit status; None if it was killed for running too long.
    pub status: Option<ExitStatus>,
    /// Exited 0: the message is in the private queue.
    pub ok: bool,
    /// The output says "Operation not permitted".
    pub eperm: bool,
    pub elapsed: Duration,
    /// stdout and stderr, interleaved.
    pub output: String,
}

/// A running private Postfix instance; stopped (and everything in its mount namespace
/// killed) on drop, also when the test panics.
pub struct PrivatePostfix {
    child: Option<Child>,
    pid: u32,
    /// `/proc/<pid>/ns/mnt` of the instance, and its inode (the namespace's identity).
    ns: Option<File>,
    ns_ino: Option<u64>,
    root: PathBuf,
    queue: PathBuf,
    maillog: PathBuf,
    smtp: Option<SocketAddr>,
    started_in: Duration,
}

impl PrivatePostfix {
    /// Starts an instance under `dir` that relays everything to `relay_to`, with an smtpd on
    /// `smtp_listen` (a loopback address) if given. The instance runs in the caller's cgroup.
    pub fn start(
        dir: &TestDir,
        relay_to: SocketAddr,
        smtp_listen: Option<SocketAddr>,
    ) -> PrivatePostfix {
        PrivatePostfix::start_with(dir, relay_to, smtp_listen, None)
    }

    /// Like `start`; with `cgroup`, the whole instance (master, smtpd, the smtp client that
    /// connects to the relay, ...) runs inside that test cgroup. Drop the instance before the
    /// cgroup (declare it after), or the cgroup's guard kills it first.
    pub fn start_with(
        dir: &TestDir,
        relay_to: SocketAddr,
        smtp_listen: Option<SocketAddr>,
        cgroup: Option<&TestCgroup>,
    ) -> PrivatePostfix {
        PrivatePostfix::start_configured(dir, relay_to, smtp_listen, cgroup, "")
    }

    /// Like `start_with`, with `main_cf` appended to the instance's main.cf (later settings
    /// win: e.g. the policy service lines of docs/mta-policy-service.md).
    pub fn start_configured(
        dir: &TestDir,
        relay_to: SocketAddr,
        smtp_listen: Option<SocketAddr>,
        cgroup: Option<&TestCgroup>,
        main_cf_extra: &str,
    ) -> PrivatePostfix {
        assert!(
            is_test_target(relay_to.ip()),
            "relay_to {relay_to} is neither loopback nor inside a TestNetns (10.201.0.0/16, \
             fd00:201::/32)"
        );
        if let Some(l) = smtp_listen {
            assert!(
                l.ip().is_loopback(),
                "smtp_listen {l} must be a loopback address"
            );
        }
        assert!(
            Path::new(HOST_CONFIG).is_dir() && Path::new("/usr/sbin/postfix").exists(),
            "Postfix is not installed ({HOST_CONFIG} or /usr/sbin/postfix missing): \
             `cargo xtask setup` installs it"
        );

        let root = dir.path().join(format!("postfix-{}", crate::next_seq()));
        let conf = root.join("conf");
        let queue = root.join("queue");
        let maillog = root.join("maillog");
        for d in [&root, &conf, &queue] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            // Postfix wants root-owned, not group/world-writable directories here; the
            // setgid programs running as the test UID must be able to traverse them.
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", d.display()));
        }
        for name in META_FILES {
            let src = Path::new(HOST_CONFIG).join(name);
            if fs::symlink_metadata(&src).is_ok() {
                crate::run_ok(
                    "cp",
                    &[
                        "-a",
                        &src.display().to_string(),
                        &conf.display().to_string(),
                    ],
                );
            }
        }
        let mut main_cf = main_cf(&root, &queue, &maillog, relay_to, smtp_listen);
        if !main_cf_extra.is_empty() {
            main_cf.push_str("# Added by the test:\n");
            main_cf.push_str(main_cf_extra);
            main_cf.push('\n');
        }
        fs::write(conf.join("main.cf"), main_cf).expect("write main.cf");
        fs::write(conf.join("master.cf"), master_cf(smtp_listen)).expect("write master.cf");
        // Postfix re-reads a main.cf modified within the last 2 s, sleeping 300 ms each time,
        // until it looks settled: a fresh file makes every Postfix command wait ~2 s.
        let past = std::time::SystemTime::now() - Duration::from_secs(3600);
        for name in ["main.cf", "master.cf"] {
            File::options()
                .write(true)
                .open(conf.join(name))
                .and_then(|f| f.set_modified(past))
                .unwrap_or_else(|e| panic!("set the mtime of {name}: {e}"));
        }

        let out_path = root.join("start-fg.out");
        let out = File::create(&out_path).expect("create start-fg.out");
        let err = out.try_clone().expect("dup");
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/postfix && \
                 exec /usr/sbin/postfix -c /etc/postfix start-fg",
            )
            .arg("sh")
            .arg(&conf)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if let Some(cg) = cgroup {
            move_into_cgroup(&mut cmd, cg);
        }
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn unshare for a private Postfix: {e}"));
        // The guard exists from here on: a panic below stops whatever got started.
        let mut pf = PrivatePostfix {
            pid: child.id(),
            child: Some(child),
            ns: None,
            ns_ino: None,
            root,
            queue,
            maillog,
            smtp: smtp_listen,
            started_in: Duration::ZERO,
        };
        pf.wait_ready(crate::bound(Duration::from_secs(30)));
        pf.started_in = t0.elapsed();
        pf
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let own_ns = fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()).ok();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    panic!(
                        "private Postfix exited during start-up ({st}).\n{}\n--- postfix \
                         check on a terminal (Postfix logs to stderr only there) ---\n{}",
                        self.diagnostics(),
                        self.check()
                    );
                }
            }
            if self.ns.is_none() {
                let path = format!("/proc/{}/ns/mnt", self.pid);
                if let Ok(f) = File::open(&path) {
                    let ino = f.metadata().map(|m| m.ino()).ok();
                    if ino.is_some() && ino != own_ns {
                        self.ns = Some(f);
                        self.ns_ino = ino;
                    }
                }
            }
            let started = self.log().contains("daemon started");
            let listening = self.smtp.is_none_or(tcp_listening);
            if self.ns.is_some() && started && listening {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "private Postfix not ready within {limit:?} (namespace: {}, \"daemon \
                     started\" logged: {started}, smtpd listening: {listening}).\n{}",
                    self.ns.is_some(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The start-fg output and the maillog, for failure messages.
    pub fn diagnostics(&self) -> String {
        let fg = fs::read_to_string(self.root.join("start-fg.out")).unwrap_or_default();
        format!(
            "--- postfix start-fg output ---\n{fg}--- maillog {} ---\n{}",
            self.maillog.display(),
            self.log()
        )
    }

    /// `postfix check` inside the instance's mount namespace, under `script` so that it has a
    /// terminal: Postfix writes its complaints to stderr only when that is a tty (otherwise to
    /// syslog and the maillog, which a broken configuration may never reach).
    pub fn check(&self) -> String {
        if self.ns.is_none() {
            return "(no mount namespace to run it in)".to_owned();
        }
        let mut cmd = self.command("script");
        cmd.args(["-q", "-e", "-c", "/usr/sbin/postfix check", "/dev/null"]);
        let (st, out, _) = client::run_bounded(&mut cmd, Duration::from_secs(10));
        format!("{out}(exit: {st:?})")
    }

    /// PID of a process inside the instance's mount namespace (`nsenter -t PID -m`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The loopback smtpd's address, if the instance has one.
    pub fn smtp_addr(&self) -> Option<SocketAddr> {
        self.smtp
    }

    /// The instance's directory (conf/, queue/, data/, maillog).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How long `start` took until the instance was ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The maillog so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.maillog).unwrap_or_default()
    }

    /// Waits (polling, bounded by `timeout`) until `pred` holds for the maillog, which
    /// postlogd writes a little after the fact; returns the maillog as last read.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let mut log = String::new();
        crate::poll_until(timeout, Duration::from_millis(20), || {
            log = self.log();
            pred(&log).then_some(())
        });
        log
    }

    /// A command that runs `program` inside the instance's mount namespace: it joins the
    /// namespace (setns) in the child before exec, and before any pre_exec step added later
    /// (such as `client::as_user_in_cgroup`, which must run after it: joining needs root).
    pub fn command(&self, program: &str) -> Command {
        let ns: OwnedFd = self
            .ns
            .as_ref()
            .expect("the private Postfix has no mount namespace")
            .try_clone()
            .expect("dup the namespace fd")
            .into();
        let mut cmd = Command::new(program);
        cmd.current_dir("/");
        // SAFETY: the closure makes one raw syscall (setns) on an fd opened before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `/usr/sbin/sendmail -i -f uid<UID>@example.test -- <to...>` as `uid` inside `cg`,
    /// in the instance's mount namespace, with a small message (From/To/Subject, then `body`)
    /// on stdin. `to` may list several recipients, separated by commas or spaces.
    /// Killed after 30 s.
    pub fn sendmail_as(&self, cg: &TestCgroup, uid: u32, to: &str, body: &str) -> SendmailResult {
        let from = format!("uid{uid}@example.test");
        let rcpts: Vec<&str> = to.split([',', ' ']).filter(|s| !s.is_empty()).collect();
        assert!(!rcpts.is_empty(), "sendmail_as needs a recipient");
        let message = format!(
            "From: {from}\nTo: {}\nSubject: antispam test from uid {uid}\n\n{body}\n",
            rcpts.join(", ")
        );
        let mut args = vec!["-i", "-f", &from, "--"];
        args.extend(rcpts);
        self.sendmail_args_as(cg, uid, &args, &message)
    }

    /// Runs `/usr/sbin/sendmail ARGS` as `uid` inside `cg`, in the instance's mount namespace,
    /// with `input` on stdin (e.g. `["-t", "-i", "-f", from]` and a whole message). Remember
    /// `-f`: test UIDs have no passwd entry. Killed after 30 s.
    pub fn sendmail_args_as(
        &self,
        cg: &TestCgroup,
        uid: u32,
        args: &[&str],
        input: &str,
    ) -> SendmailResult {
        let mut cmd = self.command("/usr/sbin/sendmail");
        cmd.args(args);
        client::as_user_in_cgroup(&mut cmd, cg, uid);
        let (status, output, elapsed) =
            client::run_bounded_input(&mut cmd, input.as_bytes(), Duration::from_secs(30));
        SendmailResult {
            ok: status.is_some_and(|s| s.success()),
            eperm: output.contains("Operation not permitted"),
            status,
            elapsed,
            output,
        }
    }

    /// Sends one whole message with swaks to the loopback smtpd, as `uid` inside `cg` (in the
    /// host's mount namespace: swaks needs nothing of the instance's). Killed after 20 s.
    pub fn submit_smtp_as(&self, cg: &TestCgroup, uid: u32, to: &str, body: &str) -> SwaksResult {
        let addr = self
            .smtp
            .expect("submit_smtp_as needs an instance started with smtp_listen");
        let mut cmd = Command::new("swaks");
        cmd.args([
            "--server",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
            "--to",
            to,
            "--from",
            &format!("uid{uid}@example.test"),
            "--header",
            &format!("Subject: antispam test from uid {uid}"),
            "--body",
            body,
            "--timeout",
            "5",
        ]);
        client::as_user_in_cgroup(&mut cmd, cg, uid);
        let (status, output, elapsed) = client::run_bounded(&mut cmd, Duration::from_secs(20));
        SwaksResult {
            ok: status.is_some_and(|s| s.success()),
            eperm: output.contains("Operation not permitted"),
            elapsed,
            output,
        }
    }

    /// Files in maildrop/, incoming/, active/, deferred/ and hold/ of the private queue:
    /// 0 means nothing is waiting for delivery.
    pub fn queue_files(&self) -> usize {
        QUEUES
            .iter()
            .map(|q| count_files(&self.queue.join(q), 0))
            .sum()
    }

    /// Waits (bounded) until `queue_files()` is 0; returns whether it got there.
    pub fn wait_queue_empty(&self, timeout: Duration) -> bool {
        crate::poll_until(timeout, Duration::from_millis(20), || {
            (self.queue_files() == 0).then_some(())
        })
        .is_some()
    }

    /// The inode of the instance's mount namespace (`stat -L /proc/PID/ns/mnt`).
    pub fn mount_ns(&self) -> u64 {
        self.ns_ino
            .expect("the private Postfix has no mount namespace")
    }

    /// PIDs of the live processes in the instance's mount namespace.
    pub fn processes(&self) -> Vec<i32> {
        self.ns_ino.map(processes_in_mount_ns).unwrap_or_default()
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        let stopping = alive && self.ns.is_some();
        if stopping {
            let mut stop = self.command("/usr/sbin/postfix");
            stop.arg("stop");
            let (st, out, _) = client::run_bounded(&mut stop, Duration::from_secs(10));
            if !st.is_some_and(|s| s.success()) {
                eprintln!("WARNING: postfix stop ({st:?}): {out}");
            }
        }
        if self.ns_ino.is_none() {
            // Start-up did not get as far as finding the namespace: look once more.
            let own = fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()).ok();
            let ino = fs::metadata(format!("/proc/{}/ns/mnt", self.pid))
                .map(|m| m.ino())
                .ok();
            if ino != own {
                self.ns_ino = ino;
            }
        }
        if let Some(mut c) = self.child.take() {
            // After `postfix stop`, give start-fg time to see master go; else kill it now.
            let grace = if stopping { 10 } else { 0 };
            let deadline = Instant::now() + Duration::from_secs(grace);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // Master's children leave on their own once master is gone; kill whatever lingers
        // (and any client still running inside the namespace).
        let Some(ino) = self.ns_ino else { return };
        if fs::metadata("/proc/self/ns/mnt").is_ok_and(|m| m.ino() == ino) {
            return; // never sweep our own namespace
        }
        let gone = |limit| {
            crate::poll_until(limit, Duration::from_millis(20), || {
                processes_in_mount_ns(ino).is_empty().then_some(())
            })
            .is_some()
        };
        if gone(Duration::from_secs(2)) {
            return;
        }
        for pid in processes_in_mount_ns(ino) {
            // SAFETY: kill(2) with a concrete pid of a process in the instance's namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if !gone(Duration::from_secs(3)) {
            eprintln!(
                "WARNING: processes of the private Postfix in {} left: {:?}",
                self.root.display(),
                processes_in_mount_ns(ino)
            );
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it meanwhile,
/// which the start-up check of the caller will notice).
pub fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// What a test may not change on the host: the host's `/etc/postfix` (every entry's type,
/// mode, owner, size, mtime, inode and content), the mounts on it, and the system's Postfix
/// master (its pid file and whether that process lives). Compare one `capture()` from before
/// with one from after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPostfixState {
    pub config: Vec<String>,
    pub mounts: Vec<String>,
    pub system_master: String,
}

impl HostPostfixState {
    pub fn capture() -> HostPostfixState {
        let mut config = Vec::new();
        fingerprint_tree(Path::new(HOST_CONFIG), 0, &mut config);
        config.sort();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(4)
                    .is_some_and(|m| m.starts_with(HOST_CONFIG))
            })
            .map(str::to_owned)
            .collect();
        let pid_file = system_queue_directory().join("pid/master.pid");
        let system_master = match fs::read_to_string(&pid_file) {
            Ok(s) => {
                let pid = s.trim().to_owned();
                let alive = Path::new("/proc").join(&pid).exists();
                format!("{}: {pid} alive={alive}", pid_file.display())
            }
            Err(_) => format!("{}: none", pid_file.display()),
        };
        HostPostfixState {
            config,
            mounts,
            system_master,
        }
    }
}

/// The system instance's queue directory (`postconf -h queue_directory` on the host, or the
/// compiled-in default when the host has no main.cf: postconf then fails, after a 1 s sleep).
pub fn system_queue_directory() -> PathBuf {
    let has_main_cf = Path::new(HOST_CONFIG).join("main.cf").exists();
    Command::new("postconf")
        .arg(if has_main_cf { "-h" } else { "-dh" })
        .arg("queue_directory")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/var/spool/postfix".to_owned())
        .into()
}

/// Files owned by `uid` in the system instance's maildrop: anything there means a submission
/// missed the private instance.
pub fn system_maildrop_files_of(uid: u32) -> usize {
    fs::read_dir(system_queue_directory().join("maildrop"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
                .count()
        })
        .unwrap_or(0)
}

fn fingerprint_tree(path: &Path, depth: usize, out: &mut Vec<String>) {
    let Ok(m) = fs::symlink_metadata(path) else {
        out.push(format!("{} missing", path.display()));
        return;
    };
    let kind = if m.is_symlink() {
        format!(
            "-> {}",
            fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        )
    } else if m.is_dir() {
        "dir".to_owned()
    } else {
        let mut h = DefaultHasher::new();
        fs::read(path).unwrap_or_default().hash(&mut h);
        format!("file {:016x}", h.finish())
    };
    out.push(format!(
        "{} {kind} mode={:o} owner={}:{} size={} mtime={}.{} ino={}",
        path.display(),
        m.mode(),
        m.uid(),
        m.gid(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ));
    if m.is_dir() && depth < 4 {
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                fingerprint_tree(&e.path(), depth + 1, out);
            }
        }
    }
}

fn main_cf(
    root: &Path,
    queue: &Path,
    maillog: &Path,
    relay_to: SocketAddr,
    smtp_listen: Option<SocketAddr>,
) -> String {
    let v6 = relay_to.is_ipv6() || smtp_listen.is_some_and(|a| a.is_ipv6());
    let (protocols, mynetworks) = if v6 {
        ("all", "127.0.0.0/8 [::1]/128")
    } else {
        ("ipv4", "127.0.0.0/8")
    };
    let relayhost = format!("[{}]:{}", relay_to.ip(), relay_to.port());
    format!(
        "\
# A private Postfix instance of antispam's tests (tests/src/postfix.rs).
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
# Postfix exits silently unless maillog_file starts with one of these prefixes.
maillog_file_prefixes = {root}
maillog_file = {maillog}
myhostname = postfix-test.example.test
mydomain = example.test
myorigin = $myhostname
# Nothing is local: every message goes to the relay.
mydestination =
relay_domains =
local_transport = error:local delivery is disabled in the test instance
alias_maps =
alias_database =
relayhost = {relayhost}
# No DNS at all: the relay is an address literal.
smtp_dns_support_level = disabled
smtp_host_lookup = native
inet_protocols = {protocols}
inet_interfaces = loopback-only
mynetworks = {mynetworks}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0s
# Fast: no input throttling, retries after 1-2 s, short connect timeout.
in_flow_delay = 0s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s
# One message, one connection to the relay.
smtp_connection_cache_on_demand = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
",
        queue = queue.display(),
        data = root.join("data").display(),
        root = root.display(),
        maillog = maillog.display(),
    )
}

fn master_cf(smtp_listen: Option<SocketAddr>) -> String {
    let mut s = String::from(
        "\
# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
",
    );
    if let Some(a) = smtp_listen {
        let listen = match a.ip() {
            IpAddr::V4(ip) => format!("{ip}:{}", a.port()),
            IpAddr::V6(ip) => format!("[{ip}]:{}", a.port()),
        };
        s.push_str(&format!(
            "{listen} inet n       -       n       -       -       smtpd\n"
        ));
    }
    s
}

/// Loopback, or inside the address ranges of `TestNetns` (DESIGN.md: tests target nothing
/// else).
fn is_test_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.octets()[..2] == [10, 201],
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.segments()[..2] == [0xfd00, 0x201]
                || a.to_ipv4_mapped()
                    .is_some_and(|m| m.octets()[..2] == [10, 201])
        }
    }
}

/// Whether a socket of the host's network namespace listens on `addr` (from /proc/net/tcp*,
/// without connecting to it).
fn tcp_listening(addr: SocketAddr) -> bool {
    let (file, local) = match addr.ip() {
        IpAddr::V4(a) => (
            "/proc/net/tcp",
            format!("{:08X}:{:04X}", u32::from_ne_bytes(a.octets()), addr.port()),
        ),
        IpAddr::V6(a) => {
            let o = a.octets();
            let words: String = o
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            ("/proc/net/tcp6", format!("{words}:{:04X}", addr.port()))
        }
    };
    fs::read_to_string(file).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
    })
}

/// Live processes whose mount namespace has inode `ino` (zombies have none and are skipped).
pub fn processes_in_mount_ns(ino: u64) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 1 && pid != me)
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m.ino() == ino))
        .collect()
}

fn count_files(dir: &Path, depth: usize) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() && depth < 4 => count_files(&e.path(), depth + 1),
            Ok(t) if t.is_dir() => 0,
            _ => 1,
        })
        .sum()
}

/// Makes `cmd` move itself into `cg` before exec (as root, no UID change).
fn move_into_cgroup(cmd: &mut Command, cg: &TestCgroup) {
    use std::os::unix::ffi::OsStrExt;
    let procs = std::ffi::CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes())
        .expect("cgroup path without NUL");
    // SAFETY: open/write/close on data prepared before fork; no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let r = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if r != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
}
