//! `cargo xtask test`: lint, unit tests, the real-kernel integration tests on this machine's
//! kernel, then the kernel suite inside VMs of Debian's kernels (see docs/vms.md).

use std::{process::Command, time::Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use crate::{
    cargo, root, run, setup,
    vm::{self, KernelChoice, VmTestArgs},
};

/// The integration test binaries that run in the 6.1 and 6.12 VMs of `cargo xtask test`: the
/// ones whose kernel paths differ between kernels (program loading and the verifier, links and
/// their take-over, BPF LSM for the exec hook, socket destruction, cgroup ancestry, IPv6,
/// netns cookies), within CI's time (measured in docs/vms.md). `cargo xtask vm-test` runs
/// every binary.
pub const VM_SUITE: &[&str] = &[
    "floor",
    "limits",
    "lifecycle",
    "local_mta",
    "hostile",
    "suspend",
    "cgroup",
    "ipv6",
    "restart",
];

/// Tests of the VM suite not run in the VMs of `cargo xtask test`: what they check does not
/// depend on the kernel's version, and under emulation they take minutes. The storm of 270,000
/// UIDs fills a hash map (the same code on every kernel): 100-150 s under TCG.
pub const VM_SKIP: &[&str] =
    &["a_storm_of_uids_neither_refills_a_victim_nor_gets_unlimited_budgets"];

/// Where `cargo xtask test` runs the kernel tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Where {
    /// This machine's kernel, with the lint and unit tests and the benchmark smoke run.
    Host,
    /// The VM suite in Debian 12's 6.1.
    #[value(name = "6.1")]
    V6_1,
    /// The VM suite in the newest 6.12 of bookworm-backports/-security.
    #[value(name = "6.12")]
    V6_12,
    /// The floor check in Debian 11's 5.10 (the agent must refuse to start).
    #[value(name = "5.10")]
    V5_10,
    /// The shipped systemd unit, systemd as PID 1 in a 6.1 guest.
    Systemd,
    /// The Debian package (install, upgrade, purge) in the same kind of guest.
    Package,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Only integration tests whose name contains this (on the host and in the VMs).
    #[arg(long)]
    filter: Option<String>,
    /// Skip fmt and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Only these (repeatable): host, 6.1, 6.12, 5.10, systemd. Default: all of them.
    #[arg(long, value_enum, value_name = "KERNEL")]
    kernel: Vec<Where>,
    /// In the VMs, every integration test binary instead of the CI subset.
    #[arg(long)]
    vm_all: bool,
}

fn step(name: &str, times: &mut Vec<(String, f64)>, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n=== xtask test: {name}");
    let t = Instant::now();
    let r = f();
    times.push((name.to_string(), t.elapsed().as_secs_f64()));
    r
}

