//! Suspensions in force in the period: each suspend paired with what ended it.

use serde::Serialize;
use serde_json::Value;

use super::{time::time_of, Entry, Period, Report};
use crate::audit::AuditKind;

/// A suspension in force at some time in the period, from its start to its end.
#[derive(Serialize)]
pub struct Suspension {
    pub target: Value,
    /// "unsuspended", "expired", "replaced" (by a new suspension), or "active" at the end of the
    /// period.
    pub status: &'static str,
    /// How long it was in force: to its end, or to the end of the period.
    pub held_secs: Option<u64>,
    /// The suspend record (None if it began before the audit log).
    pub began: Option<Entry>,
    pub ended: Option<Entry>,
}

impl Report {
    pub(super) fn suspension_began(&mut self, e: &Entry) {
        let target = e.get("target");
        if let Some(open) = self.open_suspension(target) {
            if e.is(AuditKind::SuspensionRestored) {
                return; // put back after a restart: the same suspension goes on
            }
            open.ended = Some(e.clone()); // replaced by a new one, as the agent does
        }
        self.suspensions.push(Suspension {
            target: target.clone(),
            status: "active",
            held_secs: None,
            began: Some(e.clone()),
            ended: None,
        });
    }

    pub(super) fn suspension_ended(&mut self, e: &Entry) {
        let target = e.get("target");
        if self.open_suspension(target).is_none() {
            // Begun before the audit log: the end record says what it was.
            self.suspensions.push(Suspension {
                target: target.clone(),
                status: "active",
                held_secs: None,
                began: None,
                ended: None,
            });
        }
        let s = self.open_suspension(target).expect("an open suspension");
        s.held_secs = e.get("held_secs").as_u64();
        s.ended = Some(e.clone());
    }

    fn open_suspension(&mut self, target: &Value) -> Option<&mut Suspension> {
        let open = |s: &&mut Suspension| &s.target == target && s.ended.is_none();
        self.suspensions.iter_mut().rev().find(open)
    }
}

impl Suspension {
    /// Keeps it if it overlaps the period, as seen at the period's end.
    pub(super) fn clip(&mut self, period: Period) -> bool {
        let began = self
            .began
            .as_ref()
            .map(|b| b.ts)
            .or_else(|| time_of(self.ended.as_ref()?.get("suspended_since")));
        if began.is_some_and(|b| b > period.until)
            || self.ended.as_ref().is_some_and(|e| e.ts < period.since)
        {
            return false;
        }
        if self.ended.as_ref().is_some_and(|e| e.ts > period.until) {
            self.ended = None;
            self.held_secs = None;
        }
        let end = self.ended.as_ref().map_or(period.until, |e| e.ts);
        self.status = match self.ended.as_ref().map(|e| e.kind) {
            Some(Some(AuditKind::Unsuspend)) => "unsuspended",
            Some(Some(AuditKind::Suspend)) => "replaced",
            Some(_) => "expired",
            None => "active",
        };
        if self.held_secs.is_none() {
            self.held_secs = began
                .and_then(|b| end.duration_since(b).ok())
                .map(|d| d.as_secs());
        }
        true
    }
}
