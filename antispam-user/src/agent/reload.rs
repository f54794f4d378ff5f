//! Policy reloads (SIGHUP, or the policy file changed): a valid policy replaces the old one in
//! one step; an invalid one is refused with its problems, audited, and the old one stays.
//!
//! The file is read whole, and only once no process has it open for writing (an editor mid-save
//! is waited for, up to [`WAIT_FOR_WRITER`]); an empty file is refused. The new policy is
//! written into the rule set not in force, its `policy_reload` record is appended (fsync'd),
//! and only then is it switched to: a crash at any point leaves either the old policy in force,
//! or the new one with its record. If the record cannot be written, the old policy stays.

use std::{
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{
    assign_all,
    core::{Core, Deferred},
    state::Enforced,
};
use crate::{
    audit::{AuditEvent, PolicyReload, PolicyReloadRefused},
    digest::sha256_hex,
    policy::{assign, compile, Policy, Problem, Problems},
    sys::{
        cgroupfs,
        files::{self, ReadError},
    },
};

/// How long a reload waits for a writer to close the policy file before it is refused.
pub const WAIT_FOR_WRITER: Duration = Duration::from_secs(10);
/// How often it looks again meanwhile.
pub const RETRY: Duration = Duration::from_millis(100);

/// The policy file's content, read whole once no process writes it, waiting up to `wait`
/// (blocking: for the start, before anything else runs).
pub fn read_whole(path: &Path, wait: Duration) -> Result<Vec<u8>, ReadError> {
    let give_up = Instant::now() + wait;
    loop {
        match files::read_settled(path) {
            Err(ReadError::BeingWritten { .. } | ReadError::Changed { .. })
                if Instant::now() < give_up =>
            {
                std::thread::sleep(RETRY);
            }
            r => return r,
        }
    }
}

/// A read error as the problem a refused reload reports.
fn unreadable(path: &Path, e: &ReadError) -> Problems {
    Problems(vec![Problem {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        message: format!("cannot read policy: {e}"),
    }])
}

/// The policy in a file, checked, read whole (waiting up to `wait` for a writer); with
/// `signers`, every file it is read from must be signed by one of them.
pub fn load_file(path: &Path, wait: Duration, signers: Option<&Path>) -> Result<Policy, Problems> {
    let text = read_whole(path, wait).map_err(|e| unreadable(path, &e))?;
    checked(path, &text, signers)
}

/// [`Policy::from_file`], the signatures checked first when `signers` requires them.
fn checked(path: &Path, text: &[u8], signers: Option<&Path>) -> Result<Policy, Problems> {
    let signers = super::policy_signers::for_load(signers).map_err(|why| {
        Problems(vec![Problem {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            message: format!("refused: {why}"),
        }])
    })?;
    let policy = Policy::from_file_checked(
        path,
        text,
        signers.as_ref().map(|s| s as &dyn crate::policy::FileCheck),
    )?;
    if let Some(by) = &policy.signed_by {
        log::info!("{}: signed by {by}", path.display());
    }
    Ok(policy)
}

impl Core {
    /// Reloads the policy file; true if a new policy is in force.
    pub fn reload(&mut self, trigger: &'static str) -> bool {
        let Some(path) = self.policy_path.clone() else {
            log::info!("{trigger}: running on the built-in policy; nothing to reload");
            return false;
        };
        // A SIGHUP put off for a writer still forces the reload when it comes.
        let trigger = match self.deferred {
            Some(d) if d.trigger == "SIGHUP" => d.trigger,
            _ => trigger,
        };
        let previous = self.shared.enforced().policy.sha256.clone();
        let text = match files::read_settled(&path) {
            Ok(t) => t,
            Err(e @ (ReadError::BeingWritten { .. } | ReadError::Changed { .. })) => {
                self.defer(trigger, &path, &e);
                return false;
            }
            Err(e) => {
                self.refuse(&path, "", &previous, unreadable(&path, &e), trigger);
                return false;
            }
        };
        self.deferred = None;
        let sha = sha256_hex(&text);
        // With signatures required, what was refused is the text with its signature: a
        // signature written after the policy (config management writes two files) is new.
        let refused_key = match &self.policy_signers {
            Some(_) => {
                let sig =
                    std::fs::read(super::policy_signers::signature_path(&path)).unwrap_or_default();
                sha256_hex(&[text.as_slice(), b"\0", sig.as_slice()].concat())
            }
            None => sha.clone(),
        };
        // A change event for content already in force, or already refused, changes nothing.
        let seen = sha == previous || self.last_refused.as_deref() == Some(refused_key.as_str());
        if trigger != "SIGHUP" && seen {
            return false;
        }
        match checked(&path, &text, self.policy_signers.as_deref()) {
            Ok(policy) => {
                for w in &policy.warnings {
                    log::warn!("{w}");
                }
                self.put_in_force(policy, &path, &previous, trigger)
            }
            Err(problems) => {
                self.last_refused = Some(refused_key);
                self.refuse(&path, &sha, &previous, problems, trigger);
                false
            }
        }
    }

    /// The policy file is being written: look again shortly, until [`WAIT_FOR_WRITER`] after
    /// the first try.
    fn defer(&mut self, trigger: &'static str, path: &Path, e: &ReadError) {
        let now = Instant::now();
        let d = match &mut self.deferred {
            Some(d) => d,
            None => {
                log::info!("{trigger}: {e}; the reload waits for it to be written whole");
                self.deferred.insert(Deferred {
                    trigger,
                    retry_at: now,
                    give_up_at: now + WAIT_FOR_WRITER,
                })
            }
        };
        if now >= d.give_up_at {
            self.deferred = None;
            let previous = self.shared.enforced().policy.sha256.clone();
            let problems = unreadable(path, e);
            self.refuse(path, "", &previous, problems, trigger);
            return;
        }
        d.retry_at = now + RETRY;
    }

    /// A deferred reload, once its time to look again has come.
    pub fn retry_reload(&mut self) -> bool {
        match self.deferred {
            Some(d) => self.reload(d.trigger),
            None => false,
        }
    }

    /// Logs, audits and counts a refused reload.
    fn refuse(
        &mut self,
        path: &Path,
        sha: &str,
        previous: &str,
        problems: Problems,
        trigger: &str,
    ) {
        log::error!(
            "{trigger}: reload refused, the previous policy stays in force: invalid policy:\n{problems}"
        );
        let problems = problems.0.iter().map(ToString::to_string).collect();
        self.refused(path, sha, previous, problems, trigger);
    }

    /// Writes `policy` beside the one in force, records it, then switches to it in one step;
    /// false (audited where possible) if the kernel refused it or the record failed.
    fn put_in_force(&mut self, policy: Policy, path: &Path, previous: &str, trigger: &str) -> bool {
        let shared = self.shared.clone();
        let generation = shared
            .generation
            .load(Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
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
        let kernel_refused = |this: &mut Core, e: crate::kernel::Error| {
            log::error!(
                "{trigger}: the new policy could not be written to the kernel ({e}); the previous one stays in force"
            );
            let problems = vec![format!("writing the kernel maps: {e}")];
            this.refused(path, &policy.sha256, previous, problems, trigger);
            false
        };
        // The new tenants' entries before any rule names them.
        if let Err(e) = shared.tenants().add(&policy.tenant_locals()) {
            return kernel_refused(self, e);
        }
        let staged = match self
            .kernel
            .rules
            .stage(&compiled, &assignments, &programs, &known)
        {
            Ok(s) => s,
            Err(e) => return kernel_refused(self, e),
        };
        let record = AuditEvent::PolicyReload(PolicyReload {
            policy: policy.origin.clone(),
            policy_sha256: policy.sha256.clone(),
            previous_sha256: previous.to_string(),
            mode: policy.mode.name().to_string(),
            generation,
            trigger: trigger.to_string(),
            policy_signed_by: policy.signed_by.clone(),
        });
        if let Err(e) = self.audit(record) {
            self.kernel.rules.discard(staged);
            self.errors.error(
                "reload",
                format!("{trigger}: reload refused, the previous policy stays in force: its audit record could not be written: {e}"),
            );
            shared
                .counters
                .reloads_error
                .fetch_add(1, Ordering::Relaxed);
            shared.counters.last_reload_ok.store(0, Ordering::Relaxed);
            return false;
        }
        if let Err(e) = self.kernel.rules.commit(staged) {
            return kernel_refused(self, e);
        }
        if let Err(e) = shared.tenants().retain(&policy.tenant_keys()) {
            log::warn!("{trigger}: removing the entries of tenants no longer named: {e}");
        }
        *shared.programs() = programs;
        shared.generation.store(generation, Ordering::Relaxed);
        log::info!("{trigger}: {policy} (generation {generation})");
        self.last_refused = None;
        *shared.assignments() = assignments;
        shared.set_enforced(Enforced { policy, compiled });
        shared.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
        shared.counters.policy_in_force_now();
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
        self.audit_or_log(AuditEvent::PolicyReloadRefused(PolicyReloadRefused {
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
        self.shared
            .counters
            .last_reload_ok
            .store(0, Ordering::Relaxed);
    }
}
