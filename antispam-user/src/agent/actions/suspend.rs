//! `suspend` and `unsuspend`: a UID or a cgroup (with its descendants, also those created
//! later) may send no SMTP; its open SMTP sessions end at once. Suspensions expire by themselves when
//! given a duration.
//!
//! Each is recorded before it takes effect (offence book, then audit log, both fsync'd); if
//! either cannot be written the request is refused and the kernel is not touched.

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
    defaults,
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

/// The end of a suspension of `for_secs` from `now`, bounded by [`defaults::MAX_SUSPENSION`].
fn end_of(now: SystemTime, for_secs: Option<u64>) -> Result<Option<SystemTime>, ActionError> {
    let Some(secs) = for_secs else {
        return Ok(None);
    };
    let max = defaults::MAX_SUSPENSION.as_secs();
    let too_long = ActionError::TooLong {
        asked: secs,
        max_days: max / 86_400,
    };
    if secs > max {
        return Err(too_long);
    }
    now.checked_add(Duration::from_secs(secs))
        .map(Some)
        .ok_or(too_long)
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
        let now = SystemTime::now();
        let until = end_of(now, for_secs)?;
        let keys = self.keys_of(&target)?;
        let saved = book::Saved {
            target: target.clone(),
            reason: reason.clone(),
            by: by.user.clone(),
            trigger: trigger.name().to_string(),
            since_ms: clock::unix_ms(now),
            until_ms: until.map(clock::unix_ms),
        };
        let open = self.sessions_of(&target, &keys, false).0;
        let before = self.commit(
            |b| {
                b.suspensions.retain(|x| x.target != target);
                b.suspensions.push(saved);
            },
            AuditEvent::Suspend(Suspend {
                target: target.clone(),
                reason: reason.clone(),
                by: by.clone(),
                trigger: trigger.name().to_string(),
                for_secs,
                until: until.map(clock::rfc3339),
                kernel_keys: keys.len(),
                sessions_ended: open,
            }),
        )?;
        let s = kernel_suspension(until, trigger);
        if let Err(e) = self.write_suspension(&target, &keys, s) {
            self.undo(before, "suspend", Some(&target), e.to_string());
            return Err(e.into());
        }
        let (_, sessions) = self.sessions_of(&target, &keys, true);
        let message = match until {
            Some(u) => format!(
                "suspended {target} until {} ({} s): {reason}{sessions}",
                clock::rfc3339(u),
                for_secs.unwrap_or(0)
            ),
            None => format!("suspended {target} until lifted: {reason}{sessions}"),
        };
        log::warn!("{message} (by {})", by.user);
        let mut ops = self.shared.operations();
        *ops.suspensions_total.entry(trigger).or_default() += 1;
        ops.suspensions.insert(
            target,
            SuspensionEntry {
                reason,
                by: by.user.clone(),
                since: now,
                until,
                trigger,
                keys,
            },
        );
        Ok(Reply::said(message))
    }

    /// Writes a suspension to the kernel for every key; if one fails, the keys written that
    /// were not suspended before are cleared again.
    fn write_suspension(
        &mut self,
        target: &Target,
        keys: &[KeyId],
        s: Suspension,
    ) -> Result<(), crate::kernel::Error> {
        let had: Vec<KeyId> = self
            .shared
            .operations()
            .suspensions
            .get(target)
            .map(|e| e.keys.clone())
            .unwrap_or_default();
        for (i, k) in keys.iter().enumerate() {
            if let Err(e) = self.kernel.rules.suspend(*k, s) {
                for done in keys[..i].iter().filter(|k| !had.contains(k)) {
                    let _ = self.kernel.rules.unsuspend(*done);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Counts (`end` false) or ends the open SMTP sessions of a suspended target (their packets
    /// are dropped by the egress program too, in case this fails). None if sock_diag failed.
    fn sessions_of(&self, target: &Target, keys: &[KeyId], end: bool) -> (Option<usize>, String) {
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
        self.sessions(&format!("suspending {target}"), &sel, end)
    }

    /// Lifts a suspension: by an operator (`by` set), or because its time is up (None).
    pub fn unsuspend(
        &mut self,
        target: Target,
        reason: &str,
        by: Option<Actor>,
    ) -> Result<Reply, ActionError> {
        let entry = self.shared.operations().suspensions.get(&target).cloned();
        let Some(entry) = entry else {
            return Err(ActionError::NotSuspended(target));
        };
        let by_operator = by.is_some();
        let by = by.unwrap_or_else(Actor::expiry);
        let ended = SuspensionEnded {
            target: target.clone(),
            reason: reason.to_string(),
            by: by.clone(),
            suspended_since: Some(clock::rfc3339(entry.since)),
            suspended_by: Some(entry.by.clone()),
            suspension_reason: Some(entry.reason.clone()),
            held_secs: Some(entry.since.elapsed().map(|d| d.as_secs()).unwrap_or(0)),
        };
        let before = self.commit(
            |b| b.suspensions.retain(|x| x.target != target),
            if by_operator {
                AuditEvent::Unsuspend(ended)
            } else {
                AuditEvent::SuspensionExpired(ended)
            },
        )?;
        for (i, k) in entry.keys.iter().enumerate() {
            if let Err(e) = self.kernel.rules.unsuspend(*k) {
                let s = kernel_suspension(entry.until, entry.trigger);
                for done in &entry.keys[..i] {
                    let _ = self.kernel.rules.suspend(*done, s);
                }
                self.undo(before, "unsuspend", Some(&target), e.to_string());
                return Err(e.into());
            }
        }
        self.shared.operations().suspensions.remove(&target);
        let message = format!("lifted the suspension of {target}: {reason}");
        log::warn!("{message} (by {})", by.user);
        Ok(Reply::said(message))
    }

    /// Lifts the suspensions whose time is up (the kernel already ignores them) and forgets
    /// offenders nothing is remembered of. One whose end cannot be recorded yet stays listed
    /// and is tried again at the next tick.
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
                self.errors
                    .error("expiry", format!("expiring a suspension: {e}"));
            }
        }
    }

    /// A cgroup appeared: if an ancestor (or itself) is suspended, so is it.
    pub fn suspend_if_below_suspended(&mut self, path: &str, id: u64) {
        let (until, trigger) = {
            let mut ops = self.shared.operations();
            let Some((_, entry)) = ops
                .suspensions
                .iter_mut()
                .find(|(t, _)| t.covers_cgroup(path))
            else {
                return;
            };
            entry.keys.push(KeyId::cgroup(id));
            (entry.until, entry.trigger)
        };
        let s = kernel_suspension(until, trigger);
        if let Err(e) = self.kernel.rules.suspend(KeyId::cgroup(id), s) {
            log::error!("suspending new cgroup {path}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspensions_are_bounded_and_never_overflow() {
        let now = SystemTime::now();
        assert_eq!(end_of(now, None).unwrap(), None);
        assert!(end_of(now, Some(60)).unwrap().unwrap() > now);
        let max = defaults::MAX_SUSPENSION.as_secs();
        assert!(end_of(now, Some(max)).is_ok());
        for secs in [max + 1, 18_446_744_000, u64::MAX] {
            let e = end_of(now, Some(secs)).unwrap_err();
            assert!(e.to_string().contains("at most 366 days"), "{e}");
        }
    }
}
