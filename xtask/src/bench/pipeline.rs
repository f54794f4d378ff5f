//! The agent itself: events per second consumed and logged with zero loss, its CPU and memory
//! at ~10k events/s; start-up time, and reload time with a 100,000-entry policy.

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    agent::{self, Agent},
    connect::storm_run,
    env, median, Check, Ctx, Series, BASE_UID, DENIED_UID,
};

/// Bytes one event takes in the ring buffer: the 80-byte record and the 8-byte header.
const EVENT_BYTES: f64 = 88.0;
/// The ring buffer's size (antispam-common/src/maps.rs).
const RING_BYTES: f64 = (1u64 << 20) as f64;
/// The agent drains the ring buffer at least this often (antispam-user/src/agent/events.rs).
const DRAIN_SECS: f64 = 0.05;

/// CPU time of every thread of `pid`, in seconds (schedstat: ns on the CPU).
fn cpu_secs(pid: u32) -> f64 {
    let mut ns = 0u64;
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 / 1e9
}

struct Sample {
    events_per_sec: f64,
    lost: f64,
    unread: f64,
    cpu_pct: f64,
}

fn measure(ctx: &Ctx, agent: &Agent, threads: u32, rate: Option<f64>) -> Result<Sample> {
    let read0 = agent.metric("antispam_events_read_total")?;
    let lost0 = agent.metric("antispam_events_lost_total")?;
    let cpu0 = cpu_secs(agent.pid());
    let d = ctx.cfg.events;
    let max = (d.as_secs_f64() * 300_000.0) as u64 + 1000;
    let s = storm_run(ctx, "as", threads, &BASE_UID.to_string(), d, max, rate)?;
    // Let the agent's 50 ms drain timer pick up the last events.
    env::sleep(Duration::from_millis(350))?;
    let cpu1 = cpu_secs(agent.pid());
    let read1 = agent.metric("antispam_events_read_total")?;
    let lost1 = agent.metric("antispam_events_lost_total")?;
    let read = read1 - read0;
    Ok(Sample {
        events_per_sec: read / s.secs,
        lost: lost1 - lost0,
        unread: (s.attempts - read - (lost1 - lost0)).max(0.0),
        cpu_pct: (cpu1 - cpu0) / s.secs * 100.0,
    })
}

pub fn events(ctx: &mut Ctx) -> Result<()> {
    let agent = Agent::start(
        ctx,
        &agent::policy((BASE_UID, BASE_UID), DENIED_UID),
        "all",
        true,
    )?;
    let mut peak = Vec::new();
    let mut peak_lost = 0.0;
    let mut peak_unread = 0.0;
    let mut peak_cpu = Vec::new();
    let mut at10k = Vec::new();
    let mut cpu10k = Vec::new();
    let mut lost10k = 0.0;
    for round in 0..ctx.cfg.rounds {
        let p = measure(ctx, &agent, 2, None)?;
        let k = measure(ctx, &agent, 1, Some(10_000.0))?;
        eprintln!(
            "events round {}: peak {:.0} events/s (lost {}, cpu {:.1} %), paced {:.0} events/s (lost {}, cpu {:.2} %)",
            round + 1,
            p.events_per_sec,
            p.lost,
            p.cpu_pct,
            k.events_per_sec,
            k.lost,
            k.cpu_pct
        );
        peak.push(p.events_per_sec);
        peak_lost += p.lost;
        peak_unread += p.unread;
        peak_cpu.push(p.cpu_pct);
        at10k.push(k.events_per_sec);
        cpu10k.push(k.cpu_pct);
        lost10k += k.lost + k.unread;
    }
    let (rss, hwm) = agent.rss_kib()?;
    let read_total = agent.metric("antispam_events_read_total")?;
    let log_lines = fs::read(&agent.log)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as f64)
        .unwrap_or(f64::NAN);
    agent.stop();

    let scenario = "event pipeline (--events all, JSON lines to a file)";
    for (variant, unit, s) in [
        (
            "peak: 2-thread storm, events consumed",
            "events/s",
            peak.clone(),
        ),
        ("peak: agent CPU", "% of one core", peak_cpu),
        ("paced storm, events consumed", "events/s", at10k.clone()),
        ("paced storm: agent CPU", "% of one core", cpu10k.clone()),
    ] {
        ctx.results.series.push(Series {
            scenario: scenario.into(),
            variant: variant.into(),
            unit: unit.into(),
            samples: s,
            ratio: None,
        });
    }
    ctx.results.series.push(Series {
        scenario: scenario.into(),
        variant: "agent resident memory after the runs (VmRSS; peak VmHWM)".into(),
        unit: "MiB".into(),
        samples: vec![rss as f64 / 1024.0],
        ratio: None,
    });
    let need = median(&peak) * DRAIN_SECS * EVENT_BYTES;
    ctx.results.notes.push(format!(
        "event pipeline: at the peak of {:.0} events/s one 50 ms drain interval holds {:.0} KiB of events, {:.0} % of the 1 MiB ring buffer \
         (the ring would need ≥ {:.0} KiB at this rate); lines in the log {log_lines} for {read_total} events read; peak RSS (VmHWM) {:.1} MiB",
        median(&peak),
        need / 1024.0,
        need / RING_BYTES * 100.0,
        need / 1024.0,
        hwm as f64 / 1024.0
    ));
    let cpu = median(&cpu10k);
    let rss_mib = rss as f64 / 1024.0;
    ctx.results.checks.push(Check {
        target: "events lost at the highest connect rate (2-thread storm, every connect an event)"
            .into(),
        goal: "0".into(),
        measured: format!("{} lost, {} not read", peak_lost, peak_unread),
        met: peak_lost == 0.0 && peak_unread == 0.0,
    });
    ctx.results.checks.push(Check {
        target: format!("agent CPU at {:.0} events/s", median(&at10k)),
        goal: "< 5 % of one core".into(),
        measured: format!("{cpu:.2} % (lost {lost10k})"),
        met: cpu < 5.0 && lost10k == 0.0,
    });
    ctx.results.checks.push(Check {
        target: "agent resident memory (VmRSS) after the event runs".into(),
        goal: "< 32 MiB".into(),
        measured: format!("{rss_mib:.1} MiB (peak {:.1} MiB)", hwm as f64 / 1024.0),
        met: rss_mib < 32.0 && (hwm as f64 / 1024.0) < 32.0,
    });
    Ok(())
}

