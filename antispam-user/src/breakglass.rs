//! Break glass: an emergency override of one UID or cgroup that takes two people and ends by
//! itself.
//!
//! One operator requests it with a reason and a TTL; a second, different person approves it (the
//! requester cannot, see [`crate::control::Person`]). Only then is the override written to the
//! kernel, with its end time: the programs stop honouring it at that instant whether or not the
//! agent is running. While it lasts, the target's rate limits, suspension and the kill switch do
//! not apply to it; destination block lists still do. It can be revoked at once, a request
//! nobody approves lapses, and every step, refused ones included, is in the audit log.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use antispam_common::key::{KeyId, Override};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    cli::run::Control,
    control::{Peer, Person, Target},
    ops::mono_now_ns,
    strikes::unix_ms,
};

/// The shortest and longest override one can ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// A request nobody approved within this time lapses.
pub const REQUEST_LAPSES_AFTER: Duration = Duration::from_secs(30 * 60);

/// A request, and once approved, the override it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub target: Target,
    pub reason: String,
    pub ttl_secs: u64,
    pub requester: Person,
    pub requested_ms: u64,
    #[serde(default)]
    pub approver: Option<Person>,
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// The kernel keys the override was written to (the UID, or the cgroup and descendants).
    #[serde(skip)]
    pub keys: Vec<KeyId>,
}

impl Grant {
    fn expires(&self) -> Option<SystemTime> {
        self.expires_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// The status/list view.
    pub fn to_json(&self) -> serde_json::Value {
        let t = |ms: u64| ts(UNIX_EPOCH + Duration::from_millis(ms));
        json!({
            "id": self.id, "target": self.target.to_string(), "reason": self.reason,
            "ttl_secs": self.ttl_secs, "requester": self.requester.name,
            "requested_at": t(self.requested_ms),
            "approver": self.approver.as_ref().map(|p| p.name.clone()),
            "expires_at": self.expires_ms.map(t),
            "lapses_at": self.expires_ms.is_none().then(|| t(self.requested_ms + REQUEST_LAPSES_AFTER.as_millis() as u64)),
        })
    }
}

/// Pending requests and overrides in force.
#[derive(Debug, Default)]
pub struct BreakGlass {
    pub pending: BTreeMap<String, Grant>,
    pub active: BTreeMap<String, Grant>,
    /// Steps since the agent started: requested, approved, refused, revoked, expired, lapsed.
    pub totals: BTreeMap<&'static str, u64>,
}

/// The steps counted in `antispam_break_glass_total{step}`.
pub const STEPS: [&str; 6] = [
    "requested",
    "approved",
    "refused",
    "revoked",
    "expired",
    "lapsed",
];

impl BreakGlass {
    fn count(&mut self, step: &'static str) {
        *self.totals.entry(step).or_default() += 1;
    }

    /// The grant in force or asked for `target`, if any.
    fn for_target(&self, target: &Target) -> Option<&Grant> {
        self.pending
            .values()
            .chain(self.active.values())
            .find(|g| &g.target == target)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "active": self.active.values().map(Grant::to_json).collect::<Vec<_>>(),
            "pending": self.pending.values().map(Grant::to_json).collect::<Vec<_>>(),
        })
    }
}

fn ts(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn person(p: &Person) -> serde_json::Value {
    json!({"user": p.name, "uid": p.uid})
}

fn peer_json(peer: &Peer) -> serde_json::Value {
    json!({"user": peer.person().name, "uid": peer.person().uid, "pid": peer.pid, "process_uid": peer.uid})
}

/// A fresh id: "bg-" and 8 random hex digits (unguessable, so ids from different agents and
/// runs never collide in the audit log).
fn new_id() -> String {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        b = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id())
        .to_ne_bytes();
    }
    format!("bg-{:08x}", u32::from_ne_bytes(b))
}

