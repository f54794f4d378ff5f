//! Builds the [`Status`] from the agent's state and the kernel's maps (read now, nothing
//! cached): served at `/status` and answered on the control socket.

use std::{collections::HashMap, sync::atomic::Ordering};

use antispam_common::{
    key::{KeyId, KeyState, BUCKET_SHARED, KIND_CGROUP, KIND_SHARED, KIND_UID},
    rate::{available, Rate},
    rule::{Rule as MapRule, ACTION_ALLOW},
    stats,
};

use super::state::{Enforced, Shared};
use crate::{
    clock,
    control::status::{
        AuditView, CgroupMatch, KernelMaps, KeyUsage, PathUsage, Reloads, RuleCounts, RuleView,
        SendmailView, Status, Tracked,
    },
    defaults::STATUS_MAX_KEYS,
    kernel::KernelView,
    policy::{assign::Assignments, Policy, RuleKind},
};

pub fn build(shared: &Shared) -> Status {
    let enforced = shared.enforced();
    let p = &enforced.policy;
    let assignments = shared.assignments().clone();
    let mut keys = shared.view.keys();
    // Most refused first, then most allowed.
    keys.sort_by(|a, b| {
        let activity = |s: &KeyState| (s.denied_total() + s.would_deny_total(), s.allowed_total());
        activity(&b.1).cmp(&activity(&a.1))
    });
    let usage = Usage {
        shared,
        enforced: &enforced,
        assignments: &assignments,
        by_key: keys.iter().copied().collect(),
        now: clock::mono_now_ns(),
    };
    let ops = shared.operations();
    let c = &shared.counters;
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        mode: p.mode.name().to_string(),
        policy: p.origin.clone(),
        policy_signed_by: p.signed_by.clone(),
        generation: shared.generation.load(Ordering::Relaxed),
        cgroup: shared.attach_cgroup.clone(),
        programs_attached: shared.programs_attached,
        ports: p.ports.iter().copied().collect(),
        default_rate: p.default_rate.to_string(),
        default_paths: paths(&p.default_paths),
        rules: rules(p),
        rule_counts: RuleCounts {
            allow: p.count(RuleKind::Allow),
            limit: p.count(RuleKind::Limit),
            block: p.count(RuleKind::Block),
        },
        cgroup_rules: cgroup_matches(&usage),
        cgroups_covered: assignments.len(),
        cgroups_followed: c.cgroups_known.load(Ordering::Relaxed),
        keys: keys
            .iter()
            .take(STATUS_MAX_KEYS)
            .map(|(k, s)| usage.of(k, s))
            .collect(),
        tracked: Tracked {
            uids: keys.iter().filter(|(k, _)| k.kind == KIND_UID).count(),
            cgroups: keys.iter().filter(|(k, _)| k.kind == KIND_CGROUP).count(),
            shared: keys.iter().filter(|(k, _)| k.kind == KIND_SHARED).count(),
        },
        kernel_errors: kernel_errors(&shared.view),
        suspensions: ops.suspension_views(&shared.users),
        kill_switch: ops.kill_switch_view(),
        break_glass: ops.break_glass.view(),
        audit: {
            let a = c
                .audit_anchor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            AuditView {
                path: shared.audit_path.display().to_string(),
                head_sequence: c.audit_head.load(Ordering::Relaxed),
                head_hash: a.head_hash,
                written: c.audit_written.load(Ordering::Relaxed),
                failures: c.audit_failures.load(Ordering::Relaxed),
                seal_key: a.sealing.as_ref().map(|(k, _)| k.clone()),
                seal_epoch: a.sealing.as_ref().map(|(_, e)| *e),
                seal_problem: a.seal_problem,
            }
        },
        kernel_maps: kernel_maps(&shared.view, keys.len()),
        events_read: c.events_read.load(Ordering::Relaxed),
        reloads: Reloads {
            ok: c.reloads_ok.load(Ordering::Relaxed),
            error: c.reloads_error.load(Ordering::Relaxed),
        },
        sendmail: SendmailView {
            hook: shared.exec_hook,
            why: shared.exec_hook_why.clone(),
            programs: super::programs::views(&p.sendmail_programs, &shared.programs()),
        },
        packet_program: shared
            .packet_program
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(str::to_string),
        sessions_not_ended: shared
            .sessions_not_ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        syn_check: shared
            .syn_check
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        fleet: fleet(shared, p),
    }
}

