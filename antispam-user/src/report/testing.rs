//! What the report tests share: an audit log written by the agent's own writer, and events.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde_json::{json, Value};

use super::{Period, Records, Report, Trail};
use crate::audit::{verify, AuditLog};

/// An audit log written by the agent's own writer (so the chain is real), in a directory of
/// its own.
pub(super) struct Log {
    dir: PathBuf,
    pub(super) log: AuditLog,
}

impl Log {
    pub(super) fn new(name: &str) -> Log {
        let dir =
            std::env::temp_dir().join(format!("antispam-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::open(&dir.join("audit.jsonl")).unwrap();
        Log { dir, log }
    }

    pub(super) fn add(&mut self, event: &str, details: Value) -> &mut Log {
        self.log.append_raw(event, details).unwrap();
        self
    }

    pub(super) fn text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    pub(super) fn report(&self, period: Period, trail: Trail) -> Report {
        let text = self.text();
        let records = Records::parse(&text);
        let now = SystemTime::now();
        Report::build(
            "audit.jsonl",
            verify(&text),
            &records,
            trail.finish(),
            period,
            now,
        )
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A moment between two records (their times are in microseconds).
pub(super) fn mark() -> SystemTime {
    std::thread::sleep(Duration::from_millis(5));
    let t = SystemTime::now();
    std::thread::sleep(Duration::from_millis(5));
    t
}

pub(super) fn root() -> Value {
    json!({"user": "root", "uid": 0, "pid": 4242})
}

/// One line of an event log.
pub(super) fn event(ts: SystemTime, uid: u32, cgroup: &str, verdict: &str, reason: &str) -> String {
    let ts = humantime::format_rfc3339_micros(ts).to_string();
    json!({"ts": ts, "uid": uid, "user": format!("u{uid}"), "cgroup": cgroup,
        "verdict": verdict, "reason": reason, "would_deny": false})
    .to_string()
}
