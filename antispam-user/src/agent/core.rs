//! The main loop's state: what it owns and changes (the kernel's maps, the cgroup watcher, the
//! audit log, the offence book). The loop in `mod.rs` drives it; reloads, cgroup changes,
//! operator actions and strikes are `impl Core` blocks in their own files.

use std::{path::PathBuf, sync::atomic::Ordering, sync::Arc, time::Instant};

use antispam_common::key::{KeyId, KIND_UID};

use super::{
    book::{Book, BookError},
    log_limit::LogLimit,
    state::Shared,
};
use crate::{
    audit::{self, ActionFailed, AuditEvent, AuditLog},
    control::Target,
    kernel::Kernel,
    policy::compile::Options,
    sys::cgroup_watch::CgroupWatcher,
};

pub struct Core {
    pub shared: Arc<Shared>,
    pub kernel: Kernel,
    /// Follows the cgroup tree; None if inotify could not (rules then apply at reload only).
    pub watcher: Option<CgroupWatcher>,
    pub audit: AuditLog,
    /// Offence history and the suspensions in force, kept on disk.
    pub book: Book,
    pub book_path: PathBuf,
    pub opts: Options,
    /// The policy file, None for the built-in policy.
    pub policy_path: Option<PathBuf>,
    /// The attach point (absolute path).
    pub dir: PathBuf,
    /// Where the links and maps are pinned.
    pub pin_dir: PathBuf,
    /// Set when a request ends the agent (uninstall).
    pub quit: Option<&'static str>,
    /// sha256 of the last policy text refused, not to refuse (and audit) it again on every
    /// change event.
    pub last_refused: Option<String>,
    /// The version of /etc/subuid written to the kernel (None: not yet).
    pub subuid_stamp: Option<super::host::FileStamp>,
    /// The devices the SYN check runs on.
    pub syn: super::syn_check::SynFollow,
    /// A reload waiting for the policy file to be written whole (an editor mid-save).
    pub deferred: Option<Deferred>,
    /// Repeated errors, summarised.
    pub errors: LogLimit,
    /// When the audit head was last logged as a checkpoint.
    pub checkpoints: super::checkpoint::Checkpoints,
    /// `--packet-accounting`: the packet program always runs.
    pub packet_accounting: bool,
    /// `--policy-signers`: the allowed signers file every policy load is checked against.
    pub policy_signers: Option<PathBuf>,
}

/// A reload put off because the policy file was still open for writing.
#[derive(Debug, Clone, Copy)]
pub struct Deferred {
    pub trigger: &'static str,
    /// When to look again.
    pub retry_at: Instant,
    /// When to stop waiting and refuse the reload.
    pub give_up_at: Instant,
}

/// Why an action was not done: what it needed to write first could not be made durable.
/// Nothing was changed in the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NotRecorded {
    #[error("not done, nothing was changed: {0}")]
    Book(#[source] BookError),
    #[error("not done, nothing was changed: the audit record could not be written: {0}")]
    Audit(#[source] audit::Error),
}

/// Why a target has no kernel keys.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the cgroup tree is not followed; suspend by UID")]
    TreeNotFollowed,
    #[error("no cgroup {path} under the attach point {attach}")]
    NoSuchCgroup { path: String, attach: String },
}

impl Core {
    /// Appends to the audit log (fsync'd) and keeps the audit metrics in step.
    pub fn audit(&mut self, event: AuditEvent) -> Result<u64, audit::Error> {
        record(&mut self.audit, &self.shared, &event)
    }

    /// Appends to the audit log where a failure cannot stop what is recorded (a refused peer,
    /// a refused reload, state put back at start): the failure is logged (summarised when it
    /// repeats) and counted.
    pub fn audit_or_log(&mut self, event: AuditEvent) {
        if let Err(e) = self.audit(event) {
            self.errors.error("audit", e);
        }
    }