/// The fleet store and each tenant's lease, from the kernel's entries.
pub fn fleet(shared: &Shared, p: &Policy) -> crate::control::status::FleetStatus {
    use crate::control::status::{FleetStatus, TenantStatus};
    let now = crate::clock::mono_now_ns();
    let view = shared.fleet();
    let maps = shared.tenants();
    let tenants = p
        .tenants
        .values()
        .map(|t| {
            let (lease, used) = maps.read(t.key).unwrap_or_default();
            let leased = lease.active(now);
            let last = view.tenants.get(&t.name).cloned().unwrap_or_default();
            TenantStatus {
                name: t.name.clone(),
                rate: t.rate.to_string(),
                local_rate: t.local.to_string(),
                state: if leased { "leased" } else { "local_rate" }.to_string(),
                lease_tokens: if leased {
                    lease.granted.saturating_sub(used.taken)
                } else {
                    0
                },
                lease_ends_in_ms: lease.until_ns.saturating_sub(now) / 1_000_000,
                leased_used: used.taken,
                local_used: used.fallback,
                refused: used.refused,
                last_want: last.want,
                last_grant: last.last_grant,
                fleet_left: last.fleet_left,
            }
        })
        .collect();
    FleetStatus {
        store: view.config.as_ref().map(|c| c.store.redacted()),
        host: view.config.as_ref().map(|c| c.host.clone()),
        lease_ms: view
            .config
            .as_ref()
            .map_or(0, |c| c.lease.as_millis() as u64),
        connected: view.connected,
        last_error: view.last_error.clone(),
        tenants,
    }
}

fn rules(p: &Policy) -> Vec<RuleView> {
    p.rules
        .iter()
        .map(|r| RuleView {
            id: r.id,
            name: r.name(),
            kind: r.kind.name().to_string(),
            line: r.line,
            users: r
                .uids
                .iter()
                .map(|u| {
                    if u.first == u.last {
                        u.first.to_string()
                    } else {
                        format!("{}-{}", u.first, u.last)
                    }
                })
                .collect(),
            cgroups: r.cgroups.iter().map(|c| c.as_str().to_string()).collect(),
            destinations: r.destinations.iter().map(ToString::to_string).collect(),
            rate: r.rate.map(|r| r.to_string()),
            paths: paths(&r.paths),
        })
        .collect()
}

fn paths(b: &crate::policy::PathBudgets) -> std::collections::BTreeMap<String, String> {
    b.iter()
        .map(|(path, rate)| (path.to_string(), rate.to_string()))
        .collect()
}

/// What the kernel's maps hold: cgroup rules (of both rule sets) and known cgroups apart.
fn kernel_maps(view: &KernelView, keys: usize) -> KernelMaps {
    use antispam_common::rule::ACTION_NONE;
    let (mut rules, mut known) = (0, 0);
    for (_, r) in view.cgroup_rules.iter().filter_map(Result::ok) {
        if r.action == ACTION_NONE {
            known += 1;
        } else {
            rules += 1;
        }
    }
    KernelMaps {
        cgroup_rules: rules,
        known_cgroups: known,
        keys,
    }
}

fn kernel_errors(view: &KernelView) -> std::collections::BTreeMap<String, u64> {
    stats::NAMES
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.starts_with("unused"))
        .map(|(i, n)| (n.to_string(), KernelView::sum(&view.stats, i as u32)))
        .collect()
}

fn cgroup_matches(u: &Usage<'_>) -> Vec<CgroupMatch> {
    u.assignments
        .iter()
        .take(STATUS_MAX_KEYS)
        .map(|(id, a)| CgroupMatch {
            cgroup: a.path.clone(),
            id: *id,
            rule: u.policy().rule_name(a.rule.rule_id),
            bucket: if a.rule.action == ACTION_ALLOW {
                "-".to_string()
            } else {
                u.bucket_name(a.rule.bucket)
            },
        })
        .collect()
}

