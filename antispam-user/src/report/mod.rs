//! `antispam report`: the evidence an auditor asks for over a period. What operators and the
//! agent did comes from the audit log, with the verification of its hash chain; who was refused
//! comes from the event log (the connection trail). Everything here is pure: the CLI
//! (cli/report.rs) reads the files and prints what `Report` renders.
//!
//! Audit records are shown as the agent wrote them (`Entry`: seq, time, event, details), so the
//! JSON report keeps the audit log's field names. The whole log is read, not only the period, so
//! that what was under way when the period began (a suspension, a break-glass grant, the policy
//! in force) is shown with its start.
//!
//! Here: the `Report` and the walk over the audit log that builds it. Beside it: `records`
//! (reading the audit log), `suspensions` and `break_glass` (pairing a start with its end),
//! `events` (counting refusals in the event logs), `markdown` (rendering) and `time`.

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use crate::audit::{AuditKind, Broken, SealReport, Verified};

mod break_glass;
mod events;
mod markdown;
mod messages;
mod records;
mod suspensions;
#[cfg(test)]
mod testing;
mod time;

use break_glass::follow_grant;
pub use break_glass::{BreakGlass, Grant};
pub use events::{Offender, Offenders, Trail, Violations};
pub use records::{Entry, NamedLogs, Records};
pub use suspensions::Suspension;
use time::stamp;
pub use time::{parse_time, Period};

#[derive(Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub generated_at: String,
    pub audit_log: String,
    pub chain: Chain,
    /// The seals, checked with the verification key (`--key`).
    pub seal: Seal,
    /// The head seen elsewhere (`--expect-head`), and whether the log still holds it.
    pub checkpoints: Vec<Checkpoint>,
    /// What an auditor should know about the evidence itself (gaps, unclean stops).
    pub notes: Vec<String>,
    /// agent_start and agent_stop records.
    pub agent: Vec<Entry>,
    pub policy: Policy,
    pub violations: Violations,
    pub suspensions: Vec<Suspension>,
    pub kill_switch: Vec<Entry>,
    pub break_glass: BreakGlass,
    pub control_refusals: Vec<Entry>,
    /// Audit records of kinds this report does not know, by event name.
    pub other_events: BTreeMap<String, u64>,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Chain {
    Verified { records: u64, head: String },
    Broken { line: usize, reason: String },
}

/// What the seals say.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Seal {
    /// No verification key was given.
    NotChecked,
    Verified {
        sealed_records: u64,
        epochs: usize,
        unsealed_before: u64,
    },
    Broken {
        line: usize,
        seq: u64,
        epoch: Option<u64>,
        reason: String,
    },
}

#[derive(Serialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Report {
    /// Records what the seals and the checkpoints say (the chain verified).
    pub fn check_evidence(&mut self, seal: Option<SealReport>, checkpoints: Vec<Checkpoint>) {
        self.seal = match seal {
            None => Seal::NotChecked,
            Some(r) => match r.bad {
                Some(b) => Seal::Broken {
                    line: b.line,
                    seq: b.seq,
                    epoch: b.epoch,
                    reason: b.reason,
                },
                None => Seal::Verified {
                    sealed_records: r.sealed_records(),
                    epochs: r.epochs.len(),
                    unsealed_before: r.unsealed_before,
                },
            },
        };
        self.checkpoints = checkpoints;
    }

    /// Did every check the auditor asked for hold?
    pub fn evidence_holds(&self) -> bool {
        matches!(self.chain, Chain::Verified { .. })
            && !matches!(self.seal, Seal::Broken { .. })
            && self.checkpoints.iter().all(|c| c.held)
    }
}

#[derive(Serialize, Default)]
pub struct Policy {
    /// The agent_start or policy_reload that set the policy in force when the period began.
    pub in_force_at_start: Option<Entry>,
    /// Whether an agent was running then (if not, `in_force_at_start` is the last it enforced).
    pub agent_running_at_start: bool,
    pub reloads: Vec<Entry>,
    pub refused: Vec<Entry>,
}

