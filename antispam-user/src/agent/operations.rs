//! What operators (and the strikes policy) have set, as the agent holds it: suspensions, the
//! kill switch, break-glass requests and overrides. The actions in `actions/` change it; status
//! and metrics read it.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use antispam_common::key::KeyId;
use serde::{Deserialize, Serialize};

use crate::{
    clock,
    control::{
        status::{BreakGlassView, GrantView, KillSwitchView, SuspensionView},
        Person, Target,
    },
};

/// A request nobody approved within this time lapses.
pub const REQUEST_LAPSES_AFTER: Duration = Duration::from_secs(30 * 60);

/// When a request made at `requested_ms` lapses (Unix ms).
pub fn lapses_ms(requested_ms: u64) -> u64 {
    requested_ms.saturating_add(REQUEST_LAPSES_AFTER.as_millis() as u64)
}

/// Why a suspension was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// `antispam suspend`.
    Manual,
    /// The policy's `[suspension]`: enough strikes.
    Strikes,
}

impl Trigger {
    pub const ALL: [Trigger; 2] = [Trigger::Manual, Trigger::Strikes];

    pub const fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Strikes => "strikes",
        }
    }

    pub fn parse(name: &str) -> Trigger {
        if name == "strikes" {
            Trigger::Strikes
        } else {
            Trigger::Manual
        }
    }
}

#[derive(Clone)]
pub struct SuspensionEntry {
    pub reason: String,
    pub by: String,
    pub since: SystemTime,
    pub until: Option<SystemTime>,
    pub trigger: Trigger,
    /// The kernel keys this suspension wrote: the UID, or the cgroup and its descendants.
    pub keys: Vec<KeyId>,
}

pub struct KillSwitch {
    pub reason: String,
    pub by: String,
    pub since: SystemTime,
}

/// A break-glass request, and once approved, the override it grants.
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
    /// What the requester cited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// The keys that signed the request and the approval, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_signer: Option<crate::control::signed::Signer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_signer: Option<crate::control::signed::Signer>,
}

impl Grant {
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires_ms.map(clock::from_unix_ms)
    }

    pub fn view(&self) -> GrantView {
        let t = |ms: u64| clock::rfc3339(clock::from_unix_ms(ms));
        GrantView {
            id: self.id.clone(),
            target: self.target.to_string(),
            reason: self.reason.clone(),
            ttl_secs: self.ttl_secs,
            requester: self.requester.name.clone(),
            requested_at: t(self.requested_ms),
            approver: self.approver.as_ref().map(|p| p.name.clone()),
            expires_at: self.expires_ms.map(t),
            lapses_at: self
                .expires_ms
                .is_none()
                .then(|| t(lapses_ms(self.requested_ms))),
            evidence: self.evidence.clone(),
            requester_key: self.requester_signer.as_ref().map(ToString::to_string),
            approver_key: self.approver_signer.as_ref().map(ToString::to_string),
        }
    }
}

/// A step of break glass, counted in `antispam_break_glass_total{step}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Requested,
    Approved,
    Refused,
    Revoked,
    Expired,
    Lapsed,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Requested,
        Step::Approved,
        Step::Refused,
        Step::Revoked,
        Step::Expired,
        Step::Lapsed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Step::Requested => "requested",
            Step::Approved => "approved",
            Step::Refused => "refused",
            Step::Revoked => "revoked",
            Step::Expired => "expired",
            Step::Lapsed => "lapsed",
        }
    }
}

/// Pending requests and overrides in force.
#[derive(Debug, Default)]
pub struct BreakGlass {
    pub pending: BTreeMap<String, Grant>,
    pub active: BTreeMap<String, Grant>,
    /// Steps since the agent started.
    pub totals: BTreeMap<Step, u64>,
}

impl BreakGlass {
    pub fn count(&mut self, step: Step) {
        *self.totals.entry(step).or_default() += 1;
    }

    /// The grant in force or asked for `target`, if any.
    pub fn for_target(&self, target: &Target) -> Option<&Grant> {
        self.pending
            .values()
            .chain(self.active.values())
            .find(|g| &g.target == target)
    }

    /// Every kernel key under an override in force.
    pub fn overridden_keys(&self) -> std::collections::HashSet<KeyId> {
        self.active
            .values()
            .flat_map(|g| g.keys.iter().copied())
            .collect()
    }

    pub fn view(&self) -> BreakGlassView {
        BreakGlassView {
            active: self.active.values().map(Grant::view).collect(),
            pending: self.pending.values().map(Grant::view).collect(),
        }
    }
}

/// Everything operators have set.
#[derive(Default)]
pub struct Operations {
    pub suspensions: BTreeMap<Target, SuspensionEntry>,
    pub kill_switch: Option<KillSwitch>,
    /// Suspensions set since the start, by trigger.
    pub suspensions_total: BTreeMap<Trigger, u64>,
    pub break_glass: BreakGlass,
    /// Signatures accepted lately (SHA-256 of the armored text → Unix seconds), each good once.
    pub signatures_seen: BTreeMap<String, u64>,
}

impl Operations {
    /// Every kernel key under a suspension.
    pub fn suspended_keys(&self) -> std::collections::HashSet<KeyId> {
        self.suspensions
            .values()
            .flat_map(|e| e.keys.iter().copied())
            .collect()
    }

    /// The suspensions for the status; a UID with its user name, "uid 1042 (alice)".
    pub fn suspension_views(&self, users: &crate::sys::users::UserNames) -> Vec<SuspensionView> {
        self.suspensions
            .iter()
            .map(|(target, e)| SuspensionView {
                target: match target {
                    Target::Uid(uid) => match users.name(*uid) {
                        Some(name) => format!("{target} ({name})"),
                        None => target.to_string(),
                    },
                    Target::Cgroup(_) => target.to_string(),
                },
                reason: e.reason.clone(),
                by: e.by.clone(),
                since: clock::rfc3339(e.since),
                until: e.until.map(clock::rfc3339),
            })
            .collect()
    }

    pub fn kill_switch_view(&self) -> KillSwitchView {
        match &self.kill_switch {
            Some(k) => KillSwitchView {
                on: true,
                reason: Some(k.reason.clone()),
                by: Some(k.by.clone()),
                since: Some(clock::rfc3339(k.since)),
            },
            None => KillSwitchView::default(),
        }
    }
}
