//! What the bench creates, each behind a guard that removes it on drop (also on panic and on
//! ctrl-c, which sets a flag the loops check): a cgroup tree under the cgroup2 mount, a network
//! namespace, child processes, a scratch directory.

use std::{
    ffi::CString,
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::{ffi::OsStrExt as _, io::AsRawFd as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag; the bench stops at the next check and its guards clean up.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps in small steps, failing early if interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_stop()?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        if f.len() >= 5 && f[3] == "/" {
            // mountinfo escapes space, tab, newline and backslash as \ooo.
            return Ok(PathBuf::from(
                f[4].replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            ));
        }
    }
    bail!("no cgroup2 mount in /proc/self/mountinfo")
}

/// `<mount>/antispam-bench-<pid>` and the cgroups below it; removed (processes killed first,
/// deepest directories first) on drop.
pub struct Cgroups {
    pub root: PathBuf,
}

impl Cgroups {
    pub fn new(children: &[&str]) -> Result<Cgroups> {
        let root = cgroup2_mount()?.join(format!("antispam-bench-{}", std::process::id()));
        fs::create_dir(&root).with_context(|| format!("creating cgroup {}", root.display()))?;
        let cg = Cgroups { root };
        for c in children {
            fs::create_dir(cg.root.join(c))
                .with_context(|| format!("creating cgroup {c} under {}", cg.root.display()))?;
        }
        Ok(cg)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn subtree_deepest_first(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth < 16 {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    subtree_deepest_first(&e.path(), out, depth + 1);
                }
            }
        }
    }
    out.push(dir.to_path_buf());
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let mut dirs = Vec::new();
        subtree_deepest_first(&self.root, &mut dirs, 0);
        // cgroup.kill kills every process of the subtree (Linux >= 5.14).
        let _ = fs::write(self.root.join("cgroup.kill"), "1");
        for d in dirs {
            let deadline = Instant::now() + Duration::from_secs(3);
            while let Err(e) = fs::remove_dir(&d) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!(
                        "bench: WARNING: could not remove cgroup {}: {e}",
                        d.display()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A network namespace with only loopback up; deleted on drop (which kills nothing by itself:
/// the processes in it live in the bench's cgroups, which are killed first).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Result<Netns> {
        let name = format!("asbench-{}", std::process::id());
        quiet(Command::new("ip").args(["netns", "del", &name]));
        let ns = Netns { name };
        crate::run(Command::new("ip").args(["netns", "add", &ns.name]))?;
        crate::run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// `ip netns exec NAME PROGRAM ARGS...` with output captured; fails with stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("ip netns exec {} {program}", self.name))?;
        if !out.status.success() {
            bail!(
                "ip netns exec {} {program} {}: {}",
                self.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        quiet(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

fn quiet(cmd: &mut Command) {
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Where a child runs: which bench cgroup, and inside the bench netns or not.
pub struct Place<'a> {
    pub cgroup: PathBuf,
    pub netns: Option<&'a Netns>,
}

/// Makes `cmd` join `place` (netns first, then the cgroup) before exec.
pub fn place(cmd: &mut Command, place: &Place) -> Result<()> {
    let procs = CString::new(place.cgroup.join("cgroup.procs").as_os_str().as_bytes())?;
    let ns_fd = match place.netns {
        Some(ns) => {
            let f = fs::File::open(ns.path())
                .with_context(|| format!("opening {}", ns.path().display()))?;
            // Kept open until exec (the fd is CLOEXEC): moved into the closure.
            Some(f)
        }
        None => None,
    };
    // SAFETY: the closure only makes raw syscalls (setns/open/write/close) on data prepared
    // before fork; no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(f) = &ns_fd {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if r != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    Ok(())
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Guarded {
    pub child: Child,
    pub what: String,
}

impl Guarded {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(mut self, grace: Duration) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion, killing it after `limit`; returns its standard output.
pub fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Result<String> {
    let out = tempfile_path(what);
    let f = fs::File::create(&out)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let mut g = Guarded {
        child,
        what: what.to_string(),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = g.child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = fs::remove_file(&out);
            bail!("{} did not finish within {limit:?}", g.what);
        }
        if let Err(e) = check_stop() {
            let _ = fs::remove_file(&out);
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let _ = fs::remove_file(&out);
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = g.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("{what} failed ({status}): {}{}", err.trim(), stdout.trim());
    }
    Ok(stdout)
}

fn tempfile_path(what: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tag: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    std::env::temp_dir().join(format!(
        "antispam-bench-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A scratch directory, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("antispam-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }
}

/// A pin directory in the BPF filesystem, removed (which detaches what is pinned there) on drop.
pub struct Pins(pub PathBuf);

impl Pins {
    pub fn new(n: u32) -> Pins {
        Pins(PathBuf::from(format!(
            "/sys/fs/bpf/antispam-bench-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 GET on the host's loopback; the body, if the status is 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A free TCP port on the host's loopback (bound then released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The value of a flat JSON number field `"key":N` after the first occurrence of `anchor`.
pub fn json_number(text: &str, anchor: &str, key: &str) -> Option<f64> {
    let from = text.find(anchor)?;
    let rest = &text[from..];
    let pat = format!("\"{key}\":");
    let at = rest.find(&pat)? + pat.len();
    let num: String = rest[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
        .collect();
    num.parse().ok()
}

/// The value of an unlabelled Prometheus sample (`name value`), or the sum over its labels.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers() {
        let t = r#"{"a":{"bits_per_second":1.5e9},"sum_received":{"x":1,"bits_per_second":42.5}}"#;
        assert_eq!(
            json_number(t, "sum_received", "bits_per_second"),
            Some(42.5)
        );
        assert_eq!(json_number(t, "{", "bits_per_second"), Some(1.5e9));
        assert_eq!(json_number(t, "nope", "x"), None);
    }

    #[test]
    fn metrics() {
        let t = "# HELP x\nantispam_events_read_total 12\nantispam_events_read_total_x 3\nantispam_k{kind=\"a\"} 1\nantispam_k{kind=\"b\"} 2\n";
        assert_eq!(metric(t, "antispam_events_read_total"), Some(12.0));
        assert_eq!(metric(t, "antispam_k"), Some(3.0));
        assert_eq!(metric(t, "antispam_missing"), None);
    }
}
