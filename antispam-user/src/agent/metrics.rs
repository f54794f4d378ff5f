//! Prometheus metrics, read from the kernel maps at scrape time (nothing cached that could drift
//! from the kernel's truth).
//!
//! Cardinality is bounded: per-UID and per-cgroup series exist for at most `--metrics-max-keys`
//! UIDs and as many cgroups, the most active first (refusals, then connects). Keys beyond that
//! are summed into `uid="other"` / `cgroup="other"` series, so totals stay right.

use std::sync::atomic::Ordering;

use antispam_common::{
    event::{self as ev, counter_index},
    key::{KeyId, KeyState, KIND_CGROUP, KIND_UID},
    stats,
};
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::{
    operations::{Step, Trigger},
    state::Shared,
};
use crate::{
    control::status::ExecHook,
    kernel::KernelView,
    policy::{Mode, RuleKind},
};

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// A counter without labels, set to `v` (the kernel's or the agent's running total).
fn plain_counter(reg: &Registry, name: &str, help: &str, v: u64) {
    let c = prometheus::IntCounter::new(name, help).expect("valid metric");
    c.inc_by(v);
    reg.register(Box::new(c)).expect("unique metric");
}

fn plain_gauge(reg: &Registry, name: &str, help: &str, v: i64) {
    let g = IntGauge::new(name, help).expect("valid metric");
    g.set(v);
    reg.register(Box::new(g)).expect("unique metric");
}

