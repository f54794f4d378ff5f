//! Signed requests: the text an operator signs with `ssh-keygen -Y sign -n antispam`, built the
//! same way by the CLI (to sign it) and the agent (to check it), and who signed, as recorded.
//!
//! The text names the action and everything the action does (target, TTL, reason, evidence;
//! for an approval, the request approved), the host, and the time it was signed: a signature
//! is good for one action on one host within [`MAX_AGE`], once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The SSHSIG namespace of every signature (`ssh-keygen -Y sign -n antispam`).
pub const NAMESPACE: &str = "antispam";
/// A signature older (or newer) than this is refused, and one seen before is refused within it.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// An operator's signature over a request's [`SignedAction::text`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The armored SSHSIG (`-----BEGIN SSH SIGNATURE-----`).
    pub sshsig: String,
    /// Unix seconds in the signed text.
    pub time: u64,
}

/// Who signed: the key's principals in the allowed signers file and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The principals of the allowed_signers line of the key (the first names the person).
    pub principals: Vec<String>,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `sk-ssh-ed25519@openssh.com` (a FIDO2 key), …
    pub key_type: String,
}

impl Signer {
    pub fn principal(&self) -> &str {
        self.principals.first().map_or("?", String::as_str)
    }

    /// Is it the same person as `other` (a principal in common)?
    pub fn same_person(&self, other: &Signer) -> bool {
        self.fingerprint == other.fingerprint
            || self.principals.iter().any(|p| other.principals.contains(p))
    }
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.principal(), self.fingerprint)
    }
}

/// What a signature is for.
#[derive(Debug, Clone)]
pub enum SignedAction<'a> {
    KillSwitch {
        on: bool,
        reason: &'a str,
    },
    BreakGlassRequest {
        target: String,
        ttl_secs: u64,
        reason: &'a str,
        evidence: &'a [String],
    },
    /// An approval names everything of the request it approves.
    BreakGlassApprove {
        id: &'a str,
        target: String,
        ttl_secs: u64,
        reason: &'a str,
        evidence: &'a [String],
    },
    BreakGlassRevoke {
        id: &'a str,
        reason: &'a str,
    },
}

impl SignedAction<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            SignedAction::KillSwitch { .. } => "kill-switch",
            SignedAction::BreakGlassRequest { .. } => "break-glass request",
            SignedAction::BreakGlassApprove { .. } => "break-glass approve",
            SignedAction::BreakGlassRevoke { .. } => "break-glass revoke",
        }
    }

    /// The text signed: a first line naming the format, then one JSON object with sorted keys.
    pub fn text(&self, host: &str, time: u64) -> String {
        let mut m = Map::new();
        m.insert("action".into(), json!(self.name()));
        m.insert("host".into(), json!(host));
        m.insert("time".into(), json!(time));
        let mut put = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        match self {
            SignedAction::KillSwitch { on, reason } => {
                put("on", json!(on));
                put("reason", json!(reason));
            }
            SignedAction::BreakGlassRequest {
                target,
                ttl_secs,
                reason,
                evidence,
            } => {
                put("target", json!(target));
                put("ttl_secs", json!(ttl_secs));
                put("reason", json!(reason));
                put("evidence", json!(evidence));
            }
            SignedAction::BreakGlassApprove {
                id,
                target,
                ttl_secs,
                reason,
                evidence,
            } => {
                put("id", json!(id));
                put("target", json!(target));
                put("ttl_secs", json!(ttl_secs));
                put("reason", json!(reason));
                put("evidence", json!(evidence));
            }
            SignedAction::BreakGlassRevoke { id, reason } => {
                put("id", json!(id));
                put("reason", json!(reason));
            }
        }
        let mut sorted = Map::new();
        let mut keys: Vec<String> = m.keys().cloned().collect();
        keys.sort();
        for k in keys {
            let v = m.remove(&k).unwrap_or(Value::Null);
            sorted.insert(k, v);
        }
        format!("antispam signed request v1\n{}\n", Value::Object(sorted))
    }
}

/// This host's name, as both ends read it (the kernel's UTS name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_text_names_everything_the_action_does() {
        let ev = vec!["alert PAY-1".to_string(), "queue 40k".to_string()];
        let a = SignedAction::BreakGlassApprove {
            id: "bg-1",
            target: "uid 1000".into(),
            ttl_secs: 60,
            reason: "payroll",
            evidence: &ev,
        };
        let t = a.text("mx1", 1_800_000_000);
        assert_eq!(
            t,
            "antispam signed request v1\n{\"action\":\"break-glass approve\",\"evidence\":[\"alert PAY-1\",\"queue 40k\"],\"host\":\"mx1\",\"id\":\"bg-1\",\"reason\":\"payroll\",\"target\":\"uid 1000\",\"time\":1800000000,\"ttl_secs\":60}\n"
        );
        assert_ne!(t, a.text("mx2", 1_800_000_000));
        let k = SignedAction::KillSwitch {
            on: true,
            reason: "r",
        };
        assert!(k.text("h", 1).contains("\"on\":true"));
    }
}
