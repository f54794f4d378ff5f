//! What `antispam run` asks of the agent (built from the command line by `cli/run.rs`).

use std::{net::SocketAddr, path::PathBuf};

use super::events::EventFilter;
pub use crate::kernel::ExecHookChoice;

#[derive(Debug, Clone)]
pub struct Config {
    /// The policy file; the built-in policy when None.
    pub policy: Option<PathBuf>,
    /// The cgroup v2 directory to enforce on; the root of the mount when None.
    pub cgroup: Option<PathBuf>,
    pub metrics_addr: SocketAddr,
    /// The event log; standard output when None.
    pub log: Option<PathBuf>,
    /// The event log is rotated to `<log>.1` when it would grow past this.
    pub log_max_bytes: u64,
    /// Refusals written in detail per second, per UID/cgroup/path/reason and in all; the rest
    /// are summarised.
    pub log_refusals_per_key: u32,
    pub log_refusals_per_second: u32,
    pub events: EventFilter,
    pub metrics_max_keys: usize,
    pub audit_log: PathBuf,
    /// How often the audit head is logged as a checkpoint line.
    pub audit_checkpoint_every: std::time::Duration,
    pub control_socket: PathBuf,
    pub operators_group: String,
    pub pin_dir: PathBuf,
    /// Reload when the policy file changes, not only on SIGHUP.
    pub reload_on_change: bool,
    /// How to decide executions of the MTA's submission programs.
    pub exec_hook: ExecHookChoice,
    /// The MTA policy service's socket; None: no policy service.
    pub mta_socket: Option<PathBuf>,
    /// The MTA's group, which may use that socket.
    pub mta_group: String,
    /// Count SMTP packets and bytes (the packet program always attached).
    pub packet_accounting: bool,
    /// Capacity of the per-key state map.
    pub max_keys: u32,
    /// The allowed signers file policies must be signed by (None: no signature required).
    pub policy_signers: Option<PathBuf>,
    /// `--fleet-store` and the rest: tenant budgets shared through a fleet store.
    pub fleet: Option<super::fleet::FleetConfig>,
}