    /// Makes an action durable before it takes effect: `change` is applied to the offence book,
    /// the book is saved (fsync'd), then `event` is appended to the audit log (fsync'd). If
    /// either fails, the book is as it was and nothing is to be changed in the kernel. Returns
    /// the book as it was, for [`Core::undo`] should the kernel then refuse the change.
    pub fn commit(
        &mut self,
        change: impl FnOnce(&mut Book),
        event: AuditEvent,
    ) -> Result<Book, NotRecorded> {
        let before = self.book.clone();
        change(&mut self.book);
        if let Err(e) = self.book.save(&self.book_path) {
            self.shared
                .counters
                .book_failures
                .fetch_add(1, Ordering::Relaxed);
            self.book = before;
            return Err(NotRecorded::Book(e));
        }
        if let Err(e) = self.audit(event) {
            self.book = before.clone();
            // Saved again below; retried every second while it fails.
            self.book.dirty = true;
            self.save_book();
            return Err(NotRecorded::Audit(e));
        }
        Ok(before)
    }

    /// The kernel refused a change already recorded: the book goes back to `before` and the
    /// failure is recorded after the action's own record.
    pub fn undo(&mut self, before: Book, action: &str, target: Option<&Target>, error: String) {
        log::error!("{action}: recorded, but the kernel refused it ({error}); undone");
        self.book = before;
        self.book.dirty = true;
        self.save_book();
        self.audit_or_log(AuditEvent::ActionFailed(ActionFailed {
            action: action.to_string(),
            target: target.cloned(),
            error,
        }));
    }

    /// Writes the offence book if it changed; a failure is logged (summarised) and retried at
    /// the next tick (what is in force was recorded before it took effect).
    pub fn save_book(&mut self) {
        if self.book.dirty {
            if let Err(e) = self.book.save(&self.book_path) {
                self.shared
                    .counters
                    .book_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.errors.error("offence book", e);
            }
        }
    }

    /// A kernel key as people read it: `uid 1000`, `cgroup /a/b` (or `cgroup id N`).
    pub fn key_label(&self, k: KeyId) -> String {
        if k.kind == KIND_UID {
            return format!("uid {}", k.id);
        }
        match self.shared.cgroups.name(k.id) {
            Some(path) => format!("cgroup {path}"),
            None => format!("cgroup id {}", k.id),
        }
    }

    /// The kernel keys of a target: a UID, or a cgroup with all its descendants.
    pub fn keys_of(&self, target: &Target) -> Result<Vec<KeyId>, TargetError> {
        match target {
            Target::Uid(u) => Ok(vec![KeyId::uid(*u)]),
            Target::Cgroup(path) => {
                let w = self.watcher.as_ref().ok_or(TargetError::TreeNotFollowed)?;
                let keys: Vec<KeyId> = w
                    .tree()
                    .into_iter()
                    .filter(|(p, _)| target.covers_cgroup(p))
                    .map(|(_, id)| KeyId::cgroup(id))
                    .collect();
                if keys.is_empty() {
                    return Err(TargetError::NoSuchCgroup {
                        path: path.clone(),
                        attach: self.shared.attach_cgroup.clone(),
                    });
                }
                Ok(keys)
            }
        }
    }
}

/// Appends `event` to `audit` and updates the audit counters of `shared`.
pub fn record(
    audit: &mut AuditLog,
    shared: &Shared,
    event: &AuditEvent,
) -> Result<u64, audit::Error> {
    let r = audit.append(event);
    sync_counters(audit, shared);
    r
}

/// The audit counters of `shared`, from `audit`.
pub fn sync_counters(audit: &AuditLog, shared: &Shared) {
    let c = &shared.counters;
    c.audit_written.store(audit.written, Ordering::Relaxed);
    c.audit_failures.store(audit.failures, Ordering::Relaxed);
    c.audit_head.store(audit.head().0, Ordering::Relaxed);
    let mut a = c.audit_anchor.lock().unwrap_or_else(|e| e.into_inner());
    a.head_hash = audit.head().1.to_string();
    a.sealing = audit.sealing().map(|(k, e)| (k.to_string(), e));
    a.seal_problem = audit.seal_problem.clone();
}
