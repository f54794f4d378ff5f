//! `cargo xtask bench`: antispam against no filter, nftables and iptables, on this machine.
//!
//! Everything runs inside what the bench makes for itself: a cgroup tree
//! `<cgroup2 mount>/antispam-bench-<pid>/{agent,sink,as,plain}` and a network namespace
//! `asbench-<pid>` (loopback only; the sinks and every netfilter rule live there). The agent
//! enforces on the `as` cgroup only; clients run in `as` (antispam) or `plain` (everything
//! else). Each scenario interleaves its variants round by round and reports medians and the
//! median of the per-round ratios. Guards remove everything on return, panic or ctrl-c.

mod agent;
mod connect;
mod env;
mod exec;
mod fleet;
mod netfilter;
mod pipeline;
mod report;
mod traffic;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use env::{Cgroups, Guarded, Netns, Place, Scratch};

use crate::{cargo, root, run, setup};

/// The SMTP port the storms connect to (inside the bench netns).
pub const SMTP_PORT: u16 = 25;
const UDP_PORT: u16 = 5300;
const IPERF_PORT: u16 = 5201;
/// The UID of the single-UID storms; scale ranges start here.
pub const BASE_UID: u32 = 100_000;
/// A UID limited to one connect a day: every storm connect of it is refused.
pub const DENIED_UID: u32 = 99_000;

/// Debian packages only the bench needs, by the command used.
const PACKAGES: &[(&str, &str)] = &[
    ("nftables", "nft"),
    ("iptables", "iptables"),
    ("iperf3", "iperf3"),
    ("redis-server", "the fleet store of the tenant profile"),
];

#[derive(Clone)]
pub struct Config {
    pub smoke: bool,
    pub rounds: usize,
    /// One storm measurement.
    pub storm: Duration,
    /// One iperf3 run (whole seconds).
    pub iperf_secs: u64,
    /// One UDP flood.
    pub udp: Duration,
    pub scale_counts: Vec<u32>,
    /// Upper bound on giving every UID of a scale step live state, per variant.
    pub populate_limit: Duration,
    /// One event-pipeline measurement.
    pub events: Duration,
    /// UIDs named in the big policy of the start-up and reload measurements.
    pub big_policy: u32,
}

impl Config {
    fn new(smoke: bool) -> Config {
        if smoke {
            Config {
                smoke,
                rounds: 1,
                storm: Duration::from_millis(200),
                iperf_secs: 1,
                udp: Duration::from_millis(200),
                scale_counts: vec![10, 1000],
                populate_limit: Duration::from_secs(2),
                events: Duration::from_millis(300),
                big_policy: 1000,
            }
        } else {
            Config {
                smoke,
                rounds: 5,
                storm: Duration::from_secs(2),
                iperf_secs: 2,
                udp: Duration::from_secs(2),
                scale_counts: vec![10, 1000, 100_000, 1_000_000],
                populate_limit: Duration::from_secs(25),
                events: Duration::from_secs(3),
                big_policy: 100_000,
            }
        }
    }
}

pub struct Bins {
    pub antispam: PathBuf,
    pub storm: PathBuf,
    pub sink: PathBuf,
    pub udp: PathBuf,
}

/// A series of samples of one variant of one scenario.
pub struct Series {
    pub scenario: String,
    pub variant: String,
    pub unit: String,
    pub samples: Vec<f64>,
    /// Ratio to the scenario's baseline: median of the per-round ratios.
    pub ratio: Option<(String, f64)>,
}

pub struct Check {
    pub target: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Default)]
pub struct Results {
    pub series: Vec<Series>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    pub profile: Vec<String>,
}

pub struct Ctx {
    // Children first: fields drop in declaration order.
    pub servers: Vec<Guarded>,
    pub cfg: Config,
    pub bins: Bins,
    pub ns: Netns,
    pub cg: Cgroups,
    pub scratch: Scratch,
    pub results: Results,
    seq: u32,
}

impl Ctx {
    pub fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    pub fn place(&self, cgroup: &str) -> Place<'_> {
        Place {
            cgroup: self.cg.path(cgroup),
            netns: Some(&self.ns),
        }
    }

    pub fn smtp_addr(&self) -> String {
        format!("127.0.0.1:{SMTP_PORT}")
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Median of the per-round ratios a[i] / b[i].
pub fn ratio(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&r)
}

