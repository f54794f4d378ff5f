//! What is enforced now, as JSON: served at `/status`, shown by `antispam status`.

use std::sync::atomic::Ordering;

use antispam_common::{
    key::{KIND_CGROUP, KIND_UID},
    rate::available,
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
    let matches: Vec<Value> = enforced
        .compiled
        .cgroup_matches
        .iter()
        .map(|(path, id, rule, bucket)| {
            json!({"cgroup": path, "id": id, "rule": p.rule_name(*rule), "bucket": shared.cgroups.label(*bucket)})
        })
        .collect();

    // Usage per key against the limit that applies to it.
    let now = now_mono_ns();
    let mut keys = shared.view.keys();
    keys.sort_by(|a, b| {
        (b.1.denied + b.1.would_deny, b.1.allowed).cmp(&(a.1.denied + a.1.would_deny, a.1.allowed))
    });
    let c = &enforced.compiled;
    let list: Vec<Value> = keys
        .iter()
        .take(MAX_KEYS)
        .map(|(k, s)| {
            let (kind, name, rule) = if k.kind == KIND_UID {
                let uid = k.id as u32;
                let rule = c.uid_rules.get(&uid).copied();
                ("uid", shared.users.label(uid), rule)
            } else {
                let rule = c.cgroup_rules.get(&k.id).copied();
                ("cgroup", shared.cgroups.label(k.id), rule)
            };
            let (rule_name, limit, avail) = match rule {
                Some(r) if r.action == antispam_common::rule::ACTION_ALLOW => (p.rule_name(r.rule_id), "unlimited".to_string(), None),
                Some(r) => (p.rule_name(r.rule_id), describe(&r.rate), Some(available(s.tat, now, &r.rate))),
                None if k.kind == KIND_UID => ("default".into(), p.default_rate.to_string(), Some(available(s.tat, now, &p.default_rate.gcra))),
                None => ("-".into(), "no cgroup limit".into(), None),
            };
            json!({
                "kind": kind, "id": k.id, "name": name, "rule": rule_name, "limit": limit,
                "available": avail, "allowed": s.allowed, "denied": s.denied, "would_deny": s.would_deny,
                "packets": s.packets, "bytes": s.bytes,
            })
        })
        .collect();

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
        "keys": list,
        "tracked": {
            "uids": keys.iter().filter(|(k, _)| k.kind == KIND_UID).count(),
            "cgroups": keys.iter().filter(|(k, _)| k.kind == KIND_CGROUP).count(),
        },
        "kernel_errors": kernel_errors,
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