impl Report {
    /// The report over `period`. `chain` is `crate::audit::verify` of the text of `records`.
    pub fn build(
        audit_log: &str,
        chain: Result<Verified, Broken>,
        records: &Records,
        violations: Violations,
        period: Period,
        now: SystemTime,
    ) -> Report {
        let mut r = Report {
            since: stamp(period.since),
            until: stamp(period.until),
            generated_at: stamp(now),
            audit_log: audit_log.to_string(),
            chain: match chain {
                Ok(v) => Chain::Verified {
                    records: v.records,
                    head: v.head,
                },
                Err(b) => Chain::Broken {
                    line: b.line,
                    reason: b.reason,
                },
            },
            seal: Seal::NotChecked,
            checkpoints: Vec::new(),
            notes: Vec::new(),
            agent: Vec::new(),
            policy: Policy::default(),
            violations,
            suspensions: Vec::new(),
            kill_switch: Vec::new(),
            break_glass: BreakGlass::default(),
            control_refusals: Vec::new(),
            other_events: BTreeMap::new(),
        };
        match records.0.first() {
            Some(first) if first.ts <= period.since => {}
            first => r.notes.push(format!(
                "the audit log begins at {}, after the start of the period: nothing earlier is recorded",
                first.map_or("(no records)", |e| &e.at)
            )),
        }
        let mut running: Option<&Entry> = None;
        let mut grants: BTreeMap<String, Grant> = BTreeMap::new();
        for e in &records.0 {
            let inside = period.contains(e.ts);
            // What is under way is followed from the start of the log; what happened, in the period.
            match e.kind {
                Some(k @ (AuditKind::AgentStart | AuditKind::AgentStop)) => {
                    let start = k == AuditKind::AgentStart;
                    if let (Some(before), true, true) = (running, inside, start) {
                        r.notes.push(format!("the agent started at {} recorded no stop before the start at {} (killed, crashed or power lost?)", before.at, e.at));
                    }
                    if inside {
                        r.agent.push(e.clone());
                    }
                    running = start.then_some(e);
                    if e.ts < period.since {
                        r.policy.agent_running_at_start = running.is_some();
                        if running.is_some() {
                            r.policy.in_force_at_start = Some(e.clone());
                        }
                    }
                }
                Some(AuditKind::PolicyReload) if e.ts < period.since => {
                    r.policy.in_force_at_start = Some(e.clone())
                }
                Some(AuditKind::Suspend | AuditKind::SuspensionRestored) => r.suspension_began(e),
                Some(AuditKind::Unsuspend | AuditKind::SuspensionExpired) => r.suspension_ended(e),
                Some(AuditKind::BreakGlassRefused | AuditKind::SignatureRefused) if inside => {
                    r.break_glass.refused.push(e.clone())
                }
                Some(
                    AuditKind::BreakGlassRequested
                    | AuditKind::BreakGlassApproved
                    | AuditKind::BreakGlassRevoked
                    | AuditKind::BreakGlassExpired
                    | AuditKind::BreakGlassRequestLapsed
                    | AuditKind::BreakGlassRestored,
                ) => follow_grant(&mut grants, e),
                _ if !inside => {}
                Some(AuditKind::PolicyReload) => r.policy.reloads.push(e.clone()),
                Some(AuditKind::PolicyReloadRefused) => r.policy.refused.push(e.clone()),
                Some(AuditKind::KillSwitch) => r.kill_switch.push(e.clone()),
                Some(AuditKind::ControlDenied) => r.control_refusals.push(e.clone()),
                _ => *r.other_events.entry(e.event.clone()).or_default() += 1,
            }
        }
        r.suspensions.retain_mut(|s| s.clip(period));
        r.break_glass.grants = grants
            .into_values()
            .filter_map(|g| g.clip(period))
            .collect();
        r
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{mark, root, Log};
    use super::*;

    #[test]
    fn only_the_period_is_reported_and_what_was_under_way_keeps_its_start() {
        let mut log = Log::new("period");
        let start = json!({"version": "0.1.0", "pid": 10, "policy": "/etc/p.toml",
            "policy_sha256": "aaa", "mode": "enforce", "generation": 1, "event_log": null});
        log.add("agent_start", start.clone())
            .add(
                "kill_switch",
                json!({"on": true, "reason": "before", "by": root()}),
            )
            .add(
                "suspend",
                json!({"target": {"uid": 1000}, "reason": "spam run", "by": root(),
                "trigger": "manual", "for_secs": null, "until": null}),
            )
            .add(
                "policy_reload",
                json!({"policy": "/etc/p.toml", "policy_sha256": "bbb",
                "previous_sha256": "aaa", "generation": 2}),
            );
        let since = mark();
        log.add(
            "unsuspend",
            json!({"target": {"uid": 1000}, "reason": "cleaned", "by": root(),
                "suspended_since": "2026-01-01T00:00:00Z", "held_secs": 90}),
        )
        .add(
            "suspend",
            json!({"target": {"cgroup": "/ctr"}, "reason": "3 strikes",
                "by": {"user": "antispam", "uid": 0}, "trigger": "strikes", "for_secs": 60,
                "until": "2099-01-01T00:00:00Z"}),
        )
        .add(
            "policy_reload",
            json!({"policy": "/etc/p.toml", "policy_sha256": "ccc",
                "previous_sha256": "bbb", "mode": "enforce", "generation": 3}),
        )
        .add(
            "policy_reload_refused",
            json!({"policy": "/etc/p.toml",
                "policy_sha256": "ddd", "in_force_sha256": "ccc",
                "problems": ["/etc/p.toml:3:8: malformed rate"]}),
        )
        .add(
            "control_denied",
            json!({"by": {"user": "eve", "uid": 1001, "pid": 7},
                "why": "neither root nor in the operators group"}),
        )
        .add("mystery", json!({}))
        .add("agent_start", start.clone());
        let until = mark();
        log.add(
            "kill_switch",
            json!({"on": false, "reason": "after", "by": root()}),
        )
        .add(
            "suspension_expired",
            json!({"target": {"cgroup": "/ctr"}, "reason": "expired",
                "by": {"user": "expiry"}}),
        );

        let period = Period { since, until };
        let named = Records::parse(&log.text()).event_logs(&period);
        let r = log.report(period, Trail::from_audit(period, &named));
        assert!(matches!(r.chain, Chain::Verified { records: 13, .. }));
        let in_force = r.policy.in_force_at_start.as_ref().unwrap();
        assert_eq!(in_force.get("policy_sha256"), "bbb");
        assert_eq!(r.policy.reloads.len(), 1);
        assert_eq!(r.policy.reloads[0].get("policy_sha256"), "ccc");
        assert_eq!(
            r.policy.refused[0].get("problems")[0],
            "/etc/p.toml:3:8: malformed rate"
        );
        assert!(
            r.kill_switch.is_empty(),
            "both changes are outside the period"
        );
        assert_eq!(r.control_refusals.len(), 1);
        assert_eq!(r.other_events, BTreeMap::from([("mystery".to_string(), 1)]));
        assert_eq!(r.agent.len(), 1);
        assert!(
            r.notes.iter().any(|n| n.contains("recorded no stop")),
            "{:?}",
            r.notes
        );

        assert_eq!(r.suspensions.len(), 2);
        let uid = &r.suspensions[0];
        assert_eq!(
            uid.began.as_ref().unwrap().get("reason"),
            "spam run",
            "begun before"
        );
        assert_eq!(uid.status, "unsuspended");
        assert_eq!(uid.ended.as_ref().unwrap().get("by")["user"], "root");
        assert_eq!(uid.held_secs, Some(90));
        let cg = &r.suspensions[1];
        assert_eq!(
            (cg.status, cg.ended.is_none()),
            ("active", true),
            "it expired later"
        );

        let md = r.markdown();
        assert!(md.contains("Hash chain **verified**: 13 records"), "{md}");
        assert!(
            md.contains("| uid 1000 | manual | spam run | root (uid 0, pid 4242) |"),
            "{md}"
        );
        assert!(
            md.contains("unsuspended by root (uid 0, pid 4242) at"),
            "{md}"
        );
        assert!(md.contains("| cgroup /ctr | strikes | 3 strikes |"), "{md}");
        assert!(md.contains("still active at the end of the period"), "{md}");
        assert!(
            md.contains("The kill switch was not changed in the period."),
            "{md}"
        );
        assert!(
            md.contains("| `mystery` | 1 |") || md.contains("| mystery | 1 |"),
            "{md}"
        );
        assert!(
            md.contains("**Not available:** the agent started at "),
            "{md}"
        );
    }

    #[test]
    fn a_broken_chain_is_reported_with_its_line() {
        let mut log = Log::new("broken");
        let since = mark();
        log.add("agent_start", json!({"pid": 1}))
            .add(
                "kill_switch",
                json!({"on": true, "reason": "outbreak", "by": root()}),
            )
            .add("agent_stop", json!({"reason": "SIGTERM"}));
        let until = mark();
        let text = log.text().replace("outbreak", "routine test");
        std::fs::write(log.log.path(), text).unwrap();
        let r = log.report(Period { since, until }, Trail::new(Period { since, until }));
        let md = r.markdown();
        let warning = "**WARNING: the hash chain is BROKEN at line 2: record 2 was altered";
        assert!(md.contains(warning), "{md}");
        assert_eq!(r.kill_switch.len(), 1, "the records are still shown");
        let json = serde_json::to_value(&r).unwrap();
        let reason = "record 2 was altered: its hash does not match its content";
        assert_eq!(
            json["chain"],
            json!({"status": "broken", "line": 2, "reason": reason})
        );
    }
}
