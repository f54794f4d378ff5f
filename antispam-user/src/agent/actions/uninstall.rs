//! `uninstall` through a running agent: it unpins everything (the programs detach once this
//! agent lets go of them), audits it, and stops.

use super::{actor, reason_given, ActionError};
use crate::{
    agent::core::{Core, NotRecorded},
    audit::{ActionFailed, AuditEvent, Uninstall},
    control::{Peer, Reply},
    kernel::pins,
};

impl Core {
    /// Recorded first: refused, with nothing removed, if the record cannot be written.
    pub fn uninstall(&mut self, reason: &str, peer: &Peer) -> Result<Reply, ActionError> {
        reason_given(reason)?;
        let unpin = |source| ActionError::Unpin {
            path: self.pin_dir.clone(),
            source,
        };
        let pinned = std::fs::read_dir(&self.pin_dir).map_err(unpin)?.count();
        self.audit(AuditEvent::Uninstall(Uninstall {
            reason: reason.to_string(),
            by: actor(peer),
            pin_dir: Some(self.pin_dir.clone()),
            unpinned: Some(pinned),
            removed: None,
            agent_running: true,
        }))
        .map_err(NotRecorded::Audit)?;
        let filters = crate::kernel::syn::remove_filters(&self.pin_dir);
        if filters > 0 {
            log::info!("removed the SYN check from {filters} container device(s)");
        }
        let n = match pins::remove(&self.pin_dir) {
            Ok(n) => n,
            Err(source) => {
                self.audit_or_log(AuditEvent::ActionFailed(ActionFailed {
                    action: "uninstall".into(),
                    target: None,
                    error: source.to_string(),
                }));
                return Err(ActionError::Unpin {
                    path: self.pin_dir.clone(),
                    source,
                });
            }
        };
        self.quit = Some("uninstall");
        let message = format!(
            "uninstalled from cgroup {}: {n} pinned objects removed from {}; the agent stops",
            self.shared.attach_cgroup,
            self.pin_dir.display()
        );
        log::warn!("{message} (by {}): {reason}", peer.user);
        Ok(Reply::said(message))
    }
}
