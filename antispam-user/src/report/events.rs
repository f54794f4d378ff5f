//! Attempts to hand mail on (connects, messages through sendmail, SMTP to the local MTA),
//! counted from the event logs (the connection trail): by mail path, and refusals by who.

use std::{collections::BTreeMap, io::BufRead, path::PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::{
    time::{stamp, time_of},
    NamedLogs, Period,
};

/// How many UIDs and cgroups the violation tables list; the totals count them all.
pub const TOP: usize = 50;

#[derive(Serialize, Default)]
pub struct Violations {
    /// Why refusals cannot be counted (None: they are, from `sources`).
    pub unavailable: Option<String>,
    /// What the counts may miss.
    pub notes: Vec<String>,
    pub sources: Vec<EventSource>,
    /// Every attempt in the period, by mail path (`direct`, `sendmail`, `local_smtp`; events
    /// of versions before paths are `direct`).
    pub by_path: BTreeMap<String, PathCounts>,
    /// Attempts refused (verdict "denied").
    pub denied: Offenders,
    /// Attempts monitor mode let through that enforce mode would have refused.
    pub would_deny: Offenders,
    /// Messages through the local MTA (the MTA policy service's records).
    pub messages: super::messages::Messages,
}

/// Attempts on one mail path.
#[derive(Serialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathCounts {
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
}

#[derive(Serialize, Default)]
pub struct EventSource {
    pub path: String,
    /// Why it could not be read, or was only partly read.
    pub error: Option<String>,
    pub events_in_period: u64,
    /// Lines that are not a JSON event with a time and a verdict.
    pub unreadable_lines: u64,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
}

#[derive(Serialize, Default)]
pub struct Offenders {
    pub total: u64,
    pub uids: usize,
    pub cgroups: usize,
    /// The `TOP` UIDs and the `TOP` cgroups with the most connects.
    pub by_uid: Vec<Offender>,
    pub by_cgroup: Vec<Offender>,
    #[serde(skip)]
    per_uid: BTreeMap<u32, Offender>,
    #[serde(skip)]
    per_cgroup: BTreeMap<String, Offender>,
}

/// A UID (with its user name) or a cgroup, and its connects.
#[derive(Serialize, Clone, Default)]
pub struct Offender {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub count: u64,
    pub reasons: BTreeMap<String, u64>,
    /// The same attempts by mail path.
    pub paths: BTreeMap<String, u64>,
    pub first: String,
    pub last: String,
}

/// The mail path of an event (`direct` for events written before paths existed).
fn path_of(e: &Value) -> &str {
    e["path"].as_str().unwrap_or("direct")
}

/// How many attempts a line stands for: 1, or a summary line's `count` (refusals past the
/// event log's rate bound, folded into one line).
fn count_of(e: &Value) -> u64 {
    e["count"].as_u64().unwrap_or(1).max(1)
}

impl Offender {
    fn add(&mut self, at: &str, reason: &str, path: &str, n: u64) {
        if self.count == 0 || at < self.first.as_str() {
            self.first = at.to_string();
        }
        if at > self.last.as_str() {
            self.last = at.to_string();
        }
        self.count += n;
        *self.reasons.entry(reason.to_string()).or_default() += n;
        *self.paths.entry(path.to_string()).or_default() += n;
    }
}

impl Offenders {
    fn add(&mut self, e: &Value, at: &str) {
        let reason = e["reason"].as_str().unwrap_or("-");
        let path = path_of(e);
        let n = count_of(e);
        self.total += n;
        let uid = e["uid"].as_u64().map(|u| u as u32).unwrap_or(u32::MAX);
        let o = self.per_uid.entry(uid).or_default();
        o.uid = Some(uid);
        o.user = e["user"].as_str().map(str::to_string).or(o.user.take());
        o.add(at, reason, path, n);
        let cgroup = e["cgroup"].as_str().unwrap_or("-").to_string();
        let o = self.per_cgroup.entry(cgroup.clone()).or_default();
        o.cgroup = Some(cgroup);
        o.add(at, reason, path, n);
    }

    fn finish(&mut self) {
        self.uids = self.per_uid.len();
        self.cgroups = self.per_cgroup.len();
        self.by_uid = top(self.per_uid.values());
        self.by_cgroup = top(self.per_cgroup.values());
    }
}

/// The `TOP` with the most connects; ties keep their (key) order.
fn top<'a>(all: impl Iterator<Item = &'a Offender>) -> Vec<Offender> {
    let mut all: Vec<&Offender> = all.collect();
    all.sort_by_key(|o| std::cmp::Reverse(o.count));
    all.into_iter().take(TOP).cloned().collect()
}

/// Counts refusals in the event logs, one after the other.
pub struct Trail {
    period: Period,
    /// Logs that should hold events from the start of the period on.
    expect_from_start: Vec<PathBuf>,
    v: Violations,
}

