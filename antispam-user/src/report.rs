//! `antispam report`: the evidence an auditor asks for over a period. What operators and the
//! agent did comes from the audit log, with the verification of its hash chain; who was refused
//! comes from the event log (the connection trail). Everything here is pure: the CLI
//! (cli/report.rs) reads the files and prints what `Report` renders.
//!
//! Audit records are shown as the agent wrote them (`Entry`: seq, time, event, details), so the
//! JSON report keeps the audit log's field names. The whole log is read, not only the period, so
//! that what was under way when the period began (a suspension, a break-glass grant, the policy
//! in force) is shown with its start.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::BufRead,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use serde_json::Value;

use crate::audit::{Broken, Verified};

/// How many UIDs and cgroups the violation tables list; the totals count them all.
pub const TOP: usize = 50;

#[derive(Debug, Clone, Copy)]
pub struct Period {
    pub since: SystemTime,
    pub until: SystemTime,
}

impl Period {
    fn contains(&self, t: SystemTime) -> bool {
        self.since <= t && t <= self.until
    }
}

/// Reads `--since`/`--until`: an RFC 3339 UTC time, a date (midnight UTC), or a duration back
/// from `now` (`24h`, `7d`).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")) {
        return Ok(t);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return now
            .checked_sub(d)
            .ok_or(format!("{s} before now is out of range"));
    }
    Err(format!("{s:?} is neither a UTC time (2026-11-23T10:00:00Z), a date (2026-11-23) nor a duration back from now (24h, 7d)"))
}

/// Times in the report: RFC 3339 to the second (so they also compare as strings).
fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn time_of(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.as_str()?).ok()
}

/// One audit record, as evidence.
#[derive(Serialize, Clone)]
pub struct Entry {
    pub seq: Option<u64>,
    pub at: String,
    pub event: String,
    pub details: Value,
    #[serde(skip)]
    ts: SystemTime,
}

impl Entry {
    fn get(&self, key: &str) -> &Value {
        &self.details[key]
    }
}

/// The audit log's dated records, in order. Lines that are not records are left to the chain
/// check, which names the first.
pub struct Records(Vec<Entry>);

