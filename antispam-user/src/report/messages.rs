//! Messages through the local MTA, from the MTA policy service's records in the event logs
//! (`"event": "message"` and `"event": "recipient"`): by path, and per UID, cgroup and SASL
//! user, accepted and refused.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;
use serde_json::Value;

use super::events::TOP;

/// Messages and recipients on one path, or of one key.
#[derive(Serialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Messages accepted, refused, and (monitor mode) that would have been refused.
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
    /// Recipients of the accepted messages.
    pub recipients: u64,
    /// Recipients refused (with their messages, or one by one).
    pub recipients_denied: u64,
}

/// A key's messages.
#[derive(Serialize, Default, Clone, Debug)]
pub struct Sender {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// Accepted messages and their recipients (the budgets' units).
    pub messages: u64,
    pub recipients: u64,
    pub refused_messages: u64,
    pub refused_recipients: u64,
    pub paths: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
pub struct Messages {
    /// Message records in the period.
    pub records: u64,
    pub by_path: BTreeMap<String, Counts>,
    /// The `TOP` keys with the most accepted messages, of each kind; the counts of keys are
    /// over all of them.
    pub by_uid: Vec<Sender>,
    pub by_cgroup: Vec<Sender>,
    pub by_sasl_user: Vec<Sender>,
    pub uids: usize,
    pub cgroups: usize,
    pub sasl_users: usize,
    #[serde(skip)]
    per_uid: BTreeMap<u32, Sender>,
    #[serde(skip)]
    per_cgroup: BTreeMap<String, Sender>,
    #[serde(skip)]
    per_sasl: BTreeMap<String, Sender>,
}

impl Sender {
    fn add(&mut self, path: &str, whole: bool, verdict: &str, recipients: u64) {
        match (whole, verdict) {
            (true, "allowed") => {
                self.messages += 1;
                self.recipients += recipients;
                *self.paths.entry(path.to_string()).or_default() += 1;
            }
            (true, "denied") => {
                self.refused_messages += 1;
                self.refused_recipients += recipients;
            }
            (false, "denied") => self.refused_recipients += recipients,
            _ => {}
        }
    }
}

impl Messages {
    /// Is this line one of the policy service's records?
    pub fn is_record(e: &Value) -> bool {
        matches!(e["event"].as_str(), Some("message" | "recipient"))
    }

    /// Counts one record of the period.
    pub fn add(&mut self, e: &Value) {
        let whole = e["event"] == "message";
        let verdict = e["verdict"].as_str().unwrap_or("-");
        let path = e["path"].as_str().unwrap_or("-").to_string();
        let n = e["recipients"].as_u64().unwrap_or(0);
        self.records += 1;
        let c = self.by_path.entry(path.clone()).or_default();
        match (whole, verdict) {
            (true, "allowed") => {
                c.allowed += 1;
                c.recipients += n;
            }
            (true, "denied") => {
                c.denied += 1;
                c.recipients_denied += n;
            }
            (true, "would_deny") => c.would_deny += 1,
            (false, "denied") => c.recipients_denied += n,
            _ => {}
        }
        if let Some(uid) = e["uid"].as_u64().and_then(|u| u32::try_from(u).ok()) {
            let s = self.per_uid.entry(uid).or_default();
            s.uid = Some(uid);
            s.user = e["user"].as_str().map(str::to_string).or(s.user.take());
            s.add(&path, whole, verdict, n);
        }
        if let Some(cg) = e["cgroup"].as_str() {
            let s = self.per_cgroup.entry(cg.to_string()).or_default();
            s.cgroup = Some(cg.to_string());
            s.add(&path, whole, verdict, n);
        }
        if let Some(name) = e["sasl_username"].as_str() {
            let s = self.per_sasl.entry(name.to_string()).or_default();
            s.sasl_username = Some(name.to_string());
            s.add(&path, whole, verdict, n);
        }
    }

    pub fn finish(&mut self) {
        fn top<'a>(all: impl Iterator<Item = &'a Sender>) -> Vec<Sender> {
            let mut all: Vec<&Sender> = all.collect();
            all.sort_by_key(|s| std::cmp::Reverse((s.messages, s.refused_messages)));
            all.into_iter().take(TOP).cloned().collect()
        }
        self.uids = self.per_uid.len();
        self.cgroups = self.per_cgroup.len();
        self.sasl_users = self.per_sasl.len();
        self.by_uid = top(self.per_uid.values());
        self.by_cgroup = top(self.per_cgroup.values());
        self.by_sasl_user = top(self.per_sasl.values());
    }