impl Trail {
    pub fn new(period: Period) -> Trail {
        let (expect_from_start, v) = Default::default();
        Trail {
            period,
            expect_from_start,
            v,
        }
    }

    /// A trail over the event logs the audit log names (the caller reads `named.files` into it),
    /// saying what it will miss.
    pub fn from_audit(period: Period, named: &NamedLogs) -> Trail {
        let mut t = Trail::new(period);
        t.expect_from_start = named.before_period.clone();
        let stdout = named.to_stdout.iter().map(|at| {
            format!("the agent started at {at} wrote its events to standard output (it ran without --log)")
        });
        let unrecorded = named.unrecorded.iter().map(|at| {
            format!("the agent started at {at} did not record where it wrote its events (a version older than `event_log` in agent_start)")
        });
        let missed: Vec<String> = stdout.chain(unrecorded).collect();
        let pass = "pass --events FILE (under systemd, e.g. from `journalctl -u antispam -o cat`)";
        if named.files.is_empty() {
            t.v.unavailable = Some(match missed.first() {
                Some(m) => format!("{m}, so there is no file to count refusals in; {pass}"),
                None => {
                    format!("the audit log has no agent_start up to the end of the period; {pass}")
                }
            });
        } else {
            t.v.notes = missed
                .iter()
                .map(|m| format!("{m}: its refusals are not counted; {pass}"))
                .collect();
        }
        t
    }

