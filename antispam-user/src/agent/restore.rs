//! After a start: what the previous agent left in force (the kill switch, suspensions, from the
//! offence book) is put back before anything else, then what ended while no agent ran is
//! cleared, so there is no instant in between with less enforcement than before.

use std::time::SystemTime;

use antispam_common::{config::FLAG_KILL_SWITCH, key::KeyId};

use super::{
    actions::kernel_suspension,
    core::Core,
    operations::{KillSwitch, SuspensionEntry, Trigger},
};
use crate::{
    audit::{
        Actor, AuditEvent, KillSwitchRestored, StaleStateCleared, SuspensionEnded,
        SuspensionRestored,
    },
    clock,
};

impl Core {
    /// Puts back the kill switch and the suspensions the previous agent left in force.
    pub fn restore(&mut self) {
        self.restore_kill_switch();
        let now = SystemTime::now();
        for s in std::mem::take(&mut self.book.suspensions) {
            let until = s.until_ms.map(clock::from_unix_ms);
            if until.is_some_and(|u| u <= now) {
                self.audit_or_log(AuditEvent::SuspensionExpired(SuspensionEnded {
                    target: s.target.clone(),
                    reason: "expired while the agent was stopped".into(),
                    by: Actor::expiry(),
                    suspended_since: None,
                    suspended_by: None,
                    suspension_reason: None,
                    held_secs: None,
                }));
                continue;
            }
            let keys = match self.keys_of(&s.target) {
                Ok(k) => k,
                Err(e) => {
                    log::warn!("not restoring the suspension of {}: {e}", s.target);
                    continue;
                }
            };
            let trigger = Trigger::parse(&s.trigger);
            let k = kernel_suspension(until, trigger);
            for key in &keys {
                if let Err(e) = self.kernel.rules.suspend(*key, k) {
                    log::error!("restoring the suspension of {}: {e}", s.target);
                }
            }
            self.audit_or_log(AuditEvent::SuspensionRestored(SuspensionRestored {
                target: s.target.clone(),
                reason: s.reason.clone(),
                by: Actor::named(&s.by, None),
                trigger: s.trigger.clone(),
                until: until.map(clock::rfc3339),
            }));
            log::warn!("restored the suspension of {} ({})", s.target, s.reason);
            self.shared.operations().suspensions.insert(
                s.target.clone(),
                SuspensionEntry {
                    reason: s.reason.clone(),
                    by: s.by.clone(),
                    since: clock::from_unix_ms(s.since_ms),
                    until,
                    trigger,
                    keys,
                },
            );
            self.book.suspensions.push(s);
        }
        self.book.dirty = true;
        self.save_book();
    }

    fn restore_kill_switch(&mut self) {
        let Some(k) = self.book.kill_switch.clone() else {
            return;
        };
        if let Err(e) = self.kernel.rules.set_flag(FLAG_KILL_SWITCH, true) {
            log::error!("restoring the kill switch: {e}");
        }
        let since = clock::from_unix_ms(k.since_ms);
        self.audit_or_log(AuditEvent::KillSwitchRestored(KillSwitchRestored {
            reason: k.reason.clone(),
            by: k.by.clone(),
            since: clock::rfc3339(since),
        }));
        log::warn!(
            "the kill switch is still ON ({}; set by {})",
            k.reason,
            k.by
        );
        self.shared.operations().kill_switch = Some(KillSwitch {
            reason: k.reason,
            by: k.by,
            since,
        });
    }

    /// What the previous agent left in the kernel and this one did not restore (it ended
    /// meanwhile, or its end was recorded just before that agent stopped) goes, and the runtime
    /// flags match the state restored. What goes is audited.
    pub fn prune_runtime(&mut self) {
        let (suspended, overridden, kill_switch) = {
            let ops = self.shared.operations();
            (
                ops.suspended_keys(),
                ops.break_glass.overridden_keys(),
                ops.kill_switch.is_some(),
            )
        };
        let pruned = match self
            .kernel
            .rules
            .prune_runtime(&suspended, &overridden, kill_switch)
        {
            Ok(p) => p,
            Err(e) => {
                log::error!("clearing what the previous agent left: {e}");
                return;
            }
        };
        if pruned.suspensions.is_empty() && pruned.overrides.is_empty() && !pruned.kill_switch {
            return;
        }
        let labels = |keys: &[KeyId]| keys.iter().map(|k| self.key_label(*k)).collect();
        let cleared = StaleStateCleared {
            suspensions: labels(&pruned.suspensions),
            overrides: labels(&pruned.overrides),
            kill_switch: pruned.kill_switch,
        };
        log::warn!(
            "cleared what the previous agent left in the kernel and the offence book does not hold: suspensions {:?}, overrides {:?}, kill switch {}",
            cleared.suspensions,
            cleared.overrides,
            if cleared.kill_switch { "turned off" } else { "unchanged" }
        );
        self.audit_or_log(AuditEvent::StaleStateCleared(cleared));
    }
}
