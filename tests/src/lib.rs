//! Real-kernel integration test harness for antispam.
//!
//! Everything here is an RAII guard: cgroups, network namespaces, SMTP sinks, the agent process
//! and temporary policy directories are all torn down in `Drop`, also when a test panics.
//! The rules in DESIGN.md "Rules for tests that touch the kernel" apply: we only ever touch
//! cgroups we created (under a per-run directory), only target addresses inside network
//! namespaces we created (or loopback), and every loop is bounded in count and time.

pub mod agent;
pub mod cgroup;
pub mod client;
pub mod ctl;
pub mod faults;
pub mod fixture;
pub mod metrics;
pub mod netns;
pub mod postfix;
pub mod redis;
pub mod sink;
pub mod ssh;
pub mod syn;
pub mod tmp;
pub mod tmpfs;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use agent::{
    antispam_bin, antispam_check, http_get, run_refused, run_refused_with, Agent, CheckResult,
    Launch,
};
pub use cgroup::{cgroup2_mount, TestCgroup};
pub use client::{
    connect_probe_as, connect_probe_in_netns, swaks, swaks_as, tcp_connect_as, tcp_probe_once,
    udp_send_as, ProbeAttempt, ProbeOptions, SwaksResult,
};
pub use ctl::{ctl, ctl_as, CtlOutput};
pub use fixture::{by_uid, ev_str, ev_u64, show, wait_metrics, Fixture};
pub use metrics::{metric_sum, metric_value};
pub use netns::TestNetns;
pub use postfix::{
    free_loopback_port, system_maildrop_files_of, HostPostfixState, PrivatePostfix, SendmailResult,
};
pub use sink::SmtpSink;
pub use tmp::TestDir;
pub use tmpfs::TestTmpfs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique within this process (monotonic).
pub fn next_seq() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Nanoseconds since the epoch (for unique names).
pub fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A numeric UID/GID unused on the host, in 61000..=61999, unique per call within a process
/// and unlikely to repeat across the test binaries of one run.
pub fn unique_uid() -> u32 {
    // The base is fixed once per process, so that calls of one process never repeat a UID
    // (within 1000 calls); it was once taken from the clock at every call, which let two calls
    // a few milliseconds apart land on the same UID.
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let base = *BASE
        .get_or_init(|| ((std::process::id() as u128 * 37 + nanos() / 1_000_000) % 1000) as u32);
    let uid = 61000 + ((base + next_seq() * 7) % 1000);
    // Never hand out a UID that exists in /etc/passwd.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let taken = passwd
        .lines()
        .any(|l| l.split(':').nth(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid));
    if taken {
        return unique_uid();
    }
    uid
}

/// Checks that the kernel tests can run here. Returns false (after a loud message) if they
/// cannot, or panics when `CI=true` so that a green CI means the kernel path really ran.
pub fn require_kernel() -> bool {
    match kernel_problem() {
        None => true,
        Some(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("kernel tests cannot run: {why}");
            }
            eprintln!();
            eprintln!("################################################################");
            eprintln!("### SKIPPING kernel test: {why}");
            eprintln!("### (set CI=true to make this a failure)");
            eprintln!("################################################################");
            eprintln!();
            false
        }
    }
}

fn kernel_problem() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (euid != 0)".into());
    }
    if !bpf_usable() {
        return Some("the bpf() syscall is not usable and /sys/fs/bpf is not a bpffs".into());
    }
    if cgroup::find_cgroup2_mount().is_none() {
        return Some("no cgroup2 mount in /proc/self/mountinfo".into());
    }
    if !bpffs_mounted() {
        return Some(
            "/sys/fs/bpf is not a BPF filesystem, where the agent pins its programs \
             (`cargo xtask setup` mounts it; or: mount -t bpf bpf /sys/fs/bpf)"
                .into(),
        );
    }
    None
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&"/sys/fs/bpf") && l.contains(" - bpf ")
        })
    })
}

fn bpf_usable() -> bool {
    // A BPF_PROG_LOAD-free probe: BPF_MAP_CREATE of a tiny array map.
    #[repr(C)]
    #[derive(Default)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        _pad: [u32; 27],
    }
    let attr = MapCreate {
        map_type: 2, // BPF_MAP_TYPE_ARRAY
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        ..Default::default()
    };
    // SAFETY: attr is a valid, zero-padded bpf_attr prefix of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd >= 0 {
        // SAFETY: we own this fd.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    // Fall back: is /sys/fs/bpf a mounted bpffs?
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.contains(" - bpf ") && l.contains("/sys/fs/bpf"))
        })
        .unwrap_or(false)
}

/// How many times slower than real hardware the machine under test runs: 1, or 5 in a VM that
/// emulates every instruction (`ANTISPAM_VM=tcg`, which `cargo xtask vm-test` sets when QEMU
/// runs without KVM). Bounds that tell "at once" from "after a timeout" are multiplied by it
/// (see [`bound`]); nothing is skipped.
pub fn slowdown() -> u32 {
    match std::env::var("ANTISPAM_VM").as_deref() {
        Ok("tcg") => 5,
        _ => 1,
    }
}

/// `d` on real hardware, `d` × [`slowdown`] in an emulated VM.
pub fn bound(d: Duration) -> Duration {
    d * slowdown()
}

/// Polls `f` every `step` until it returns Some or `timeout` passes.
pub fn poll_until<T>(
    timeout: Duration,
    step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(step);
    }
}

/// Runs a command to completion, panicking with its output if it fails.
/// SHA-256 of a file by coreutils: an implementation independent of the agent's.
pub fn sha256sum(path: &Path) -> String {
    run_ok("sha256sum", &[&path.display().to_string()])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (for cleanup paths). Returns whether it succeeded.
pub fn run_quiet(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The workspace root (the parent of this package's manifest directory).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The connect_probe helper binary built from this package.
pub fn connect_probe_bin() -> std::path::PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_connect_probe") {
        return p.into();
    }
    // Library unit contexts do not get CARGO_BIN_EXE_*: look next to the running test binary
    // (target/<profile>/deps/<test>-hash -> target/<profile>/connect_probe).
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let cand = d.join("connect_probe");
        if cand.is_file() {
            return cand;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    panic!(
        "connect_probe binary not found near {}; build with `cargo build -p antispam-tests --bins`",
        exe.display()
    );
}
