//! Policy reloads (SIGHUP, or the policy file changed): a valid policy replaces the old one in
//! one step; an invalid one is refused with its problems, audited, and the old one stays.

use std::{path::Path, sync::atomic::Ordering};

use super::{assign_all, core::Core, load_policy, state::Enforced};
use crate::{
    audit::{AuditEvent, PolicyReload, PolicyReloadRefused},
    digest::sha256_hex,
    policy::{assign, compile, Policy},
    sys::cgroupfs,
};

impl Core {
    /// Reloads the policy file; true if a new policy is in force.
    pub fn reload(&mut self, trigger: &str) -> bool {
        let Some(path) = self.policy_path.clone() else {
            log::info!("{trigger}: running on the built-in policy; nothing to reload");
            return false;
        };
        let previous = self.shared.enforced().policy.sha256.clone();
        // A change event for content already in force, or already refused, changes nothing.
        if trigger != "SIGHUP" && self.unchanged(&path, &previous) {
            return false;
        }
        let policy = match load_policy(Some(&path)) {
            Ok(p) => p,
            Err(problems) => {
                log::error!(
                    "{trigger}: reload refused, the previous policy stays in force: invalid policy:\n{problems}"
                );
                let refused = file_sha256(&path);
                self.last_refused = Some(refused.clone());
                let problems = problems.0.iter().map(ToString::to_string).collect();
                self.refused(&path, &refused, &previous, problems, trigger);
                return false;
            }
        };
        self.put_in_force(policy, &path, &previous, trigger)
    }

    fn unchanged(&self, path: &Path, in_force: &str) -> bool {
        let now = file_sha256(path);
        now == in_force || self.last_refused.as_deref() == Some(now.as_str())
    }

    /// Writes `policy` to the kernel in one step and makes it the one in force; false (audited)
    /// if the kernel refused it.
    fn put_in_force(&mut self, policy: Policy, path: &Path, previous: &str, trigger: &str) -> bool {
        let shared = self.shared.clone();
        let generation = shared.generation.load(Ordering::Relaxed) + 1;
        let compiled = compile::compile(&policy, generation, self.opts);
        let tree = match &self.watcher {
            Some(w) => w.tree(),
            None => {
                let mount = cgroupfs::cgroup2_mount().unwrap_or_default();
                cgroupfs::walk(&mount, &self.dir)
            }
        };
        let assignments = match &self.watcher {
            Some(_) => assign_all(&policy, &tree, &self.dir),
            None => assign::assign_tree(&policy, &tree),
        };
        let known: Vec<u64> = tree.iter().map(|(_, id)| *id).collect();
        let programs = super::programs::resolve(&policy.sendmail_programs);
        if let Err(e) = self
            .kernel
            .rules
            .apply(&compiled, &assignments, &programs, &known)
        {
            log::error!(
                "{trigger}: the new policy could not be written to the kernel ({e}); the previous one stays in force"
            );
            let problems = vec![format!("writing the kernel maps: {e}")];
            self.refused(path, &policy.sha256, previous, problems, trigger);
            return false;
        }
        *shared.programs() = programs;
        shared.generation.store(generation, Ordering::Relaxed);
        log::info!("{trigger}: {policy} (generation {generation})");
        self.last_refused = None;
        self.audit(AuditEvent::PolicyReload(PolicyReload {
            policy: policy.origin.clone(),
            policy_sha256: policy.sha256.clone(),
            previous_sha256: previous.to_string(),
            mode: policy.mode.name().to_string(),
            generation,
            trigger: trigger.to_string(),
        }));
        *shared.assignments() = assignments;
        shared.set_enforced(Enforced { policy, compiled });
        shared.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Audits and counts a refused reload (counted once audited, so that whoever sees the count
    /// sees the record too).
    fn refused(
        &mut self,
        path: &Path,
        sha256: &str,
        in_force: &str,
        problems: Vec<String>,
        trigger: &str,
    ) {
        self.audit(AuditEvent::PolicyReloadRefused(PolicyReloadRefused {
            policy: path.display().to_string(),
            policy_sha256: sha256.to_string(),
            in_force_sha256: in_force.to_string(),
            problems,
            trigger: trigger.to_string(),
        }));
        self.shared
            .counters
            .reloads_error
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The sha256 of a file's content ("" if it cannot be read).
fn file_sha256(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| sha256_hex(&b))
        .unwrap_or_default()
}
