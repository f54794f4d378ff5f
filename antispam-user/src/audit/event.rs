//! What the audit log records: one serde-tagged enum, written by the agent and the CLI, read back
//! by `antispam report`. A record is `{"seq", "ts", "event": <name>, "details": {...}, "prev",
//! "hash"}`; the names and fields here are what auditors' scripts read, so they only grow.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::control::signed::Signer;
use crate::control::Target;

/// Who did something: an operator (from the control socket's peer credentials), the agent
/// itself (`antispam`), or the clock (`expiry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// When the person is known by their login UID: the UID the process ran as (root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_uid: Option<u32>,
    /// The audit login UID of the process (`/proc/PID/loginuid`), where it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_uid: Option<u32>,
}

impl Actor {
    /// The agent itself (automatic suspensions).
    pub fn agent() -> Actor {
        Actor {
            pid: Some(std::process::id() as i32),
            ..Actor::named("antispam", Some(0))
        }
    }

    /// Time running out.
    pub fn expiry() -> Actor {
        Actor::named("expiry", None)
    }

    pub fn named(user: &str, uid: Option<u32>) -> Actor {
        Actor {
            user: user.to_string(),
            uid,
            pid: None,
            process_uid: None,
            login_uid: None,
        }
    }
}

/// A person in the two-person rule, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRef {
    pub user: String,
    pub uid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStart {
    pub version: String,
    pub pid: u32,
    /// The attach point, relative to the cgroup2 mount.
    pub cgroup: String,
    pub policy: String,
    pub policy_sha256: String,
    pub mode: String,
    pub generation: u32,
    pub pin_dir: PathBuf,
    /// The programs of a previous agent were taken over (no enforcement gap).
    pub took_over: bool,
    /// Where the connection trail goes, for `antispam report` (null: standard output).
    pub event_log: Option<PathBuf>,
    /// Who signed the policy (`--policy-signers`: principal and key fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStop {
    pub reason: String,
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReload {
    pub policy: String,
    pub policy_sha256: String,
    pub previous_sha256: String,
    pub mode: String,
    pub generation: u32,
    /// `SIGHUP` or `file change`.
    pub trigger: String,
    /// Who signed the policy (`--policy-signers`: principal and key fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReloadRefused {
    pub policy: String,
    pub policy_sha256: String,
    pub in_force_sha256: String,
    /// Every problem, as `FILE:LINE:COLUMN: reason`.
    pub problems: Vec<String>,
    pub trigger: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlDenied {
    pub by: Actor,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspend {
    pub target: Target,
    pub reason: String,
    pub by: Actor,
    /// `manual` or `strikes`.
    pub trigger: String,
    pub for_secs: Option<u64>,
    pub until: Option<String>,
    /// Kernel entries written: the UID, or the cgroup and its descendants.
    pub kernel_keys: usize,
    /// Open SMTP sessions it ends: those open when it was recorded, just before it took effect
    /// (null: sock_diag failed; their packets are dropped instead).
    pub sessions_ended: Option<usize>,
}

/// An operator lifting a suspension (`unsuspend`), or its time running out
/// (`suspension_expired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionEnded {
    pub target: Target,
    pub reason: String,
    pub by: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionRestored {
    pub target: Target,
    pub reason: String,
    pub by: Actor,
    pub trigger: String,
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub on: bool,
    pub reason: String,
    pub by: Actor,
    pub sessions_ended: Option<usize>,
    pub was_on_since: Option<String>,
    pub was_set_by: Option<String>,
    /// The SSH key that signed the request, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchRestored {
    pub reason: String,
    pub by: String,
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRequested {
    pub id: String,
    pub target: Target,
    pub reason: String,
    pub ttl_secs: u64,
    pub requester: Actor,
    /// What the requester cites (alerts, metrics at the time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRefused {
    pub id: String,
    pub target: Target,
    pub by: Actor,
    pub why: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassApproved {
    pub id: String,
    pub target: Target,
    pub reason: String,
    pub ttl_secs: u64,
    pub requester: PersonRef,
    pub approver: Actor,
    pub expires_at: String,
    pub kernel_keys: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_signer: Option<Signer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_signer: Option<Signer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRevoked {
    pub id: String,
    pub target: Target,
    pub by: Actor,
    pub reason: String,
    pub requester: PersonRef,
    pub approver: Option<PersonRef>,
    pub was_in_force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassExpired {
    pub id: String,
    pub target: Target,
    pub requester: PersonRef,
    pub approver: Option<PersonRef>,
    pub expires_at: Option<String>,
    /// Set when it ran out while no agent was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#while: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassLapsed {
    pub id: String,
    pub target: Target,
    pub requester: PersonRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRestored {
    pub id: String,
    pub target: Target,
    pub expires_at: Option<String>,
}

/// One attach point's pins removed by `antispam uninstall` when no agent was running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpinned {
    pub pin_dir: PathBuf,
    pub cgroup_id: u64,
    pub unpinned: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uninstall {
    pub reason: String,
    pub by: Actor,
    /// Set when the running agent did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpinned: Option<usize>,
    /// Set when the CLI did it, no agent running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<Unpinned>>,
    #[serde(default = "yes")]
    pub agent_running: bool,
}

fn yes() -> bool {
    true
}

/// The longest part of a removed, cut-short record kept in a `log_repaired` record.
pub const REMOVED_KEPT: usize = 4096;

/// The agent removed the last line of a log because its write was cut short (a crash or a full
/// disk while it was written): the bytes removed, so that nothing is lost silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRepaired {
    /// `audit` or `events`.
    pub log: String,
    pub path: PathBuf,
    /// Where the removed bytes began (the file's length after the repair).
    pub offset: u64,
    pub removed_bytes: u64,
    pub removed_sha256: String,
    /// The removed bytes as text (lossy UTF-8), at most [`REMOVED_KEPT`] bytes of them.
    pub removed: String,
}

impl LogRepaired {
    pub fn new(log: &str, path: &std::path::Path, offset: u64, removed: &[u8]) -> LogRepaired {
        let kept = &removed[..removed.len().min(REMOVED_KEPT)];
        LogRepaired {
            log: log.to_string(),
            path: path.to_path_buf(),
            offset,
            removed_bytes: removed.len() as u64,
            removed_sha256: crate::digest::sha256_hex(removed),
            removed: String::from_utf8_lossy(kept).into_owned(),
        }
    }
}

/// A file the agent keeps was open to group or others; it was set to 0600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileModeTightened {
    pub path: PathBuf,
    /// Octal, e.g. `0644`.
    pub was: String,
    pub now: String,
}

/// What a previous agent left in the kernel that the offence book does not hold (it ended, or
/// its end was recorded but the agent stopped before it reached the kernel), removed at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleStateCleared {
    /// Kernel keys, as `uid 1000` or `cgroup id 4242`.
    pub suspensions: Vec<String>,
    pub overrides: Vec<String>,
    /// The kill switch was on in the kernel, and off in the book: it was turned off.
    #[serde(default)]
    pub kill_switch: bool,
}

/// An action that was recorded, and then could not be carried out in the kernel: it is not in
/// force (its record before this one says what was asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionFailed {
    /// The record it undoes: `suspend`, `unsuspend`, `kill_switch`, `break_glass_approved`…
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub error: String,
}

/// The log is sealed from this record on, with the key named (`antispam audit setup-keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealingStarted {
    /// The verification key's public id (`audit verify --key` finds the key by it).
    pub key_id: String,
    pub key_file: PathBuf,
    /// When epoch 0 began.
    pub start: String,
    pub epoch_secs: u64,
    /// The epoch the key was in when this record was written.
    pub epoch: u64,
}

/// A sealing key file is there but cannot be used: the records from here on are not sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealingUnavailable {
    pub key_file: PathBuf,
    pub error: String,
}

/// A request that must be signed (`[break_glass] require_signatures`) was refused for its
/// signature: none, a key not listed, one that does not verify, a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRefused {
    /// `kill-switch`, `break-glass request`, `break-glass approve`, `break-glass revoke`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub by: Actor,
    /// The key that signed, when the signature could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    pub why: String,
}

/// Every kind of audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "details", rename_all = "snake_case")]
pub enum AuditEvent {
    AgentStart(AgentStart),
    AgentStop(AgentStop),
    PolicyReload(PolicyReload),
    PolicyReloadRefused(PolicyReloadRefused),
    ControlDenied(ControlDenied),
    Suspend(Suspend),
    Unsuspend(SuspensionEnded),
    SuspensionExpired(SuspensionEnded),
    SuspensionRestored(SuspensionRestored),
    KillSwitch(KillSwitch),
    KillSwitchRestored(KillSwitchRestored),
    BreakGlassRequested(BreakGlassRequested),
    BreakGlassRefused(BreakGlassRefused),
    BreakGlassApproved(BreakGlassApproved),
    BreakGlassRevoked(BreakGlassRevoked),
    BreakGlassExpired(BreakGlassExpired),
    BreakGlassRequestLapsed(BreakGlassLapsed),
    BreakGlassRestored(BreakGlassRestored),
    Uninstall(Uninstall),
    LogRepaired(LogRepaired),
    FileModeTightened(FileModeTightened),
    StaleStateCleared(StaleStateCleared),
    ActionFailed(ActionFailed),
    SealingStarted(SealingStarted),
    SealingUnavailable(SealingUnavailable),
    SignatureRefused(SignatureRefused),
    FleetLease(FleetLease),
}

/// A tenant's budget on this host changed hands: a fleet lease in force (`state = "leased"`),
/// or none, so the host spends the tenant's `local_rate` (`state = "local_rate"`: the store
/// could not be reached or answered late, and the last lease ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLease {
    pub tenant: String,
    pub state: String,
    /// The fleet store (its URL, no password).
    pub store: String,
    /// Why, in words: the store's last error when it fell back.
    pub why: String,
}

