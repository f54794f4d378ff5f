//! `cargo xtask vm-test`: the integration tests inside QEMU (TCG) VMs that boot Debian's own
//! kernels, for the kernel paths this machine's kernel cannot run (it refuses trampoline-based
//! BPF programs: lsm, lsm_cgroup, fentry). See docs/vms.md.
//!
//! The guest sees the host's root read-only over 9p, so it runs the host's build of the agent
//! and the test binaries, and the host's swaks, Postfix and iproute2.

mod binaries;
mod guest;
mod kernels;
mod modules;
mod qemu;
mod report;
mod systemd;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use kernels::{Series, SERIES};
use report::{secs, Console};

use crate::{root, setup};

/// Debian packages only vm-test needs (checked with dpkg-query, installed when missing).
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64, the VM (TCG)"),
    ("busybox-static", "the initramfs's /bin/busybox"),
    ("kmod", "depmod -b for the guest kernels' module trees"),
    ("xz-utils", "decompressing 6.12's .ko.xz modules"),
];

const MEMORY_MIB: u32 = 3072;
const CPUS: u32 = 2;
/// Upper bound for one test binary inside the guest.
const PER_BINARY_SECS: u64 = 600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// Debian 11's kernel, below the agent's floor: only the `floor` test runs there.
    #[value(name = "5.10")]
    V5_10,
    All,
}

impl KernelChoice {
    fn series(self) -> Vec<Series> {
        let want = |name: &str| SERIES.iter().copied().filter(|s| s.name == name).collect();
        match self {
            KernelChoice::V6_1 => want("6.1"),
            KernelChoice::V6_12 => want("6.12"),
            KernelChoice::V5_10 => want("5.10"),
            KernelChoice::All => SERIES.to_vec(),
        }
    }
}

/// The test binary that runs on a kernel below the floor (the agent must refuse to start).
const FLOOR_TEST: &str = "floor";

/// The host's variables the guest's tests get too, where set.
const PASSED_ENV: [&str; 2] = ["RUST_LOG", "RUST_TEST_NOCAPTURE"];

#[derive(Args, Debug, Clone)]
pub struct VmTestArgs {
    /// Which Debian kernel to boot: bookworm's 6.1, 6.12 (bookworm-backports/-security),
    /// bullseye's 5.10 (below the floor: only the `floor` test), or all of them.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelChoice,
    /// Only tests whose name contains this (libtest filter; repeatable: any of them).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Only this integration test binary of antispam-tests, e.g. `limits` (repeatable).
    #[arg(long = "test", value_name = "FILE")]
    pub tests: Vec<String>,
    /// Use the agent and test binaries already in target/release instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// Refresh the private package lists now, not only when they are a day old.
    #[arg(long)]
    pub refresh: bool,
    /// Upper bound for one VM (boot, every test binary, power-off), in seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Instead of the integration tests: boot 6.1 with systemd as PID 1 over the host's root
    /// and test the shipped deploy/systemd/antispam.service (start, reload, SIGHUP during
    /// start-up, stop, take-over, restart after SIGKILL, systemd-analyze security).
    #[arg(long)]
    pub systemd: bool,
    /// With --systemd: instead of the unit installed by hand, the Debian package (`cargo xtask
    /// package`, built twice as two versions): install, logrotate, upgrade without a gap,
    /// purge.
    #[arg(long, requires = "systemd")]
    pub package: bool,
}

/// The outcome of one kernel's VM.
struct Run {
    series: Series,
    kernel: String,
    console: Console,
    /// Why the VM did not finish, if it did not.
    problem: Option<String>,
    wall: Duration,
}

impl Run {
    fn ok(&self) -> bool {
        self.problem.is_none() && self.console.rc == Some(0) && self.console.failed() == 0
    }

    /// Failed tests; a VM that did not finish, or failed without a failed test, counts as one.
    fn failed(&self) -> u32 {
        let failed = self.console.failed();
        if failed == 0 && !self.ok() {
            1
        } else {
            failed
        }
    }
}

/// Per kernel: passed and failed tests, and the wall time; for `cargo xtask test`'s summary.
pub struct Outcome {
    pub runs: Vec<(String, u32, u32, Duration)>,
    pub ok: bool,
}

pub fn vm_test(args: VmTestArgs) -> Result<()> {
    let o = vm_test_outcome(&args)?;
    if qemu::interrupted() {
        bail!("interrupted");
    }
    if !o.ok {
        bail!("vm-test failed (console logs in target/vm/)");
    }
    Ok(())
}

