//! Break glass: an emergency override of one UID or cgroup that takes two people and ends by
//! itself.
//!
//! One operator requests it with a reason and a TTL; a second, different person approves it (the
//! requester cannot, see [`crate::control::Person`]). Only then is the override written to the
//! kernel, with its end time: the programs stop honouring it at that instant whether or not the
//! agent is running. While it lasts, the target's rate limits, suspension and the kill switch do
//! not apply to it; destination block lists still do. It can be revoked at once, a request
//! nobody approves lapses, and every step, refused ones included, is in the audit log.

use std::time::{Duration, SystemTime};

use antispam_common::key::{KeyId, Override};

use super::{person_actor, person_ref, reason_given, ActionError};
use crate::{
    agent::{
        core::Core,
        core::NotRecorded,
        operations::{lapses_ms, Grant, Step, REQUEST_LAPSES_AFTER},
    },
    audit::{
        AuditEvent, BreakGlassApproved, BreakGlassExpired, BreakGlassLapsed, BreakGlassRefused,
        BreakGlassRequested, BreakGlassRevoked,
    },
    clock,
    control::{
        signed::{Signature, SignedAction},
        Peer, Reply, Target,
    },
};

/// What a break-glass request asks for.
#[derive(Debug)]
pub struct Ask {
    pub target: Target,
    pub reason: String,
    pub ttl_secs: u64,
    /// What the requester cites (alerts, metrics), shown to the approver.
    pub evidence: Vec<String>,
}

/// The longest evidence list, and the longest item, a request may carry.
const MAX_EVIDENCE: usize = 32;
const MAX_EVIDENCE_LEN: usize = 1024;

/// The shortest and longest override one can ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// A fresh id: "bg-" and 8 random hex digits (unguessable, so ids from different agents and
/// runs never collide in the audit log).
fn new_id() -> String {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        b = (nanos ^ std::process::id()).to_ne_bytes();
    }
    format!("bg-{:08x}", u32::from_ne_bytes(b))
}

/// The kernel's end time of an override ending at `expires`.
fn kernel_override(expires: SystemTime) -> Option<Override> {
    let left = expires.duration_since(SystemTime::now()).ok()?;
    (!left.is_zero()).then(|| Override::new(clock::mono_after(left)))
}

