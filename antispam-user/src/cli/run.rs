//! `antispam run`: the agent, in the foreground.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use crate::{
    agent::{self, EventFilter},
    defaults,
};

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (TOML). Without it, the built-in policy: 30 SMTP connects a minute per UID,
    /// local MTA users unlimited.
    #[arg(long, env = "ANTISPAM_POLICY")]
    policy: Option<PathBuf>,
    /// cgroup v2 directory to enforce on (it and everything below it). Default: the root of the
    /// cgroup v2 mount, i.e. the whole host.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Where to serve /metrics (Prometheus) and /status (JSON).
    #[arg(long, default_value = defaults::METRICS_ADDR)]
    metrics_addr: SocketAddr,
    /// Append the JSON event log to this file instead of standard output.
    #[arg(long)]
    log: Option<PathBuf>,
    /// When the event log would grow past this many bytes it is renamed to FILE.1 (replacing
    /// an older one) and a new one is started: it takes at most twice this on disk.
    #[arg(long, value_name = "BYTES", default_value_t = agent::DEFAULT_LOG_MAX_BYTES)]
    log_max_bytes: u64,
    /// Refusals of one UID, cgroup, mail path and reason written one line each per second; the
    /// rest of the second's are one summary line with their `count`.
    #[arg(long, value_name = "N", default_value_t = agent::DEFAULT_LOG_PER_KEY)]
    log_refusals_per_key: u32,
    /// Refusals written one line each per second over all keys; past it, summary lines.
    #[arg(long, value_name = "N", default_value_t = agent::DEFAULT_LOG_TOTAL)]
    log_refusals_per_second: u32,
    /// Which decisions to log: every SMTP connect (the connection trail) or only refusals.
    #[arg(long, value_enum, default_value_t = EventFilter::All)]
    events: EventFilter,
    /// Per-UID and per-cgroup metric series are kept for at most this many UIDs and this many
    /// cgroups, the most active; the rest are summed into uid="other" / cgroup="other".
    #[arg(long, default_value_t = defaults::METRICS_MAX_KEYS)]
    metrics_max_keys: usize,
    /// When the kernel refuses a program, print the verifier's whole log (once) after the
    /// one-line error (RUST_LOG=debug also logs each kernel feature probed at start). Until 0.2
    /// this forwarded the programs' own debug log; they no longer log, every decision is in the
    /// event log.
    #[arg(long)]
    kernel_debug: bool,
    /// The tamper-evident audit log (hash chain, fsync'd): agent start and stop, every policy
    /// load and reload, every operator action. The agent refuses to run if it cannot open it.
    #[arg(long, value_name = "FILE", default_value = defaults::AUDIT_LOG)]
    audit_log: PathBuf,
    /// How often the audit log's head (sequence and hash) is logged as a checkpoint line
    /// (`antispam-audit-checkpoint …`, for syslog/journald forwarding to keep off the host);
    /// also at start, at stop and whenever the sealing key evolves.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    audit_checkpoint_every: std::time::Duration,
    /// The control socket operators' commands (suspend, kill-switch…) reach the agent on.
    #[arg(long, value_name = "PATH", default_value = defaults::CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Members of this group (and root) may operate the agent over the control socket.
    #[arg(long, default_value = defaults::OPERATORS_GROUP)]
    operators_group: String,
    /// Directory in the BPF filesystem where programs and maps are pinned, so that enforcement
    /// goes on while the agent is stopped or restarting (`antispam uninstall` removes them).
    #[arg(long, value_name = "DIR", default_value = defaults::PIN_DIR)]
    pin_dir: PathBuf,
    /// Reload only on SIGHUP, not also when the policy file changes.
    #[arg(long)]
    no_reload_on_change: bool,
    /// How executions of the MTA's submission programs (mail through sendmail) are decided:
    /// auto (BPF LSM where the kernel runs it, else the tracepoint fallback), lsm (refuse to
    /// start without BPF LSM), tracepoint (the fallback: counts, kills over budget).
    #[arg(long, value_enum, default_value_t = ExecHook::Auto)]
    exec_hook: ExecHook,
    /// The MTA policy service's socket (Postfix check_policy_service and non_smtpd_milters,
    /// Exim readsocket): made 0660 root:<--mta-group> in a 0750 directory of its own.
    #[arg(long, value_name = "PATH", default_value = defaults::MTA_SOCKET)]
    mta_socket: PathBuf,
    /// The MTA's group (Postfix: postfix; Exim: Debian-exim): it may use the MTA socket.
    #[arg(long, value_name = "NAME", default_value = defaults::MTA_GROUP)]
    mta_group: String,
    /// Run no MTA policy service (messages and recipients are then not counted).
    #[arg(long)]
    no_mta_socket: bool,
    /// Count SMTP packets and bytes per UID and cgroup (antispam_smtp_bytes_total and
    /// antispam_smtp_packets_total): a program then runs on every packet the attach point's
    /// tasks send (about 50 ns each, 150 ns per SMTP packet; docs/benchmarks.md). Off, nothing
    /// runs per packet.
    #[arg(long)]
    packet_accounting: bool,
    /// UIDs and cgroups (and their own path budgets) the kernel keeps state for. The map is
    /// allocated whole when the agent first loads it, ~200 bytes a key (the default: ~50 MiB);
    /// past it, keys not seen before are refused (fail closed). Changing it starts with empty
    /// state (new maps).
    #[arg(long, value_name = "N", default_value_t = antispam_common::maps::KEYS_MAX,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    max_keys: u32,
    /// Load only policies signed by a key of this allowed signers file (ssh-keygen(1) ALLOWED
    /// SIGNERS, namespace antispam-policy): the policy and every block list it names need a
    /// detached signature beside them, FILE.sig (`ssh-keygen -Y sign -f KEY -n antispam-policy
    /// FILE`). An unsigned or wrongly signed policy is refused like a syntax error.
    #[arg(long, value_name = "FILE")]
    policy_signers: Option<PathBuf>,
    /// The fleet store (Redis or Valkey) the policy's [tenant.NAME] budgets are shared through:
    /// redis://[USER@]HOST[:PORT][/DB], or rediss://… for TLS. Without it every tenant spends its
    /// local_rate. Every host of a fleet names the same store.
    #[arg(long, value_name = "URL", env = "ANTISPAM_FLEET_STORE")]
    fleet_store: Option<String>,
    /// The store's AUTH password: the first line of this file (keeps it out of the URL, ps and
    /// unit files).
    #[arg(long, value_name = "FILE", requires = "fleet_store")]
    fleet_password_file: Option<PathBuf>,
    /// The CA (PEM) that signed the store's TLS certificate (rediss://); default: the system's
    /// roots.
    #[arg(long, value_name = "FILE", requires = "fleet_store")]
    fleet_ca: Option<PathBuf>,
    /// This host's name in the fleet store (its demand, its audit checkpoints): unique in the
    /// fleet. Default: the host name.
    #[arg(long, value_name = "NAME", requires = "fleet_store")]
    fleet_host: Option<String>,
    /// How long a lease of a tenant's fleet budget lasts; it is renewed three times as often.
    /// A host whose lease ends unrenewed spends the tenant's local_rate. Longer: fewer round
    /// trips, more slack (docs/fleet.md).
    #[arg(long, value_name = "DURATION", value_parser = lease_length, default_value = "6s", requires = "fleet_store")]
    fleet_lease: std::time::Duration,
    /// How often the audit log's head is appended to the store's stream antispam:audit:HOST,
    /// for `antispam audit verify --checkpoints`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1m", requires = "fleet_store")]
    fleet_checkpoint_every: std::time::Duration,
}

