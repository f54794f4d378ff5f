//! The antispam agent as a child process, plus `antispam check`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestCgroup, TestDir};

/// The agent binary: $ANTISPAM_BIN, else <workspace>/target/release/antispam.
pub fn antispam_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ANTISPAM_BIN") {
        return PathBuf::from(p);
    }
    crate::workspace_root().join("target/release/antispam")
}

fn require_bin() -> PathBuf {
    let bin = antispam_bin();
    if !bin.is_file() {
        panic!(
            "antispam binary not found at {} (set ANTISPAM_BIN or build with `cargo build --release -p antispam-user`)",
            bin.display()
        );
    }
    bin
}

/// Result of `antispam check FILE`.
#[derive(Debug)]
pub struct CheckResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CheckResult {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `antispam check FILE` (bounded to 15 s).
pub fn antispam_check(file: &Path) -> CheckResult {
    let mut cmd = Command::new(require_bin());
    cmd.arg("check").arg(file);
    let out_path = std::env::temp_dir().join(format!(
        "antispam-test-check-{}-{}",
        std::process::id(),
        crate::next_seq()
    ));
    let err_path = out_path.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create"))
        .stderr(File::create(&err_path).expect("create"));
    let mut child = cmd.spawn().expect("spawn antispam check");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    CheckResult {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}

/// Plain blocking HTTP/1.0 GET. Returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, crate::bound(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(crate::bound(Duration::from_secs(5))))?;
    s.set_write_timeout(Some(crate::bound(Duration::from_secs(5))))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head:?}")))?;
    Ok((code, body.to_string()))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Runs `antispam run` where it is expected to refuse to start; returns (exit code, stderr).
/// Its audit log (unless `audit_log` names one) and its control socket are in `dir`, so a start
/// that gets further than expected still never touches the system's paths. `wrapper` runs
/// before the binary (e.g. `setpriv ...`).
pub fn run_refused(
    wrapper: &[&str],
    policy: &Path,
    cgroup: &Path,
    dir: &TestDir,
    audit_log: Option<&Path>,
) -> (Option<i32>, String) {
    run_refused_with(wrapper, policy, cgroup, dir, audit_log, &[])
}

/// `run_refused` with extra arguments after the standard ones.
pub fn run_refused_with(
    wrapper: &[&str],
    policy: &Path,
    cgroup: &Path,
    dir: &TestDir,
    audit_log: Option<&Path>,
    extra: &[&str],
) -> (Option<i32>, String) {
    let n = crate::next_seq();
    let bin = require_bin();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let audit = audit_log.map_or_else(
        || dir.path().join(format!("audit-refused-{n}.jsonl")),
        Path::to_path_buf,
    );
    let out = cmd
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--audit-log")
        .arg(audit)
        .arg("--control-socket")
        .arg(dir.path().join(format!("control-refused-{n}.sock")))
        .arg("--mta-socket")
        .arg(dir.path().join(format!("mta-refused-{n}")).join("mta.sock"))
        .arg("--pin-dir")
        .arg(dir.pins())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What an agent is started with, beyond the standard arguments.
#[derive(Default)]
pub struct Launch<'a> {
    /// A command the binary runs under (`wrapper[0] wrapper[1..] antispam run ...`).
    pub wrapper: &'a [&'a str],
    /// Arguments after the standard ones.
    pub extra: &'a [&'a str],
    /// The audit log (default: a new one in the test's directory), e.g. to share one chain
    /// between agents one after the other.
    pub audit_path: Option<PathBuf>,
    /// The event log (default: a new one in the test's directory).
    pub log_path: Option<PathBuf>,
    /// `--metrics-addr` (default: a free loopback port).
    pub metrics_addr: Option<SocketAddr>,
}

/// A running `antispam run` attached to a test cgroup. SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    pub metrics_addr: SocketAddr,
    pub log_path: PathBuf,
    pub stderr_path: PathBuf,
    pub policy_path: PathBuf,
    /// The agent's audit log (in the test's temp dir, never the system default).
    pub audit_path: PathBuf,
    /// The agent's control socket (in the test's temp dir).
    pub control_path: PathBuf,
    /// The MTA policy service's socket (in a directory of its own in the test's temp dir).
    pub mta_socket: PathBuf,
}

impl Agent {
    /// `antispam run --policy POLICY --cgroup CG --metrics-addr 127.0.0.1:PORT --log DIR/events-N.jsonl`.
    pub fn start(policy: &Path, cg: &TestCgroup, dir: &TestDir) -> Agent {
        Self::start_with(policy, cg, dir, &[])
    }

    /// Like `start`, with extra arguments after the standard ones.
    pub fn start_with(policy: &Path, cg: &TestCgroup, dir: &TestDir, extra: &[&str]) -> Agent {
        Self::start_via(&[], policy, cg, dir, extra)
    }

