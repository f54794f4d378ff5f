//! `kill-switch on|off`: outbreak containment. While it is on, only allow-listed UIDs (and
//! targets under a break-glass override) may send; every other open SMTP session ends at once.

use std::{collections::HashSet, time::SystemTime};

use antispam_common::{config::FLAG_KILL_SWITCH, key::KeyId, rule::ACTION_ALLOW};

use super::{actor, reason_given, ActionError};
use crate::{
    agent::{book, core::Core, operations},
    audit::{AuditEvent, KillSwitch},
    clock,
    control::{Peer, Reply},
    sys::sockdiag,
};

impl Core {
    pub fn kill_switch(
        &mut self,
        on: bool,
        reason: String,
        peer: &Peer,
    ) -> Result<Reply, ActionError> {
        reason_given(&reason)?;
        self.kernel.rules.set_flag(FLAG_KILL_SWITCH, on)?;
        let (ended, sessions) = if on {
            self.end_sessions_for_kill_switch()
        } else {
            (None, String::new())
        };
        let now = SystemTime::now();
        let was = {
            let mut ops = self.shared.operations();
            let was = ops.kill_switch.take();
            if on {
                ops.kill_switch = Some(operations::KillSwitch {
                    reason: reason.clone(),
                    by: peer.user.clone(),
                    since: now,
                });
            }
            was
        };
        self.book.kill_switch = on.then(|| book::SavedKillSwitch {
            reason: reason.clone(),
            by: peer.user.clone(),
            since_ms: clock::unix_ms(now),
        });
        self.book.dirty = true;
        self.save_book();
        self.audit(AuditEvent::KillSwitch(KillSwitch {
            on,
            reason: reason.clone(),
            by: actor(peer),
            sessions_ended: ended,
            was_on_since: was.as_ref().map(|k| clock::rfc3339(k.since)),
            was_set_by: was.as_ref().map(|k| k.by.clone()),
        }));
        let message = if on {
            format!("kill switch ON: all SMTP refused except allow-listed UIDs: {reason}{sessions}")
        } else {
            format!("kill switch off: {reason}")
        };
        log::warn!("{message} (by {})", peer.user);
        Ok(Reply::said(message))
    }

    /// Ends the SMTP sessions already open of every process the kill switch now refuses: in a
    /// cgroup under the attach point, not of an allow-listed UID, not under a break-glass
    /// override. None if sock_diag failed (the sessions then go on).
    fn end_sessions_for_kill_switch(&self) -> (Option<usize>, String) {
        let enforced = self.shared.enforced();
        let allowed: HashSet<u32> = enforced
            .compiled
            .uid_rules
            .iter()
            .filter(|(_, r)| r.action == ACTION_ALLOW)
            .map(|(u, _)| *u)
            .collect();
        let under: HashSet<u64> = match &self.watcher {
            Some(w) => w.tree().into_iter().map(|(_, id)| id).collect(),
            None => return (Some(0), "; 0 open SMTP session(s) ended".into()),
        };
        let overridden = self.shared.operations().break_glass.overridden_keys();
        let pick = |uid: u32, cgroup: Option<u64>| {
            cgroup.is_some_and(|c| under.contains(&c) && !overridden.contains(&KeyId::cgroup(c)))
                && !allowed.contains(&uid)
                && !overridden.contains(&KeyId::uid(uid))
        };
        let sel = sockdiag::Selector {
            ports: &enforced.policy.ports,
            pick: &pick,
        };
        self.end_sessions("kill switch", &sel)
    }
}