impl Core {
    pub fn break_glass_request(
        &mut self,
        ask: Ask,
        signature: Option<&Signature>,
        peer: &Peer,
    ) -> Result<Reply, ActionError> {
        let Ask {
            target,
            reason,
            ttl_secs,
            evidence,
        } = ask;
        reason_given(&reason)?;
        let evidence: Vec<String> = evidence
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if evidence.len() > MAX_EVIDENCE || evidence.iter().any(|e| e.len() > MAX_EVIDENCE_LEN) {
            return Err(ActionError::Evidence {
                items: MAX_EVIDENCE,
                len: MAX_EVIDENCE_LEN,
            });
        }
        let signer = self.signed_by(
            &SignedAction::BreakGlassRequest {
                target: target.to_string(),
                ttl_secs,
                reason: &reason,
                evidence: &evidence,
            },
            signature,
            peer,
            None,
            Some(&target),
        )?;
        let ttl = Duration::from_secs(ttl_secs);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(ActionError::Ttl {
                min: MIN_TTL,
                max: MAX_TTL,
            });
        }
        self.keys_of(&target)?;
        if let Some(g) = self.shared.operations().break_glass.for_target(&target) {
            return Err(ActionError::AlreadyAsked {
                target,
                id: g.id.clone(),
                state: if g.approver.is_some() {
                    "in force"
                } else {
                    "waiting for approval"
                },
            });
        }
        let g = Grant {
            id: new_id(),
            target: target.clone(),
            reason: reason.clone(),
            ttl_secs,
            requester: peer.person(),
            requested_ms: clock::unix_ms(SystemTime::now()),
            approver: None,
            expires_ms: None,
            keys: Vec::new(),
            evidence: evidence.clone(),
            requester_signer: signer.clone(),
            approver_signer: None,
        };
        self.audit(AuditEvent::BreakGlassRequested(BreakGlassRequested {
            id: g.id.clone(),
            target: target.clone(),
            reason: reason.clone(),
            ttl_secs,
            requester: person_actor(peer),
            evidence: evidence.clone(),
            signer: signer.clone(),
        }))
        .map_err(NotRecorded::Audit)?;
        let cited = if evidence.is_empty() {
            String::new()
        } else {
            format!("\nEvidence cited: {}", evidence.join("; "))
        };
        let signed = signer.map_or(String::new(), |s| format!("\nSigned by {s}"));
        let message = format!(
            "break-glass {id} requested for {target} ({ttl}): {reason}{cited}{signed}\n\
             A second operator must approve it within {lapse}: antispam break-glass approve {id}",
            id = g.id,
            ttl = humantime::format_duration(ttl),
            lapse = humantime::format_duration(REQUEST_LAPSES_AFTER),
        );
        log::warn!("{message} (requested by {})", g.requester.name);
        let mut ops = self.shared.operations();
        ops.break_glass.count(Step::Requested);
        ops.break_glass.pending.insert(g.id.clone(), g);
        Ok(Reply::said(message))
    }

    pub fn break_glass_approve(
        &mut self,
        id: &str,
        signature: Option<&Signature>,
        peer: &Peer,
    ) -> Result<Reply, ActionError> {
        let approver = peer.person();
        let pending = {
            let ops = self.shared.operations();
            if let Some(g) = ops.break_glass.active.get(id) {
                return Err(ActionError::AlreadyApproved {
                    id: id.to_string(),
                    by: g.approver.as_ref().map_or("?", |p| &p.name).to_string(),
                });
            }
            ops.break_glass.pending.get(id).cloned()
        };
        let Some(mut g) = pending else {
            return Err(ActionError::NoPending { id: id.to_string() });
        };
        let approver_signer = self.signed_by(
            &SignedAction::BreakGlassApprove {
                id,
                target: g.target.to_string(),
                ttl_secs: g.ttl_secs,
                reason: &g.reason,
                evidence: &g.evidence,
            },
            signature,
            peer,
            Some(id),
            Some(&g.target),
        )?;
        let required = self.shared.enforced().policy.signatures.required;
        // Signed, the two people are two principals of the allowed signers file, whatever
        // UIDs they run as; unsigned, two login UIDs.
        let refusal = match (&approver_signer, &g.requester_signer) {
            (_, None) if required => Some(ActionError::UnsignedRequest { id: id.to_string() }),
            (Some(a), Some(r)) if a.same_person(r) => Some(ActionError::OwnPrincipal {
                principal: a.principal().to_string(),
                id: id.to_string(),
            }),
            (Some(_), Some(_)) => None,
            _ if approver.uid == g.requester.uid => Some(ActionError::OwnRequest {
                who: approver.name.clone(),
                id: id.to_string(),
            }),
            _ => None,
        };
        if let Some(e) = refusal {
            self.audit_or_log(AuditEvent::BreakGlassRefused(BreakGlassRefused {
                id: id.to_string(),
                target: g.target.clone(),
                by: person_actor(peer),
                why: e.to_string(),
                signer: approver_signer.clone(),
            }));
            self.shared.operations().break_glass.count(Step::Refused);
            log::warn!("break glass: {e}");
            return Err(e);
        }
        let keys = self.keys_of(&g.target)?;
        let ttl = Duration::from_secs(g.ttl_secs);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(ActionError::Ttl {
                min: MIN_TTL,
                max: MAX_TTL,
            });
        }
        let expires = SystemTime::now() + ttl;
        let o = Override::new(clock::mono_after(ttl));
        g.keys = keys;
        g.approver = Some(approver.clone());
        g.approver_signer = approver_signer.clone();
        g.expires_ms = Some(clock::unix_ms(expires));
        let grant = g.clone();
        let before = self.commit(
            |b| {
                b.break_glass.retain(|x| x.id != grant.id);
                b.break_glass.push(grant);
            },
            AuditEvent::BreakGlassApproved(BreakGlassApproved {
                id: id.to_string(),
                target: g.target.clone(),
                reason: g.reason.clone(),
                ttl_secs: g.ttl_secs,
                requester: person_ref(&g.requester),
                approver: person_actor(peer),
                expires_at: clock::rfc3339(expires),
                kernel_keys: g.keys.len(),
                evidence: g.evidence.clone(),
                requester_signer: g.requester_signer.clone(),
                approver_signer: approver_signer.clone(),
            }),
        )?;
        for (i, k) in g.keys.iter().enumerate() {
            if let Err(e) = self.kernel.rules.grant(*k, o) {
                for done in &g.keys[..i] {
                    let _ = self.kernel.rules.ungrant(*done);
                }
                self.undo(
                    before,
                    "break_glass_approved",
                    Some(&g.target),
                    e.to_string(),
                );
                return Err(e.into());
            }
        }
        let key = |s: &Option<crate::control::signed::Signer>| {
            s.as_ref()
                .map_or(String::new(), |s| format!(" with key {s}"))
        };
        let message = format!(
            "break-glass {id} in force for {} until {} (requested by {}{}, approved by {}{}): limits, suspension and kill switch lifted",
            g.target,
            clock::rfc3339(expires),
            g.requester.name,
            key(&g.requester_signer),
            approver.name,
            key(&approver_signer),
        );
        log::warn!("{message}");
        let mut ops = self.shared.operations();
        ops.break_glass.pending.remove(id);
        ops.break_glass.count(Step::Approved);
        ops.break_glass.active.insert(id.to_string(), g);
        Ok(Reply::said(message))
    }

    pub fn break_glass_revoke(
        &mut self,
        id: &str,
        reason: &str,
        signature: Option<&Signature>,
        peer: &Peer,
    ) -> Result<Reply, ActionError> {
        reason_given(reason)?;
        let target = {
            let ops = self.shared.operations();
            let bg = &ops.break_glass;
            bg.active
                .get(id)
                .or_else(|| bg.pending.get(id))
                .map(|g| g.target.clone())
        };
        let signer = self.signed_by(
            &SignedAction::BreakGlassRevoke { id, reason },
            signature,
            peer,
            Some(id),
            target.as_ref(),
        )?;
        let (g, was_active) = {
            let ops = self.shared.operations();
            match ops.break_glass.active.get(id) {
                Some(g) => (g.clone(), true),
                None => match ops.break_glass.pending.get(id) {
                    Some(g) => (g.clone(), false),
                    None => return Err(ActionError::NoGrant { id: id.to_string() }),
                },
            }
        };
        self.commit(
            |b| b.break_glass.retain(|x| x.id != id),
            AuditEvent::BreakGlassRevoked(BreakGlassRevoked {
                id: id.to_string(),
                target: g.target.clone(),
                by: person_actor(peer),
                reason: reason.to_string(),
                requester: person_ref(&g.requester),
                approver: g.approver.as_ref().map(person_ref),
                was_in_force: was_active,
                signer,
            }),
        )?;
        self.end_override(&g);
        {
            let mut ops = self.shared.operations();
            ops.break_glass.active.remove(id);
            ops.break_glass.pending.remove(id);
            ops.break_glass.count(Step::Revoked);
        }
        let message = format!("break-glass {id} for {} revoked: {reason}", g.target);
        log::warn!("{message} (by {})", peer.person().name);
        Ok(Reply::said(message))
    }

    /// Ends overrides whose time is up (the kernel already ignores them) and lapses requests
    /// nobody approved.
    pub fn break_glass_expire(&mut self) {
        let now = SystemTime::now();
        let (expired, lapsed) = {
            let ops = self.shared.operations();
            let bg = &ops.break_glass;
            let expired: Vec<Grant> = bg
                .active
                .values()
                .filter(|g| g.expires().is_some_and(|e| e <= now))
                .cloned()
                .collect();
            let lapsed: Vec<Grant> = bg
                .pending
                .values()
                .filter(|g| lapses_ms(g.requested_ms) <= clock::unix_ms(now))
                .cloned()
                .collect();
            (expired, lapsed)
        };
        for g in &expired {
            // The kernel already ignores it; its end is recorded before it is removed, and
            // tried again at the next tick if that fails.
            let r = self.commit(
                |b| b.break_glass.retain(|x| x.id != g.id),
                expired_record(g, None),
            );
            if let Err(e) = r {
                self.errors
                    .error("expiry", format!("expiring break-glass {}: {e}", g.id));
                continue;
            }
            self.end_override(g);
            log::warn!("break-glass {} for {} expired", g.id, g.target);
            let mut ops = self.shared.operations();
            ops.break_glass.active.remove(&g.id);
            ops.break_glass.count(Step::Expired);
        }
        for g in &lapsed {
            let r = self.audit(AuditEvent::BreakGlassRequestLapsed(BreakGlassLapsed {
                id: g.id.clone(),
                target: g.target.clone(),
                requester: person_ref(&g.requester),
            }));
            if let Err(e) = r {
                self.errors
                    .error("expiry", format!("lapsing break-glass {}: {e}", g.id));
                continue;
            }
            let mut ops = self.shared.operations();
            ops.break_glass.pending.remove(&g.id);
            ops.break_glass.count(Step::Lapsed);
        }
    }

    /// A new cgroup below one under an override is under it too.
    pub fn break_glass_cover(&mut self, path: &str, id: u64) {
        let expires = {
            let mut ops = self.shared.operations();
            let Some(g) = ops
                .break_glass
                .active
                .values_mut()
                .find(|g| g.target.covers_cgroup(path))
            else {
                return;
            };
            g.keys.push(KeyId::cgroup(id));
            g.expires()
        };
        if let Some(o) = expires.and_then(kernel_override) {
            if let Err(e) = self.kernel.rules.grant(KeyId::cgroup(id), o) {
                log::error!("break glass for new cgroup {path}: {e}");
            }
        }
    }

    /// Puts back the overrides in force when the previous agent stopped (from the offence
    /// book); those that ended meanwhile are audited as expired.
    pub fn break_glass_restore(&mut self) {
        for mut g in std::mem::take(&mut self.book.break_glass) {
            let Some(o) = g.expires().and_then(kernel_override) else {
                self.audit_or_log(expired_record(&g, Some("the agent was stopped")));
                continue;
            };
            let keys = match self.keys_of(&g.target) {
                Ok(k) => k,
                Err(e) => {
                    log::warn!("not restoring break-glass {}: {e}", g.id);
                    continue;
                }
            };
            for k in &keys {
                if let Err(e) = self.kernel.rules.grant(*k, o) {
                    log::error!("restoring break-glass {}: {e}", g.id);
                }
            }
            g.keys = keys;
            self.audit_or_log(AuditEvent::BreakGlassRestored(
                crate::audit::BreakGlassRestored {
                    id: g.id.clone(),
                    target: g.target.clone(),
                    expires_at: g.expires().map(clock::rfc3339),
                },
            ));
            self.shared
                .operations()
                .break_glass
                .active
                .insert(g.id.clone(), g);
        }
        self.save_break_glass();
    }

    fn end_override(&mut self, g: &Grant) {
        for k in &g.keys {
            if let Err(e) = self.kernel.rules.ungrant(*k) {
                log::error!("ending break-glass {} in the kernel: {e}", g.id);
            }
        }
    }

    /// Keeps the overrides in force in the offence book, for a restart.
    fn save_break_glass(&mut self) {
        self.book.break_glass = self
            .shared
            .operations()
            .break_glass
            .active
            .values()
            .cloned()
            .collect();
        self.book.dirty = true;
        self.save_book();
    }
}

