//! Idempotent machine setup: each step checks before it installs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, run};

/// Debian packages the integration tests and their peers need (checked by package status with
/// dpkg-query, never by a command they ship), and what each is for. Only `cargo xtask test`
/// installs them: `cargo xtask run` is for production hosts, and on an Exim host installing
/// postfix would remove Exim.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    ("swaks", "SMTP client in the tests"),
    // A Recommends of swaks, so not installed with --no-install-recommends: without it swaks
    // refuses IPv6 ("IPv6 not available: requires IO::Socket::INET6").
    ("libio-socket-inet6-perl", "IPv6 for swaks"),
    (
        "postfix",
        "smtp-sink and a private Postfix instance in the tests",
    ),
    ("bpftool", "inspecting attachments in the tests"),
    ("prometheus", "`promtool check metrics` in the tests"),
    ("iproute2", "network namespaces and veth pairs"),
    ("util-linux", "setpriv, unshare and nsenter in the tests"),
    (
        "openssh-client",
        "ssh-keygen: keys and signatures of signed operator requests in the tests",
    ),
    (
        "nftables",
        "the metrics-port rule of docs/operations.md, tested as written",
    ),
    (
        "systemd",
        "`systemd-analyze verify` and `security` of the shipped unit",
    ),
    (
        "redis-server",
        "the fleet store of the fleet-budget tests (each test runs its own on a free port)",
    ),
    (
        "openssl",
        "a CA and a certificate for the fleet store's TLS test",
    ),
];

/// bpf-linker release line known to build against the nightly toolchain's LLVM here.
const BPF_LINKER_VERSION: &str = "0.13";

/// What building and running the agent need: the nightly rust-src component, bpf-linker and
/// the BPF filesystem. No Debian package: the agent itself needs none.
pub fn setup() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    bpffs()?;
    Ok(())
}

/// `setup` plus the Debian packages of the integration tests ([`TEST_PACKAGES`]).
pub fn setup_tests() -> Result<()> {
    setup()?;
    ensure_packages(TEST_PACKAGES)
}

/// The BPF filesystem at /sys/fs/bpf, where the agent pins its programs and maps (systemd mounts
/// it at boot; minimal containers and some CI machines do not). Idempotent.
fn bpffs() -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs(2) into a zeroed struct we own.
    let mounted = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    };
    if mounted {
        return Ok(());
    }
    if !nix_is_root() {
        bail!("/sys/fs/bpf is not a BPF filesystem; as root: mount -t bpf bpf /sys/fs/bpf");
    }
    // Mode 0700, as systemd mounts it: a bpffs mounted with the default mode (1777) lets any
    // user create directories in it (the agent refuses a pin tree it does not own).
    eprintln!("setup: mounting the BPF filesystem on /sys/fs/bpf (mode 0700)");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf", "-o", "mode=0700"]))
}

/// Whether dpkg lists `pkg` as installed (`install ok installed`; a removed package whose
/// configuration files are left says `deinstall ok config-files`).
pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages of `packages` (package, what it is for) that are not installed
/// yet. Idempotent.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(p, _)| !installed(p))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        bail!(
            "these Debian packages are missing and installing them needs root: {}",
            missing.join(" ")
        );
    }
    eprintln!(
        "xtask setup: installing Debian packages: {}",
        missing.join(" ")
    );
    // Postfix is only here for smtp-sink: do not let it configure itself as a mail server.
    if missing.contains(&"postfix") {
        preseed_postfix();
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get install succeeded but dpkg does not list these as installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

fn preseed_postfix() {
    let mut preseed = Command::new("debconf-set-selections");
    preseed.stdin(std::process::Stdio::piped());
    if let Ok(mut child) = preseed.spawn() {
        use std::io::Write as _;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"postfix postfix/main_mailer_type select No configuration\n");
        }
        let _ = child.wait();
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (the eBPF programs build with the nightly toolchain)")?;
    if !out.status.success() {
        eprintln!("xtask setup: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        eprintln!("xtask setup: adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Where bpf-linker and the LLVM link farm live: outside the work tree so that a fresh clone
/// on the same machine reuses them, and never in a temporary directory (bpf-linker keeps an
/// rpath to the LLVM it was built against). vm-test keeps its kernels here too.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home().join(".cache"), PathBuf::from)
        .join("antispam")
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map_or_else(|| home().join(".cargo"), PathBuf::from)
        .join("bin")
}

fn bpf_linker_works(bin: &Path) -> bool {
    Command::new(bin).arg("--version").output().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .contains(&format!("bpf-linker {BPF_LINKER_VERSION}"))
    })
}

/// Builds bpf-linker against the LLVM shared library the nightly toolchain ships (no system
/// LLVM needed), and links it into cargo's bin directory so plain `cargo build` finds it.
fn bpf_linker() -> Result<()> {
    let cache = cache_dir();
    let bin = cache.join("bpf-linker/bin/bpf-linker");
    if !bpf_linker_works(&bin) {
        let sysroot = String::from_utf8(
            Command::new("rustc")
                .args(["+nightly", "--print", "sysroot"])
                .output()
                .context("rustc +nightly")?
                .stdout,
        )?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let llvm = std::fs::read_dir(&lib)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("libLLVM.so."))
            .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
        // libLLVM.so.22.1-rust-1.97.0-nightly → 22
        let major = llvm
            .trim_start_matches("libLLVM.so.")
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let prefix = cache.join("llvm");
        let prefix_lib = prefix.join("lib");
        std::fs::create_dir_all(&prefix_lib)?;
        for name in ["libLLVM.so".to_string(), llvm.clone()] {
            let link = prefix_lib.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(lib.join(&llvm), &link)?;
        }
        eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} from the nightly toolchain (about 75 s)");
        run(cargo()
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--locked", "--no-default-features"])
            .args(["--version", &format!("~{BPF_LINKER_VERSION}")])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(cache.join("bpf-linker")))?;
        if !bpf_linker_works(&bin) {
            bail!(
                "bpf-linker was built but {} --version does not work",
                bin.display()
            );
        }
    }
    let link = cargo_bin_dir().join("bpf-linker");
    let ours = std::fs::read_link(&link).is_ok_and(|target| target == bin);
    let exists = link.symlink_metadata().is_ok();
    // A working bpf-linker of the same release that someone installed there is kept.
    let keep = ours || (exists && bpf_linker_works(&link));
    if !keep {
        if exists {
            std::fs::remove_file(&link)?;
        }
        std::fs::create_dir_all(cargo_bin_dir())?;
        std::os::unix::fs::symlink(&bin, &link)?;
    }
    // Children (cargo build → build.rs → aya-build) find it on PATH from here on.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if !dirs.contains(&cargo_bin_dir()) {
        dirs.insert(0, cargo_bin_dir());
        // SAFETY: single-threaded at this point; no other thread reads the environment.
        unsafe { std::env::set_var("PATH", std::env::join_paths(dirs)?) };
    }
    Ok(())
}
