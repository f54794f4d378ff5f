//! Operators' requests, one file each. The main loop hands every request from the control
//! socket to [`Core::handle`]; each action returns a typed [`Reply`] or an [`ActionError`], and
//! audits what it did (refusals included) with who asked.

mod break_glass;
mod kill_switch;
mod reopen_logs;
mod sessions;
mod signed;
mod status;
mod suspend;
mod uninstall;

use std::time::Duration;

pub(super) use suspend::kernel_suspension;

use super::core::{Core, NotRecorded, TargetError};
use crate::{
    audit::{Actor, AuditEvent, ControlDenied, PersonRef},
    control::{server::Message, Peer, Person, Reply, Request, Response, Target},
};

/// Why a request was not carried out (the operator sees the message).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("a reason is required")]
    NoReason,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0} is not suspended")]
    NotSuspended(Target),
    #[error(transparent)]
    Kernel(#[from] crate::kernel::Error),
    #[error(transparent)]
    NotRecorded(#[from] NotRecorded),
    #[error(
        "a suspension lasts at most {max_days} days (asked: {asked} s); leave --for out to suspend until lifted"
    )]
    TooLong { asked: u64, max_days: u64 },
    #[error(
        "the TTL must be between {} and {}",
        humantime::format_duration(*min),
        humantime::format_duration(*max)
    )]
    Ttl { min: Duration, max: Duration },
    #[error("{target} already has break-glass {id} ({state}); revoke it first")]
    AlreadyAsked {
        target: Target,
        id: String,
        state: &'static str,
    },
    #[error("at most {items} pieces of evidence of at most {len} bytes each")]
    Evidence { items: usize, len: usize },
    #[error("{action} refused: {why}")]
    Signature { action: &'static str, why: String },
    #[error("{principal} signed the request {id} and cannot approve it: a second person (another principal in the allowed signers file) must")]
    OwnPrincipal { principal: String, id: String },
    #[error("{id} was requested without a signature, and the policy requires one: request it again, signed")]
    UnsignedRequest { id: String },
    #[error("{id} was already approved by {by}")]
    AlreadyApproved { id: String, by: String },
    #[error("no pending break-glass request {id} (see antispam break-glass list)")]
    NoPending { id: String },
    #[error("{who} requested {id} and cannot approve it: a second operator must")]
    OwnRequest { who: String, id: String },
    #[error("no break-glass {id} pending or in force")]
    NoGrant { id: String },
    #[error("removing {}: {source}", path.display())]
    Unpin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every action needs a reason for the audit log.
fn reason_given(reason: &str) -> Result<(), ActionError> {
    if reason.trim().is_empty() {
        Err(ActionError::NoReason)
    } else {
        Ok(())
    }
}

/// An operator as recorded: the process that asked.
pub fn actor(peer: &Peer) -> Actor {
    Actor {
        user: peer.user.clone(),
        uid: Some(peer.uid),
        pid: peer.pid,
        process_uid: None,
        login_uid: None,
    }
}

/// An operator as recorded where the person counts (break glass): who logged in, and the UID
/// the process ran as.
pub fn person_actor(peer: &Peer) -> Actor {
    let p = peer.person();
    Actor {
        user: p.name,
        uid: Some(p.uid),
        pid: peer.pid,
        process_uid: Some(peer.uid),
        login_uid: None,
    }
}

pub fn person_ref(p: &Person) -> PersonRef {
    PersonRef {
        user: p.name.clone(),
        uid: p.uid,
    }
}

impl Core {
    pub fn handle(&mut self, msg: Message) {
        match msg {
            Message::Denied { peer, why } => {
                self.audit_or_log(AuditEvent::ControlDenied(ControlDenied {
                    by: actor(&peer),
                    why,
                }))
            }
            Message::Request { req, peer, reply } => {
                let answer = match self.act(req, &peer) {
                    Ok(r) => Response::from(r),
                    Err(e) => Response::refused(e.to_string()),
                };
                let _ = reply.send(answer);
                self.sync_packets();
            }
        }
    }

    fn act(&mut self, req: Request, peer: &Peer) -> Result<Reply, ActionError> {
        match req {
            Request::Suspend {
                target,
                reason,
                for_secs,
            } => self.suspend(target, reason, for_secs, &actor(peer)),
            Request::Unsuspend { target, reason } => {
                self.unsuspend(target, &reason, Some(actor(peer)))
            }
            Request::KillSwitch {
                on,
                reason,
                signature,
            } => self.kill_switch(on, reason, signature.as_ref(), peer),
            Request::BreakGlassAsk {
                target,
                reason,
                ttl_secs,
                evidence,
                signature,
            } => self.break_glass_request(
                break_glass::Ask {
                    target,
                    reason,
                    ttl_secs,
                    evidence,
                },
                signature.as_ref(),
                peer,
            ),
            Request::BreakGlassApprove { id, signature } => {
                self.break_glass_approve(&id, signature.as_ref(), peer)
            }
            Request::BreakGlassRevoke {
                id,
                reason,
                signature,
            } => self.break_glass_revoke(&id, &reason, signature.as_ref(), peer),
            Request::BreakGlassList => Ok(self.break_glass_list()),
            Request::Uninstall { reason } => self.uninstall(&reason, peer),
            Request::Status => Ok(self.status()),
            Request::ReopenLogs => Ok(self.reopen_logs()),
        }
    }
}
