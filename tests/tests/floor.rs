//! The kernel floor, checked by the agent before it loads anything: on a kernel that lacks what
//! the programs need (anything before Linux 5.14: BPF atomics came in 5.12, SO_NETNS_COOKIE in
//! 5.14), `antispam run` exits non-zero with one line naming what is missing and the version
//! that has it, and attaches and pins nothing. On a kernel at or above the floor it starts.
//! `cargo xtask vm-test --kernel 5.10` runs this binary alone in Debian 11's kernel.

use std::process::Command;

use antispam_tests::*;

/// The agent's floor, as docs/operations.md states it.
const FLOOR: (u32, u32) = (5, 14);

/// (major, minor) of the running kernel.
fn running() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The programs attached to `cg` (bpftool's JSON: nothing, or `[]`, when there are none).
fn attached(cg: &TestCgroup) -> String {
    let out = Command::new("bpftool")
        .args(["--json", "cgroup", "show"])
        .arg(cg.path())
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn below_the_floor_the_agent_refuses_in_one_line_and_attaches_nothing() {
    if !require_kernel() {
        return;
    }
    let cg = TestCgroup::new("floor");
    let dir = TestDir::new();
    let policy = dir.write(
        "policy.toml",
        "ports = [25]\n[default]\nrate = \"1/hour\"\n",
    );
    let kernel = running();
    if kernel >= FLOOR {
        // At or above the floor the check passes and the agent enforces.
        let agent = Agent::start(&policy, &cg, &dir);
        let m = agent.metrics();
        assert!(
            metric_value(&m, "antispam_programs_attached", &[]).unwrap_or(0.0) >= 3.0,
            "Linux {kernel:?} is at or above the floor {FLOOR:?}: the agent must attach"
        );
        return;
    }
    // An operators' group that exists, so that nothing but the refusal is logged.
    let (code, err) = run_refused_with(
        &[],
        &policy,
        cg.path(),
        &dir,
        None,
        &["--operators-group", "nogroup"],
    );
    eprintln!("the agent said:\n{err}");
    assert_eq!(code, Some(2), "exit status of a refused start:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not a verifier log:\n{err}");
    let line = lines[0];
    assert!(
        line.starts_with("antispam: this kernel (Linux "),
        "names the running kernel: {line}"
    );
    assert!(
        line.contains("needs Linux 5.14 or newer"),
        "names the version it needs: {line}"
    );
    for feature in ["BPF atomics", "SO_NETNS_COOKIE"] {
        assert!(line.contains(feature), "names {feature}: {line}");
    }
    assert!(!line.contains("Verifier"), "no verifier output: {line}");
    let progs = attached(&cg);
    assert!(
        progs.is_empty() || progs == "[]",
        "nothing attached to {}: {progs}",
        cg.path().display()
    );
    assert!(
        std::fs::read_dir(dir.pins()).map_or(true, |mut d| d.next().is_none()),
        "nothing pinned in {}",
        dir.pins().display()
    );
}
