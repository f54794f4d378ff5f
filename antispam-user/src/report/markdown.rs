//! The report in Markdown: headings and tables, for people.

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

use super::{Chain, Entry, Offender, Offenders, Report, Seal, Violations};
use crate::audit::AuditKind;

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
pub(super) fn table(o: &mut String, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
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
        match &self.seal {
            Seal::NotChecked => {
                let _ = writeln!(o, "Seals **not checked**: give the verification key (`--key`) to check that no record was rewritten by someone who could recompute the hashes (root on the host).\n");
            }
            Seal::Verified {
                sealed_records,
                epochs,
                unsealed_before,
            } => {
                let before = if *unsealed_before > 0 {
                    format!(
                        " ({unsealed_before} earlier records were written before sealing began)"
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(o, "Seals **verified** with the verification key: {sealed_records} records in {epochs} epoch(s){before}.\n");
            }
            Seal::Broken {
                line,
                seq,
                epoch,
                reason,
            } => {
                let epoch = epoch.map_or(String::new(), |e| format!(", epoch {e}"));
                let _ = writeln!(o, "> **WARNING: the seals are BROKEN at line {line} (record {seq}{epoch}): {reason}.**\n> Records from there on cannot be trusted.\n");
            }
        }
        if self.checkpoints.is_empty() {
            let _ = writeln!(o, "Head **not compared** with a checkpoint kept off the host (`--expect-head SEQ:HASH` from the agent's `antispam-audit-checkpoint` lines): records cut from the end would not show.\n");
        }
        for c in &self.checkpoints {
            match &c.why {
                None => {
                    let _ = writeln!(o, "Checkpoint {}:`{}` **held**: the log was not cut or rewritten before it.\n", c.seq, c.hash);
                }
                Some(why) => {
                    let _ = writeln!(
                        o,
                        "> **WARNING: checkpoint {}:`{}` NOT HELD: {why}.**\n",
                        c.seq, c.hash
                    );
                }
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
                Some(e) if e.is(AuditKind::Unsuspend) => format!(
                    "unsuspended by {} at {}: {}",
                    cell(e.get("by")),
                    e.at,
                    cell(e.get("reason"))
                ),
                Some(e) if e.is(AuditKind::Suspend) => {
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
            let key = |v: &Value| match v {
                Value::Object(s) => format!(
                    "{} {}",
                    cell(s.get("principals").unwrap_or(&Value::Null)),
                    cell(s.get("fingerprint").unwrap_or(&Value::Null))
                ),
                _ => "unsigned".into(),
            };
            let requester_key = match g.get("requester_signer") {
                Value::Null => g
                    .requested
                    .as_ref()
                    .map_or(Value::Null, |e| e.get("signer").clone()),
                v => v.clone(),
            };
            vec![
                g.id.clone(),
                cell(g.get("target")),
                cell(g.get("requester")),
                key(&requester_key),
                cell(g.get("approver")),
                key(g.get("approver_signer")),
                cell(g.get("reason")),
                cell(g.get("evidence")),
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
                    "requester key",
                    "approver",
                    "approver key",
                    "reason",
                    "evidence",
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
                &[
                    ("id", "id"),
                    ("action", "action"),
                    ("by", "by"),
                    ("why", "why"),
                    ("key", "key_fingerprint"),
                ],
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
            self.paths_markdown(o);
            self.messages.markdown(o);
            self.denied.markdown(o, "Refused");
            if self.would_deny.total > 0 {
                self.would_deny
                    .markdown(o, "Would have been refused (monitor mode)");
            }
        }
    }
}

impl Violations {
    /// Every attempt in the period by mail path.
    fn paths_markdown(&self, o: &mut String) {
        let _ = writeln!(o, "### Mail by path\n");
        if self.by_path.is_empty() {
            let _ = writeln!(o, "No attempt to send mail was logged in the period.\n");
            return;
        }
        let rows = self.by_path.iter().map(|(path, c)| {
            vec![
                path.clone(),
                c.allowed.to_string(),
                c.denied.to_string(),
                c.would_deny.to_string(),
            ]
        });
        table(o, &["path", "allowed", "refused", "would refuse"], rows);
    }
}

impl Offenders {
    fn markdown(&self, o: &mut String, what: &str) {
        let _ = writeln!(
            o,
            "### {what}: {}, by {} in {}\n",
            count(self.total, "attempt"),
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
            let paths: Vec<String> = x.paths.iter().map(|(p, n)| format!("{p} ({n})")).collect();
            key.into_iter()
                .chain([
                    x.count.to_string(),
                    paths.join(", "),
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
            &["uid", "user", "count", "paths", "reasons", "first", "last"],
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
        table(
            o,
            &["cgroup", "count", "paths", "reasons", "first", "last"],
            rows,
        );
    }
}
