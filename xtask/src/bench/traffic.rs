//! Non-SMTP traffic with the egress program attached: iperf3 TCP bulk throughput and small UDP
//! datagrams per second, antispam's cgroup vs a cgroup with no program.

use std::process::Command;

use anyhow::{Context as _, Result};

use super::{
    agent::{self, Agent},
    env::{self, json_number, run_bounded},
    ratio, Check, Ctx, Series, BASE_UID, DENIED_UID, IPERF_PORT, UDP_PORT,
};

/// iperf3 -c to the bench netns' server from `cgroup`: bits per second received.
fn iperf_run(ctx: &Ctx, cgroup: &str) -> Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", "127.0.0.1", "-p", &IPERF_PORT.to_string()])
        .args(["-t", &ctx.cfg.iperf_secs.to_string(), "-J"]);
    env::place(&mut cmd, &ctx.place(cgroup))?;
    let limit = std::time::Duration::from_secs(ctx.cfg.iperf_secs + 20);
    let out = run_bounded(cmd, limit, "iperf3 -c")?;
    json_number(&out, "\"sum_received\"", "bits_per_second")
        .with_context(|| format!("no sum_received.bits_per_second in iperf3 output: {out}"))
}

/// bench-udp from `cgroup` to the sink: datagrams per second sent.
pub fn udp_run(ctx: &Ctx, cgroup: &str) -> Result<f64> {
    let d = ctx.cfg.udp;
    let mut cmd = Command::new(&ctx.bins.udp);
    cmd.args(["--addr", &format!("127.0.0.1:{UDP_PORT}")])
        .args(["--duration-ms", &d.as_millis().to_string()])
        .args([
            "--max",
            &((d.as_secs_f64() * 5e6) as u64 + 1000).to_string(),
        ]);
    env::place(&mut cmd, &ctx.place(cgroup))?;
    let out = run_bounded(cmd, d + std::time::Duration::from_secs(20), "bench-udp")?;
    json_number(&out, "{", "per_sec").with_context(|| format!("bench-udp: {out}"))
}

pub fn traffic(ctx: &mut Ctx) -> Result<()> {
    let agent = Agent::start(
        ctx,
        &agent::policy((BASE_UID, BASE_UID), DENIED_UID),
        "denied",
        false,
    )?;
    let (mut tcp_none, mut tcp_as, mut udp_none, mut udp_as) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ctx.cfg.rounds {
        env::check_stop()?;
        tcp_none.push(iperf_run(ctx, "plain")? / 1e9);
        tcp_as.push(iperf_run(ctx, "as")? / 1e9);
        udp_none.push(udp_run(ctx, "plain")?);
        udp_as.push(udp_run(ctx, "as")?);
        eprintln!(
            "traffic round {}: TCP {:.2} / {:.2} Gbit/s, UDP {:.0} / {:.0} packets/s (no program / antispam)",
            round + 1,
            tcp_none[round],
            tcp_as[round],
            udp_none[round],
            udp_as[round]
        );
    }
    agent.stop();
    let rt = ratio(&tcp_as, &tcp_none);
    let ru = ratio(&udp_as, &udp_none);
    for (scenario, unit, none, with, r) in [
        (
            "non-SMTP TCP bulk (iperf3, loopback)",
            "Gbit/s",
            tcp_none,
            tcp_as,
            rt,
        ),
        (
            "non-SMTP small UDP datagrams (18 B payload)",
            "packets/s",
            udp_none,
            udp_as,
            ru,
        ),
    ] {
        ctx.results.series.push(Series {
            scenario: scenario.into(),
            variant: "no program".into(),
            unit: unit.into(),
            samples: none,
            ratio: None,
        });
        ctx.results.series.push(Series {
            scenario: scenario.into(),
            variant: "antispam (egress program attached)".into(),
            unit: unit.into(),
            samples: with,
            ratio: Some(("no program".into(), r)),
        });
    }
    ctx.results.checks.push(Check {
        target: "non-SMTP TCP throughput, antispam / no program".into(),
        goal: "≥ 0.98".into(),
        measured: format!("{rt:.3}"),
        met: rt >= 0.98,
    });
    ctx.results.checks.push(Check {
        target: "small UDP packet rate, antispam / no program".into(),
        goal: "≥ 0.95".into(),
        measured: format!("{ru:.3}"),
        met: ru >= 0.95,
    });
    Ok(())
}