    pub fn markdown(&self, o: &mut String) {
        let _ = writeln!(o, "### Messages through the local MTA\n");
        if self.records == 0 {
            let _ = writeln!(
                o,
                "No message was recorded by the MTA policy service in the period.\n"
            );
            return;
        }
        let rows = self.by_path.iter().map(|(p, c)| {
            vec![
                p.clone(),
                c.allowed.to_string(),
                c.recipients.to_string(),
                c.denied.to_string(),
                c.recipients_denied.to_string(),
                c.would_deny.to_string(),
            ]
        });
        super::markdown::table(
            o,
            &[
                "path",
                "messages",
                "recipients",
                "refused messages",
                "refused recipients",
                "would refuse",
            ],
            rows,
        );
        let row = |key: String, s: &Sender| {
            let paths: Vec<String> = s.paths.iter().map(|(p, n)| format!("{p} ({n})")).collect();
            vec![
                key,
                s.messages.to_string(),
                s.recipients.to_string(),
                s.refused_messages.to_string(),
                s.refused_recipients.to_string(),
                paths.join(", "),
            ]
        };
        let head = |k| {
            [
                k,
                "messages",
                "recipients",
                "refused messages",
                "refused recipients",
                "paths",
            ]
        };
        for (what, list, all, key) in [
            ("By UID", &self.by_uid, self.uids, "uid"),
            ("By cgroup", &self.by_cgroup, self.cgroups, "cgroup"),
            (
                "By SASL user",
                &self.by_sasl_user,
                self.sasl_users,
                "SASL user",
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let shown = if list.len() < all {
                format!(" (top {} of {all})", list.len())
            } else {
                String::new()
            };
            let _ = writeln!(o, "{what}{shown}:\n");
            let rows = list.iter().map(|s| {
                let k = match (s.uid, &s.cgroup, &s.sasl_username) {
                    (Some(u), _, _) => match &s.user {
                        Some(name) => format!("{u} ({name})"),
                        None => u.to_string(),
                    },
                    (_, Some(c), _) => format!("`{c}`"),
                    (_, _, Some(n)) => n.clone(),
                    _ => "-".into(),
                };
                row(k, s)
            });
            super::markdown::table(o, &head(key), rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_recipients_per_key_and_path() {
        let rec = |event: &str, uid: u32, path: &str, verdict: &str, n: u64| {
            serde_json::json!({"event": event, "uid": uid, "cgroup": "/web", "path": path,
                "verdict": verdict, "recipients": n})
        };
        let mut m = Messages::default();
        for e in [
            rec("message", 1000, "sendmail", "allowed", 3),
            rec("message", 1000, "local_smtp", "allowed", 1),
            rec("message", 1000, "local_smtp", "denied", 2),
            rec("recipient", 1000, "local_smtp", "denied", 1),
            rec("message", 1001, "sendmail", "allowed", 1),
        ] {
            assert!(Messages::is_record(&e));
            m.add(&e);
        }
        let mut sasl = rec("message", 0, "remote_smtp", "allowed", 4);
        sasl["uid"] = Value::Null;
        sasl["cgroup"] = Value::Null;
        sasl["sasl_username"] = "shop1".into();
        m.add(&sasl);
        m.finish();
        assert_eq!(m.records, 6);
        let sm = &m.by_path["sendmail"];
        assert_eq!((sm.allowed, sm.recipients), (2, 4));
        let ls = &m.by_path["local_smtp"];
        assert_eq!((ls.allowed, ls.denied, ls.recipients_denied), (1, 1, 3));
        let top = &m.by_uid[0];
        assert_eq!((top.uid, top.messages, top.recipients), (Some(1000), 2, 4));
        assert_eq!((top.refused_messages, top.refused_recipients), (1, 3));
        assert_eq!(m.by_cgroup[0].messages, 3);
        assert_eq!((m.sasl_users, m.by_sasl_user[0].recipients), (1, 4));
        let mut md = String::new();
        m.markdown(&mut md);
        assert!(md.contains("| sendmail | 2 | 4 | 0 | 0 | 0 |"), "{md}");
        assert!(md.contains("| shop1 | 1 | 4 |"), "{md}");
        assert!(!Messages::is_record(
            &serde_json::json!({"verdict": "allowed"})
        ));
    }
}
