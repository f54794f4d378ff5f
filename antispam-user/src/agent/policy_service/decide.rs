//! Deciding one question of the MTA: who is charged (attribution), which budgets apply (the
//! policy in force), and the answer. The order is the kernel's (policy.md "How an attempt is
//! decided"): break glass, suspension, allow-listed UID, kill switch, allow-listed cgroup, the
//! budgets of the UID, its cgroup's rule and the SASL user, all of which must have room.

use std::time::Duration;

use antispam_common::{
    key::KeyId,
    rule::{ACTION_ALLOW, ACTION_LIMIT},
};

use super::{
    ledger::{Charge, Key, Kind, Short},
    record::MailPath,
};
use crate::{
    agent::state::{Enforced, Shared},
    mta::Stage,
    policy::{Mode, RateSpec, Rule},
};

/// Who a message is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub uid: Option<u32>,
    pub cgroup_id: Option<u64>,
    pub sasl: Option<String>,
    pub path: MailPath,
}

/// A budget that applies, and how to name it in a refusal.
#[derive(Debug, Clone)]
pub struct Budget {
    pub charge: Charge,
    pub spec: RateSpec,
    /// `uid 61001`, `cgroup /customers/a`, `SASL user shop1`.
    pub whose: String,
    /// `limit[0]`, `default`.
    pub rule: String,
}

/// The outcome before the monitor-mode and answer wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Refused (also in monitor mode: then the MTA is told `DUNNO`).
    pub refused: bool,
    pub reason: &'static str,
    pub rule: Option<String>,
    /// For refusals: the text the MTA passes on to the client.
    pub text: Option<String>,
    /// For a refusal by a budget: `message limit 3/minute of uid 61001 (limit[0])`.
    pub limit: Option<String>,
}

impl Judgement {
    fn allowed(reason: &'static str, rule: Option<String>) -> Judgement {
        Judgement {
            refused: false,
            reason,
            rule,
            text: None,
            limit: None,
        }
    }

    fn refused(reason: &'static str, rule: Option<String>, text: String) -> Judgement {
        Judgement {
            refused: true,
            reason,
            rule,
            text: Some(text),
            limit: None,
        }
    }
}

/// The rule of `id`, if it is a `[[limit]]`.
fn limit_rule(e: &Enforced, id: u32) -> Option<&Rule> {
    e.policy.rules.iter().find(|r| r.id == id)
}

/// Every budget that applies to `s`, with `n_messages` and `n_recipients` to take.
pub fn budgets(
    e: &Enforced,
    shared: &Shared,
    s: &Subject,
    n_messages: u64,
    n_recipients: u64,
) -> Vec<Budget> {
    let mut out = Vec::new();
    let mut add =
        |key: Key, whose: String, rule: String, m: Option<RateSpec>, r: Option<RateSpec>| {
            for (kind, spec, n) in [
                (Kind::Messages, m, n_messages),
                (Kind::Recipients, r, n_recipients),
            ] {
                if let Some(spec) = spec.filter(|_| n > 0) {
                    out.push(Budget {
                        charge: Charge {
                            key: key.clone(),
                            kind,
                            rate: spec.gcra,
                            n,
                        },
                        spec,
                        whose: whose.clone(),
                        rule: rule.clone(),
                    });
                }
            }
        };
    if let Some(uid) = s.uid {
        let whose = match shared.users.name(uid) {
            Some(name) => format!("uid {uid} ({name})"),
            None => format!("uid {uid}"),
        };
        let p = &e.policy;
        match e.compiled.uid_rules.get(&uid) {
            Some(r) if r.action == ACTION_LIMIT => {
                let rule = limit_rule(e, r.rule_id);
                add(
                    Key::Uid(uid),
                    whose,
                    p.rule_name(r.rule_id),
                    rule.and_then(|r| r.messages).or(p.default_messages),
                    rule.and_then(|r| r.recipients).or(p.default_recipients),
                );
            }
            Some(_) => {}
            None => add(
                Key::Uid(uid),
                whose,
                "default".into(),
                p.default_messages,
                p.default_recipients,
            ),
        }
    }
    if let Some(id) = s.cgroup_id {
        let assigned = shared.assignments().get(&id).map(|a| a.rule);
        if let Some(r) = assigned.filter(|r| r.action == ACTION_LIMIT) {
            let rule = limit_rule(e, r.rule_id);
            let bucket = if r.bucket == 0 { id } else { r.bucket };
            add(
                Key::Cgroup(bucket),
                format!("cgroup {}", shared.cgroups.label(id)),
                e.policy.rule_name(r.rule_id),
                rule.and_then(|r| r.messages),
                rule.and_then(|r| r.recipients),
            );
        }
    }
    if let Some(name) = &s.sasl {
        let rule = e
            .policy
            .rules
            .iter()
            .rev()
            .find(|r| r.sasl_users.iter().any(|p| p.matches(name)));
        if let Some(rule) = rule {
            add(
                Key::Sasl(name.clone()),
                format!("SASL user {name}"),
                rule.name(),
                rule.messages,
                rule.recipients,
            );
        }
    }
    out
}

