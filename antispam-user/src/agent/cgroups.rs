//! The cgroup tree changed: new cgroups get their rule (their own or an ancestor's), and the
//! suspensions and overrides of their ancestors; gone cgroups leave nothing behind.

use std::sync::atomic::Ordering;

use antispam_common::key::KeyId;

use super::core::Core;
use crate::{
    kernel::missing,
    policy::assign::{self, ancestors, Assignment},
    sys::cgroup_watch::Change,
};

impl Core {
    pub fn cgroups_changed(&mut self, changes: Vec<Change>) {
        let mut created = Vec::new();
        for change in changes {
            let result = match change {
                Change::Created { path, id } => {
                    let r = self.cgroup_created(&path, id);
                    created.push((path, id));
                    r
                }
                Change::Removed { path, id } => self.cgroup_removed(&path, id),
            };
            if let Err(e) = result {
                self.shared
                    .counters
                    .cgroup_update_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.errors
                    .error("cgroups", format!("updating the cgroup rules: {e}"));
            }
        }
        for (path, id) in created {
            self.suspend_if_below_suspended(&path, id);
            self.break_glass_cover(&path, id);
        }
        if let Some(w) = &self.watcher {
            let c = &self.shared.counters;
            c.cgroups_known.store(w.len() as u64, Ordering::Relaxed);
            c.cgroup_watch_errors
                .store(w.watch_errors, Ordering::Relaxed);
        }
    }

    /// A new cgroup takes the rule that matches its path, else its nearest covered ancestor's.
    fn cgroup_created(&mut self, path: &str, id: u64) -> Result<(), crate::kernel::Error> {
        let shared = self.shared.clone();
        shared
            .counters
            .cgroups_created
            .fetch_add(1, Ordering::Relaxed);
        shared.cgroups.insert(id, path);
        let enforced = shared.enforced();
        let mut assignments = shared.assignments();
        let inherited = ancestors(path).find_map(|a| {
            let aid = self.watcher.as_ref().and_then(|w| w.id_of(a))?;
            assignments.get(&aid).map(|x| x.rule)
        });
        let Some(rule) = assign::assign(&enforced.policy, path, id, inherited) else {
            if enforced.compiled.config.flags & antispam_common::config::FLAG_CGROUP_RULES != 0 {
                self.kernel.rules.set_known(id);
            }
            return Ok(());
        };
        log::debug!(
            "cgroup {path} appeared: {}",
            enforced.policy.rule_name(rule.rule_id)
        );
        assignments.insert(
            id,
            Assignment {
                path: path.to_string(),
                rule,
            },
        );
        self.kernel.rules.set_cgroup(id, &rule)
    }

    /// A gone cgroup's rule, counters and bucket go too.
    fn cgroup_removed(&mut self, path: &str, id: u64) -> Result<(), crate::kernel::Error> {
        let shared = self.shared.clone();
        shared
            .counters
            .cgroups_removed
            .fetch_add(1, Ordering::Relaxed);
        shared.cgroups.remove(id);
        log::debug!("cgroup {path} is gone");
        shared.assignments().remove(&id);
        // Its rule, or the marker of a known cgroup without one.
        let r = self.kernel.rules.remove_cgroup(id);
        match self.kernel.keys_writer.remove(&KeyId::cgroup(id)) {
            Err(e) if !missing(&e) => log::warn!("dropping the state of cgroup {path}: {e}"),
            _ => {}
        }
        r
    }
}
