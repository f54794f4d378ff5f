//! `suspend` and `unsuspend`: a UID or a cgroup (with its descendants, also those created
//! later) may send no SMTP; its open sessions end at once. Suspensions expire by themselves when
//! given a duration.

use std::time::{Duration, SystemTime};

use antispam_common::key::{
    KeyId, Suspension, KIND_CGROUP, KIND_UID, SUSPEND_MANUAL, SUSPEND_STRIKES,
};

use super::{reason_given, ActionError};
use crate::{
    agent::{
        book,
        core::Core,
        operations::{SuspensionEntry, Trigger},
    },
    audit::{Actor, AuditEvent, Suspend, SuspensionEnded},
    clock,
    control::{Reply, Target},
    sys::sockdiag,
};

/// The kernel's record of a suspension ending `until` (None: until lifted).
pub(in crate::agent) fn kernel_suspension(
    until: Option<SystemTime>,
    trigger: Trigger,
) -> Suspension {
    let until_ns = until.map_or(0, |u| {
        clock::mono_after(u.duration_since(SystemTime::now()).unwrap_or_default()).max(1)
    });
    Suspension {
        until_ns,
        kind: match trigger {
            Trigger::Strikes => SUSPEND_STRIKES,
            Trigger::Manual => SUSPEND_MANUAL,
        },
        _pad: 0,
    }
}

impl Core {
    /// An operator's suspension.
    pub fn suspend(
        &mut self,
        target: Target,
        reason: String,
        for_secs: Option<u64>,
        by: &Actor,
    ) -> Result<Reply, ActionError> {
        self.suspend_for(target, reason, for_secs, by, Trigger::Manual)
    }

    /// Suspends `target` for `for_secs` (None: until lifted).
    pub fn suspend_for(
        &mut self,
        target: Target,
        reason: String,
        for_secs: Option<u64>,
        by: &Actor,
        trigger: Trigger,
    ) -> Result<Reply, ActionError> {
        reason_given(&reason)?;
        let keys = self.keys_of(&target)?;
        let now = SystemTime::now();
        let until = for_secs.map(|s| now + Duration::from_secs(s));
        let s = kernel_suspension(until, trigger);
        for k in &keys {
            self.kernel.rules.suspend(*k, s)?;
        }
        let (ended, sessions) = self.end_sessions_of(&target, &keys);
        let message = match until {
            Some(u) => format!(
                "suspended {target} until {} ({} s): {reason}{sessions}",
                clock::rfc3339(u),
                for_secs.unwrap_or(0)
            ),
            None => format!("suspended {target} until lifted: {reason}{sessions}"),
        };
        self.audit(AuditEvent::Suspend(Suspend {
            target: target.clone(),
            reason: reason.clone(),
            by: by.clone(),
            trigger: trigger.name().to_string(),
            for_secs,
            until: until.map(clock::rfc3339),
            kernel_keys: keys.len(),
            sessions_ended: ended,
        }));
        log::warn!("{message} (by {})", by.user);
        self.book.suspensions.retain(|x| x.target != target);
        self.book.suspensions.push(book::Saved {
            target: target.clone(),
            reason: reason.clone(),
            by: by.user.clone(),
            trigger: trigger.name().to_string(),
            since_ms: clock::unix_ms(now),
            until_ms: until.map(clock::unix_ms),
        });
        self.book.dirty = true;
        self.save_book();
        let mut ops = self.shared.operations();
        *ops.suspensions_total.entry(trigger).or_default() += 1;
        ops.suspensions.insert(
            target,
            SuspensionEntry {
                reason,
                by: by.user.clone(),
                since: now,
                until,
                keys,
            },
        );
        Ok(Reply::said(message))
    }

    /// Ends the open SMTP sessions of a suspended target (their packets are dropped by the
    /// egress program too, in case this fails). None if sock_diag failed.
    fn end_sessions_of(&self, target: &Target, keys: &[KeyId]) -> (Option<usize>, String) {
        let ports = self.shared.enforced().policy.ports.clone();
        let uids: Vec<u32> = keys
            .iter()
            .filter(|k| k.kind == KIND_UID)
            .map(|k| k.id as u32)
            .collect();
        let cgroups: Vec<u64> = keys
            .iter()
            .filter(|k| k.kind == KIND_CGROUP)
            .map(|k| k.id)
            .collect();
        let pick = |uid: u32, cgroup: Option<u64>| {
            uids.contains(&uid) || cgroup.is_some_and(|c| cgroups.contains(&c))
        };
        let sel = sockdiag::Selector {
            ports: &ports,
            pick: &pick,
        };
        self.end_sessions(&format!("suspending {target}"), &sel)
    }

    /// Lifts a suspension: by an operator (`by` set), or because its time is up (None).
    pub fn unsuspend(
        &mut self,
        target: Target,
        reason: &str,
        by: Option<Actor>,
    ) -> Result<Reply, ActionError> {
        let entry = self.shared.operations().suspensions.remove(&target);
        let Some(entry) = entry else {
            return Err(ActionError::NotSuspended(target));
        };
        for k in &entry.keys {
            self.kernel.rules.unsuspend(*k)?;
        }
        let by_operator = by.is_some();
        let by = by.unwrap_or_else(Actor::expiry);
        let ended = SuspensionEnded {
            target: target.clone(),
            reason: reason.to_string(),
            by: by.clone(),
            suspended_since: Some(clock::rfc3339(entry.since)),
            suspended_by: Some(entry.by),
            suspension_reason: Some(entry.reason),
            held_secs: Some(entry.since.elapsed().map(|d| d.as_secs()).unwrap_or(0)),
        };
        self.audit(if by_operator {
            AuditEvent::Unsuspend(ended)
        } else {
            AuditEvent::SuspensionExpired(ended)
        });
        self.book.suspensions.retain(|x| x.target != target);
        self.book.dirty = true;
        self.save_book();
        let message = format!("lifted the suspension of {target}: {reason}");
        log::warn!("{message} (by {})", by.user);
        Ok(Reply::said(message))
    }

    /// Lifts the suspensions whose time is up (the kernel already ignores them) and forgets
    /// offenders nothing is remembered of.
    pub fn expire(&mut self) {
        let now = SystemTime::now();
        if let Some((window, forget)) = self.shared.enforced().policy.longest_memory() {
            self.book.prune(clock::unix_ms(now), window, forget);
        }
        let due: Vec<Target> = self
            .shared
            .operations()
            .suspensions
            .iter()
            .filter(|(_, e)| e.until.is_some_and(|u| u <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            if let Err(e) = self.unsuspend(t, "expired", None) {
                log::error!("expiring a suspension: {e}");
            }
        }
    }

    /// A cgroup appeared: if an ancestor (or itself) is suspended, so is it.
    pub fn suspend_if_below_suspended(&mut self, path: &str, id: u64) {
        let until = {
            let mut ops = self.shared.operations();
            let Some((_, entry)) = ops
                .suspensions
                .iter_mut()
                .find(|(t, _)| t.covers_cgroup(path))
            else {
                return;
            };
            entry.keys.push(KeyId::cgroup(id));
            entry.until
        };
        let s = kernel_suspension(until, Trigger::Manual);
        if let Err(e) = self.kernel.rules.suspend(KeyId::cgroup(id), s) {
            log::error!("suspending new cgroup {path}: {e}");
        }
    }
}
