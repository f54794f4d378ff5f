//! `cargo xtask`: set up a machine, run the agent, run the tests.
//!
//! Every command installs what it needs first (idempotently), so a fresh machine needs only
//! `cargo xtask run` or `cargo xtask test`.

mod bench;
mod package;
mod setup;
mod test;
mod vm;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "antispam's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and running the agent need: the nightly rust-src component,
    /// bpf-linker, the BPF filesystem mounted; no Debian package. Idempotent.
    Setup {
        /// Also the Debian packages of the tests (swaks, postfix, bpftool, prometheus...): what
        /// `cargo xtask test` installs. Never on a production host: on an Exim host, installing
        /// postfix removes Exim.
        #[arg(long)]
        tests: bool,
    },
    /// Build the agent (release) after setup: target/release/antispam.
    Build,
    /// Build and run the agent: `cargo xtask run -- --policy FILE --cgroup DIR ...`. Installs
    /// only what building and running need (as `cargo xtask setup`), no test peer.
    Run {
        /// Arguments for `antispam run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Everything CI runs: format and lint checks, unit tests, the real-kernel integration
    /// tests on this machine's kernel (as root, one at a time; with CI=true they fail instead
    /// of skipping), the benchmark harness's smoke run, then the kernel suite in VMs of
    /// Debian's 6.1 and 6.12, the floor check on 5.10 and the systemd unit in a 6.1 guest.
    Test(test::TestArgs),
    /// Benchmarks against no filter, nftables and iptables, in the bench's own cgroups and
    /// network namespace (root); a full run writes docs/benchmarks.md.
    Bench {
        /// Every scenario very briefly, numbers only, no docs/benchmarks.md (for CI).
        #[arg(long)]
        smoke: bool,
        /// Only scenarios whose name contains this (storm, exec, traffic, scale, events, startup,
        /// profile); never writes docs/benchmarks.md.
        #[arg(long)]
        only: Option<String>,
    },
    /// The Debian package, target/debian/antispam_<version>_<arch>.deb (or with --static a
    /// statically linked binary): binary, systemd unit, policy, man pages, completions,
    /// logrotate rule, docs, Prometheus rules and Grafana dashboard (see docs/packaging.md).
    Package(package::PackageArgs),
    /// The integration tests inside QEMU (TCG) VMs booting Debian's own 6.1 and 6.12 kernels,
    /// one test at a time with CI=true; console logs in target/vm/ (see docs/vms.md).
    VmTest(vm::VmTestArgs),
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(root());
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Setup, then the release build, saying what it does and how long each took.
fn build() -> Result<PathBuf> {
    let t = std::time::Instant::now();
    eprintln!("xtask: checking what building needs: the nightly rust-src, bpf-linker, /sys/fs/bpf");
    setup::setup()?;
    eprintln!(
        "xtask: ready in {:.1} s; building target/release/antispam (cargo build --release; a first build takes 3-6 minutes)",
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    run(cargo().args(["build", "--release", "--package", "antispam-user"]))?;
    let bin = root().join("target/release/antispam");
    eprintln!(
        "xtask: built {} in {:.1} s",
        bin.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(bin)
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup { tests: false } => setup::setup(),
        Cmd::Setup { tests: true } => setup::setup_tests(),
        Cmd::Build => build().map(|p| println!("built {}", p.display())),
        Cmd::Run { args } => {
            let bin = build()?;
            let err = Command::new(&bin).arg("run").args(args).exec();
            Err(err).with_context(|| format!("executing {}", bin.display()))
        }
        Cmd::Test(args) => test::test(&args),
        Cmd::Bench { smoke, only } => bench::bench(smoke, only.as_deref()),
        Cmd::VmTest(args) => vm::vm_test(args),
        Cmd::Package(args) => package::package(&args).map(|_| ()),
    }
}