    /// Like `start_with`, run through a wrapper command (e.g. `setpriv --bounding-set=...`):
    /// `wrapper[0] wrapper[1..] antispam run ...`.
    pub fn start_via(
        wrapper: &[&str],
        policy: &Path,
        cg: &TestCgroup,
        dir: &TestDir,
        extra: &[&str],
    ) -> Agent {
        let launch = Launch {
            wrapper,
            extra,
            ..Launch::default()
        };
        // Retry a couple of times in case the free port got taken between bind and use.
        let mut last_err = String::new();
        for _ in 0..3 {
            let mut agent = Agent::spawn(policy, cg, dir, &launch);
            match agent.wait_ready(crate::bound(Duration::from_secs(10))) {
                Ok(took) => {
                    eprintln!(
                        "agent ready in {took:?} (metrics on {})",
                        agent.metrics_addr
                    );
                    return agent;
                }
                Err(e) if agent.child.is_some() => panic!("{e}"),
                Err(e) => last_err = e,
            }
            if !last_err.contains("in use") {
                break;
            }
        }
        panic!("{last_err}");
    }

    /// `antispam run` with the standard arguments and `launch`'s, not waited for.
    pub fn spawn(policy: &Path, cg: &TestCgroup, dir: &TestDir, launch: &Launch<'_>) -> Agent {
        let bin = require_bin();
        let n = crate::next_seq();
        let at = |name: String| dir.path().join(name);
        let log_path = launch
            .log_path
            .clone()
            .unwrap_or_else(|| at(format!("events-{n}.jsonl")));
        let stderr_path = at(format!("agent-stderr-{n}.log"));
        let audit_path = launch
            .audit_path
            .clone()
            .unwrap_or_else(|| at(format!("audit-{n}.jsonl")));
        let control_path = at(format!("control-{n}.sock"));
        let stdout_path = at(format!("agent-stdout-{n}.log"));
        let metrics_addr = launch.metrics_addr.unwrap_or_else(|| {
            format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("an address")
        });
        let mut cmd = match launch.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("run")
            .arg("--policy")
            .arg(policy)
            .arg("--cgroup")
            .arg(cg.path())
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--log")
            .arg(&log_path)
            .arg("--audit-log")
            .arg(&audit_path)
            .arg("--control-socket")
            .arg(&control_path)
            .arg("--pin-dir")
            .arg(dir.pins());
        // Each agent its own MTA policy socket, unless the test names one (or none).
        let own_mta = launch
            .extra
            .iter()
            .any(|a| *a == "--mta-socket" || *a == "--no-mta-socket");
        let named = launch
            .extra
            .iter()
            .position(|a| *a == "--mta-socket")
            .and_then(|i| launch.extra.get(i + 1));
        let mta_socket = match named {
            Some(p) => PathBuf::from(p),
            None => at(format!("mta-{n}")).join("mta.sock"),
        };
        if !own_mta {
            cmd.arg("--mta-socket").arg(&mta_socket);
        }
        cmd.args(launch.extra)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create stdout file"))
            .stderr(File::create(&stderr_path).expect("create stderr file"));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Agent {
            mta_socket,
            child: Some(child),
            metrics_addr,
            log_path,
            stderr_path,
            policy_path: policy.to_path_buf(),
            audit_path,
            control_path,
        }
    }

    /// Waits until `/healthz` answers: the time it took, or why not (the agent exited early:
    /// then `child` is None; or `limit` passed).
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.metrics_addr, "/healthz") {
                return Ok(start.elapsed());
            }
            if let Some(st) = self.wait_exit(Duration::ZERO) {
                return Err(format!(
                    "agent exited early ({st}); stderr:\n{}",
                    self.stderr()
                ));
            }
            if start.elapsed() >= limit {
                return Err(format!(
                    "agent not ready (GET /healthz != 200) within {limit:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `limit` for the agent to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let st = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = st {
                self.child = None;
                return Some(st);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("agent is running") as i32;
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(r, 0, "kill({signal}): {}", std::io::Error::last_os_error());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The agent's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr, path).unwrap_or_else(|e| {
            panic!(
                "GET {path} from agent failed: {e}; agent stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// GET /metrics (panics unless 200).
    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "GET /metrics returned {code}: {body}");
        body
    }

    /// `antispam status --json` over the agent's control socket (the status is not served
    /// over HTTP: it names users and operators).
    pub fn status_json(&self) -> serde_json::Value {
        let out = Command::new(antispam_bin())
            .args(["status", "--json", "--control-socket"])
            .arg(&self.control_path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("antispam status: {e}"));
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "antispam status failed ({}): {}{}; agent stderr:\n{}",
            out.status,
            body,
            String::from_utf8_lossy(&out.stderr),
            self.stderr()
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {body}"))
    }

    /// All complete JSON lines of the --log file so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut out = Vec::new();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for line in complete.lines() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(v) => out.push(v),
                Err(e) => panic!("event log line is not JSON ({e}): {line}"),
            }
        }
        out
    }

    /// Waits (up to 2 s) until at least `min` events match `pred`; returns the matching events
    /// (possibly fewer than `min` if the time ran out: the caller asserts).
    pub fn wait_events(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        min: usize,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + crate::bound(Duration::from_secs(2));
        loop {
            let ev: Vec<_> = self.events().into_iter().filter(|e| pred(e)).collect();
            if ev.len() >= min || Instant::now() >= deadline {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGHUP (policy reload).
    pub fn reload(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Is the agent process still running?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL: the agent dies without a chance to clean up (a crash, the OOM killer).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the agent (SIGTERM, ≤5 s, then SIGKILL) and returns its exit status if it exited.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                eprintln!("WARNING: agent did not exit within 5 s of SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            eprintln!("---- agent stderr (last {} lines) ----", tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
            eprintln!("---- end agent stderr ----");
        }
    }
}
