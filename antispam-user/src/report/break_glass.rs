//! Break-glass grants: each request paired with its approval and its end, by id.

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::{Entry, Period};
use crate::audit::AuditKind;

#[derive(Serialize, Default)]
pub struct BreakGlass {
    pub grants: Vec<Grant>,
    /// break_glass_refused records.
    pub refused: Vec<Entry>,
}

/// A break-glass request, its approval and its end, paired by id.
#[derive(Serialize)]
pub struct Grant {
    pub id: String,
    /// "pending" (not approved), "active", "expired", "revoked" or "lapsed" (never approved).
    pub status: &'static str,
    pub requested: Option<Entry>,
    pub approved: Option<Entry>,
    pub ended: Option<Entry>,
}

impl Grant {
    /// A field from whichever of its records has it.
    pub(super) fn get(&self, key: &str) -> &Value {
        [&self.requested, &self.approved, &self.ended]
            .into_iter()
            .flatten()
            .map(|e| e.get(key))
            .find(|v| !v.is_null())
            .unwrap_or(&Value::Null)
    }

    fn start(&self) -> Option<SystemTime> {
        self.requested
            .as_ref()
            .or(self.approved.as_ref())
            .map(|e| e.ts)
    }
}

/// Adds a break_glass_* record to the grant with its id.
pub(super) fn follow_grant(grants: &mut BTreeMap<String, Grant>, e: &Entry) {
    let id = match e.get("id") {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let g = grants.entry(id.clone()).or_insert_with(|| Grant {
        id,
        status: "pending",
        requested: None,
        approved: None,
        ended: None,
    });
    let (slot, status) = match e.kind {
        Some(AuditKind::BreakGlassRequested) => (&mut g.requested, "pending"),
        Some(AuditKind::BreakGlassApproved) => (&mut g.approved, "active"),
        Some(AuditKind::BreakGlassRevoked) => (&mut g.ended, "revoked"),
        Some(AuditKind::BreakGlassExpired) => (&mut g.ended, "expired"),
        Some(AuditKind::BreakGlassRequestLapsed) => (&mut g.ended, "lapsed"),
        _ => return, // break_glass_restored and the like: the grant goes on
    };
    *slot = Some(e.clone());
    g.status = status;
}

impl Grant {
    /// Keeps it if it overlaps the period, as seen at the period's end.
    pub(super) fn clip(mut self, period: Period) -> Option<Grant> {
        if self.start().is_some_and(|s| s > period.until)
            || self.ended.as_ref().is_some_and(|e| e.ts < period.since)
        {
            return None;
        }
        if self.ended.as_ref().is_some_and(|e| e.ts > period.until) {
            self.ended = None;
            self.status = if self.approved.is_some() {
                "active"
            } else {
                "pending"
            };
        }
        if self.approved.as_ref().is_some_and(|a| a.ts > period.until) {
            self.approved = None;
            self.status = "pending";
        }
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::{
        testing::{mark, Log},
        Trail,
    };

    #[test]
    fn break_glass_requests_are_paired_with_their_approval_and_end() {
        let alice = json!({"user": "alice", "uid": 1000});
        let bob = json!({"user": "bob", "uid": 1001, "pid": 77});
        let req = |id: &str| {
            json!({"id": id, "target": {"uid": 2000}, "reason": "payroll run",
                "ttl_secs": 3600, "requester": alice})
        };
        let approved = |id: &str| {
            json!({"id": id, "target": {"uid": 2000}, "reason": "payroll run",
                "ttl_secs": 3600, "requester": alice, "approver": bob,
                "expires_at": "2026-11-23T11:00:00Z"})
        };
        let mut log = Log::new("breakglass");
        log.add("break_glass_requested", req("bg-1"))
            .add("break_glass_approved", approved("bg-1"))
            .add("break_glass_requested", req("bg-0"))
            .add("break_glass_request_lapsed", json!({"id": "bg-0"}));
        let since = mark();
        log.add(
            "break_glass_expired",
            json!({"id": "bg-1", "target": {"uid": 2000}}),
        )
        .add("break_glass_requested", req("bg-2"))
        .add(
            "break_glass_refused",
            json!({"id": "bg-2", "by": alice,
                "why": "the requester cannot approve their own request"}),
        )
        .add("break_glass_approved", approved("bg-2"))
        .add(
            "break_glass_revoked",
            json!({"id": "bg-2", "target": {"uid": 2000},
                "by": bob, "reason": "done early"}),
        )
        .add("break_glass_requested", req("bg-3"))
        .add(
            "break_glass_request_lapsed",
            json!({"id": "bg-3", "target": {"uid": 2000}}),
        )
        .add("break_glass_requested", req("bg-4"))
        .add("break_glass_approved", approved("bg-4"))
        .add("break_glass_restored", json!({"id": "bg-4"}))
        .add("break_glass_requested", req("bg-5"));
        let until = mark();
        log.add("break_glass_expired", json!({"id": "bg-4"}))
            .add("break_glass_approved", approved("bg-5"));

        let r = log.report(Period { since, until }, Trail::new(Period { since, until }));
        let g = &r.break_glass.grants;
        let ids: Vec<(&str, &str)> = g.iter().map(|g| (g.id.as_str(), g.status)).collect();
        let expected = [
            ("bg-1", "expired"),
            ("bg-2", "revoked"),
            ("bg-3", "lapsed"),
            ("bg-4", "active"),
            ("bg-5", "pending"),
        ];
        assert_eq!(ids, expected, "bg-0 ended before the period");
        assert!(
            g[0].requested.is_some() && g[0].approved.is_some(),
            "begun before the period"
        );
        assert_eq!(g[1].ended.as_ref().unwrap().get("by")["user"], "bob");
        assert!(g[2].get("approver").is_null());
        assert_eq!(r.break_glass.refused.len(), 1);
        assert!(r.other_events.is_empty(), "{:?}", r.other_events);

        let md = r.markdown();
        let row =
            "| bg-2 | uid 2000 | alice (uid 1000) | unsigned | bob (uid 1001, pid 77) | unsigned | payroll run | - | 1h |";
        assert!(md.contains(row), "{md}");
        assert!(md.contains("revoked by bob (uid 1001, pid 77) at"), "{md}");
        assert!(md.contains("lapsed unapproved at"), "{md}");
        assert!(
            md.contains("awaiting approval at the end of the period"),
            "{md}"
        );
        assert!(
            md.contains("the requester cannot approve their own request"),
            "{md}"
        );
    }
}
