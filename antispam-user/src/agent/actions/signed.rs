//! Signed requests (`[break_glass] require_signatures`): the signature on a break-glass step or
//! the kill switch is checked against the policy's allowed signers before the action is
//! considered; a refusal is audited (`signature_refused`) with the key that signed, if any.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{person_actor, ActionError};
use crate::{
    agent::{core::Core, operations::Step},
    audit::{AuditEvent, SignatureRefused},
    control::{
        signed::{host_name, Signature, SignedAction, Signer, MAX_AGE},
        signers::{fingerprint_of, AllowedSigners},
        Peer, Target,
    },
    digest::sha256_hex,
    policy::Signatures,
};

/// Why a signature was not accepted, and the key that made it (if it could be read).
struct Refusal {
    why: String,
    fingerprint: Option<String>,
}

fn refuse(why: impl Into<String>, sig: Option<&Signature>) -> Refusal {
    Refusal {
        why: why.into(),
        fingerprint: sig.and_then(|s| fingerprint_of(&s.sshsig)),
    }
}

impl Core {
    /// Who signed `action`: None when the policy does not require a signature and none was
    /// given. Refused (and audited) when one is required and missing, not by an allowed
    /// signer, not over this action on this host, out of date, or seen before.
    pub(super) fn signed_by(
        &mut self,
        action: &SignedAction<'_>,
        signature: Option<&Signature>,
        peer: &Peer,
        id: Option<&str>,
        target: Option<&Target>,
    ) -> Result<Option<Signer>, ActionError> {
        let policy = self.shared.enforced().policy.signatures.clone();
        let checked = self.check_signature(&policy, action, signature);
        let refusal = match checked {
            Ok(s) => return Ok(s),
            Err(r) => r,
        };
        self.audit_or_log(AuditEvent::SignatureRefused(SignatureRefused {
            action: action.name().to_string(),
            id: id.map(str::to_string),
            target: target.cloned(),
            by: person_actor(peer),
            key_fingerprint: refusal.fingerprint.clone(),
            why: refusal.why.clone(),
        }));
        if action.name().starts_with("break-glass") {
            self.shared.operations().break_glass.count(Step::Refused);
        }
        log::warn!(
            "{} refused for {}: {}",
            action.name(),
            peer.person().name,
            refusal.why
        );
        Err(ActionError::Signature {
            action: action.name(),
            why: refusal.why,
        })
    }

    fn check_signature(
        &mut self,
        policy: &Signatures,
        action: &SignedAction<'_>,
        signature: Option<&Signature>,
    ) -> Result<Option<Signer>, Refusal> {
        let sig = match (signature, policy.required) {
            (None, false) => return Ok(None),
            (None, true) => {
                return Err(refuse(
                    "the policy requires a signed request: give --sign-with KEY (an SSH key listed in the allowed signers file)",
                    None,
                ))
            }
            (Some(s), _) => s,
        };
        let Some(path) = &policy.allowed_signers else {
            return Err(refuse(
                "the request is signed but the policy names no allowed_signers file",
                Some(sig),
            ));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if sig.time.abs_diff(now) > MAX_AGE.as_secs() {
            return Err(refuse(
                format!(
                    "signed at {} (Unix time), more than {} from now: sign again",
                    sig.time,
                    humantime::format_duration(MAX_AGE)
                ),
                Some(sig),
            ));
        }
        let signers = AllowedSigners::load(path).map_err(|e| refuse(e.to_string(), Some(sig)))?;
        let text = action.text(&host_name(), sig.time);
        let signer = signers
            .verify(&text, &sig.sshsig)
            .map_err(|e| refuse(e.to_string(), Some(sig)))?;
        let digest = sha256_hex(sig.sshsig.trim().as_bytes());
        let mut ops = self.shared.operations();
        let seen = &mut ops.signatures_seen;
        seen.retain(|_, at| at.saturating_add(2 * MAX_AGE.as_secs()) >= now);
        if seen.contains_key(&digest) {
            return Err(refuse(
                "this signature was used before: sign the request again",
                Some(sig),
            ));
        }
        seen.insert(digest, now);
        Ok(Some(signer))
    }
}