    /// Counts the events of one log (JSON lines).
    pub fn read(&mut self, path: &str, log: impl BufRead) {
        let mut src = EventSource {
            path: path.to_string(),
            ..Default::default()
        };
        for line in log.split(b'\n') {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    src.error = Some(format!("reading stopped: {e}"));
                    break;
                }
            };
            let line = String::from_utf8_lossy(&line);
            if !line.trim().is_empty() {
                self.line(&mut src, &line);
            }
        }
        let since = stamp(self.period.since);
        let late = src.first_event.as_ref().filter(|f| **f > since);
        if let Some(first) =
            late.filter(|_| self.expect_from_start.iter().any(|p| p.as_os_str() == path))
        {
            self.v.notes.push(format!("{path} begins at {first}, but the agent was writing it before the period: earlier events may be in rotated files (pass them with --events)"));
        }
        self.v.sources.push(src);
    }

    fn line(&mut self, src: &mut EventSource, line: &str) {
        let event = serde_json::from_str::<Value>(line).ok();
        let event = event.filter(|e| e["verdict"].is_string());
        let Some((ts, e)) = event.and_then(|e| Some((time_of(&e["ts"])?, e))) else {
            src.unreadable_lines += 1;
            return;
        };
        let at = stamp(ts);
        if src.first_event.as_ref().is_none_or(|f| at < *f) {
            src.first_event = Some(at.clone());
        }
        if src.last_event.as_ref().is_none_or(|l| at > *l) {
            src.last_event = Some(at.clone());
        }
        if !self.period.contains(ts) {
            return;
        }
        if super::messages::Messages::is_record(&e) {
            src.events_in_period += 1;
            self.v.messages.add(&e);
            return;
        }
        let n = count_of(&e);
        src.events_in_period += n;
        let counts = self.v.by_path.entry(path_of(&e).to_string()).or_default();
        if e["verdict"] == "denied" {
            counts.denied += n;
            self.v.denied.add(&e, &at);
        } else if e["would_deny"] == true {
            counts.would_deny += n;
            self.v.would_deny.add(&e, &at);
        } else {
            counts.allowed += n;
        }
    }

    /// A named log that cannot be opened.
    pub fn unreadable(&mut self, path: &str, why: String) {
        self.v.sources.push(EventSource {
            path: path.to_string(),
            error: Some(why),
            ..Default::default()
        });
    }

    pub fn finish(mut self) -> Violations {
        if self.v.unavailable.is_none() && self.v.sources.iter().all(|s| s.error.is_some()) {
            self.v.unavailable = Some("none of the event logs could be read".into());
        }
        self.v.denied.finish();
        self.v.would_deny.finish();
        self.v.messages.finish();
        self.v
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn attempts_are_counted_by_mail_path() {
        use super::*;
        let t = humantime::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        let period = Period {
            since: t,
            until: t + Duration::from_secs(3600),
        };
        let at = humantime::format_rfc3339_micros(t + Duration::from_secs(1)).to_string();
        let line = |path: Option<&str>, verdict: &str| {
            let mut e = serde_json::json!({"ts": at, "uid": 1000, "cgroup": "/web",
                "verdict": verdict, "reason": "rate_limit_uid", "would_deny": false});
            if let Some(p) = path {
                e["path"] = p.into();
            }
            e.to_string()
        };
        let text = [
            line(Some("sendmail"), "allowed"),
            line(Some("sendmail"), "denied"),
            line(Some("sendmail"), "denied"),
            line(Some("local_smtp"), "allowed"),
            line(None, "denied"),
        ]
        .join("\n");
        let mut trail = Trail::new(period);
        trail.read("events.jsonl", text.as_bytes());
        let v = trail.finish();
        let c = |p: &str| v.by_path.get(p).copied().unwrap_or_default();
        assert_eq!((c("sendmail").allowed, c("sendmail").denied), (1, 2));
        assert_eq!((c("local_smtp").allowed, c("direct").denied), (1, 1));
        let o = &v.denied.by_uid[0];
        assert_eq!(o.paths.get("sendmail"), Some(&2));
        assert_eq!(
            o.paths.get("direct"),
            Some(&1),
            "events without a path are direct"
        );
    }

    use serde_json::json;

    use super::*;
    use crate::report::testing::{event, Log};

    /// The hour from 2026-11-23T10:00:00Z.
    fn an_hour() -> Period {
        let since = humantime::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        Period {
            since,
            until: since + Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_summary_line_counts_the_refusals_it_stands_for() {
        let period = an_hour();
        let at = period.since + Duration::from_secs(60);
        let mut summary: Value =
            serde_json::from_str(&event(at, 1000, "/web", "denied", "rate_limit_uid")).unwrap();
        summary["count"] = json!(4990);
        let lines = [
            event(at, 1000, "/web", "denied", "rate_limit_uid"),
            summary.to_string(),
        ];
        let mut trail = Trail::new(period);
        trail.read("events.jsonl", lines.join("\n").as_bytes());
        let v = trail.finish();
        assert_eq!(v.denied.total, 4991);
        assert_eq!(v.denied.by_uid[0].count, 4991);
        assert_eq!(v.by_path["direct"].denied, 4991);
        assert_eq!(v.sources[0].events_in_period, 4991);
    }

    #[test]
    fn refusals_are_counted_per_uid_and_cgroup_within_the_period() {
        let period = an_hour();
        let since = period.since;
        let at = |m: u64| since + Duration::from_secs(m * 60);
        let mut monitor: Value =
            serde_json::from_str(&event(at(4), 1002, "/x", "allowed", "rate_limit_uid")).unwrap();
        monitor["would_deny"] = json!(true);
        let lines = [
            event(at(1), 1000, "/web", "denied", "rate_limit_uid"),
            event(at(5), 1000, "/web", "denied", "suspended"),
            event(at(3), 1000, "/web", "denied", "rate_limit_uid"),
            event(at(2), 1001, "/web", "denied", "kill_switch"),
            event(at(2), 1001, "/web", "allowed", "within_limit"),
            event(at(61), 1000, "/web", "denied", "rate_limit_uid"),
            "not json at all".into(),
            r#"{"uid": 5, "verdict": "denied"}"#.into(),
            r#"{"ts": "2026-11-23T10:10:00Z", "event": "agent_start"}"#.into(),
            monitor.to_string(),
        ];
        let mut trail = Trail::new(period);
        trail.read("events.jsonl", lines.join("\n").as_bytes());
        let v = trail.finish();
        assert!(v.unavailable.is_none());
        let src = &v.sources[0];
        assert_eq!((src.events_in_period, src.unreadable_lines), (6, 3));
        assert_eq!((v.denied.total, v.denied.uids, v.denied.cgroups), (4, 2, 1));
        let top = &v.denied.by_uid[0];
        assert_eq!(
            (top.uid, top.user.as_deref(), top.count),
            (Some(1000), Some("u1000"), 3)
        );
        let reasons = BTreeMap::from([("rate_limit_uid".into(), 2), ("suspended".into(), 1)]);
        assert_eq!(top.reasons, reasons);
        assert_eq!(
            (top.first.as_str(), top.last.as_str()),
            ("2026-11-23T10:01:00Z", "2026-11-23T10:05:00Z")
        );
        assert_eq!(v.denied.by_cgroup[0].count, 4);
        assert_eq!(
            (v.would_deny.total, v.would_deny.by_uid[0].uid),
            (1, Some(1002))
        );

        // Only the top 50 are listed; the totals count everyone.
        let many: Vec<String> = (0..60)
            .map(|u| event(at(1), u, &format!("/c{u}"), "denied", "rate_limit_uid"))
            .collect();
        let mut trail = Trail::new(period);
        trail.read("many.jsonl", many.join("\n").as_bytes());
        let log = Log::new("violations");
        let r = log.report(period, trail);
        let d = &r.violations.denied;
        assert_eq!((d.uids, d.by_uid.len(), d.by_cgroup.len()), (60, TOP, TOP));
        let md = r.markdown();
        assert!(
            md.contains("### Refused: 60 attempts, by 60 UIDs in 60 cgroups"),
            "{md}"
        );
        assert!(md.contains("By UID (top 50 of 60):"), "{md}");
        assert!(
            md.contains("| 0 | u0 | 1 | direct (1) | rate_limit_uid (1) | 2026-11-23T10:01:00Z |"),
            "{md}"
        );
    }
}