/// The name of each kind of record, without its details: what `antispam report` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    AgentStart,
    AgentStop,
    PolicyReload,
    PolicyReloadRefused,
    ControlDenied,
    Suspend,
    Unsuspend,
    SuspensionExpired,
    SuspensionRestored,
    KillSwitch,
    KillSwitchRestored,
    BreakGlassRequested,
    BreakGlassRefused,
    BreakGlassApproved,
    BreakGlassRevoked,
    BreakGlassExpired,
    BreakGlassRequestLapsed,
    BreakGlassRestored,
    Uninstall,
    LogRepaired,
    FileModeTightened,
    StaleStateCleared,
    ActionFailed,
    SealingStarted,
    SealingUnavailable,
    SignatureRefused,
    FleetLease,
}

impl AuditKind {
    /// The kind named `event` in a record, if this version knows it.
    pub fn parse(event: &str) -> Option<AuditKind> {
        serde_json::from_value(serde_json::Value::String(event.to_string())).ok()
    }

    /// The record's `event` name.
    #[cfg(test)]
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => unreachable!("a unit variant serializes as its name"),
        }
    }
}

impl AuditEvent {
    /// Compiled in tests only: the exhaustive match keeps [`AuditKind`] in step with the enum.
    #[cfg(test)]
    pub fn kind(&self) -> AuditKind {
        match self {
            AuditEvent::AgentStart(_) => AuditKind::AgentStart,
            AuditEvent::AgentStop(_) => AuditKind::AgentStop,
            AuditEvent::PolicyReload(_) => AuditKind::PolicyReload,
            AuditEvent::PolicyReloadRefused(_) => AuditKind::PolicyReloadRefused,
            AuditEvent::ControlDenied(_) => AuditKind::ControlDenied,
            AuditEvent::Suspend(_) => AuditKind::Suspend,
            AuditEvent::Unsuspend(_) => AuditKind::Unsuspend,
            AuditEvent::SuspensionExpired(_) => AuditKind::SuspensionExpired,
            AuditEvent::SuspensionRestored(_) => AuditKind::SuspensionRestored,
            AuditEvent::KillSwitch(_) => AuditKind::KillSwitch,
            AuditEvent::KillSwitchRestored(_) => AuditKind::KillSwitchRestored,
            AuditEvent::BreakGlassRequested(_) => AuditKind::BreakGlassRequested,
            AuditEvent::BreakGlassRefused(_) => AuditKind::BreakGlassRefused,
            AuditEvent::BreakGlassApproved(_) => AuditKind::BreakGlassApproved,
            AuditEvent::BreakGlassRevoked(_) => AuditKind::BreakGlassRevoked,
            AuditEvent::BreakGlassExpired(_) => AuditKind::BreakGlassExpired,
            AuditEvent::BreakGlassRequestLapsed(_) => AuditKind::BreakGlassRequestLapsed,
            AuditEvent::BreakGlassRestored(_) => AuditKind::BreakGlassRestored,
            AuditEvent::Uninstall(_) => AuditKind::Uninstall,
            AuditEvent::LogRepaired(_) => AuditKind::LogRepaired,
            AuditEvent::FileModeTightened(_) => AuditKind::FileModeTightened,
            AuditEvent::StaleStateCleared(_) => AuditKind::StaleStateCleared,
            AuditEvent::ActionFailed(_) => AuditKind::ActionFailed,
            AuditEvent::SealingStarted(_) => AuditKind::SealingStarted,
            AuditEvent::SealingUnavailable(_) => AuditKind::SealingUnavailable,
            AuditEvent::SignatureRefused(_) => AuditKind::SignatureRefused,
            AuditEvent::FleetLease(_) => AuditKind::FleetLease,
        }
    }
}

