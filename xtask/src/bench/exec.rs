//! The exec hook of the `sendmail` path: it runs on every exec (BPF LSM: every exec of a task in
//! the attached cgroup; the tracepoint fallback: every exec of the host), so its cost per exec
//! of an unrelated program matters, as does its cost per submission it decides.
//!
//! Rounds interleave "no agent" and "antispam" (an agent started for the round), each running
//! `bench-exec` in the bench's `as` cgroup on /bin/true (unrelated) and on a copy of it that the
//! policy lists as a submission program (every exec decided, allowed). bpf_stats of the exec
//! program is read over a separate run.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::{
    agent::Agent,
    connect::BpfStats,
    env::{self, json_number, run_bounded},
    ratio, Check, Ctx, Series,
};

/// A policy under which no exec storm reaches a limit, with `submit` as the one submission
/// program.
fn policy(submit: &Path) -> String {
    let rate = super::netfilter::HUGE_RATE;
    format!(
        "ports = [{port}]\n[sendmail]\nprograms = [\"{}\"]\n[default]\nrate = \"{rate}/second\"\nburst = {rate}\n",
        submit.display(),
        port = super::SMTP_PORT,
    )
}

/// One bench-exec run in the `as` cgroup: executions per second.
fn run(ctx: &Ctx, program: &Path, d: Duration) -> Result<f64> {
    let mut cmd = Command::new(ctx.bins.antispam.with_file_name("bench-exec"));
    cmd.arg("--program")
        .arg(program)
        .args(["--duration-ms", &d.as_millis().to_string()])
        .args(["--max", "1000000"]);
    env::place(&mut cmd, &ctx.place("as"))?;
    let out = run_bounded(cmd, d + Duration::from_secs(20), "bench-exec")?;
    let per_sec = json_number(&out, "{", "per_sec").context("bench-exec: no per_sec")?;
    if json_number(&out, "{", "execs").unwrap_or(0.0) == 0.0 {
        bail!("bench-exec ran nothing: {out}");
    }
    Ok(per_sec)
}

/// The exec program of the agent pinned in `pins`: (name, run_time_ns, run_cnt).
fn exec_stats(pins: &Path) -> Result<(String, f64, f64)> {
    for name in ["antispam_exec", "antispam_exec_fallback"] {
        let link = walk_for(pins, &format!("link_{name}"));
        let Some(link) = link else { continue };
        let show = Command::new("bpftool")
            .args(["link", "show", "pinned"])
            .arg(&link)
            .arg("--json")
            .output()?;
        let j = String::from_utf8_lossy(&show.stdout);
        let id = json_number(&j, "{", "prog_id").context("bpftool link show: no prog_id")?;
        let show = Command::new("bpftool")
            .args(["prog", "show", "id", &format!("{id:.0}"), "--json"])
            .output()?;
        let j = String::from_utf8_lossy(&show.stdout);
        return Ok((
            name.to_string(),
            json_number(&j, "{", "run_time_ns").unwrap_or(0.0),
            json_number(&j, "{", "run_cnt").unwrap_or(0.0),
        ));
    }
    bail!("no exec hook pinned under {}", pins.display())
}

/// The file `name` anywhere below `dir` (the agent's pin directory has one level of instance
/// directories).
fn walk_for(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(found) = walk_for(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

pub fn exec(ctx: &mut Ctx) -> Result<()> {
    let submit = ctx.scratch.dir.join("bench-submit");
    std::fs::copy("/bin/true", &submit).context("copying /bin/true")?;
    let unrelated = Path::new("/bin/true");
    let d = ctx.cfg.storm;
    let text = policy(&submit);
    let (mut none, mut with) = (Vec::new(), Vec::new());
    let (mut none_s, mut with_s) = (Vec::new(), Vec::new());
    for round in 0..ctx.cfg.rounds {
        let first_none = round % 2 == 0;
        for antispam in [!first_none, first_none] {
            if antispam {
                let agent = Agent::start(ctx, &text, "denied", false)?;
                with.push(run(ctx, unrelated, d)?);
                with_s.push(run(ctx, &submit, d)?);
                agent.stop();
            } else {
                none.push(run(ctx, unrelated, d)?);
                none_s.push(run(ctx, &submit, d)?);
            }
        }
    }
    let r_unrelated = ratio(&with, &none);
    let r_submit = ratio(&with_s, &none_s);
    for (variant, samples, r) in [
        ("no agent, /bin/true", none, None),
        ("antispam, /bin/true (unrelated)", with, Some(r_unrelated)),
        ("no agent, submission program", none_s, None),
        ("antispam, submission program", with_s, Some(r_submit)),
    ] {
        ctx.results.series.push(Series {
            scenario: "exec".into(),
            variant: variant.into(),
            unit: "execs/s".into(),
            samples,
            ratio: r.map(|r| ("no agent".to_string(), r)),
        });
    }
    // bpf_stats of the exec program, over its own runs.
    let agent = Agent::start(ctx, &text, "denied", false)?;
    let stats = BpfStats::set(true)?;
    let pins = agent.pins().to_path_buf();
    let mut lines = Vec::new();
    for (what, program) in [
        ("exec of an unrelated program", unrelated),
        (
            "exec of a submission program (decided, allowed)",
            submit.as_path(),
        ),
    ] {
        let (name, t0, c0) = exec_stats(&pins)?;
        let per_sec = run(ctx, program, d)?;
        let (_, t1, c1) = exec_stats(&pins)?;
        let runs = c1 - c0;
        let ns = if runs > 0.0 {
            (t1 - t0) / runs
        } else {
            f64::NAN
        };
        lines.push(format!(
            "{what} ({per_sec:.0} execs/s): {name} {ns:.0} ns/run over {runs:.0} runs"
        ));
        if what.starts_with("exec of an unrelated") {
            ctx.results.checks.push(Check {
                target: format!("exec hook ({name}) per exec of an unrelated program"),
                goal: "≤ 100 ns".into(),
                measured: format!("{ns:.0} ns"),
                met: ns <= 100.0,
            });
        }
    }
    drop(stats);
    agent.stop();
    ctx.results.checks.push(Check {
        target: "execs of an unrelated program, antispam / no agent".into(),
        goal: "≥ 0.98".into(),
        measured: format!("{r_unrelated:.3}"),
        met: r_unrelated >= 0.98,
    });
    for l in &lines {
        eprintln!("profile: {l}");
    }
    ctx.results.profile.extend(lines);
    Ok(())
}