/// Runs the VMs `args` asks for and prints their summaries; Err only when nothing could run.
pub fn vm_test_outcome(args: &VmTestArgs) -> Result<Outcome> {
    setup::ensure_packages(PACKAGES)?;
    qemu::check_installed()?;
    if args.systemd {
        return systemd_outcome(args);
    }
    let mut bins = binaries::test_binaries(!args.no_build)?;
    if !args.tests.is_empty() {
        for t in &args.tests {
            let t = t.trim_end_matches(".rs");
            if !bins.iter().any(|b| b.name == t) {
                let names: Vec<&str> = bins.iter().map(|b| b.name.as_str()).collect();
                bail!(
                    "no integration test binary {t:?}; there are: {}",
                    names.join(" ")
                );
            }
        }
        bins.retain(|b| {
            args.tests
                .iter()
                .any(|t| t.trim_end_matches(".rs") == b.name)
        });
    }
    // As for the tests on the host: ANTISPAM_BIN names another build of the agent.
    let agent = std::env::var_os("ANTISPAM_BIN")
        .map_or_else(|| root().join("target/release/antispam"), PathBuf::from);
    if !agent.is_absolute() {
        bail!("ANTISPAM_BIN must be an absolute path (the guest sees the host's root)");
    }
    if !agent.is_file() {
        bail!(
            "the agent {} is not built (drop --no-build)",
            agent.display()
        );
    }
    qemu::install_signal_handlers();
    let mut runs = Vec::new();
    for series in args.kernel.series() {
        if qemu::interrupted() {
            break;
        }
        let t = Instant::now();
        let mine: Vec<guest::TestBinary> = if series.below_floor {
            bins.iter()
                .filter(|b| b.name == FLOOR_TEST)
                .cloned()
                .collect()
        } else {
            bins.clone()
        };
        if mine.is_empty() {
            println!(
                "\n=== vm-test {}: skipped: below the floor only the {FLOOR_TEST} test runs, and it is not selected",
                series.name
            );
            continue;
        }
        let run = run_kernel(series, args, &mine, &agent).unwrap_or_else(|e| Run {
            series,
            kernel: String::new(),
            console: Console::default(),
            problem: Some(format!("{e:#}")),
            wall: t.elapsed(),
        });
        summary(&run);
        runs.push(run);
    }
    if runs.len() > 1 {
        println!();
        for r in &runs {
            summary(r);
        }
    }
    let passed: u32 = runs.iter().map(|r| r.console.passed()).sum();
    let failed: u32 = runs.iter().map(Run::failed).sum();
    println!("vm-test: {passed} passed, {failed} failed");
    Ok(outcome(&runs))
}

fn outcome(runs: &[Run]) -> Outcome {
    Outcome {
        runs: runs
            .iter()
            .map(|r| {
                (
                    r.series.name.to_string(),
                    r.console.passed(),
                    r.failed(),
                    r.wall,
                )
            })
            .collect(),
        ok: !runs.is_empty() && runs.iter().all(Run::ok) && !qemu::interrupted(),
    }
}

/// `--systemd`: the 6.1 guest (or the one `--kernel` names) with systemd as PID 1.
fn systemd_outcome(args: &VmTestArgs) -> Result<Outcome> {
    let series = match args.kernel {
        KernelChoice::All => KernelChoice::V6_1,
        k => k,
    }
    .series()[0];
    if !args.no_build {
        setup::setup()?;
        crate::run(crate::cargo().args(["build", "--release", "--package", "antispam-user"]))?;
    }
    let agent = root().join("target/release/antispam");
    if !agent.is_file() {
        bail!(
            "the agent {} is not built (drop --no-build)",
            agent.display()
        );
    }
    let debs = if args.package {
        // The package's logrotate rule is run in the guest, which is this machine's root.
        setup::ensure_packages(&[(
            "logrotate",
            "the package's logrotate rule, run in the package's VM test",
        )])?;
        // Two versions of the same build: the second upgrades the first.
        let first = crate::package::deb(&agent, env!("CARGO_PKG_VERSION"))?;
        let second = crate::package::deb(&agent, concat!(env!("CARGO_PKG_VERSION"), "+upgrade1"))?;
        Some((first, second))
    } else {
        None
    };
    qemu::install_signal_handlers();
    let t = Instant::now();
    let debs = debs.as_ref().map(|(a, b)| (a.as_path(), b.as_path()));
    let run = run_systemd(series, args, &agent, debs).unwrap_or_else(|e| Run {
        series,
        kernel: String::new(),
        console: Console::default(),
        problem: Some(format!("{e:#}")),
        wall: t.elapsed(),
    });
    summary(&run);
    if let Some(score) = &run.console.security {
        println!("    systemd-analyze security antispam.service: {score}");
    }
    println!(
        "vm-test --systemd: {} passed, {} failed",
        run.console.passed(),
        run.failed()
    );
    Ok(outcome(std::slice::from_ref(&run)))
}