pub fn test(args: &TestArgs) -> Result<()> {
    let all = args.kernel.is_empty();
    let wants = |w: Where| all || args.kernel.contains(&w);
    let mut times = Vec::new();
    step(
        "setup (with the tests' packages)",
        &mut times,
        setup::setup_tests,
    )?;
    if wants(Where::Host) {
        host(args, &mut times)?;
    }
    let kernels: Vec<(Where, KernelChoice)> = [
        (Where::V6_1, KernelChoice::V6_1),
        (Where::V6_12, KernelChoice::V6_12),
        (Where::V5_10, KernelChoice::V5_10),
    ]
    .into_iter()
    .filter(|(w, _)| wants(*w))
    .collect();
    let mut results = Vec::new();
    // Built once for every VM (the host steps built the agent already when they ran).
    let mut built = wants(Where::Host);
    for (w, k) in &kernels {
        let vm_args = VmTestArgs {
            kernel: *k,
            filter: args
                .filter
                .iter()
                .cloned()
                .chain(
                    VM_SKIP
                        .iter()
                        .filter(|_| !args.vm_all)
                        .flat_map(|t| ["--skip".to_string(), t.to_string()]),
                )
                .collect(),
            tests: if args.vm_all || *w == Where::V5_10 {
                Vec::new()
            } else {
                VM_SUITE.iter().map(|s| s.to_string()).collect()
            },
            no_build: built,
            refresh: false,
            timeout: 1500,
            systemd: false,
            package: false,
        };
        built = true;
        let mut outcome = None;
        step(
            &format!("kernel tests in a VM: {}", k_name(*w)),
            &mut times,
            || {
                outcome = Some(vm::vm_test_outcome(&vm_args)?);
                Ok(())
            },
        )?;
        results.extend(outcome.map(|o| o.runs).unwrap_or_default());
    }
    for (w, package) in [(Where::Systemd, false), (Where::Package, true)] {
        if !wants(w) {
            continue;
        }
        let vm_args = VmTestArgs {
            kernel: KernelChoice::V6_1,
            filter: Vec::new(),
            tests: Vec::new(),
            no_build: built,
            refresh: false,
            timeout: 900,
            systemd: true,
            package,
        };
        built = true;
        let mut outcome = None;
        step(
            if package {
                "the Debian package in a VM (6.1, systemd as PID 1)"
            } else {
                "the systemd unit in a VM (6.1, systemd as PID 1)"
            },
            &mut times,
            || {
                outcome = Some(vm::vm_test_outcome(&vm_args)?);
                Ok(())
            },
        )?;
        results.extend(
            outcome
                .map(|o| o.runs)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, p, f, t)| (format!("{} (6.1)", k_name(w)), p, f, t)),
        );
    }
    eprintln!();
    for (name, secs) in &times {
        eprintln!("{secs:>8.1} s  {name}");
    }
    if !results.is_empty() {
        eprintln!("\n=== kernel tests in VMs, per kernel:");
        for (name, passed, failed, wall) in &results {
            eprintln!(
                "    {name:<14} {passed:>3} passed {failed:>3} failed  {:>7.1} s",
                wall.as_secs_f64()
            );
        }
    }
    let passed: u32 = results.iter().map(|r| r.1).sum();
    let failed: u32 = results.iter().map(|r| r.2).sum();
    if failed > 0 {
        println!("VMs: {passed} passed, {failed} failed");
        bail!("kernel tests failed in a VM (console logs in target/vm/)");
    }
    eprintln!("\n=== xtask test: all steps passed");
    if !results.is_empty() {
        println!("VMs: {passed} passed, {failed} failed");
    }
    Ok(())
}

fn k_name(w: Where) -> &'static str {
    match w {
        Where::Host => "host",
        Where::V6_1 => "6.1",
        Where::V6_12 => "6.12",
        Where::V5_10 => "5.10 (below the floor)",
        Where::Systemd => "systemd",
        Where::Package => "package",
    }
}

/// Lint, unit tests, the agent, the integration tests on this machine's kernel, the bench's
/// smoke run.
fn host(args: &TestArgs, times: &mut Vec<(String, f64)>) -> Result<()> {
    if !args.no_lint {
        // Nightly rustfmt: rustfmt.toml groups imports (std, external, crate), an unstable option.
        step("rustfmt --check", times, || {
            run(Command::new("cargo").args(["+nightly", "fmt", "--all", "--check"]))
        })?;
        // Every step uses the release profile: the eBPF object (built by antispam-user's build
        // script with -Z build-std) is then built once, not once per profile.
        step("clippy (host crates)", times, || {
            run(cargo().args([
                "clippy",
                "--release",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        step("clippy (eBPF crate, BPF target)", times, || {
            run(Command::new("cargo").args([
                "+nightly",
                "clippy",
                "--package",
                "antispam-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
    }
    step("unit tests", times, || {
        run(cargo().args([
            "test",
            "--release",
            "--package",
            "antispam-common",
            "--package",
            "antispam-user",
            "--package",
            "xtask",
        ]))
    })?;
    step("build the agent (release)", times, || {
        run(cargo().args(["build", "--release", "--package", "antispam-user"]))
    })?;
    step("kernel integration tests (one at a time)", times, || {
        let mut cmd = cargo();
        cmd.args(["test", "--release", "--package", "antispam-tests", "--"])
            .arg("--test-threads=1")
            .env("ANTISPAM_BIN", root().join("target/release/antispam"));
        if let Some(f) = &args.filter {
            cmd.arg(f);
        }
        run(&mut cmd)
    })?;
    if args.filter.is_none() {
        // Every benchmark scenario, very briefly: numbers only, no performance assertions.
        step("benchmark harness smoke run", times, || {
            crate::bench::bench(true, None)
        })?;
    }
    Ok(())
}
