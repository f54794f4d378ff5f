//! `cargo xtask test`: lint, unit tests, then the real-kernel integration tests.

use std::{process::Command, time::Instant};

use anyhow::Result;

use crate::{cargo, root, run, setup};

fn step(name: &str, times: &mut Vec<(String, f64)>, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n=== xtask test: {name}");
    let t = Instant::now();
    let r = f();
    times.push((name.to_string(), t.elapsed().as_secs_f64()));
    r
}

pub fn test(filter: Option<&str>, lint: bool) -> Result<()> {
    let mut times = Vec::new();
    step(
        "setup (with the tests' packages)",
        &mut times,
        setup::setup_tests,
    )?;
    if lint {
        // Nightly rustfmt: rustfmt.toml groups imports (std, external, crate), an unstable option.
        step("rustfmt --check", &mut times, || {
            run(Command::new("cargo").args(["+nightly", "fmt", "--all", "--check"]))
        })?;
        // Every step uses the release profile: the eBPF object (built by antispam-user's build
        // script with -Z build-std) is then built once, not once per profile.
        step("clippy (host crates)", &mut times, || {
            run(cargo().args([
                "clippy",
                "--release",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        step("clippy (eBPF crate, BPF target)", &mut times, || {
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
    step("unit tests", &mut times, || {
        run(cargo().args([
            "test",
            "--package",
            "antispam-common",
            "--package",
            "antispam-user",
            "--package",
            "xtask",
        ]))
    })?;
    step("build the agent (release)", &mut times, || {
        run(cargo().args(["build", "--release", "--package", "antispam-user"]))
    })?;
    step(
        "kernel integration tests (one at a time)",
        &mut times,
        || {
            let mut cmd = cargo();
            cmd.args(["test", "--release", "--package", "antispam-tests", "--"])
                .arg("--test-threads=1")
                .env("ANTISPAM_BIN", root().join("target/release/antispam"));
            if let Some(f) = filter {
                cmd.arg(f);
            }
            run(&mut cmd)
        },
    )?;
    if filter.is_none() {
        // Every benchmark scenario, very briefly: numbers only, no performance assertions.
        step("benchmark harness smoke run", &mut times, || {
            crate::bench::bench(true, None)
        })?;
    }
    eprintln!("\n=== xtask test: all steps passed");
    for (name, secs) in &times {
        eprintln!("{secs:>8.1} s  {name}");
    }
    Ok(())
}