fn run_systemd(
    series: Series,
    args: &VmTestArgs,
    agent: &Path,
    debs: Option<(&Path, &Path)>,
) -> Result<Run> {
    let kernel = kernels::ensure(series, args.refresh)?;
    let mods = modules::load_order(&kernel)?;
    let name = if debs.is_some() { "package" } else { "systemd" };
    let dir = root().join(format!("target/vm/{name}"));
    let initramfs = dir.join("initramfs.cpio");
    let plan = systemd::Plan {
        agent,
        unit: &root().join("deploy/systemd/antispam.service"),
        dir: &dir,
        epoch: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        debs,
    };
    systemd::prepare(&plan, &mods, &initramfs)?;
    let log = root().join(format!("target/vm/{name}.log"));
    println!(
        "\n=== vm-test --systemd: {} {}, systemd as PID 1, {}; console in {}",
        kernel.package,
        kernel.version,
        if debs.is_some() {
            "the Debian package installed, upgraded and purged"
        } else {
            "the shipped unit"
        },
        log.display()
    );
    boot(series, &kernel, &initramfs, &log, args.timeout.min(900))
}

/// Boots one VM and reads its console until the result marker, QEMU's exit or the timeout.
fn boot(
    series: Series,
    kernel: &kernels::Kernel,
    initramfs: &Path,
    log: &Path,
    timeout: u64,
) -> Result<Run> {
    let vm = qemu::Vm {
        kernel: &kernel.vmlinuz(),
        initramfs,
        memory_mib: MEMORY_MIB,
        cpus: CPUS,
    };
    let mut console = Console::default();
    let start = Instant::now();
    let end = qemu::run(&vm, log, Duration::from_secs(timeout), |line, at| {
        console.line(line, at)
    })?;
    let problem = match end {
        qemu::End::Done => None,
        qemu::End::Exited(status) => Some(format!(
            "QEMU exited ({status}) before the guest reported a result"
        )),
        qemu::End::TimedOut => Some(format!("the VM did not finish within {timeout} s (killed)")),
        qemu::End::Interrupted => Some("interrupted (QEMU killed)".to_string()),
    };
    Ok(Run {
        series,
        kernel: format!("{} {}", kernel.package, kernel.version),
        console,
        problem,
        wall: start.elapsed(),
    })
}

fn run_kernel(
    series: Series,
    args: &VmTestArgs,
    bins: &[guest::TestBinary],
    agent: &Path,
) -> Result<Run> {
    let kernel = kernels::ensure(series, args.refresh)?;
    let mods = modules::load_order(&kernel)?;
    let dir = root().join("target/vm").join(series.name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("run.sh");
    let plan = guest::Plan {
        binaries: bins,
        filters: &args.filter,
        agent,
        workdir: &root().join("tests"),
        per_binary_secs: PER_BINARY_SECS.min(args.timeout),
        epoch: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        passed_env: PASSED_ENV
            .iter()
            .filter_map(|&name| Some((name, std::env::var(name).ok()?)))
            .collect(),
    };
    fs::write(&script, guest::run_script(&plan))?;
    let initramfs = dir.join("initramfs.cpio");
    guest::initramfs(&initramfs, &mods, &script)?;
    let log = root().join(format!("target/vm/{}.log", series.name));
    println!(
        "\n=== vm-test {}: {} {}, {} test binaries, agent {}, {} modules; console in {}",
        series.name,
        kernel.package,
        kernel.version,
        bins.len(),
        agent.display(),
        mods.len(),
        log.display()
    );
    boot(series, &kernel, &initramfs, &log, args.timeout)
}

fn summary(r: &Run) {
    let c = &r.console;
    let opt = |d: Option<Duration>| d.map_or_else(|| "-".to_string(), secs);
    println!(
        "vm-test {} ({}): {} passed, {} failed, {} ignored; QEMU start to init {}, to first \
         test {}; wall {}",
        r.series.name,
        if r.kernel.is_empty() {
            "no kernel"
        } else {
            &r.kernel
        },
        c.passed(),
        r.failed(),
        c.ignored(),
        opt(c.init),
        opt(c.boot),
        secs(r.wall)
    );
    for b in &c.binaries {
        let rc = match b.rc {
            None => "did not end".to_string(),
            Some(124) => "rc=124 (killed by the guest's timeout)".to_string(),
            Some(rc) => format!("rc={rc}"),
        };
        println!(
            "    {:<20} {:>3} passed {:>3} failed {:>9}  {rc}{}",
            b.name,
            b.passed(),
            b.failed(),
            secs(b.took),
            if b.finished {
                ""
            } else {
                " (no libtest summary: crashed or killed)"
            }
        );
        for f in &b.failures {
            println!("        FAILED {f}");
        }
    }
    for e in &c.errors {
        println!("    guest error: {e}");
    }
    if let Some(p) = &r.problem {
        println!("    {p}");
    }
}
