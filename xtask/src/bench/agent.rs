//! The agent under test, as a child in the bench's `agent` cgroup, enforcing on the bench's `as`
//! cgroup only; stopped with SIGTERM (it detaches everything) and killed if it does not exit.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    env::{self, free_port, http_get, Guarded, Place},
    Ctx,
};

pub struct Agent {
    guard: Guarded,
    pub addr: String,
    pub policy: PathBuf,
    pub log: PathBuf,
    stderr: PathBuf,
    /// Dropped after `guard` (the process stops first): unpins the programs, so the next
    /// scenario, or the baseline, runs without them.
    _pins: env::Pins,
}

/// Policy: every UID may connect at a rate no storm reaches (counted, allowed); `limited`
/// (inclusive UID range) is named in a `[[limit]]` with that rate too, so each of its UIDs
/// has a rule and a bucket; `denied` may open one connection a day.
pub fn policy(limited: (u32, u32), denied: u32) -> String {
    policy_rate(limited, denied, super::netfilter::HUGE_RATE)
}

/// Every UID under the default rate (no rule of its own), `denied` refused after its first
/// connect.
pub fn policy_default_only(denied: u32) -> String {
    let rate = super::netfilter::HUGE_RATE;
    format!(
        "mode = \"enforce\"\nports = [{port}]\n\n[default]\nrate = \"{rate}/second\"\nburst = {rate}\n\n\
         [[limit]]\nusers = [\"{denied}\"]\nrate = \"1/day\"\nburst = 1\n",
        port = super::SMTP_PORT,
    )
}

/// [`policy`] with another rate per second for every UID.
pub fn policy_rate(limited: (u32, u32), denied: u32, rate: u64) -> String {
    format!(
        "mode = \"enforce\"\nports = [{port}]\n\n[default]\nrate = \"{rate}/second\"\nburst = {rate}\n\n\
         [[limit]]\nusers = [\"{a}-{b}\"]\nrate = \"{rate}/second\"\nburst = {rate}\n\n\
         [[limit]]\nusers = [\"{denied}\"]\nrate = \"1/day\"\nburst = 1\n",
        port = super::SMTP_PORT,
        a = limited.0,
        b = limited.1,
    )
}

impl Agent {
    /// Starts `antispam run` without waiting; `events` is `all` or `denied`.
    pub fn spawn(ctx: &mut Ctx, policy_text: &str, events: &str, log: bool) -> Result<Agent> {
        Agent::spawn_on(ctx, "as", policy_text, events, log, &[])
    }

    /// As [`Agent::spawn`], enforcing on bench cgroup `cgroup`, with `extra` arguments.
    pub fn spawn_on(
        ctx: &mut Ctx,
        cgroup: &str,
        policy_text: &str,
        events: &str,
        log: bool,
        extra: &[&str],
    ) -> Result<Agent> {
        let n = ctx.next_seq();
        let policy = ctx.scratch.dir.join(format!("policy-{n}.toml"));
        fs::write(&policy, policy_text)?;
        let stderr = ctx.scratch.dir.join(format!("agent-{n}.err"));
        let log_path = ctx.scratch.dir.join(format!("events-{n}.jsonl"));
        let addr = format!("127.0.0.1:{}", free_port()?);
        let pins = env::Pins::new(n);
        let mut cmd = Command::new(&ctx.bins.antispam);
        cmd.arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg("--cgroup")
            .arg(ctx.cg.path(cgroup))
            .args(extra)
            .args(["--metrics-addr", &addr, "--events", events])
            // The bench's own audit log and control socket, never the system's.
            .arg("--audit-log")
            .arg(ctx.scratch.dir.join(format!("audit-{n}.jsonl")))
            .arg("--control-socket")
            .arg(ctx.scratch.dir.join(format!("control-{n}.sock")))
            .arg("--pin-dir")
            .arg(&pins.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr)?);
        if log {
            cmd.arg("--log").arg(&log_path);
        } else {
            cmd.arg("--log").arg("/dev/null");
        }
        env::place(
            &mut cmd,
            &Place {
                cgroup: ctx.cg.path("agent"),
                netns: None,
            },
        )?;
        let child = cmd.spawn().context("starting antispam run")?;
        Ok(Agent {
            guard: Guarded {
                child,
                what: "antispam run".into(),
            },
            addr,
            policy,
            log: log_path,
            stderr,
            _pins: pins,
        })
    }

    pub fn start(ctx: &mut Ctx, policy_text: &str, events: &str, log: bool) -> Result<Agent> {
        let a = Agent::spawn(ctx, policy_text, events, log)?;
        a.wait_ready(Duration::from_secs(30))?;
        Ok(a)
    }

    /// As [`Agent::start`], through [`Agent::spawn_on`].
    pub fn start_on(
        ctx: &mut Ctx,
        cgroup: &str,
        policy_text: &str,
        extra: &[&str],
    ) -> Result<Agent> {
        let a = Agent::spawn_on(ctx, cgroup, policy_text, "denied", false, extra)?;
        a.wait_ready(Duration::from_secs(30))?;
        Ok(a)
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls /healthz until it answers (the agent serves it only once the programs are attached
    /// and the maps filled): the start-up time.
    pub fn wait_ready(&self, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if http_get(&self.addr, "/healthz").is_some() {
                return Ok(start.elapsed());
            }
            if let Some(st) = self.guard_status() {
                bail!("antispam run exited ({st}): {}", self.stderr_text().trim());
            }
            if start.elapsed() > limit {
                bail!(
                    "antispam run not answering on {} after {limit:?}: {}",
                    self.addr,
                    self.stderr_text().trim()
                );
            }
            env::check_stop()?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn guard_status(&self) -> Option<String> {
        // try_wait needs &mut; peek at /proc instead.
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .filter(|s| *s == "Z")
            .map(|_| "zombie".to_string())
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn metrics(&self) -> Result<String> {
        http_get(&self.addr, "/metrics").context("GET /metrics from the agent")
    }

    pub fn metric(&self, name: &str) -> Result<f64> {
        env::metric(&self.metrics()?, name).with_context(|| format!("no {name} on /metrics"))
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> Result<(u64, u64)> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let get = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((get("VmRSS:"), get("VmHWM:")))
    }

    /// SIGHUP: reload the policy file.
    pub fn hup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
    }

    /// The agent's pin directory.
    pub fn pins(&self) -> &std::path::Path {
        &self._pins.0
    }

    pub fn stop(self) {
        self.guard.terminate(Duration::from_secs(10));
    }
}