/// What a key's usage is measured against.
struct Usage<'a> {
    shared: &'a Shared,
    enforced: &'a Enforced,
    assignments: &'a Assignments,
    by_key: HashMap<KeyId, KeyState>,
    now: u64,
}

impl Usage<'_> {
    fn policy(&self) -> &Policy {
        &self.enforced.policy
    }

    /// A bucket as `Rule::bucket` names it: a cgroup, or a shared rule's.
    fn bucket_name(&self, bucket: u64) -> String {
        if bucket & BUCKET_SHARED != 0 {
            let rule = self.policy().rule_name((bucket & !BUCKET_SHARED) as u32);
            format!("{rule} (shared)")
        } else {
            self.shared.cgroups.label(bucket)
        }
    }

    /// The tokens left in a bucket (a cgroup may draw on an ancestor's or a shared bucket).
    fn tokens(&self, bucket: KeyId, rate: &Rate) -> u64 {
        let tat = self.by_key.get(&bucket).map_or(0, |s| s.tat);
        available(tat, self.now, rate)
    }

    /// The rule of a key and the bucket it draws on.
    fn rule_of(&self, k: &KeyId) -> (&'static str, String, Option<MapRule>, KeyId) {
        let p = self.policy();
        match k.kind {
            KIND_UID => {
                let uid = k.id as u32;
                let rule = self.enforced.compiled.uid_rules.get(&uid).copied();
                ("uid", self.shared.users.label(uid), rule, *k)
            }
            KIND_SHARED => {
                let id = k.id as u32;
                let rule = p.rules.iter().find(|r| r.id == id).map(|r| MapRule {
                    bucket: BUCKET_SHARED | k.id,
                    budgets: Default::default(),
                    ..crate::policy::compile::map_rule(r)
                });
                ("shared", format!("{} (shared)", p.rule_name(id)), rule, *k)
            }
            _ => {
                let rule = self.assignments.get(&k.id).map(|a| a.rule);
                let bucket = rule
                    .filter(|r| r.bucket != 0)
                    .map_or(*k, |r| KeyId::bucket(r.bucket));
                ("cgroup", self.shared.cgroups.label(k.id), rule, bucket)
            }
        }
    }

    fn of(&self, k: &KeyId, s: &KeyState) -> KeyUsage {
        let p = self.policy();
        let (kind, name, rule, bucket) = self.rule_of(k);
        let (rule_name, limit, avail) = match rule {
            Some(r) if r.action == ACTION_ALLOW => {
                (p.rule_name(r.rule_id), "unlimited".to_string(), None)
            }
            Some(r) => (
                p.rule_name(r.rule_id),
                describe(&r.rate),
                Some(self.tokens(bucket, &r.rate)),
            ),
            None if k.kind == KIND_UID => (
                "default".into(),
                p.default_rate.to_string(),
                Some(self.tokens(bucket, &p.default_rate.gcra)),
            ),
            None => ("-".into(), "no cgroup limit".into(), None),
        };
        let drawn_from = (bucket != *k && kind == "cgroup").then(|| {
            let shared_bit = if bucket.kind == KIND_SHARED {
                BUCKET_SHARED
            } else {
                0
            };
            self.bucket_name(bucket.id | shared_bit)
        });
        KeyUsage {
            kind: kind.to_string(),
            id: k.id,
            name,
            rule: rule_name,
            limit,
            available: avail,
            bucket: drawn_from,
            allowed: s.allowed_total(),
            denied: s.denied_total(),
            would_deny: s.would_deny_total(),
            by_path: antispam_common::event::PATH_CODES
                .iter()
                .map(|&p| {
                    let i = p as usize;
                    let u = PathUsage {
                        allowed: s.allowed[i],
                        denied: s.denied[i],
                        would_deny: s.would_deny[i],
                    };
                    (antispam_common::event::path_name(p).to_string(), u)
                })
                .filter(|(_, u)| u.allowed + u.denied + u.would_deny > 0)
                .collect(),
            packets: s.packets,
            bytes: s.bytes,
        }
    }
}

/// A GCRA rate in the unit that reads best.
fn describe(r: &Rate) -> String {
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
