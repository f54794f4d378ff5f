//! Non-SMTP traffic: iperf3 TCP bulk throughput and small UDP datagrams per second, from a
//! cgroup with no program, antispam's (nothing runs per packet) and that of an agent with
//! `--packet-accounting` (its packet program runs on every packet).

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
    let policy = agent::policy((BASE_UID, BASE_UID), DENIED_UID);
    // Two agents, each on its own cgroup: the default (nothing per packet) and one counting
    // SMTP packets, whose program then runs on every packet.
    let agent = Agent::start(ctx, &policy, "denied", false)?;
    let counting = Agent::start_on(ctx, "aspkt", &policy, &["--packet-accounting"])?;
    let (mut tcp, mut udp) = (
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    );
    for round in 0..ctx.cfg.rounds {
        env::check_stop()?;
        for (i, cg) in ["plain", "as", "aspkt"].into_iter().enumerate() {
            tcp[i].push(iperf_run(ctx, cg)? / 1e9);
            udp[i].push(udp_run(ctx, cg)?);
        }
        eprintln!(
            "traffic round {}: TCP {:.2} / {:.2} / {:.2} Gbit/s, UDP {:.0} / {:.0} / {:.0} packets/s (no program / antispam / --packet-accounting)",
            round + 1,
            tcp[0][round],
            tcp[1][round],
            tcp[2][round],
            udp[0][round],
            udp[1][round],
            udp[2][round]
        );
    }
    agent.stop();
    counting.stop();
    let rt = ratio(&tcp[1], &tcp[0]);
    let ru = ratio(&udp[1], &udp[0]);
    for (scenario, unit, samples) in [
        ("non-SMTP TCP bulk (iperf3, loopback)", "Gbit/s", tcp),
        (
            "non-SMTP small UDP datagrams (18 B payload)",
            "packets/s",
            udp,
        ),
    ] {
        let [none, with, pkt] = samples;
        for (variant, s) in [
            ("antispam (nothing per packet)", with),
            ("antispam --packet-accounting (a program per packet)", pkt),
        ] {
            let r = ratio(&s, &none);
            if ctx
                .results
                .series
                .last()
                .is_none_or(|l| l.scenario != scenario)
            {
                ctx.results.series.push(Series {
                    scenario: scenario.into(),
                    variant: "no program".into(),
                    unit: unit.into(),
                    samples: none.clone(),
                    ratio: None,
                });
            }
            ctx.results.series.push(Series {
                scenario: scenario.into(),
                variant: variant.into(),
                unit: unit.into(),
                samples: s,
                ratio: Some(("no program".into(), r)),
            });
        }
    }
    ctx.results.checks.push(Check {
        target: "non-SMTP TCP throughput, antispam / no program".into(),
        goal: "≥ 0.98".into(),
        measured: format!("{rt:.3}"),
        met: rt >= 0.98,
    });
    ctx.results.checks.push(Check {
        target: "small UDP packet rate, antispam / no program".into(),
        goal: "≥ 0.98".into(),
        measured: format!("{ru:.3}"),
        met: ru >= 0.98,
    });
    Ok(())
}
