//! What the agent's tasks share: the policy in force, name caches, counters, kernel views.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::SystemTime,
};

use super::operations::Operations;
use crate::{
    kernel::KernelView,
    policy::{assign::Assignments, compile::Compiled, Policy},
    sys::{cgroupfs::CgroupNames, users::UserNames},
};

/// Agent-side counters (the kernel's are read from its maps).
#[derive(Default)]
pub struct Counters {
    /// Events read from the ring buffer.
    pub events_read: AtomicU64,
    /// Ring-buffer records too short to be an event.
    pub decode_errors: AtomicU64,
    /// Failures to write the event log, and the events they held.
    pub log_errors: AtomicU64,
    pub log_lost: AtomicU64,
    /// Summary lines written for refusals past the log's rate bound, and the refusals they
    /// stand for.
    pub log_summaries: AtomicU64,
    pub log_folded: AtomicU64,
    /// Event log files rotated to `<log>.1` at the size bound.
    pub log_rotations: AtomicU64,
    /// Failures to save the offence book.
    pub book_failures: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_error: AtomicU64,
    /// 1 while the last load or reload attempt succeeded, 0 after a refused one; the Unix time
    /// of the last policy that went into force (the start's, or a reload's).
    pub last_reload_ok: AtomicU64,
    pub last_reload_time: AtomicU64,
    /// Cgroups that appeared / went away under the attach point since the start.
    pub cgroups_created: AtomicU64,
    pub cgroups_removed: AtomicU64,
    /// Failures to update the maps for a cgroup change.
    pub cgroup_update_errors: AtomicU64,
    /// Cgroup directories that could not be watched.
    pub cgroup_watch_errors: AtomicU64,
    /// Cgroups under the attach point (gauge).
    pub cgroups_known: AtomicU64,
    /// Entries of the per-key state map removed because they held nothing (see `gc`).
    pub keys_collected: AtomicU64,
    /// HTTP connections closed at once because as many as the agent serves were open.
    pub http_refused: AtomicU64,
    /// Audit records written since the start, failures to write one, sequence number of the
    /// last record in the chain.
    pub audit_written: AtomicU64,
    pub audit_failures: AtomicU64,
    pub audit_head: AtomicU64,
    /// The head's hash and the seal's state, for the metrics and the status.
    pub audit_anchor: Mutex<AuditAnchor>,
}

/// The head of the audit chain and how it is sealed, as the last append left them.
#[derive(Debug, Clone, Default)]
pub struct AuditAnchor {
    pub head_hash: String,
    /// (key id, epoch) when the log is sealed.
    pub sealing: Option<(String, u64)>,
    /// Why it is not sealed although a key file is there.
    pub seal_problem: Option<String>,
}

impl Counters {
    /// A policy went into force now (at the start or by a reload).
    pub fn policy_in_force_now(&self) {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload_ok.store(1, Ordering::Relaxed);
        self.last_reload_time.store(now, Ordering::Relaxed);
    }
}

/// The policy in force and what it compiled to, swapped whole on reload.
pub struct Enforced {
    pub policy: Policy,
    pub compiled: Compiled,
}

pub struct Shared {
    pub enforced: RwLock<Arc<Enforced>>,
    /// Which cgroup rule covers which cgroup, kept in step with the cgroup tree.
    pub assignments: Mutex<Assignments>,
    pub generation: AtomicU32,
    pub cgroups: CgroupNames,
    pub users: UserNames,
    pub counters: Counters,
    pub view: KernelView,
    pub programs_attached: usize,
    /// The attach point, relative to the cgroup2 mount.
    pub attach_cgroup: String,
    /// The audit log's path.
    pub audit_path: std::path::PathBuf,
    /// Suspensions and the kill switch, as operators set them.
    pub operations: Mutex<Operations>,
    /// At most this many UIDs and this many cgroups get their own metric series.
    pub metrics_max_keys: usize,
    /// The submission programs of the policy in force as the kernel knows them.
    pub programs: Mutex<Vec<crate::sys::programs::Resolved>>,
    /// How executions of the submission programs are decided, and why not by BPF LSM.
    pub exec_hook: crate::control::status::ExecHook,
    pub exec_hook_why: Option<String>,
    /// What the last suspension or kill switch could not end of the open sessions, if anything.
    /// The tenants' fleet leases in the kernel.
    pub tenants: Mutex<crate::kernel::tenants::TenantMaps>,
    /// What the fleet task last did, for status and metrics.
    pub fleet: Mutex<super::fleet::FleetView>,
    pub sessions_not_ended: Mutex<Option<String>>,
    /// Why the packet program runs (None: nothing runs per packet).
    pub packet_program: Mutex<Option<&'static str>>,
    /// The SYN check as the last sync left it.
    pub syn_check: Mutex<crate::control::status::SynCheckView>,
    pub started: SystemTime,
    /// The MTA policy service's counters.
    pub mta: super::policy_service::Counters,
    /// Set by SIGHUP: the events task reopens the event log (after logrotate moved it).
    pub reopen_log: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn enforced(&self) -> Arc<Enforced> {
        self.enforced
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_enforced(&self, e: Enforced) {
        *self.enforced.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(e);
    }

    pub fn assignments(&self) -> std::sync::MutexGuard<'_, Assignments> {
        self.assignments.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn tenants(&self) -> std::sync::MutexGuard<'_, crate::kernel::tenants::TenantMaps> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fleet(&self) -> std::sync::MutexGuard<'_, super::fleet::FleetView> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn programs(&self) -> std::sync::MutexGuard<'_, Vec<crate::sys::programs::Resolved>> {
        self.programs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn operations(&self) -> std::sync::MutexGuard<'_, Operations> {
        self.operations.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn rule_name(&self, id: u32) -> String {
        self.enforced().policy.rule_name(id)
    }

    /// The submission program with `index` (1-based) in the policy in force.
    pub fn program_name(&self, index: u32) -> Option<String> {
        let e = self.enforced();
        let i = usize::try_from(index).ok()?.checked_sub(1)?;
        e.policy
            .sendmail_programs
            .get(i)
            .map(|p| p.display().to_string())
    }
}