/// Renders every metric in the Prometheus text format.
pub fn render(shared: &Shared) -> String {
    let reg = Registry::new();
    decisions(&reg, &shared.view);
    kernel_errors(&reg, &shared.view);
    pipeline(&reg, shared);
    cgroups(&reg, shared);
    operations(&reg, shared);
    policy(&reg, shared);
    per_key(&reg, shared);
    fleet(&reg, shared);
    super::policy_service::record::metrics(&reg, &shared.mta);
    // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
    if let Err(e) = reg.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        log::debug!("process metrics: {e}");
    }
    let mut out = Vec::new();
    let families = reg.gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        log::error!("encoding metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Can a decision of `verdict` for `reason` occur on `path`? Series that can are always
/// present (at 0), so that rate() works from the start.
fn possible(path: u32, verdict: u32, reason: u32) -> bool {
    let destination = matches!(
        reason,
        ev::REASON_ALLOW_DESTINATION | ev::REASON_BLOCK_DESTINATION
    );
    if path == ev::PATH_SENDMAIL && destination {
        return false;
    }
    if path == ev::PATH_LOCAL_SMTP && reason == ev::REASON_ALLOW_DESTINATION {
        return false;
    }
    match verdict {
        ev::VERDICT_ALLOWED => matches!(
            reason,
            ev::REASON_ALLOW_USER
                | ev::REASON_ALLOW_CGROUP
                | ev::REASON_ALLOW_DESTINATION
                | ev::REASON_WITHIN_LIMIT
        ),
        _ => matches!(
            reason,
            ev::REASON_BLOCK_DESTINATION
                | ev::REASON_RATE_UID
                | ev::REASON_RATE_CGROUP
                | ev::REASON_RATE_TENANT
                | ev::REASON_STATE_ERROR
        ),
    }
}

/// Decisions by mail path, verdict and reason, from the kernel's per-CPU counters.
fn decisions(reg: &Registry, view: &KernelView) {
    let attempts = counter(reg, "antispam_mail_attempts_total",
        "Attempts to hand mail on, by mail path (direct: SMTP to another host; sendmail: a message through the local MTA's submission program; local_smtp: SMTP to the local MTA), verdict and reason (in monitor mode, would-be refusals are verdict=\"allowed\" with the refusal's reason).",
        &["path", "verdict", "reason"]);
    let conns = counter(reg, "antispam_smtp_connections_total",
        "SMTP connects decided (paths direct and local_smtp together), by verdict and reason (in monitor mode, would-be refusals are verdict=\"allowed\" with the refusal's reason).",
        &["verdict", "reason"]);
    let would = counter(reg, "antispam_smtp_would_deny_total",
        "SMTP connects that would have been refused but were allowed because the policy is in monitor mode.",
        &["reason"]);
    for path in ev::PATH_CODES {
        for verdict in [
            ev::VERDICT_ALLOWED,
            ev::VERDICT_DENIED,
            ev::VERDICT_WOULD_DENY,
        ] {
            for reason in 1..ev::REASON_LIMIT {
                let n = KernelView::sum(&view.decisions, counter_index(path, verdict, reason));
                if n == 0 && !possible(path, verdict, reason) {
                    continue;
                }
                let (v, r) = (ev::verdict_name(verdict), ev::reason_name(reason));
                attempts
                    .with_label_values(&[ev::path_name(path), v, r])
                    .inc_by(n);
                if path == ev::PATH_SENDMAIL {
                    continue;
                }
                conns.with_label_values(&[v, r]).inc_by(n);
                if verdict == ev::VERDICT_WOULD_DENY {
                    would.with_label_values(&[r]).inc_by(n);
                }
            }
        }
    }
}

/// What only the kernel programs can see go wrong.
fn kernel_errors(reg: &Registry, view: &KernelView) {
    let errors = counter(
        reg,
        "antispam_kernel_errors_total",
        "Problems only the kernel programs can see, by kind (ringbuf_full: events lost).",
        &["kind"],
    );
    for (i, name) in stats::NAMES.iter().enumerate() {
        if name.starts_with("unused") {
            continue;
        }
        errors
            .with_label_values(&[name])
            .inc_by(KernelView::sum(&view.stats, i as u32));
    }
    plain_counter(
        reg,
        "antispam_events_lost_total",
        "Decision events dropped because the ring buffer was full.",
        KernelView::sum(&view.stats, stats::RINGBUF_FULL),
    );
}

/// The event pipeline and the audit log.
fn pipeline(reg: &Registry, shared: &Shared) {
    let c = &shared.counters;
    plain_counter(
        reg,
        "antispam_events_read_total",
        "Decision events read from the ring buffer.",
        c.events_read.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_keys_collected_total",
        "Entries of the per-key state map removed because they held nothing (a full bucket, idle).",
        c.keys_collected.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_event_decode_errors_total",
        "Ring-buffer records that could not be decoded.",
        c.decode_errors.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_event_log_errors_total",
        "Failures to write the event log.",
        c.log_errors.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_event_log_lost_total",
        "Events not in the event log because writing it failed (the kernel's counters have them).",
        c.log_lost.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_event_log_summaries_total",
        "Summary lines written for refusals past the event log's rate bound.",
        c.log_summaries.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_event_log_folded_total",
        "Refusals written as part of a summary line rather than one line each.",
        c.log_folded.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_event_log_rotations_total",
        "Times the event log reached its size bound and was renamed to <log>.1.",
        c.log_rotations.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_state_write_failures_total",
        "Failures to save the offence book durably.",
        c.book_failures.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_audit_records_written_total",
        "Audit records written (fsync'd) since the agent started.",
        c.audit_written.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_http_connections_refused_total",
        "HTTP connections to the metrics port closed at once because as many as the agent serves at a time were open.",
        c.http_refused.load(Ordering::Relaxed),
    );
    plain_counter(
        reg,
        "antispam_audit_write_failures_total",
        "Audit records that could not be written.",
        c.audit_failures.load(Ordering::Relaxed),
    );
    plain_gauge(
        reg,
        "antispam_audit_head_sequence",
        "Sequence number of the last record in the audit chain.",
        c.audit_head.load(Ordering::Relaxed) as i64,
    );
    let anchor = c
        .audit_anchor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    gauge(
        reg,
        "antispam_audit_head_info",
        "1, labelled with the sequence number and hash of the last record in the audit chain: an anchor to keep off the host (antispam audit verify --expect-head SEQ:HASH).",
        &["seq", "hash"],
    )
    .with_label_values(&[
        &c.audit_head.load(Ordering::Relaxed).to_string(),
        &anchor.head_hash,
    ])
    .set(1);
    plain_gauge(
        reg,
        "antispam_audit_sealed",
        "1 when audit records are sealed with an evolving key (antispam audit setup-keys), else 0.",
        i64::from(anchor.sealing.is_some()),
    );
    if let Some((_, epoch)) = &anchor.sealing {
        plain_gauge(
            reg,
            "antispam_audit_seal_epoch",
            "The epoch of the audit log's sealing key (earlier keys are erased).",
            *epoch as i64,
        );
    }
}

/// The cgroup tree the agent follows.
fn cgroups(reg: &Registry, shared: &Shared) {
    let c = &shared.counters;
    plain_gauge(
        reg,
        "antispam_cgroups_followed",
        "Cgroups under the attach point that the agent follows.",
        c.cgroups_known.load(Ordering::Relaxed) as i64,
    );
    plain_gauge(
        reg,
        "antispam_cgroups_covered",
        "Cgroups a cgroup rule covers.",
        shared.assignments().len() as i64,
    );
    let changes = counter(
        reg,
        "antispam_cgroup_changes_total",
        "Cgroups that appeared or went away under the attach point.",
        &["change"],
    );
    changes
        .with_label_values(&["created"])
        .inc_by(c.cgroups_created.load(Ordering::Relaxed));
    changes
        .with_label_values(&["removed"])
        .inc_by(c.cgroups_removed.load(Ordering::Relaxed));
    plain_counter(
        reg,
        "antispam_cgroup_update_errors_total",
        "Failures to update the kernel maps for a cgroup change.",
        c.cgroup_update_errors.load(Ordering::Relaxed),
    );
    plain_gauge(
        reg,
        "antispam_cgroup_watch_errors",
        "Cgroup directories that could not be watched (fs.inotify.max_user_watches?).",
        c.cgroup_watch_errors.load(Ordering::Relaxed) as i64,
    );
}

/// Suspensions, the kill switch and break glass.
fn operations(reg: &Registry, shared: &Shared) {
    {
        let ops = shared.operations();
        plain_gauge(
            reg,
            "antispam_suspensions_active",
            "UIDs and cgroups suspended now.",
            ops.suspensions.len() as i64,
        );
        let total = counter(
            reg,
            "antispam_suspensions_total",
            "Suspensions set since the agent started, by trigger (manual, strikes).",
            &["trigger"],
        );
        for trigger in Trigger::ALL {
            let n = ops.suspensions_total.get(&trigger).copied().unwrap_or(0);
            total.with_label_values(&[trigger.name()]).inc_by(n);
        }
        plain_gauge(
            reg,
            "antispam_kill_switch",
            "1 while the kill switch is on.",
            i64::from(ops.kill_switch.is_some()),
        );
        plain_gauge(
            reg,
            "antispam_break_glass_active",
            "Break-glass overrides in force now.",
            ops.break_glass.active.len() as i64,
        );
        plain_gauge(
            reg,
            "antispam_break_glass_pending",
            "Break-glass requests waiting for a second operator.",
            ops.break_glass.pending.len() as i64,
        );
        let steps = counter(
            reg,
            "antispam_break_glass_total",
            "Break-glass steps since the agent started (requested, approved, refused, revoked, expired, lapsed).",
            &["step"],
        );
        for step in Step::ALL {
            let n = ops.break_glass.totals.get(&step).copied().unwrap_or(0);
            steps.with_label_values(&[step.name()]).inc_by(n);
        }
    }
}

/// The policy in force and the agent itself.
fn policy(reg: &Registry, shared: &Shared) {
    let c = &shared.counters;
    let enforced = shared.enforced();
    let reloads = counter(
        reg,
        "antispam_policy_reloads_total",
        "Policy reloads, by result.",
        &["result"],
    );
    reloads
        .with_label_values(&["ok"])
        .inc_by(c.reloads_ok.load(Ordering::Relaxed));
    reloads
        .with_label_values(&["error"])
        .inc_by(c.reloads_error.load(Ordering::Relaxed));

    plain_gauge(
        reg,
        "antispam_policy_last_reload_success",
        "1 when the last load or reload of the policy succeeded, 0 when the last one was refused (the policy before it stays in force).",
        c.last_reload_ok.load(Ordering::Relaxed) as i64,
    );
    plain_gauge(
        reg,
        "antispam_policy_last_reload_success_time_seconds",
        "Unix time the policy in force went into force (at the start or by a reload).",
        c.last_reload_time.load(Ordering::Relaxed) as i64,
    );
    plain_gauge(
        reg,
        "antispam_enforcing",
        "1 when the programs are attached and the policy is in enforce mode; 0 in monitor mode (counted, not refused) or with nothing attached.",
        i64::from(shared.programs_attached > 0 && enforced.policy.mode != Mode::Monitor),
    );
    plain_gauge(
        reg,
        "antispam_policy_generation",
        "Generation of the policy in force (1 at start, +1 per successful reload).",
        i64::from(shared.generation.load(Ordering::Relaxed)),
    );
    plain_gauge(
        reg,
        "antispam_monitor_mode",
        "1 when the policy is in monitor mode (nothing refused).",
        i64::from(enforced.policy.mode == Mode::Monitor),
    );
    let hook = gauge(
        reg,
        "antispam_exec_hook",
        "How executions of the MTA's submission programs (mail through sendmail) are decided: 1 for the hook in use (lsm: refused with EPERM before they run; tracepoint: killed before their first instruction; none: not decided).",
        &["hook"],
    );
    for h in [ExecHook::Lsm, ExecHook::Tracepoint, ExecHook::None] {
        hook.with_label_values(&[h.name()])
            .set(i64::from(shared.exec_hook == h));
    }
    plain_gauge(
        reg,
        "antispam_programs_attached",
        "eBPF programs attached to the cgroup.",
        shared.programs_attached as i64,
    );
    plain_gauge(
        reg,
        "antispam_packet_program_attached",
        "1 while the packet program runs on every packet of the attach point's tasks (--packet-accounting, or sessions a suspension could not end: see antispam status); 0: nothing runs per packet.",
        i64::from(
            shared
                .packet_program
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some(),
        ),
    );
    let rules = gauge(
        reg,
        "antispam_policy_rules",
        "Rules in the policy in force, by kind.",
        &["kind"],
    );
    for kind in [RuleKind::Allow, RuleKind::Limit, RuleKind::Block] {
        rules
            .with_label_values(&[kind.name()])
            .set(enforced.policy.count(kind) as i64);
    }
    gauge(
        reg,
        "antispam_build_info",
        "Build information; always 1.",
        &["version"],
    )
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
    plain_gauge(
        reg,
        "antispam_start_time_seconds",
        "Unix time the agent started.",
        shared
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    );
}

fn activity(s: &KeyState) -> (u64, u64) {
    (s.denied_total() + s.would_deny_total(), s.allowed_total())
}

/// The connects of a key (paths direct and local_smtp), by verdict.
fn connects(counts: &[u64; ev::PATHS as usize]) -> u64 {
    counts[ev::PATH_DIRECT as usize] + counts[ev::PATH_LOCAL_SMTP as usize]
}

/// The series of one kind of key (UIDs or cgroups).
struct KeySeries {
    attempts: IntCounterVec,
    conns: IntCounterVec,
    bytes: IntCounterVec,
    packets: IntCounterVec,
}

impl KeySeries {
    fn emit(&self, labels: &[String], s: &KeyState) {
        let base: Vec<&str> = labels.iter().map(String::as_str).collect();
        for (verdict, counts) in [
            ("allowed", &s.allowed),
            ("denied", &s.denied),
            ("would_deny", &s.would_deny),
        ] {
            let n = connects(counts);
            if n > 0 || verdict == "allowed" {
                let mut l = base.clone();
                l.push(verdict);
                self.conns.with_label_values(&l).inc_by(n);
            }
            for path in ev::PATH_CODES {
                let n = counts[path as usize];
                if n > 0 || verdict == "allowed" {
                    let mut l = base.clone();
                    l.extend([ev::path_name(path), verdict]);
                    self.attempts.with_label_values(&l).inc_by(n);
                }
            }
        }
        self.bytes.with_label_values(&base).inc_by(s.bytes);
        self.packets.with_label_values(&base).inc_by(s.packets);
    }
}

/// Per-UID and per-cgroup series, bounded to the most active keys.
fn per_key(reg: &Registry, shared: &Shared) {
    let keys = shared.view.keys();
    let tracked = gauge(
        reg,
        "antispam_tracked_keys",
        "UIDs and cgroups with live state in the kernel.",
        &["kind"],
    );
    for (kind, name) in [(KIND_UID, "uid"), (KIND_CGROUP, "cgroup")] {
        tracked
            .with_label_values(&[name])
            .set(keys.iter().filter(|(k, _)| k.kind == kind).count() as i64);
    }
    let uids = KeySeries {
        attempts: counter(
            reg,
            "antispam_uid_mail_attempts_total",
            "Attempts to hand mail on by UID, mail path and verdict (verdict would_deny: monitor mode).",
            &["uid", "user", "path", "verdict"],
        ),
        conns: counter(
            reg,
            "antispam_uid_smtp_connections_total",
            "SMTP connects (paths direct and local_smtp) by UID and verdict (verdict would_deny: monitor mode).",
            &["uid", "user", "verdict"],
        ),
        bytes: counter(
            reg,
            "antispam_uid_smtp_bytes_total",
            "SMTP bytes sent by UID (IP packets, headers included).",
            &["uid", "user"],
        ),
        packets: counter(
            reg,
            "antispam_uid_smtp_packets_total",
            "SMTP packets sent by UID.",
            &["uid", "user"],
        ),
    };
    let cgroups = KeySeries {
        attempts: counter(
            reg,
            "antispam_cgroup_mail_attempts_total",
            "Attempts to hand mail on by cgroup, mail path and verdict.",
            &["cgroup", "path", "verdict"],
        ),
        conns: counter(
            reg,
            "antispam_cgroup_smtp_connections_total",
            "SMTP connects (paths direct and local_smtp) by cgroup and verdict.",
            &["cgroup", "verdict"],
        ),
        bytes: counter(
            reg,
            "antispam_cgroup_smtp_bytes_total",
            "SMTP bytes sent by cgroup.",
            &["cgroup"],
        ),
        packets: counter(
            reg,
            "antispam_cgroup_smtp_packets_total",
            "SMTP packets sent by cgroup.",
            &["cgroup"],
        ),
    };
    for (kind, series) in [(KIND_UID, &uids), (KIND_CGROUP, &cgroups)] {
        let label = |key: &KeyId| -> Vec<String> {
            if kind == KIND_UID {
                let uid = key.id as u32;
                vec![uid.to_string(), shared.users.name(uid).unwrap_or_default()]
            } else {
                vec![shared.cgroups.label(key.id)]
            }
        };
        let mut of_kind: Vec<&(KeyId, KeyState)> =
            keys.iter().filter(|(k, _)| k.kind == kind).collect();
        of_kind.sort_by(|a, b| {
            activity(&b.1)
                .cmp(&activity(&a.1))
                .then(a.0.id.cmp(&b.0.id))
        });
        let (shown, rest) = of_kind.split_at(of_kind.len().min(shared.metrics_max_keys));
        for (key, s) in shown {
            series.emit(&label(key), s);
        }
        if !rest.is_empty() {
            let mut other = KeyState::default();
            for (_, s) in rest {
                for p in 0..ev::PATHS as usize {
                    other.allowed[p] += s.allowed[p];
                    other.denied[p] += s.denied[p];
                    other.would_deny[p] += s.would_deny[p];
                }
                other.bytes += s.bytes;
                other.packets += s.packets;
            }
            let labels = if kind == KIND_UID {
                vec!["other".to_string(), String::new()]
            } else {
                vec!["other".to_string()]
            };
            series.emit(&labels, &other);
        }
    }
}

/// Tenants' fleet budgets (one series per tenant of the policy: bounded by it, at most
/// `TENANTS_MAX`), and the fleet store.
fn fleet(reg: &Registry, shared: &Shared) {
    let policy = shared.enforced().policy.clone();
    let status = super::status::fleet(shared, &policy);
    let view = shared.fleet();
    let leased = gauge(
        reg,
        "antispam_fleet_lease_active",
        "1 while a lease of the tenant's fleet budget is in force on this host, 0 while it spends the tenant's local_rate.",
        &["tenant"],
    );
    let tokens = gauge(
        reg,
        "antispam_fleet_lease_tokens",
        "Tokens the lease in force has left.",
        &["tenant"],
    );
    let granted = counter(
        reg,
        "antispam_fleet_lease_granted_tokens_total",
        "Tokens the fleet store granted this host, all leases together.",
        &["tenant"],
    );
    let leases = counter(
        reg,
        "antispam_fleet_leases_total",
        "Leases the fleet store granted this host.",
        &["tenant"],
    );
    let expired = counter(
        reg,
        "antispam_fleet_leases_expired_total",
        "Leases that ended unrenewed: the host fell back to local_rate.",
        &["tenant"],
    );
    let used = counter(
        reg,
        "antispam_fleet_tokens_used_total",
        "Attempts allowed by the tenant's budget on this host, by source: lease, or local_rate (no lease in force).",
        &["tenant", "source"],
    );
    let refused = counter(
        reg,
        "antispam_fleet_refused_total",
        "Attempts the tenant's budget refused on this host (its lease spent, or its local_rate).",
        &["tenant"],
    );
    for t in &status.tenants {
        let l = view.tenants.get(&t.name).cloned().unwrap_or_default();
        let name = t.name.as_str();
        leased
            .with_label_values(&[name])
            .set(i64::from(t.state == "leased"));
        tokens
            .with_label_values(&[name])
            .set(t.lease_tokens.min(i64::MAX as u64) as i64);
        granted.with_label_values(&[name]).inc_by(l.granted);
        leases.with_label_values(&[name]).inc_by(l.leases);
        expired.with_label_values(&[name]).inc_by(l.expired);
        used.with_label_values(&[name, "lease"])
            .inc_by(t.leased_used);
        used.with_label_values(&[name, "local_rate"])
            .inc_by(t.local_used);
        refused.with_label_values(&[name]).inc_by(t.refused);
    }
    if view.config.is_none() {
        return;
    }
    plain_gauge(
        reg,
        "antispam_fleet_store_up",
        "1 when the last renewal reached the fleet store.",
        i64::from(view.connected),
    );
    plain_counter(
        reg,
        "antispam_fleet_store_requests_total",
        "Round trips to the fleet store that were answered (lease scripts, checkpoints).",
        view.round_trips,
    );
    plain_counter(
        reg,
        "antispam_fleet_store_errors_total",
        "Calls to the fleet store that failed or timed out.",
        view.errors,
    );
    plain_counter(
        reg,
        "antispam_fleet_checkpoints_total",
        "Audit heads appended to the fleet store.",
        view.checkpoints_written,
    );
    if let Err(e) = reg.register(Box::new(view.rtt.clone())) {
        log::debug!("fleet rtt histogram: {e}");
    }
}
