//! What the running agent enforces now: served as JSON at `GET /status` and over the control
//! socket, shown by `antispam status`. One type for both sides; the field names are a contract
//! (tools read `/status`), so they only grow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// `enforce` or `monitor`.
    pub mode: String,
    /// The policy file, or `<built-in policy>`.
    pub policy: String,
    /// Who signed the policy in force (`--policy-signers`), if signatures are required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_signed_by: Option<String>,
    pub generation: u32,
    /// The attach point, relative to the cgroup2 mount.
    pub cgroup: String,
    pub programs_attached: usize,
    pub ports: Vec<u16>,
    pub default_rate: String,
    /// Mail paths with a default budget of their own: path → rate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_paths: BTreeMap<String, String>,
    pub rules: Vec<RuleView>,
    pub rule_counts: RuleCounts,
    /// Which cgroup rule covers which cgroup (at most [`crate::defaults::STATUS_MAX_KEYS`]).
    pub cgroup_rules: Vec<CgroupMatch>,
    pub cgroups_covered: usize,
    pub cgroups_followed: u64,
    /// Usage per UID and cgroup, most refused first (at most `STATUS_MAX_KEYS`).
    pub keys: Vec<KeyUsage>,
    pub tracked: Tracked,
    /// Problems only the kernel programs can see, by kind.
    pub kernel_errors: BTreeMap<String, u64>,
    pub suspensions: Vec<SuspensionView>,
    pub kill_switch: KillSwitchView,
    pub break_glass: BreakGlassView,
    pub audit: AuditView,
    pub kernel_maps: KernelMaps,
    pub events_read: u64,
    pub reloads: Reloads,
    /// Mail through the local MTA's sendmail: how it is decided, and the programs counted.
    pub sendmail: SendmailView,
    /// What the last suspension or kill switch could not end of the open SMTP sessions (they
    /// are stopped by dropping their packets instead), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_not_ended: Option<String>,
    /// Why the packet program (`antispam_egress`) runs on every packet of the attach point's
    /// tasks; None: nothing runs per packet.
    #[serde(default)]
    pub packet_program: Option<String>,
    /// The SYN check on containers' host-side veth devices (SMTP SYNs of packet sockets).
    #[serde(default)]
    pub syn_check: SynCheckView,
    /// Tenants' fleet budgets: the store and each tenant's lease on this host.
    #[serde(default)]
    pub fleet: FleetStatus,
}

/// `[tenant.NAME]` budgets and the fleet store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The store's URL (no password); None: no `--fleet-store`, every tenant on local_rate.
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub lease_ms: u64,
    /// Did the last renewal reach the store?
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub tenants: Vec<TenantStatus>,
}

/// One tenant on this host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantStatus {
    pub name: String,
    /// The fleet's budget, as written.
    pub rate: String,
    pub local_rate: String,
    /// `leased` (a lease in force) or `local_rate` (none: the host spends local_rate).
    pub state: String,
    /// Tokens the lease in force has left.
    pub lease_tokens: u64,
    /// Milliseconds until the lease ends (0: none in force).
    pub lease_ends_in_ms: u64,
    /// Spent from leases, allowed on local_rate, refused: since the entry was made.
    pub leased_used: u64,
    pub local_used: u64,
    pub refused: u64,
    /// The last renewal: tokens asked for (twice the last period's demand), granted, and left in
    /// the fleet's bucket after the grant.
    #[serde(default)]
    pub last_want: u64,
    #[serde(default)]
    pub last_grant: u64,
    #[serde(default)]
    pub fleet_left: u64,
}

/// How executions of the MTA's submission programs are decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecHook {
    /// BPF LSM (`lsm_cgroup/bprm_creds_for_exec`): refused before the program runs (EPERM).
    Lsm,
    /// Without BPF LSM: a tracepoint counts, and kills a program over budget before its first
    /// instruction (the exec itself succeeds; the caller sees its child killed).
    Tracepoint,
    /// Not decided: neither could be attached (mail through sendmail is not counted).
    #[default]
    None,
}

impl ExecHook {
    pub const fn name(self) -> &'static str {
        match self {
            ExecHook::Lsm => "lsm",
            ExecHook::Tracepoint => "tracepoint",
            ExecHook::None => "none",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynCheckView {
    /// Why it is off (the program could not be loaded), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off: Option<String>,
    /// The devices it runs on, with the nsid of their peer's namespace.
    pub devices: Vec<SynDevice>,
    /// Devices it should run on and does not, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynDevice {
    pub device: String,
    pub nsid: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendmailView {
    pub hook: ExecHook,
    /// Why the hook is not `lsm`, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub programs: Vec<ProgramView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProgramView {
    pub path: String,
    /// The file exists on this host.
    pub present: bool,
    pub inode: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleView {
    pub id: u32,
    /// `limit[0]`, `allow[1]`…
    pub name: String,
    pub kind: String,
    /// Line of the rule in the policy file.
    pub line: usize,
    pub users: Vec<String>,
    pub cgroups: Vec<String>,
    pub destinations: Vec<String>,
    pub rate: Option<String>,
    /// Mail paths with a budget of their own under this rule: path → rate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleCounts {
    pub allow: usize,
    pub limit: usize,
    pub block: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupMatch {
    pub cgroup: String,
    pub id: u64,
    pub rule: String,
    /// The bucket the cgroup draws on (`-` for an allow rule).
    pub bucket: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyUsage {
    /// `uid`, `cgroup` or `shared`.
    pub kind: String,
    pub id: u64,
    pub name: String,
    pub rule: String,
    pub limit: String,
    /// Tokens left in the bucket it draws on (none for unlimited keys).
    pub available: Option<u64>,
    /// The bucket, when a cgroup draws on another's (an ancestor's or a shared one).
    pub bucket: Option<String>,
    /// Attempts on every mail path together.
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
    /// The same by mail path (`direct`, `sendmail`, `local_smtp`), paths with none left out.
    #[serde(default)]
    pub by_path: BTreeMap<String, PathUsage>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PathUsage {
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tracked {
    pub uids: usize,
    pub cgroups: usize,
    pub shared: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SuspensionView {
    pub target: String,
    pub reason: String,
    pub by: String,
    pub since: String,
    pub until: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KillSwitchView {
    pub on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Break-glass requests waiting for a second operator, and overrides in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BreakGlassView {
    pub active: Vec<GrantView>,
    pub pending: Vec<GrantView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrantView {
    pub id: String,
    pub target: String,
    pub reason: String,
    pub ttl_secs: u64,
    pub requester: String,
    pub requested_at: String,
    pub approver: Option<String>,
    pub expires_at: Option<String>,
    /// When a request nobody approved lapses.
    pub lapses_at: Option<String>,
    /// What the requester cited, for the approver to see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// The signing keys (`principal (SHA256:…)`), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditView {
    pub path: String,
    pub head_sequence: u64,
    /// The last record's hash: with `head_sequence`, a checkpoint for `audit verify
    /// --expect-head`.
    #[serde(default)]
    pub head_hash: String,
    pub written: u64,
    pub failures: u64,
    /// The sealing key's id and epoch, when records are sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_epoch: Option<u64>,
    /// Why records are not sealed although a key file is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_problem: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelMaps {
    /// Cgroup rules in the kernel (both rule sets during a reload).
    pub cgroup_rules: usize,
    /// Cgroups the kernel knows have no rule (so it does not look among their ancestors).
    #[serde(default)]
    pub known_cgroups: usize,
    pub keys: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reloads {
    pub ok: u64,
    pub error: u64,
}