impl Records {
    pub fn parse(text: &str) -> Records {
        let entry = |v: Value| {
            let ts = time_of(&v["ts"])?;
            Some(Entry {
                seq: v["seq"].as_u64(),
                at: stamp(ts),
                event: v["event"].as_str().unwrap_or("-").to_string(),
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
            .filter(|r| r.event == "agent_start" && r.ts <= period.until)
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

#[derive(Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub generated_at: String,
    pub audit_log: String,
    pub chain: Chain,
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

#[derive(Serialize, Default)]
pub struct Policy {
    /// The agent_start or policy_reload that set the policy in force when the period began.
    pub in_force_at_start: Option<Entry>,
    /// Whether an agent was running then (if not, `in_force_at_start` is the last it enforced).
    pub agent_running_at_start: bool,
    pub reloads: Vec<Entry>,
    pub refused: Vec<Entry>,
}

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
    fn get(&self, key: &str) -> &Value {
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
            match e.event.as_str() {
                "agent_start" | "agent_stop" => {
                    if let (Some(before), true, "agent_start") = (running, inside, e.event.as_str())
                    {
                        r.notes.push(format!("the agent started at {} recorded no stop before the start at {} (killed, crashed or power lost?)", before.at, e.at));
                    }
                    if inside {
                        r.agent.push(e.clone());
                    }
                    running = (e.event == "agent_start").then_some(e);
                    if e.ts < period.since {
                        r.policy.agent_running_at_start = running.is_some();
                        if running.is_some() {
                            r.policy.in_force_at_start = Some(e.clone());
                        }
                    }
                }
                "policy_reload" if e.ts < period.since => {
                    r.policy.in_force_at_start = Some(e.clone())
                }
                "suspend" | "suspension_restored" => r.suspension_began(e),
                "unsuspend" | "suspension_expired" => r.suspension_ended(e),
                "break_glass_refused" if inside => r.break_glass.refused.push(e.clone()),
                ev if ev.starts_with("break_glass_") => follow_grant(&mut grants, e),
                _ if !inside => {}
                "policy_reload" => r.policy.reloads.push(e.clone()),
                "policy_reload_refused" => r.policy.refused.push(e.clone()),
                "kill_switch" => r.kill_switch.push(e.clone()),
                "control_denied" => r.control_refusals.push(e.clone()),
                other => *r.other_events.entry(other.to_string()).or_default() += 1,
            }
        }
        r.suspensions.retain_mut(|s| s.clip(period));
        r.break_glass.grants = grants
            .into_values()
            .filter_map(|g| g.clip(period))
            .collect();
        r
    }

    fn suspension_began(&mut self, e: &Entry) {
        let target = e.get("target");
        if let Some(open) = self.open_suspension(target) {
            if e.event == "suspension_restored" {
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

    fn suspension_ended(&mut self, e: &Entry) {
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
    fn clip(&mut self, period: Period) -> bool {
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
        self.status = match self.ended.as_ref().map(|e| e.event.as_str()) {
            Some("unsuspend") => "unsuspended",
            Some("suspend") => "replaced",
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

/// Adds a break_glass_* record to the grant with its id.
fn follow_grant(grants: &mut BTreeMap<String, Grant>, e: &Entry) {
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
    let (slot, status) = match e.event.as_str() {
        "break_glass_requested" => (&mut g.requested, "pending"),
        "break_glass_approved" => (&mut g.approved, "active"),
        "break_glass_revoked" => (&mut g.ended, "revoked"),
        "break_glass_expired" => (&mut g.ended, "expired"),
        "break_glass_request_lapsed" => (&mut g.ended, "lapsed"),
        _ => return, // break_glass_restored and the like: the grant goes on
    };
    *slot = Some(e.clone());
    g.status = status;
}

impl Grant {
    /// Keeps it if it overlaps the period, as seen at the period's end.
    fn clip(mut self, period: Period) -> Option<Grant> {
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

// ---- Violations, from the event log ----

#[derive(Serialize, Default)]
pub struct Violations {
    /// Why refusals cannot be counted (None: they are, from `sources`).
    pub unavailable: Option<String>,
    /// What the counts may miss.
    pub notes: Vec<String>,
    pub sources: Vec<EventSource>,
    /// Connects refused (verdict "denied").
    pub denied: Offenders,
    /// Connects monitor mode let through that enforce mode would have refused.
    pub would_deny: Offenders,
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
    pub first: String,
    pub last: String,
}

impl Offender {
    fn add(&mut self, at: &str, reason: &str) {
        if self.count == 0 || at < self.first.as_str() {
            self.first = at.to_string();
        }
        if at > self.last.as_str() {
            self.last = at.to_string();
        }
        self.count += 1;
        *self.reasons.entry(reason.to_string()).or_default() += 1;
    }
}

impl Offenders {
    fn add(&mut self, e: &Value, at: &str) {
        let reason = e["reason"].as_str().unwrap_or("-");
        self.total += 1;
        let uid = e["uid"].as_u64().map(|u| u as u32).unwrap_or(u32::MAX);
        let o = self.per_uid.entry(uid).or_default();
        o.uid = Some(uid);
        o.user = e["user"].as_str().map(str::to_string).or(o.user.take());
        o.add(at, reason);
        let cgroup = e["cgroup"].as_str().unwrap_or("-").to_string();
        let o = self.per_cgroup.entry(cgroup.clone()).or_default();
        o.cgroup = Some(cgroup);
        o.add(at, reason);
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
        src.events_in_period += 1;
        if e["verdict"] == "denied" {
            self.v.denied.add(&e, &at);
        } else if e["would_deny"] == true {
            self.v.would_deny.add(&e, &at);
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
        self.v
    }
}

// ---- Markdown ----

/// A JSON value in a table cell: a person ({"user", "uid", "pid"}) as "root (uid 0, pid 7)",
/// a target ({"uid": N}) as "uid N", a list joined with "; ", nothing as "-".
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => (if *b { "yes" } else { "no" }).into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join("; "),
        Value::Object(o) if o.contains_key("user") => {
            let ids: Vec<String> = ["uid", "pid"]
                .iter()
                .filter_map(|k| {
                    o.get(*k)
                        .filter(|v| !v.is_null())
                        .map(|v| format!("{k} {v}"))
                })
                .collect();
            let user = cell(&o["user"]);
            if ids.is_empty() {
                user
            } else {
                format!("{user} ({})", ids.join(", "))
            }
        }
        Value::Object(o) if o.len() == 1 => {
            o.iter().map(|(k, v)| format!("{k} {}", cell(v))).collect()
        }
        other => other.to_string(),
    }
}

/// "1 cgroup", "2 cgroups".
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn duration(secs: Option<u64>) -> String {
    secs.map_or("-".into(), |s| {
        humantime::format_duration(Duration::from_secs(s)).to_string()
    })
}

/// A Markdown table; cells are escaped.
fn table(o: &mut String, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(
        o,
        "| {} |\n|{}",
        head.join(" | "),
        " --- |".repeat(head.len())
    );
    for row in rows {
        let row: Vec<String> = row
            .iter()
            .map(|c| c.replace('|', "\\|").replace('\n', " "))
            .collect();
        let _ = writeln!(o, "| {} |", row.join(" | "));
    }
    o.push('\n');
}

/// A table of audit records: (heading, details field) columns after their time; "" is the
/// event name.
fn entries(o: &mut String, none: &str, list: &[Entry], cols: &[(&str, &str)]) {
    if list.is_empty() {
        let _ = writeln!(o, "{none}\n");
        return;
    }
    let head: Vec<&str> = std::iter::once("at")
        .chain(cols.iter().map(|c| c.0))
        .collect();
    let rows = list.iter().map(|e| {
        let fields = cols.iter().map(|(_, k)| {
            if k.is_empty() {
                e.event.clone()
            } else {
                cell(e.get(k))
            }
        });
        std::iter::once(e.at.clone()).chain(fields).collect()
    });
    table(o, &head, rows);
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# antispam report: {} to {}\n", self.since, self.until);
        let _ = writeln!(
            o,
            "Generated {} from the audit log `{}`.\n",
            self.generated_at, self.audit_log
        );
        let _ = writeln!(o, "## Audit log integrity\n");
        match &self.chain {
            Chain::Verified { records, head } => {
                let _ = writeln!(o, "Hash chain **verified**: {records} records, head `{head}`. Records removed from the end leave a valid shorter chain: compare the head with a copy kept elsewhere.\n");
            }
            Chain::Broken { line, reason } => {
                let _ = writeln!(o, "> **WARNING: the hash chain is BROKEN at line {line}: {reason}.**\n> The audit log was altered. This report is built from every readable record, including those from line {line} on, which cannot be trusted.\n");
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "- Note: {n}");
        }
        let _ = writeln!(o, "\n## Agent starts and stops\n");
        let cols = [
            ("event", ""),
            ("pid", "pid"),
            ("version", "version"),
            ("mode", "mode"),
            ("policy sha256", "policy_sha256"),
            ("event log", "event_log"),
            ("stop reason", "reason"),
        ];
        entries(
            &mut o,
            "The agent was neither started nor stopped in the period.",
            &self.agent,
            &cols,
        );
        self.policy_md(&mut o);
        self.violations.markdown(&mut o);
        self.suspensions_md(&mut o);
        let _ = writeln!(o, "## Kill switch\n");
        let cols = [
            ("on", "on"),
            ("by", "by"),
            ("reason", "reason"),
            ("had been on since", "was_on_since"),
            ("set by", "was_set_by"),
        ];
        entries(
            &mut o,
            "The kill switch was not changed in the period.",
            &self.kill_switch,
            &cols,
        );
        self.break_glass_md(&mut o);
        let _ = writeln!(o, "## Control-socket refusals\n");
        let none = "No one was refused on the control socket in the period.";
        entries(
            &mut o,
            none,
            &self.control_refusals,
            &[("who", "by"), ("why", "why")],
        );
        if !self.other_events.is_empty() {
            let _ = writeln!(o, "## Other audit records\n");
            table(
                &mut o,
                &["event", "count"],
                self.other_events
                    .iter()
                    .map(|(e, n)| vec![e.clone(), n.to_string()]),
            );
        }
        o
    }

    fn policy_md(&self, o: &mut String) {
        let p = &self.policy;
        let _ = writeln!(o, "## Policy changes\n");
        let running = if p.agent_running_at_start {
            "In force when the period began"
        } else {
            "No agent was running when the period began; the last policy enforced"
        };
        let _ = match &p.in_force_at_start {
            Some(e) => writeln!(
                o,
                "{running}: `{}`, sha256 `{}`, generation {} ({} at {}).\n",
                cell(e.get("policy")),
                cell(e.get("policy_sha256")),
                cell(e.get("generation")),
                e.event,
                e.at
            ),
            None => writeln!(o, "No policy was loaded before the period began.\n"),
        };
        let cols = [
            ("policy", "policy"),
            ("sha256", "policy_sha256"),
            ("previous sha256", "previous_sha256"),
            ("mode", "mode"),
            ("generation", "generation"),
        ];
        let _ = writeln!(o, "### Reloads applied\n");
        entries(o, "None in the period.", &p.reloads, &cols);
        let cols = [
            ("policy", "policy"),
            ("refused sha256", "policy_sha256"),
            ("sha256 kept in force", "in_force_sha256"),
            ("problems", "problems"),
        ];
        let _ = writeln!(o, "### Reloads refused (the policy in force stayed)\n");
        entries(o, "None in the period.", &p.refused, &cols);
    }

    fn suspensions_md(&self, o: &mut String) {
        let _ = writeln!(o, "## Suspensions\n");
        if self.suspensions.is_empty() {
            let _ = writeln!(o, "No suspension was in force in the period.\n");
            return;
        }
        let rows = self.suspensions.iter().map(|s| {
            let began = |k| s.began.as_ref().map_or(&Value::Null, |b| b.get(k));
            let ended = |k| s.ended.as_ref().map_or(&Value::Null, |e| e.get(k));
            let or = |a: &Value, b: &Value| cell(if a.is_null() { b } else { a });
            let how = match &s.ended {
                Some(e) if e.event == "unsuspend" => format!(
                    "unsuspended by {} at {}: {}",
                    cell(e.get("by")),
                    e.at,
                    cell(e.get("reason"))
                ),
                Some(e) if e.event == "suspend" => {
                    format!("replaced by a new suspension at {}", e.at)
                }
                Some(e) => match cell(e.get("reason")).as_str() {
                    "expired" | "-" => format!("expired at {}", e.at),
                    why => format!("expired at {} ({why})", e.at),
                },
                None => "still active at the end of the period".into(),
            };
            let from = s
                .began
                .as_ref()
                .map_or_else(|| cell(ended("suspended_since")), |b| b.at.clone());
            let until = if began("until").is_null() {
                "until lifted".into()
            } else {
                cell(began("until"))
            };
            vec![
                cell(&s.target),
                cell(began("trigger")),
                or(began("reason"), ended("suspension_reason")),
                or(began("by"), ended("suspended_by")),
                from,
                until,
                duration(s.held_secs),
                how,
            ]
        });
        table(
            o,
            &[
                "target",
                "trigger",
                "reason",
                "by",
                "from",
                "planned end",
                "held",
                "ended",
            ],
            rows,
        );
    }

    fn break_glass_md(&self, o: &mut String) {
        let b = &self.break_glass;
        let _ = writeln!(o, "## Break glass\n");
        if b.grants.is_empty() {
            let _ = writeln!(
                o,
                "No break-glass grant was requested or in force in the period.\n"
            );
        }
        let rows = b.grants.iter().map(|g| {
            let at = |e: &Option<Entry>| e.as_ref().map_or("-".into(), |e| e.at.clone());
            let how = match (&g.ended, g.status) {
                (Some(e), "revoked") => format!(
                    "revoked by {} at {}: {}",
                    cell(e.get("by")),
                    e.at,
                    cell(e.get("reason"))
                ),
                (Some(e), "lapsed") => format!("lapsed unapproved at {}", e.at),
                (Some(e), _) => format!("expired at {}", e.at),
                (None, "pending") => "awaiting approval at the end of the period".into(),
                (None, _) => "still in force at the end of the period".into(),
            };
            vec![
                g.id.clone(),
                cell(g.get("target")),
                cell(g.get("requester")),
                cell(g.get("approver")),
                cell(g.get("reason")),
                duration(g.get("ttl_secs").as_u64()),
                at(&g.requested),
                at(&g.approved),
                cell(g.get("expires_at")),
                how,
            ]
        });
        if !b.grants.is_empty() {
            table(
                o,
                &[
                    "id",
                    "target",
                    "requester",
                    "approver",
                    "reason",
                    "TTL",
                    "requested",
                    "granted",
                    "expires",
                    "ended",
                ],
                rows,
            );
        }
        if !b.refused.is_empty() {
            let _ = writeln!(o, "Refused break-glass attempts:\n");
            entries(
                o,
                "",
                &b.refused,
                &[("id", "id"), ("by", "by"), ("why", "why")],
            );
        }
    }
}

impl Violations {
    fn markdown(&self, o: &mut String) {
        let _ = writeln!(o, "## Refused SMTP connections\n");
        if let Some(why) = &self.unavailable {
            let _ = writeln!(o, "**Not available:** {why}.\n");
        }
        for s in &self.sources {
            let _ = match &s.error {
                Some(e) => writeln!(o, "- Event log `{}`: **not read**: {e}", s.path),
                None => writeln!(
                    o,
                    "- Event log `{}`: {} events in the period (the file spans {} to {})",
                    s.path,
                    s.events_in_period,
                    s.first_event.as_deref().unwrap_or("-"),
                    s.last_event.as_deref().unwrap_or("-")
                ),
            };
            if s.unreadable_lines > 0 {
                let skipped = count(s.unreadable_lines, "line");
                let _ = writeln!(o, "  - {skipped} skipped: not JSON events");
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "- Note: {n}");
        }
        o.push('\n');
        if self.unavailable.is_none() {
            self.denied.markdown(o, "Refused");
            if self.would_deny.total > 0 {
                self.would_deny
                    .markdown(o, "Would have been refused (monitor mode)");
            }
        }
    }
}

impl Offenders {
    fn markdown(&self, o: &mut String, what: &str) {
        let _ = writeln!(
            o,
            "### {what}: {}, by {} in {}\n",
            count(self.total, "connect"),
            count(self.uids as u64, "UID"),
            count(self.cgroups as u64, "cgroup")
        );
        if self.total == 0 {
            return;
        }
        let row = |key: Vec<String>, x: &Offender| {
            let reasons: Vec<String> = x
                .reasons
                .iter()
                .map(|(r, n)| format!("{r} ({n})"))
                .collect();
            key.into_iter()
                .chain([
                    x.count.to_string(),
                    reasons.join(", "),
                    x.first.clone(),
                    x.last.clone(),
                ])
                .collect()
        };
        let shown = |n: usize, all: usize| {
            if n < all {
                format!(" (top {n} of {all})")
            } else {
                String::new()
            }
        };
        let _ = writeln!(o, "By UID{}:\n", shown(self.by_uid.len(), self.uids));
        let rows = self.by_uid.iter().map(|x| {
            row(
                vec![
                    x.uid.map_or("-".into(), |u| u.to_string()),
                    x.user.clone().unwrap_or("-".into()),
                ],
                x,
            )
        });
        table(
            o,
            &["uid", "user", "count", "reasons", "first", "last"],
            rows,
        );
        let _ = writeln!(
            o,
            "By cgroup{}:\n",
            shown(self.by_cgroup.len(), self.cgroups)
        );
        let rows = self
            .by_cgroup
            .iter()
            .map(|x| row(vec![format!("`{}`", x.cgroup.as_deref().unwrap_or("-"))], x));
        table(o, &["cgroup", "count", "reasons", "first", "last"], rows);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::{verify, AuditLog};

    /// An audit log written by the agent's own writer (so the chain is real), in a directory of
    /// its own.
    struct Log {
        dir: PathBuf,
        log: AuditLog,
    }

    impl Log {
        fn new(name: &str) -> Log {
            let dir =
                std::env::temp_dir().join(format!("antispam-report-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let log = AuditLog::open(&dir.join("audit.jsonl")).unwrap();
            Log { dir, log }
        }

        fn add(&mut self, event: &str, details: Value) -> &mut Log {
            self.log.append(event, details).unwrap();
            self
        }

        fn text(&self) -> String {
            std::fs::read_to_string(self.log.path()).unwrap()
        }

        fn report(&self, period: Period, trail: Trail) -> Report {
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
    fn mark() -> SystemTime {
        std::thread::sleep(Duration::from_millis(5));
        let t = SystemTime::now();
        std::thread::sleep(Duration::from_millis(5));
        t
    }

    fn root() -> Value {
        json!({"user": "root", "uid": 0, "pid": 4242})
    }

    #[test]
    fn times_are_read_in_three_forms() {
        let now = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let t = |s| stamp(parse_time(s, now).unwrap());
        assert_eq!(t("2026-11-23T10:00:00Z"), "2026-11-23T10:00:00Z");
        assert_eq!(t("2026-11-23"), "2026-11-23T00:00:00Z");
        assert_eq!(t("24h"), "2026-11-22T12:00:00Z");
        assert_eq!(t("7d"), "2026-11-16T12:00:00Z");
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .contains("neither"));
    }

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

    fn event(ts: SystemTime, uid: u32, cgroup: &str, verdict: &str, reason: &str) -> String {
        let ts = humantime::format_rfc3339_micros(ts).to_string();
        json!({"ts": ts, "uid": uid, "user": format!("u{uid}"), "cgroup": cgroup,
            "verdict": verdict, "reason": reason, "would_deny": false})
        .to_string()
    }

    #[test]
    fn refusals_are_counted_per_uid_and_cgroup_within_the_period() {
        let since = humantime::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        let period = Period {
            since,
            until: since + Duration::from_secs(3600),
        };
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
            md.contains("### Refused: 60 connects, by 60 UIDs in 60 cgroups"),
            "{md}"
        );
        assert!(md.contains("By UID (top 50 of 60):"), "{md}");
        assert!(
            md.contains("| 0 | u0 | 1 | rate_limit_uid (1) | 2026-11-23T10:01:00Z |"),
            "{md}"
        );
    }

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
            "| bg-2 | uid 2000 | alice (uid 1000) | bob (uid 1001, pid 77) | payroll run | 1h |";
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
