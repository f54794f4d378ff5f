//! The main loop's state: what it owns and changes (the kernel's maps, the cgroup watcher, the
//! audit log, the offence book). The loop in `mod.rs` drives it; reloads, cgroup changes,
//! operator actions and strikes are `impl Core` blocks in their own files.

use std::{path::PathBuf, sync::atomic::Ordering, sync::Arc};

use antispam_common::key::KeyId;

use super::{book::Book, state::Shared};
use crate::{
    audit::{AuditEvent, AuditLog},
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
    /// Appends to the audit log and keeps the audit metrics in step. A failure is logged and
    /// counted (the agent keeps enforcing: refusing mail because a disk is full would be worse).
    pub fn audit(&mut self, event: AuditEvent) {
        record(&mut self.audit, &self.shared, &event);
    }

    /// Writes the offence book if it changed; a failure is logged (enforcement goes on).
    pub fn save_book(&mut self) {
        if self.book.dirty {
            if let Err(e) = self.book.save(&self.book_path) {
                log::error!("{e}");
            }
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
pub fn record(audit: &mut AuditLog, shared: &Shared, event: &AuditEvent) {
    if let Err(e) = audit.append(event) {
        log::error!("{e}");
    }
    let c = &shared.counters;
    c.audit_written.store(audit.written, Ordering::Relaxed);
    c.audit_failures.store(audit.failures, Ordering::Relaxed);
    c.audit_head.store(audit.head().0, Ordering::Relaxed);
}
