//! `kill-switch on|off`: outbreak containment. While it is on, only allow-listed UIDs (and
//! targets under a break-glass override) may send; every other open SMTP session ends at once.

use std::{collections::HashSet, time::SystemTime};

use antispam_common::{config::FLAG_KILL_SWITCH, key::KeyId, rule::ACTION_ALLOW};

use super::{actor, reason_given, ActionError};
use crate::{
    agent::{book, core::Core, operations},
    audit::{AuditEvent, KillSwitch},
    clock,
    control::{
        signed::{Signature, SignedAction},
        Peer, Reply,
    },
    sys::sockdiag,
};

impl Core {
    /// Recorded first (offence book, audit log), then set in the kernel: refused, with nothing
    /// changed, if the record cannot be written.
    pub fn kill_switch(
        &mut self,
        on: bool,
        reason: String,
        signature: Option<&Signature>,
        peer: &Peer,
    ) -> Result<Reply, ActionError> {
        reason_given(&reason)?;
        let signer = self.signed_by(
            &SignedAction::KillSwitch {
                on,
                reason: &reason,
            },
            signature,
            peer,
            None,
            None,
        )?;
        let now = SystemTime::now();
        let (was_on_since, was_set_by) = {
            let ops = self.shared.operations();
            let was = ops.kill_switch.as_ref();
            (
                was.map(|k| clock::rfc3339(k.since)),
                was.map(|k| k.by.clone()),
            )
        };
        let saved = on.then(|| book::SavedKillSwitch {
            reason: reason.clone(),
            by: peer.user.clone(),
            since_ms: clock::unix_ms(now),
        });
        let open = if on {
            self.sessions_for_kill_switch(false).0
        } else {
            None
        };
        let before = self.commit(
            |b| b.kill_switch = saved,
            AuditEvent::KillSwitch(KillSwitch {
                on,
                reason: reason.clone(),
                by: actor(peer),
                sessions_ended: open,
                was_on_since,
                was_set_by,
                signer: signer.clone(),
            }),
        )?;
        if let Err(e) = self.kernel.rules.set_flag(FLAG_KILL_SWITCH, on) {
            self.undo(before, "kill_switch", None, e.to_string());
            return Err(e.into());
        }
        let sessions = if on {
            self.sessions_for_kill_switch(true).1
        } else {
            String::new()
        };
        self.shared.operations().kill_switch = on.then(|| operations::KillSwitch {
            reason: reason.clone(),
            by: peer.user.clone(),
            since: now,
        });
        let message = if on {
            format!("kill switch ON: all SMTP refused except allow-listed UIDs: {reason}{sessions}")
        } else {
            format!("kill switch off: {reason}")
        };
        let signed = signer.map_or(String::new(), |s| format!(", signed by {s}"));
        log::warn!("{message} (by {}{signed})", peer.user);
        Ok(Reply::said(message))
    }

    /// Counts (`end` false) or ends the SMTP sessions already open of every process the kill
    /// switch refuses: in a cgroup under the attach point, not of an allow-listed UID, not under
    /// a break-glass override. None if sock_diag failed (the sessions then go on).
    fn sessions_for_kill_switch(&self, end: bool) -> (Option<usize>, String) {
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
        self.sessions("kill switch", &sel, end)
    }
}