fn reload_errors(agent: &Agent) -> Result<f64> {
    let m = agent.metrics()?;
    Ok(m.lines()
        .find(|l| l.starts_with("antispam_policy_reloads_total{result=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// Writes `text` to the agent's policy file, SIGHUP, and waits until the generation moves.
fn reload(agent: &Agent, text: &str) -> Result<Duration> {
    let gen0 = agent.metric("antispam_policy_generation")?;
    let err0 = reload_errors(agent)?;
    fs::write(&agent.policy, text)?;
    let start = Instant::now();
    agent.hup();
    loop {
        if agent.metric("antispam_policy_generation")? > gen0 {
            return Ok(start.elapsed());
        }
        if reload_errors(agent)? > err0 {
            bail!(
                "the agent refused the reload after {:.0} ms (antispam_policy_reloads_total{{result=\"error\"}} went up)",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("policy generation did not move within 60 s of SIGHUP");
        }
        env::check_stop()?;
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn startup(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.cfg.big_policy;
    let small = agent::policy((BASE_UID, BASE_UID), DENIED_UID);
    let big = |first: u32| agent::policy((first, first + n - 1), DENIED_UID);
    let (mut t_small, mut t_big, mut t_reload) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.cfg.rounds {
        for (text, out) in [(&small, &mut t_small), (&big(200_000), &mut t_big)] {
            let a = Agent::spawn(ctx, text, "denied", false)?;
            let t = a.wait_ready(Duration::from_secs(60))?;
            out.push(t.as_secs_f64() * 1e3);
            a.stop();
        }
    }
    // Reloads: the same n UIDs with another rate each time, so every reload rewrites n rules.
    let agent = Agent::start(ctx, &big(200_000), "denied", false)?;
    for round in 0..ctx.cfg.rounds {
        let rate = super::netfilter::HUGE_RATE + 1 + round as u64;
        let text = agent::policy_rate((200_000, 200_000 + n - 1), DENIED_UID, rate);
        t_reload.push(reload(&agent, &text)?.as_secs_f64() * 1e3);
    }
    // A reload that names n other UIDs (the agent adds the new rules before removing the old).
    let other = reload(&agent, &big(400_000));
    ctx.results.notes.push(match &other {
        Ok(t) => format!(
            "reload replacing the {n} UIDs by {n} others: ok in {:.0} ms",
            t.as_secs_f64() * 1e3
        ),
        Err(e) => format!("reload replacing the {n} UIDs by {n} others: FAILED: {e:#}"),
    });
    let (rss, _) = agent.rss_kib()?;
    agent.stop();
    let scenario = "start-up and reload";
    for (variant, s) in [
        (
            "start to enforcing (/healthz answers), 1-UID policy".to_string(),
            t_small,
        ),
        (format!("start to enforcing, {n}-UID policy"), t_big),
        (
            format!("SIGHUP reload of a {n}-UID policy until antispam_policy_generation moves"),
            t_reload,
        ),
    ] {
        ctx.results.series.push(Series {
            scenario: scenario.into(),
            variant,
            unit: "ms".into(),
            samples: s,
            ratio: None,
        });
    }
    ctx.results.notes.push(format!(
        "start-up: /healthz answers only after the maps are filled and the programs attached; agent RSS with the {n}-UID policy after {} reloads: {:.1} MiB",
        ctx.cfg.rounds,
        rss as f64 / 1024.0
    ));
    Ok(())
}
