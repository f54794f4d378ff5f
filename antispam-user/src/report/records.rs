//! Reading the audit log: its dated records, and the event logs its agent starts name.

use std::{path::PathBuf, time::SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::{
    time::{stamp, time_of},
    Period,
};
use crate::audit::AuditKind;

/// One audit record, as evidence.
#[derive(Serialize, Clone)]
pub struct Entry {
    pub seq: Option<u64>,
    pub at: String,
    pub event: String,
    pub details: Value,
    /// The kind of record, if this version knows it.
    #[serde(skip)]
    pub(super) kind: Option<AuditKind>,
    #[serde(skip)]
    pub(super) ts: SystemTime,
}

impl Entry {
    pub(super) fn get(&self, key: &str) -> &Value {
        &self.details[key]
    }

    pub(super) fn is(&self, kind: AuditKind) -> bool {
        self.kind == Some(kind)
    }
}

/// The audit log's dated records, in order. Lines that are not records are left to the chain
/// check, which names the first.
pub struct Records(pub(super) Vec<Entry>);

impl Records {
    pub fn parse(text: &str) -> Records {
        let entry = |v: Value| {
            let ts = time_of(&v["ts"])?;
            let event = v["event"].as_str().unwrap_or("-").to_string();
            Some(Entry {
                seq: v["seq"].as_u64(),
                at: stamp(ts),
                kind: AuditKind::parse(&event),
                event,
                details: v["details"].clone(),
                ts,
            })
        };
        Records(
            text.lines()
                .filter_map(|l| entry(serde_json::from_str(l).ok()?))
                .collect(),
        )
    }

    /// Where the agents that may have run in the period wrote their events: the event_log of
    /// every agent_start up to its end (one started before may have logged into it).
    pub fn event_logs(&self, period: &Period) -> NamedLogs {
        let mut named = NamedLogs::default();
        for r in self
            .0
            .iter()
            .filter(|r| r.is(AuditKind::AgentStart) && r.ts <= period.until)
        {
            let path = match r.details.get("event_log") {
                Some(Value::String(p)) => PathBuf::from(p),
                Some(_) => {
                    named.to_stdout.push(r.at.clone());
                    continue;
                }
                None => {
                    named.unrecorded.push(r.at.clone());
                    continue;
                }
            };
            if r.ts < period.since {
                // The agent that may have been running when the period began.
                named.before_period = vec![path.clone()];
            }
            if !named.files.contains(&path) {
                named.files.push(path);
            }
        }
        named
    }
}

/// The event logs the audit log names.
#[derive(Default)]
pub struct NamedLogs {
    pub files: Vec<PathBuf>,
    /// The one the agent started last before the period was writing.
    pub before_period: Vec<PathBuf>,
    /// Starts (times) of agents that wrote their events to standard output.
    pub to_stdout: Vec<String>,
    /// Starts of agents that did not record where (versions before `event_log` was audited).
    pub unrecorded: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::{
        testing::{event, mark, Log},
        Trail,
    };

    #[test]
    fn the_event_logs_come_from_the_agent_starts() {
        let mut log = Log::new("named");
        log.add("agent_start", json!({"event_log": "/var/log/a.jsonl"}));
        let since = mark();
        log.add("agent_start", json!({"event_log": null}))
            .add("agent_start", json!({"pid": 1}))
            .add("agent_start", json!({"event_log": "/var/log/a.jsonl"}))
            .add("agent_start", json!({"event_log": "/var/log/b.jsonl"}));
        let until = mark();
        log.add("agent_start", json!({"event_log": "/var/log/later.jsonl"}));
        let period = Period { since, until };
        let named = Records::parse(&log.text()).event_logs(&period);
        let files = [PathBuf::from("/var/log/a.jsonl"), "/var/log/b.jsonl".into()];
        assert_eq!(named.files, files);
        assert_eq!(named.before_period, files[..1]);
        assert_eq!((named.to_stdout.len(), named.unrecorded.len()), (1, 1));

        let mut trail = Trail::from_audit(period, &named);
        trail.unreadable("/var/log/a.jsonl", "cannot read: gone".into());
        let late = event(until, 1000, "/", "denied", "rate_limit_uid");
        trail.read("/var/log/b.jsonl", late.as_bytes());
        let v = trail.finish();
        assert!(v.unavailable.is_none(), "b was read");
        assert!(
            v.notes[0].contains("wrote its events to standard output"),
            "{:?}",
            v.notes
        );
        assert!(v.notes[1].contains("did not record where"), "{:?}", v.notes);
        assert_eq!(
            v.notes.len(),
            2,
            "b was not written before the period: {:?}",
            v.notes
        );

        let stdout_only = NamedLogs {
            to_stdout: vec!["x".into()],
            ..Default::default()
        };
        let v = Trail::from_audit(period, &stdout_only).finish();
        assert!(v.unavailable.unwrap().contains("standard output"));
    }
}