fn expired_record(g: &Grant, while_: Option<&str>) -> AuditEvent {
    AuditEvent::BreakGlassExpired(BreakGlassExpired {
        id: g.id.clone(),
        target: g.target.clone(),
        requester: person_ref(&g.requester),
        approver: g.approver.as_ref().map(person_ref),
        expires_at: g.expires().map(clock::rfc3339),
        r#while: while_.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Person;

    #[test]
    fn ids_are_distinct() {
        let a = new_id();
        let b = new_id();
        assert!(a.starts_with("bg-") && a.len() == 11, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn grants_survive_the_book_round_trip() {
        let g = Grant {
            id: "bg-00000001".into(),
            target: Target::Uid(1000),
            reason: "payroll run".into(),
            ttl_secs: 3600,
            requester: Person {
                uid: 1001,
                name: "alice".into(),
            },
            requested_ms: 1,
            approver: Some(Person {
                uid: 1002,
                name: "bob".into(),
            }),
            expires_ms: Some(3_600_001),
            keys: vec![KeyId::uid(1000)],
            evidence: vec!["alert PAY-1".into()],
            requester_signer: None,
            approver_signer: None,
        };
        let text = serde_json::to_string(&g).unwrap();
        let back: Grant = serde_json::from_str(&text).unwrap();
        assert_eq!(back.keys, vec![], "kernel keys are recomputed, not saved");
        assert_eq!(
            Grant {
                keys: vec![KeyId::uid(1000)],
                ..back
            },
            g
        );
    }
}
