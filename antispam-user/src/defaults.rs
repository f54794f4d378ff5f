//! Every default path and address of the agent and its commands, in one place: `run` and the
//! operator commands take the same defaults, so they find each other without flags.

/// The tamper-evident audit log (`--audit-log`).
pub const AUDIT_LOG: &str = "/var/lib/antispam/audit.jsonl";
/// The offence history and the suspensions in force, kept beside the audit log.
pub const OFFENCE_BOOK_NAME: &str = "offences.json";
/// The control socket operators' commands reach the agent on (`--control-socket`).
pub const CONTROL_SOCKET: &str = "/run/antispam/control.sock";
/// Members of this group (and root) may use the control socket (`--operators-group`).
pub const OPERATORS_GROUP: &str = "antispam";
/// The MTA policy service's socket (`--mta-socket`), in a directory of its own.
pub const MTA_SOCKET: &str = "/run/antispam/mta/mta.sock";
/// The MTA's group, which may use the MTA socket (`--mta-group`).
pub const MTA_GROUP: &str = "postfix";
/// The message and recipient buckets, kept beside the audit log.
pub const MTA_BUDGETS_NAME: &str = "mta-budgets.json";
/// Where programs and maps are pinned in the BPF filesystem (`--pin-dir`).
pub const PIN_DIR: &str = "/sys/fs/bpf/antispam";
/// `/metrics` and `/status` (`--metrics-addr`): loopback only; widen it on purpose.
pub const METRICS_ADDR: &str = "127.0.0.1:9897";
/// UIDs (and as many cgroups) that get their own metric series (`--metrics-max-keys`).
pub const METRICS_MAX_KEYS: usize = 100;
/// UIDs and cgroups listed in the status, most active first.
pub const STATUS_MAX_KEYS: usize = 200;

/// The longest suspension (operators' `--for`, the policy's `durations`), and the longest
/// `window` and `forget_after` of a policy's `[suspension]`: a year and a day. Longer values are
/// refused, so no end time is computed past what the clocks hold.
pub const MAX_SUSPENSION: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// The MTA policy service's buckets for an audit log path.
pub fn mta_budgets(audit_log: &std::path::Path) -> std::path::PathBuf {
    audit_log.with_file_name(MTA_BUDGETS_NAME)
}

/// The offence book's path for an audit log path.
pub fn offence_book(audit_log: &std::path::Path) -> std::path::PathBuf {
    audit_log.with_file_name(OFFENCE_BOOK_NAME)
}