/// Decides for `s`: the checks that need no budget, then `budgets` (taken only with `commit`).
pub fn judge(
    e: &Enforced,
    shared: &Shared,
    ledger: &mut super::ledger::Ledger,
    s: &Subject,
    stage: Stage,
    n_recipients: u64,
    now_ns: u64,
) -> Judgement {
    let uid_key = s.uid.map(KeyId::uid);
    let cg_key = s.cgroup_id.map(KeyId::cgroup);
    let keys: Vec<KeyId> = uid_key.into_iter().chain(cg_key).collect();
    let uid_rule = s.uid.and_then(|u| e.compiled.uid_rules.get(&u).copied());
    let cg_rule = s
        .cgroup_id
        .and_then(|id| shared.assignments().get(&id).map(|a| a.rule));
    let name = |id: u32| Some(e.policy.rule_name(id));
    {
        let ops = shared.operations();
        if keys
            .iter()
            .any(|k| ops.break_glass.overridden_keys().contains(k))
        {
            return Judgement::allowed("break_glass", None);
        }
        let suspended = ops.suspended_keys();
        if let Some(k) = keys.iter().find(|k| suspended.contains(k)) {
            let who = if Some(*k) == uid_key {
                format!("uid {}", s.uid.unwrap_or_default())
            } else {
                format!(
                    "cgroup {}",
                    shared.cgroups.label(s.cgroup_id.unwrap_or_default())
                )
            };
            return Judgement::refused(
                "suspended",
                None,
                format!("antispam: {who} is suspended from sending mail"),
            );
        }
        if let Some(r) = uid_rule.filter(|r| r.action == ACTION_ALLOW) {
            return Judgement::allowed("allowlist_user", name(r.rule_id));
        }
        if ops.kill_switch.is_some() {
            return Judgement::refused(
                "kill_switch",
                None,
                "antispam: outbound mail is stopped on this host (kill switch)".into(),
            );
        }
    }
    if let Some(r) = cg_rule.filter(|r| r.action == ACTION_ALLOW) {
        return Judgement::allowed("allowlist_cgroup", name(r.rule_id));
    }
    // At RCPT, one message and the recipients so far must fit; nothing is taken until the end
    // of the message, which takes the message and all its recipients at once.
    let all = budgets(e, shared, s, 1, n_recipients);
    let rule = all.first().map(|b| b.rule.clone());
    if all.is_empty() {
        return Judgement::allowed("no_limit", None);
    }
    let charges: Vec<Charge> = all.iter().map(|b| b.charge.clone()).collect();
    let commit = stage == Stage::EndOfMessage && e.policy.mode == Mode::Enforce;
    match ledger.charge(&charges, now_ns, commit) {
        Ok(()) => {
            if stage == Stage::EndOfMessage && e.policy.mode == Mode::Monitor {
                // Monitor mode takes what fits, as enforce would have.
                let _ = ledger.charge(&charges, now_ns, true);
            }
            Judgement::allowed("within_limit", rule)
        }
        Err(Short { index, wait_ns }) => {
            let b = &all[index];
            let kind = b.charge.kind;
            let limit = format!(
                "{} limit {}/{} of {} ({})",
                kind.name(),
                b.spec.count,
                b.spec.period.name(),
                b.whose,
                b.rule
            );
            let when = match wait_ns {
                Some(ns) => format!(
                    "try again in {}",
                    humantime::format_duration(Duration::from_secs(
                        ns.div_ceil(1_000_000_000).max(1)
                    ))
                ),
                None => format!(
                    "this message has {} recipients, more than the limit allows at once",
                    b.charge.n
                ),
            };
            let reason = match kind {
                Kind::Messages => "message_limit",
                Kind::Recipients => "recipient_limit",
            };
            Judgement {
                refused: true,
                reason,
                rule: Some(b.rule.clone()),
                text: Some(format!("antispam: {limit} reached; {when}")),
                limit: Some(limit),
            }
        }
    }
}
