//! What is enforced now, as JSON: served at `/status`, shown by `antispam status`.

use std::sync::atomic::Ordering;

use std::collections::HashMap;

use antispam_common::{
    key::{KeyId, KeyState, BUCKET_SHARED, KIND_CGROUP, KIND_SHARED, KIND_UID},
    rate::available,
    rule::{Rule as MapRule, ACTION_ALLOW, ACTION_LIMIT},
    stats,
};
use serde_json::{json, Value};

use crate::{kernel::KernelView, policy::RuleKind, state::Shared};

/// At most this many UIDs and cgroups are listed, most active first.
pub const MAX_KEYS: usize = 200;

fn now_mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

pub fn render(shared: &Shared) -> String {
    serde_json::to_string_pretty(&value(shared)).unwrap_or_default() + "\n"
}

pub fn value(shared: &Shared) -> Value {
    let enforced = shared.enforced();
    let p = &enforced.policy;
    let rules: Vec<Value> = p
        .rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name(),
                "kind": r.kind.name(),
                "line": r.line,
                "users": r.uids.iter().map(|u| if u.first == u.last { u.first.to_string() } else { format!("{}-{}", u.first, u.last) }).collect::<Vec<_>>(),
                "cgroups": r.cgroups.iter().map(|c| c.as_str().to_string()).collect::<Vec<_>>(),
                "destinations": r.destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "rate": r.rate.map(|r| r.to_string()),
            })
        })
        .collect();
    let assignments = shared.assignments().clone();
    let bucket_name = |bucket: u64| {
        if bucket & BUCKET_SHARED != 0 {
            format!("{} (shared)", p.rule_name((bucket & !BUCKET_SHARED) as u32))
        } else {
            shared.cgroups.label(bucket)
        }
    };
    let matches: Vec<Value> = assignments
        .iter()
        .take(MAX_KEYS)
        .map(|(id, a)| {
            json!({
                "cgroup": a.path, "id": id, "rule": p.rule_name(a.rule.rule_id),
                "bucket": if a.rule.action == ACTION_ALLOW { "-".to_string() } else { bucket_name(a.rule.bucket) },
            })
        })
        .collect();

    // Usage per key against the limit that applies to it.
    let now = now_mono_ns();
    let mut keys = shared.view.keys();
    let by_key: HashMap<KeyId, KeyState> = keys.iter().copied().collect();
    keys.sort_by(|a, b| {
        (b.1.denied + b.1.would_deny, b.1.allowed).cmp(&(a.1.denied + a.1.would_deny, a.1.allowed))
    });
    let c = &enforced.compiled;
    // The tokens left in a bucket: a cgroup may draw on an ancestor's or a shared bucket.
    let tokens = |bucket: KeyId, rate: &antispam_common::rate::Rate| {
        let tat = by_key.get(&bucket).map_or(0, |s| s.tat);
        available(tat, now, rate)
    };
    let list: Vec<Value> = keys
        .iter()
        .take(MAX_KEYS)
        .map(|(k, s)| {
            let (kind, name, rule, bucket) = match k.kind {
                KIND_UID => {
                    let uid = k.id as u32;
                    (
                        "uid",
                        shared.users.label(uid),
                        c.uid_rules.get(&uid).copied(),
                        *k,
                    )
                }
                KIND_SHARED => {
                    let id = k.id as u32;
                    let rule = p
                        .rules
                        .iter()
                        .find(|r| r.id == id)
                        .and_then(|r| r.rate)
                        .map(|r| MapRule {
                            action: ACTION_LIMIT,
                            rule_id: id,
                            rate: r.gcra,
                            bucket: BUCKET_SHARED | k.id,
                        });
                    ("shared", format!("{} (shared)", p.rule_name(id)), rule, *k)
                }
                _ => {
                    let rule = assignments.get(&k.id).map(|a| a.rule);
                    let bucket = rule.map_or(*k, |r| {
                        if r.bucket == 0 {
                            *k
                        } else {
                            KeyId::bucket(r.bucket)
                        }
                    });
                    ("cgroup", shared.cgroups.label(k.id), rule, bucket)
                }
            };
            let (rule_name, limit, avail) = match rule {
                Some(r) if r.action == ACTION_ALLOW => {
                    (p.rule_name(r.rule_id), "unlimited".to_string(), None)
                }
                Some(r) => (
                    p.rule_name(r.rule_id),
                    describe(&r.rate),
                    Some(tokens(bucket, &r.rate)),
                ),
                None if k.kind == KIND_UID => (
                    "default".into(),
                    p.default_rate.to_string(),
                    Some(tokens(bucket, &p.default_rate.gcra)),
                ),
                None => ("-".into(), "no cgroup limit".into(), None),
            };
            let bucket_label = if bucket == *k || kind != "cgroup" {
                None
            } else {
                Some(bucket_name(
                    bucket.id
                        | if bucket.kind == KIND_SHARED {
                            BUCKET_SHARED
                        } else {
                            0
                        },
                ))
            };
            json!({
                "kind": kind, "id": k.id, "name": name, "rule": rule_name, "limit": limit,
                "available": avail, "bucket": bucket_label,
                "allowed": s.allowed, "denied": s.denied, "would_deny": s.would_deny,
                "packets": s.packets, "bytes": s.bytes,
            })
        })
        .collect();

    let (suspensions, kill_switch, break_glass) = {
        let ops = shared.operations();
        let t = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let list: Vec<Value> = ops
            .suspensions
            .iter()
            .map(|(target, e)| {
                json!({
                    "target": target.to_string(), "reason": e.reason, "by": e.by,
                    "since": t(e.since), "until": e.until.map(t),
                })
            })
            .collect();
        let ks = match &ops.kill_switch {
            Some(k) => json!({"on": true, "reason": k.reason, "by": k.by, "since": t(k.since)}),
            None => json!({"on": false}),
        };
        (list, ks, ops.break_glass.to_json())
    };
    let kernel_errors: serde_json::Map<String, Value> = stats::NAMES
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.starts_with("unused"))
        .map(|(i, n)| {
            (
                n.to_string(),
                json!(KernelView::sum(&shared.view.stats, i as u32)),
            )
        })
        .collect();

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": p.mode.name(),
        "policy": p.origin,
        "generation": shared.generation.load(Ordering::Relaxed),
        "cgroup": shared.attach_cgroup,
        "programs_attached": shared.programs_attached,
        "ports": p.ports,
        "default_rate": p.default_rate.to_string(),
        "rules": rules,
        "rule_counts": {
            "allow": p.count(RuleKind::Allow), "limit": p.count(RuleKind::Limit), "block": p.count(RuleKind::Block),
        },
        "cgroup_rules": matches,
        "cgroups_covered": assignments.len(),
        "cgroups_followed": shared.counters.cgroups_known.load(Ordering::Relaxed),
        "keys": list,
        "tracked": {
            "uids": keys.iter().filter(|(k, _)| k.kind == KIND_UID).count(),
            "cgroups": keys.iter().filter(|(k, _)| k.kind == KIND_CGROUP).count(),
            "shared": keys.iter().filter(|(k, _)| k.kind == KIND_SHARED).count(),
        },
        "kernel_errors": kernel_errors,
        "suspensions": suspensions,
        "kill_switch": kill_switch,
        "break_glass": break_glass,
        "audit": {
            "path": shared.audit_path.display().to_string(),
            "head_sequence": shared.counters.audit_head.load(Ordering::Relaxed),
            "written": shared.counters.audit_written.load(Ordering::Relaxed),
            "failures": shared.counters.audit_failures.load(Ordering::Relaxed),
        },
        "kernel_maps": {
            "cgroup_rules": shared.view.cgroup_rules.keys().filter_map(Result::ok).count(),
            "keys": keys.len(),
        },
        "events_read": shared.counters.events_read.load(Ordering::Relaxed),
        "reloads": {
            "ok": shared.counters.reloads_ok.load(Ordering::Relaxed),
            "error": shared.counters.reloads_error.load(Ordering::Relaxed),
        },
    })
}

fn describe(r: &antispam_common::rate::Rate) -> String {
    if r.interval_ns == 0 {
        return "unlimited".into();
    }
    let per_hour = 3_600_000_000_000f64 / r.interval_ns as f64;
    if per_hour >= 3600.0 {
        format!("{:.0}/second (burst {})", per_hour / 3600.0, r.burst())
    } else if per_hour >= 60.0 {
        format!("{:.0}/minute (burst {})", per_hour / 60.0, r.burst())
    } else {
        format!("{per_hour:.0}/hour (burst {})", r.burst())
    }
}
