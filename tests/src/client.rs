//! Clients that run as a non-root UID inside a test cgroup.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{TestCgroup, TestNetns};

/// Writes "0" (this process) to a cgroup's `cgroup.procs`, between fork and exec.
///
/// # Safety
/// Raw syscalls only (open/write/close): safe in a `pre_exec` closure.
unsafe fn join_cgroup(procs: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: a NUL-terminated path of ours; a one-byte buffer of ours.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if r != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// Makes `cmd` (spawned by root) move itself into `cg`, then drop to `uid`/`uid` (gid = uid)
/// with no supplementary groups, in that order, before exec.
pub fn as_user_in_cgroup(cmd: &mut Command, cg: &TestCgroup, uid: u32) {
    assert!(uid != 0, "test clients must not run as root");
    let procs = CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes())
        .expect("cgroup path without NUL");
    let gid = uid;
    cmd.env("HOME", "/tmp").env("LC_ALL", "C");
    // SAFETY: the closure only makes raw syscalls (open/write/close/setgroups/setresgid/
    // setresuid) on data prepared before fork; no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            join_cgroup(&procs)?;
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd` (spawned by root) move itself into `cg` before exec, staying root: a container's
/// root (CAP_NET_RAW, setuid) as a stand-in.
pub fn as_root_in_cgroup(cmd: &mut Command, cg: &TestCgroup) {
    let procs = CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes())
        .expect("cgroup path without NUL");
    // SAFETY: the closure only makes raw syscalls (open/write/close) on data prepared before
    // fork; no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            join_cgroup(&procs)?;
            Ok(())
        });
    }
}

/// Like `as_user_in_cgroup`, and the command joins the network namespace `ns` first (setns, as
/// root, before it drops to `uid`): a namespace's own processes as they run in a container.
pub fn as_user_in_cgroup_and_netns(cmd: &mut Command, cg: &TestCgroup, uid: u32, ns: &TestNetns) {
    use std::os::fd::AsRawFd as _;
    let path = ns.path();
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: one raw syscall on a descriptor opened before fork (kept alive by the closure).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    as_user_in_cgroup(cmd, cg, uid);
}

/// Runs `cmd` with stdout+stderr captured to a temp file, killing it after `limit`.
/// Returns (exit status or None if killed, combined output, elapsed).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<ExitStatus>, String, Duration) {
    run_bounded_stdin(cmd, Stdio::null(), limit)
}

/// Like `run_bounded`, with `input` on the command's stdin (e.g. a message for sendmail).
pub fn run_bounded_input(
    cmd: &mut Command,
    input: &[u8],
    limit: Duration,
) -> (Option<ExitStatus>, String, Duration) {
    let in_path = std::env::temp_dir().join(format!(
        "antispam-test-in-{}-{}",
        std::process::id(),
        crate::next_seq()
    ));
    std::fs::write(&in_path, input).expect("write input file");
    let f = File::open(&in_path).expect("open input file");
    // The open descriptor is all the child needs.
    let _ = std::fs::remove_file(&in_path);
    run_bounded_stdin(cmd, Stdio::from(f), limit)
}

fn run_bounded_stdin(
    cmd: &mut Command,
    stdin: Stdio,
    limit: Duration,
) -> (Option<ExitStatus>, String, Duration) {
    let out_path = std::env::temp_dir().join(format!(
        "antispam-test-out-{}-{}",
        std::process::id(),
        crate::next_seq()
    ));
    let f = File::create(&out_path).expect("create output file");
    let f2 = f.try_clone().expect("dup");
    cmd.stdin(stdin)
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("wait {cmd:?}: {e}"),
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (status, output, elapsed)
}

#[derive(Debug, Clone)]
pub struct SwaksResult {
    /// swaks exited 0 (the SMTP dialogue up to RCPT worked).
    pub ok: bool,
    /// The output says "Operation not permitted" (connect() got EPERM).
    pub eperm: bool,
    pub elapsed: Duration,
    pub output: String,
}

/// Runs swaks as `uid` inside `cg` against `server:port`, quitting after RCPT. Killed after 15 s.
pub fn swaks(cg: &TestCgroup, uid: u32, server: IpAddr, port: u16) -> SwaksResult {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &server.to_string(),
        "--port",
        &port.to_string(),
        "--to",
        "test@example.test",
        "--from",
        "probe@example.test",
        "--quit-after",
        "RCPT",
        "--timeout",
        "5",
    ]);
    as_user_in_cgroup(&mut cmd, cg, uid);
    let (status, output, elapsed) = run_bounded(&mut cmd, Duration::from_secs(15));
    let ok = status.map(|s| s.success()).unwrap_or(false);
    let eperm = output.contains("Operation not permitted");
    SwaksResult {
        ok,
        eperm,
        elapsed,
        output,
    }
}

/// Alias kept for readability at call sites.
pub fn swaks_as(cg: &TestCgroup, uid: u32, server: IpAddr, port: u16) -> SwaksResult {
    swaks(cg, uid, server, port)
}

/// One connect attempt as reported by connect_probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeAttempt {
    pub ok: bool,
    pub errno: i32,
    /// Time the connect() call took, in microseconds.
    pub micros: u64,
}

impl ProbeAttempt {
    pub fn is_eperm(&self) -> bool {
        !self.ok && self.errno == libc::EPERM
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeOptions {
    /// UDP connect + send instead of TCP.
    pub udp: bool,
    /// Read the banner and send QUIT after a successful TCP connect.
    pub smtp: bool,
    /// Pause between attempts.
    pub interval: Duration,
}

/// Runs connect_probe as `uid` in `cg`: `count` (<= 1000) attempts to `addr`.
pub fn connect_probe_as(
    cg: &TestCgroup,
    uid: u32,
    addr: SocketAddr,
    count: u32,
    opts: ProbeOptions,
) -> Vec<ProbeAttempt> {
    connect_probe(None, cg, uid, addr, count, opts)
}

/// Like `connect_probe_as`, from inside the network namespace `ns`.
pub fn connect_probe_in_netns(
    ns: &TestNetns,
    cg: &TestCgroup,
    uid: u32,
    addr: SocketAddr,
    count: u32,
) -> Vec<ProbeAttempt> {
    connect_probe(Some(ns), cg, uid, addr, count, ProbeOptions::default())
}

fn connect_probe(
    ns: Option<&TestNetns>,
    cg: &TestCgroup,
    uid: u32,
    addr: SocketAddr,
    count: u32,
    opts: ProbeOptions,
) -> Vec<ProbeAttempt> {
    assert!(count <= 1000, "bounded: at most 1000 connects per probe");
    let mut cmd = Command::new(crate::connect_probe_bin());
    cmd.arg(addr.to_string()).arg(count.to_string());
    if opts.udp {
        cmd.arg("--udp");
    }
    if opts.smtp {
        cmd.arg("--smtp");
    }
    if !opts.interval.is_zero() {
        cmd.arg("--interval-ms")
            .arg(opts.interval.as_millis().to_string());
    }
    match ns {
        Some(ns) => as_user_in_cgroup_and_netns(&mut cmd, cg, uid, ns),
        None => as_user_in_cgroup(&mut cmd, cg, uid),
    }
    let limit = Duration::from_secs(15) + opts.interval * count;
    let (status, output, _) = run_bounded(&mut cmd, limit);
    let attempts: Vec<ProbeAttempt> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| ProbeAttempt {
            ok: v["ok"].as_bool().unwrap_or(false),
            errno: v["errno"].as_i64().unwrap_or(-1) as i32,
            micros: v["micros"].as_u64().unwrap_or(0),
        })
        .collect();
    if attempts.len() != count as usize || !status.map(|s| s.success()).unwrap_or(false) {
        panic!(
            "connect_probe to {addr} as uid {uid} in {}: expected {count} results, got {} (status {status:?}); output:\n{output}",
            cg.relative(),
            attempts.len()
        );
    }
    attempts
}

fn single(attempts: Vec<ProbeAttempt>) -> Result<Duration, io::Error> {
    let a = attempts[0];
    if a.ok {
        Ok(Duration::from_micros(a.micros))
    } else {
        Err(io::Error::from_raw_os_error(a.errno))
    }
}

/// One TCP connect to `addr` as `uid` in `cg`: Ok(time connect took) or the errno
/// (`err.raw_os_error() == Some(libc::EPERM)` for a refusal by the agent).
pub fn tcp_connect_as(cg: &TestCgroup, uid: u32, addr: SocketAddr) -> Result<Duration, io::Error> {
    single(connect_probe_as(cg, uid, addr, 1, ProbeOptions::default()))
}

/// Like `tcp_connect_as` but also measures the refused case: returns the attempt itself.
pub fn tcp_probe_once(cg: &TestCgroup, uid: u32, addr: SocketAddr) -> ProbeAttempt {
    connect_probe_as(cg, uid, addr, 1, ProbeOptions::default())[0]
}

/// One UDP connect+send to `addr` as `uid` in `cg`.
pub fn udp_send_as(cg: &TestCgroup, uid: u32, addr: SocketAddr) -> Result<Duration, io::Error> {
    single(connect_probe_as(
        cg,
        uid,
        addr,
        1,
        ProbeOptions {
            udp: true,
            ..Default::default()
        },
    ))
}
