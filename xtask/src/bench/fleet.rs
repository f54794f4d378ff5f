//! What a tenant's fleet budget adds to the kernel path: the profile's allowed connects of one
//! UID again, its rule now also spending a tenant's budget: from a lease renewed in the
//! background from a redis-server on loopback, then (no store) from its local_rate.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    agent::{self, Agent},
    connect::{max_for, profile_one, storm_run, BpfStats, Profiled},
    env::{free_port, Guarded},
    Ctx, BASE_UID, DENIED_UID,
};

/// The profile's policy, the limited UIDs' rule also spending tenant `bench`'s budget (as
/// large as the UID's, so that nothing is refused for it).
fn policy(uid: u32) -> String {
    let rate = super::netfilter::HUGE_RATE;
    agent::policy((uid, uid), DENIED_UID).replace(
        &format!("users = [\"{uid}-{uid}\"]\n"),
        &format!("users = [\"{uid}-{uid}\"]\ntenant = \"bench\"\n"),
    ) + &format!(
        "\n[tenant.bench]\nrate = \"{rate}/second\"\nburst = {rate}\nlocal_rate = \"{rate}/second\"\nlocal_burst = {rate}\n"
    )
}

/// redis-server on a free loopback port, nothing saved; killed on drop.
struct Redis {
    _guard: Guarded,
    port: u16,
}

impl Redis {
    fn start(ctx: &Ctx) -> Result<Redis> {
        let port = free_port()?;
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&ctx.scratch.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let r = Redis {
            _guard: Guarded {
                child,
                what: "redis-server".into(),
            },
            port,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server on port {port} did not listen within 10 s")
    }
}

/// (leased, local_rate) profiles of allowed connects of one UID spending a tenant's budget.
pub fn tenant_profiles(ctx: &mut Ctx) -> Result<(Profiled, Profiled)> {
    let uid = BASE_UID.to_string();
    let d = ctx.cfg.storm;
    let storm = |refusals_ok: bool| {
        let uid = uid.clone();
        move |c: &Ctx| {
            let s = storm_run(c, "as", 1, &uid, d, max_for(d), None)?;
            if !refusals_ok && s.eperm > s.attempts * 0.01 {
                bail!(
                    "the tenant's budget refused {} of {} connects",
                    s.eperm,
                    s.attempts
                );
            }
            Ok((format!("{:.0} connects/s", s.per_sec), s.attempts))
        }
    };
    let redis = Redis::start(ctx)?;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let text = policy(BASE_UID);
    let agent = Agent::start_on(
        ctx,
        "as",
        &text,
        &["--fleet-store", &url, "--fleet-lease", "3s"],
    )?;
    // Demand first: a first lease is one token, the next twice what was asked meanwhile.
    let warm = Duration::from_secs(3);
    storm_run(ctx, "as", 1, &uid, warm, max_for(warm), None)?;
    let stats = BpfStats::set(true)?;
    let leased = profile_one(
        ctx,
        "allowed connects, 1 UID, spending a tenant's fleet lease (store on loopback)",
        storm(false),
    )?;
    drop(stats);
    agent.stop();
    drop(redis);
    let agent = Agent::start_on(ctx, "as", &text, &[])?;
    let stats = BpfStats::set(true)?;
    let local = profile_one(
        ctx,
        "allowed connects, 1 UID, spending a tenant's local_rate (no store)",
        storm(false),
    )?;
    drop(stats);
    agent.stop();
    Ok((leased, local))
}