impl Control<'_> {
    pub fn break_glass_request(
        &mut self,
        target: Target,
        reason: String,
        ttl_secs: u64,
        peer: &Peer,
    ) -> Result<String, String> {
        if reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        let ttl = Duration::from_secs(ttl_secs);
        if ttl < MIN_TTL || ttl > MAX_TTL {
            return Err(format!(
                "the TTL must be between {} and {}",
                humantime::format_duration(MIN_TTL),
                humantime::format_duration(MAX_TTL)
            ));
        }
        self.keys_of(&target)?;
        if let Some(g) = self.shared.operations().break_glass.for_target(&target) {
            return Err(format!(
                "{target} already has break-glass {} ({}); revoke it first",
                g.id,
                if g.approver.is_some() {
                    "in force"
                } else {
                    "waiting for approval"
                }
            ));
        }
        let now = SystemTime::now();
        let g = Grant {
            id: new_id(),
            target: target.clone(),
            reason: reason.clone(),
            ttl_secs,
            requester: peer.person(),
            requested_ms: unix_ms(now),
            approver: None,
            expires_ms: None,
            keys: Vec::new(),
        };
        self.audit(
            "break_glass_requested",
            json!({"id": g.id, "target": target, "reason": reason, "ttl_secs": ttl_secs, "requester": peer_json(peer)}),
        );
        let message = format!(
            "break-glass {id} requested for {target} ({ttl}): {reason}\n\
             A second operator must approve it within {lapse}: antispam break-glass approve {id}",
            id = g.id,
            ttl = humantime::format_duration(ttl),
            lapse = humantime::format_duration(REQUEST_LAPSES_AFTER),
        );
        log::warn!("{message} (requested by {})", g.requester.name);
        let mut ops = self.shared.operations();
        ops.break_glass.count("requested");
        ops.break_glass.pending.insert(g.id.clone(), g);
        Ok(message)
    }

    pub fn break_glass_approve(&mut self, id: &str, peer: &Peer) -> Result<String, String> {
        let approver = peer.person();
        let pending = {
            let ops = self.shared.operations();
            if let Some(g) = ops.break_glass.active.get(id) {
                return Err(format!(
                    "{id} was already approved by {}",
                    g.approver.as_ref().map_or("?", |p| &p.name)
                ));
            }
            ops.break_glass.pending.get(id).cloned()
        };
        let Some(mut g) = pending else {
            return Err(format!(
                "no pending break-glass request {id} (see antispam break-glass list)"
            ));
        };
        if approver.uid == g.requester.uid {
            let why = format!(
                "{} requested {id} and cannot approve it: a second operator must",
                approver.name
            );
            self.audit(
                "break_glass_refused",
                json!({"id": id, "target": g.target, "by": peer_json(peer), "why": why}),
            );
            self.shared.operations().break_glass.count("refused");
            log::warn!("break glass: {why}");
            return Err(why);
        }
        let keys = self.keys_of(&g.target)?;
        let until_ns = mono_now_ns() + g.ttl_secs * 1_000_000_000;
        let expires = SystemTime::now() + Duration::from_secs(g.ttl_secs);
        for k in &keys {
            self.maps
                .grant(*k, Override::new(until_ns))
                .map_err(|e| e.to_string())?;
        }
        g.keys = keys;
        g.approver = Some(approver.clone());
        g.expires_ms = Some(unix_ms(expires));
        self.audit(
            "break_glass_approved",
            json!({
                "id": id, "target": g.target, "reason": g.reason, "ttl_secs": g.ttl_secs,
                "requester": person(&g.requester), "approver": peer_json(peer),
                "expires_at": ts(expires), "kernel_keys": g.keys.len(),
            }),
        );
        let message = format!(
            "break-glass {id} in force for {} until {} (requested by {}, approved by {}): limits, suspension and kill switch lifted",
            g.target,
            ts(expires),
            g.requester.name,
            approver.name
        );
        log::warn!("{message}");
        {
            let mut ops = self.shared.operations();
            ops.break_glass.pending.remove(id);
            ops.break_glass.count("approved");
            ops.break_glass.active.insert(id.to_string(), g);
        }
        self.save_break_glass();
        Ok(message)
    }

    pub fn break_glass_revoke(
        &mut self,
        id: &str,
        reason: &str,
        peer: &Peer,
    ) -> Result<String, String> {
        if reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        let (g, was_active) = {
            let mut ops = self.shared.operations();
            match ops.break_glass.active.remove(id) {
                Some(g) => (g, true),
                None => match ops.break_glass.pending.remove(id) {
                    Some(g) => (g, false),
                    None => return Err(format!("no break-glass {id} pending or in force")),
                },
            }
        };
        self.end_override(&g);
        self.audit(
            "break_glass_revoked",
            json!({
                "id": id, "target": g.target, "by": peer_json(peer), "reason": reason,
                "requester": person(&g.requester), "approver": g.approver.as_ref().map(person),
                "was_in_force": was_active,
            }),
        );
        self.shared.operations().break_glass.count("revoked");
        if was_active {
            self.save_break_glass();
        }
        let message = format!("break-glass {id} for {} revoked: {reason}", g.target);
        log::warn!("{message} (by {})", peer.person().name);
        Ok(message)
    }

    pub fn break_glass_list(&self) -> serde_json::Value {
        self.shared.operations().break_glass.to_json()
    }

    /// Ends overrides whose time is up (the kernel already ignores them) and lapses requests
    /// nobody approved.
    pub fn break_glass_expire(&mut self) {
        let now = SystemTime::now();
        let (expired, lapsed) = {
            let ops = self.shared.operations();
            let expired: Vec<Grant> = ops
                .break_glass
                .active
                .values()
                .filter(|g| g.expires().is_some_and(|e| e <= now))
                .cloned()
                .collect();
            let lapse_ms = REQUEST_LAPSES_AFTER.as_millis() as u64;
            let lapsed: Vec<Grant> = ops
                .break_glass
                .pending
                .values()
                .filter(|g| g.requested_ms + lapse_ms <= unix_ms(now))
                .cloned()
                .collect();
            (expired, lapsed)
        };
        for g in &expired {
            self.end_override(g);
            self.audit(
                "break_glass_expired",
                json!({
                    "id": g.id, "target": g.target, "requester": person(&g.requester),
                    "approver": g.approver.as_ref().map(person), "expires_at": g.expires().map(ts),
                }),
            );
            log::warn!("break-glass {} for {} expired", g.id, g.target);
            let mut ops = self.shared.operations();
            ops.break_glass.active.remove(&g.id);
            ops.break_glass.count("expired");
        }
        for g in &lapsed {
            self.audit(
                "break_glass_request_lapsed",
                json!({"id": g.id, "target": g.target, "requester": person(&g.requester)}),
            );
            let mut ops = self.shared.operations();
            ops.break_glass.pending.remove(&g.id);
            ops.break_glass.count("lapsed");
        }
        if !expired.is_empty() {
            self.save_break_glass();
        }
    }

    /// A new cgroup below one under an override is under it too.
    pub fn break_glass_cover(&mut self, path: &str, id: u64) {
        let hit = {
            let mut ops = self.shared.operations();
            ops.break_glass
                .active
                .values_mut()
                .find(|g| match &g.target {
                    Target::Cgroup(p) => {
                        path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
                    }
                    Target::Uid(_) => false,
                })
                .map(|g| {
                    g.keys.push(KeyId::cgroup(id));
                    g.expires()
                })
        };
        if let Some(Some(expires)) = hit {
            if let Ok(left) = expires.duration_since(SystemTime::now()) {
                let until_ns = mono_now_ns() + left.as_nanos() as u64;
                if let Err(e) = self.maps.grant(KeyId::cgroup(id), Override::new(until_ns)) {
                    log::error!("break glass for new cgroup {path}: {e}");
                }
            }
        }
    }

    /// Puts back the overrides in force when the previous agent stopped (from the offence
    /// book); those that ended meanwhile are audited as expired.
    pub fn break_glass_restore(&mut self) {
        let now = SystemTime::now();
        for mut g in std::mem::take(&mut self.book.break_glass) {
            let left = g
                .expires()
                .and_then(|e| e.duration_since(now).ok())
                .filter(|d| !d.is_zero());
            let Some(left) = left else {
                self.audit(
                    "break_glass_expired",
                    json!({
                        "id": g.id, "target": g.target, "requester": person(&g.requester),
                        "approver": g.approver.as_ref().map(person), "expires_at": g.expires().map(ts),
                        "while": "the agent was stopped",
                    }),
                );
                continue;
            };
            let keys = match self.keys_of(&g.target) {
                Ok(k) => k,
                Err(e) => {
                    log::warn!("not restoring break-glass {}: {e}", g.id);
                    continue;
                }
            };
            let until_ns = mono_now_ns() + left.as_nanos() as u64;
            for k in &keys {
                if let Err(e) = self.maps.grant(*k, Override::new(until_ns)) {
                    log::error!("restoring break-glass {}: {e}", g.id);
                }
            }
            g.keys = keys;
            self.audit(
                "break_glass_restored",
                json!({"id": g.id, "target": g.target, "expires_at": g.expires().map(ts)}),
            );
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
            if let Err(e) = self.maps.ungrant(*k) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