/// Root, build everything, packages: what a fresh machine needs.
fn prepare() -> Result<Bins> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench needs root (cgroups, BPF, network namespaces)");
    }
    setup::setup()?;
    setup::ensure_packages(PACKAGES)?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "antispam-user",
        "--package",
        "antispam-bench",
    ]))?;
    let rel = root().join("target/release");
    // Another build of the agent (a copy of an earlier target/release/antispam), to measure two
    // versions of the kernel programs against each other on the same machine.
    let antispam = match std::env::var_os("ANTISPAM_BENCH_AGENT") {
        Some(p) => {
            eprintln!("bench: the agent is {}", std::path::Path::new(&p).display());
            p.into()
        }
        None => rel.join("antispam"),
    };
    Ok(Bins {
        antispam,
        storm: rel.join("bench-storm"),
        sink: rel.join("bench-sink"),
        udp: rel.join("bench-udp"),
    })
}

fn start_servers(ctx: &mut Ctx) -> Result<()> {
    // The TCP and UDP sink.
    let out = ctx.scratch.dir.join("sink.out");
    let mut cmd = Command::new(&ctx.bins.sink);
    cmd.args(["--tcp", &ctx.smtp_addr()])
        .args(["--udp", &format!("127.0.0.1:{UDP_PORT}")])
        .args(["--max-secs", "1800"])
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::process::Stdio::null());
    env::place(&mut cmd, &ctx.place("sink"))?;
    let child = cmd.spawn().context("starting bench-sink")?;
    ctx.servers.push(Guarded {
        child,
        what: "bench-sink".into(),
    });
    // iperf3's server.
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-p", &IPERF_PORT.to_string(), "-B", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    env::place(&mut cmd, &ctx.place("sink"))?;
    let child = cmd.spawn().context("starting iperf3 -s")?;
    ctx.servers.push(Guarded {
        child,
        what: "iperf3 -s".into(),
    });
    let start = Instant::now();
    loop {
        let ready = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("ready");
        let ss = ctx.ns.exec("ss", &["-ltn"]).unwrap_or_default();
        if ready && ss.contains(&format!(":{IPERF_PORT}")) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("bench-sink or iperf3 -s not listening after 10 s");
        }
        env::sleep(Duration::from_millis(20))?;
    }
}

pub fn bench(smoke: bool, only: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let bins = prepare()?;
    env::install_signal_handlers();
    let stats_off = connect::BpfStats::set(false)?;
    let scratch = Scratch::new()?;
    let cg = Cgroups::new(&["agent", "sink", "as", "plain", "aspkt"])?;
    let ns = Netns::new()?;
    let mut ctx = Ctx {
        servers: Vec::new(),
        cfg: Config::new(smoke),
        bins,
        ns,
        cg,
        scratch,
        results: Results::default(),
        seq: 0,
    };
    start_servers(&mut ctx)?;
    netfilter::nft_load(&ctx.ns, &ctx.scratch.dir)?;

    type Scenario = fn(&mut Ctx) -> Result<()>;
    let scenarios: [(&str, Scenario); 7] = [
        ("storm", connect::storm),
        ("exec", exec::exec),
        ("traffic", traffic::traffic),
        ("scale", connect::scale),
        ("events", pipeline::events),
        ("startup", pipeline::startup),
        ("profile", connect::profile),
    ];
    let mut failed = Vec::new();
    for (name, f) in scenarios {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        env::check_stop()?;
        eprintln!("\n=== xtask bench: {name}");
        let t = Instant::now();
        if let Err(e) = f(&mut ctx) {
            env::check_stop()?;
            eprintln!("bench: scenario {name} FAILED: {e:#}");
            failed.push(name);
        }
        eprintln!("=== {name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    drop(stats_off);
    let elapsed = started.elapsed();
    let table = report::render(&ctx, elapsed);
    println!("\n{table}");
    // Every series must have produced numbers.
    let empty: Vec<String> = ctx
        .results
        .series
        .iter()
        .filter(|s| s.samples.is_empty() || !median(&s.samples).is_finite())
        .map(|s| format!("{} / {}", s.scenario, s.variant))
        .collect();
    if !failed.is_empty() || !empty.is_empty() {
        bail!("bench: failed scenarios: {failed:?}; series without numbers: {empty:?}");
    }
    if !smoke && only.is_none() {
        let path = root().join("docs/benchmarks.md");
        report::write_doc(&path, &table)?;
        eprintln!("bench: wrote {}", path.display());
    }
    eprintln!("bench: done in {:.0} s", elapsed.as_secs_f64());
    Ok(())
}