#[cfg(test)]
pub(crate) mod samples {
    //! One record of every kind, for tests here and in `report/`.
    use super::*;

    pub fn all() -> Vec<AuditEvent> {
        let t = Target::Uid(1000);
        let a = Actor::named("root", Some(0));
        let p = PersonRef {
            user: "alice".into(),
            uid: 1001,
        };
        let ended = SuspensionEnded {
            target: t.clone(),
            reason: "r".into(),
            by: a.clone(),
            suspended_since: None,
            suspended_by: None,
            suspension_reason: None,
            held_secs: None,
        };
        vec![
            AuditEvent::AgentStart(AgentStart {
                version: "0".into(),
                pid: 1,
                cgroup: "/".into(),
                policy: "p".into(),
                policy_sha256: "s".into(),
                mode: "enforce".into(),
                generation: 1,
                pin_dir: "/sys/fs/bpf/antispam/x".into(),
                took_over: false,
                event_log: None,
                policy_signed_by: None,
            }),
            AuditEvent::AgentStop(AgentStop {
                reason: "SIGTERM".into(),
                generation: 1,
            }),
            AuditEvent::PolicyReload(PolicyReload {
                policy: "p".into(),
                policy_sha256: "b".into(),
                previous_sha256: "a".into(),
                mode: "enforce".into(),
                generation: 2,
                trigger: "SIGHUP".into(),
                policy_signed_by: Some("ops@example.org (SHA256:x)".into()),
            }),
            AuditEvent::PolicyReloadRefused(PolicyReloadRefused {
                policy: "p".into(),
                policy_sha256: "c".into(),
                in_force_sha256: "b".into(),
                problems: vec!["p:1:1: x".into()],
                trigger: "SIGHUP".into(),
            }),
            AuditEvent::ControlDenied(ControlDenied {
                by: a.clone(),
                why: "w".into(),
            }),
            AuditEvent::Suspend(Suspend {
                target: t.clone(),
                reason: "r".into(),
                by: a.clone(),
                trigger: "manual".into(),
                for_secs: None,
                until: None,
                kernel_keys: 1,
                sessions_ended: Some(0),
            }),
            AuditEvent::Unsuspend(ended.clone()),
            AuditEvent::SuspensionExpired(ended),
            AuditEvent::SuspensionRestored(SuspensionRestored {
                target: t.clone(),
                reason: "r".into(),
                by: a.clone(),
                trigger: "manual".into(),
                until: None,
            }),
            AuditEvent::KillSwitch(KillSwitch {
                on: true,
                reason: "r".into(),
                by: a.clone(),
                sessions_ended: None,
                was_on_since: None,
                was_set_by: None,
                signer: None,
            }),
            AuditEvent::KillSwitchRestored(KillSwitchRestored {
                reason: "r".into(),
                by: "root".into(),
                since: "t".into(),
            }),
            AuditEvent::BreakGlassRequested(BreakGlassRequested {
                id: "bg-1".into(),
                target: t.clone(),
                reason: "r".into(),
                ttl_secs: 60,
                requester: a.clone(),
                evidence: vec!["alert".into()],
                signer: None,
            }),
            AuditEvent::BreakGlassRefused(BreakGlassRefused {
                id: "bg-1".into(),
                target: t.clone(),
                by: a.clone(),
                why: "w".into(),
                signer: None,
            }),
            AuditEvent::BreakGlassApproved(BreakGlassApproved {
                id: "bg-1".into(),
                target: t.clone(),
                reason: "r".into(),
                ttl_secs: 60,
                requester: p.clone(),
                approver: a.clone(),
                expires_at: "t".into(),
                kernel_keys: 1,
                evidence: Vec::new(),
                requester_signer: None,
                approver_signer: None,
            }),
            AuditEvent::BreakGlassRevoked(BreakGlassRevoked {
                id: "bg-1".into(),
                target: t.clone(),
                by: a.clone(),
                reason: "r".into(),
                requester: p.clone(),
                approver: None,
                was_in_force: true,
                signer: None,
            }),
            AuditEvent::BreakGlassExpired(BreakGlassExpired {
                id: "bg-1".into(),
                target: t.clone(),
                requester: p.clone(),
                approver: None,
                expires_at: None,
                r#while: None,
            }),
            AuditEvent::BreakGlassRequestLapsed(BreakGlassLapsed {
                id: "bg-1".into(),
                target: t.clone(),
                requester: p,
            }),
            AuditEvent::BreakGlassRestored(BreakGlassRestored {
                id: "bg-1".into(),
                target: t,
                expires_at: None,
            }),
            AuditEvent::Uninstall(Uninstall {
                reason: "r".into(),
                by: a,
                pin_dir: None,
                unpinned: None,
                removed: Some(Vec::new()),
                agent_running: false,
            }),
            AuditEvent::LogRepaired(LogRepaired::new(
                "audit",
                std::path::Path::new("/a"),
                10,
                b"{\"seq\":",
            )),
            AuditEvent::FileModeTightened(FileModeTightened {
                path: "/a".into(),
                was: "0644".into(),
                now: "0600".into(),
            }),
            AuditEvent::StaleStateCleared(StaleStateCleared {
                suspensions: vec!["uid 1000".into()],
                overrides: Vec::new(),
                kill_switch: false,
            }),
            AuditEvent::ActionFailed(ActionFailed {
                action: "suspend".into(),
                target: Some(Target::Uid(1000)),
                error: "e".into(),
            }),
            AuditEvent::SealingStarted(SealingStarted {
                key_id: "0011223344556677".into(),
                key_file: "/a.key".into(),
                start: "t".into(),
                epoch_secs: 900,
                epoch: 0,
            }),
            AuditEvent::SealingUnavailable(SealingUnavailable {
                key_file: "/a.key".into(),
                error: "e".into(),
            }),
            AuditEvent::SignatureRefused(SignatureRefused {
                action: "break-glass approve".into(),
                id: Some("bg-1".into()),
                target: None,
                by: Actor::named("root", Some(0)),
                key_fingerprint: Some("SHA256:x".into()),
                why: "w".into(),
            }),
            AuditEvent::FleetLease(FleetLease {
                tenant: "acme".into(),
                state: "local_rate".into(),
                store: "redis://fleet.example:6379".into(),
                why: "no answer within 1000ms".into(),
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_as_its_event_and_round_trips() {
        let all = samples::all();
        let mut kinds: Vec<AuditKind> = all.iter().map(AuditEvent::kind).collect();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len(), "one sample of each kind");
        for e in all {
            let v = serde_json::to_value(&e).unwrap();
            let name = v["event"].as_str().unwrap();
            assert_eq!(AuditKind::parse(name), Some(e.kind()), "{name}");
            assert_eq!(e.kind().name(), name);
            assert!(v["details"].is_object(), "{v}");
            let back: AuditEvent = serde_json::from_value(v).unwrap();
            assert_eq!(back, e);
        }
        assert_eq!(AuditKind::parse("mystery"), None);
    }

    #[test]
    fn field_names_are_the_published_ones() {
        let v = serde_json::to_value(AuditEvent::BreakGlassExpired(BreakGlassExpired {
            id: "bg-1".into(),
            target: Target::Cgroup("/a".into()),
            requester: PersonRef {
                user: "alice".into(),
                uid: 1,
            },
            approver: None,
            expires_at: None,
            r#while: Some("the agent was stopped".into()),
        }))
        .unwrap();
        assert_eq!(v["event"], "break_glass_expired");
        assert_eq!(v["details"]["while"], "the agent was stopped");
        assert_eq!(v["details"]["target"]["cgroup"], "/a");
    }
}