/// `--fleet-lease`: 300 ms to 10 minutes.
fn lease_length(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_millis(300) || d > std::time::Duration::from_secs(600) {
        return Err("a lease lasts from 300ms to 10m".to_string());
    }
    Ok(d)
}

/// `--exec-hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecHook {
    Auto,
    Lsm,
    Tracepoint,
}

impl From<ExecHook> for agent::ExecHookChoice {
    fn from(h: ExecHook) -> agent::ExecHookChoice {
        match h {
            ExecHook::Auto => agent::ExecHookChoice::Auto,
            ExecHook::Lsm => agent::ExecHookChoice::Lsm,
            ExecHook::Tracepoint => agent::ExecHookChoice::Tracepoint,
        }
    }
}

impl From<Args> for agent::Config {
    fn from(a: Args) -> agent::Config {
        agent::Config {
            policy: a.policy,
            cgroup: a.cgroup,
            metrics_addr: a.metrics_addr,
            log: a.log,
            log_max_bytes: a.log_max_bytes,
            log_refusals_per_key: a.log_refusals_per_key,
            log_refusals_per_second: a.log_refusals_per_second,
            events: a.events,
            metrics_max_keys: a.metrics_max_keys,
            audit_log: a.audit_log,
            audit_checkpoint_every: a.audit_checkpoint_every,
            control_socket: a.control_socket,
            operators_group: a.operators_group,
            pin_dir: a.pin_dir,
            reload_on_change: !a.no_reload_on_change,
            exec_hook: a.exec_hook.into(),
            mta_socket: (!a.no_mta_socket).then_some(a.mta_socket),
            mta_group: a.mta_group,
            packet_accounting: a.packet_accounting,
            max_keys: a.max_keys,
            policy_signers: a.policy_signers,
            fleet: a.fleet_store.map(|url| agent::fleet::FleetConfig {
                store: crate::fleet::StoreConfig {
                    url,
                    ca: a.fleet_ca,
                    password_file: a.fleet_password_file,
                },
                host: a
                    .fleet_host
                    .unwrap_or_else(crate::control::signed::host_name),
                lease: a.fleet_lease,
                checkpoint_every: a.fleet_checkpoint_every,
            }),
        }
    }
}

pub fn main(args: Args) -> ExitCode {
    let kernel_debug = args.kernel_debug;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("antispam: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(agent::run(args.into())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let (true, agent::Error::Kernel(k)) = (kernel_debug, &e) {
                if let Some((program, log)) = k.verifier_log() {
                    eprintln!("antispam: the kernel verifier's log for {program}:\n{log}");
                }
            }
            eprintln!("antispam: {}", super::chain(&e));
            ExitCode::from(2)
        }
    }
}
