//! The decision every program shares: may this caller hand mail on now, by this path (a direct
//! connect, the local MTA's submission program, an SMTP connect to the local MTA)?
//! Order: an approved break-glass override (block lists still apply), a suspension, the UID's
//! allow rule, the kill switch, the cgroup's allow rule, the destination lists (for connects;
//! a submission to the local MTA is never an allow-listed destination), then the buckets (the
//! UID's, and the cgroup's when a cgroup rule limits it; a path with a budget of its own draws
//! on that instead of the common one), then the tenant's fleet budget when the rule names one.

use antispam_common::{
    config::{
        Config, FLAG_EVENTS_ALLOWED, FLAG_KILL_SWITCH, FLAG_MONITOR, FLAG_OVERRIDES,
        FLAG_SUSPENSIONS,
    },
    event::*,
    key::KeyId,
    net::AF_INET,
    rule::{
        dest_v4_key, dest_v6_key, DestRule, Rule, ACTION_ALLOW, ACTION_BLOCK, ACTION_LIMIT,
        SLOT_BITS,
    },
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    maps::lpm_trie::Key,
};

use crate::{
    events::{emit, Submission},
    maps::{self, KeyEntry, Take, TenantBudget, DEST_V4, DEST_V6},
};

/// Who is asking, as the kernel knows it.
#[derive(Clone, Copy)]
pub struct Caller {
    /// The real UID of the task.
    pub uid: u32,
    /// The UID charged and whose rules apply: `uid`, or its owner's for a subordinate UID.
    pub charged: u32,
    pub gid: u32,
    pub cgroup_id: u64,
}

impl Caller {
    /// The current task (its real UID and GID, its cgroup), and the time.
    #[inline(always)]
    pub fn current(cfg: &Config) -> (Caller, u64) {
        let uid_gid = bpf_get_current_uid_gid();
        // SAFETY: helpers without arguments, allowed for every program type that decides.
        let (cgroup_id, now) = unsafe { (bpf_get_current_cgroup_id(), bpf_ktime_get_ns()) };
        let uid = uid_gid as u32;
        let caller = Caller {
            uid,
            charged: maps::charged_uid(cfg, uid),
            gid: (uid_gid >> 32) as u32,
            cgroup_id,
        };
        (caller, now)
    }
}

/// Where the mail goes (all zero for a submission through the MTA's program).
#[derive(Clone, Copy, Default)]
pub struct Destination {
    /// `AF_INET` or `AF_INET6` (IPv4-mapped IPv6 addresses are `AF_INET`).
    pub family: u16,
    pub port: u16,
    /// Network byte order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

/// One attempt to decide.
pub struct Attempt<'a> {
    pub cfg: &'a Config,
    pub slot: u32,
    pub caller: Caller,
    /// `PATH_*`.
    pub path: u32,
    pub dest: Destination,
    pub now: u64,
    /// The caller's per-key state entries (None when the map was full).
    pub uid_state: Option<KeyEntry>,
    pub cgroup_state: Option<KeyEntry>,
}

pub struct Decision {
    pub verdict: u32,
    pub reason: u32,
    pub rule_id: u32,
}

impl Decision {
    const fn allow(reason: u32, rule_id: u32) -> Decision {
        Decision {
            verdict: VERDICT_ALLOWED,
            reason,
            rule_id,
        }
    }

    const fn deny(reason: u32, rule_id: u32) -> Decision {
        Decision {
            verdict: VERDICT_DENIED,
            reason,
            rule_id,
        }
    }
}

/// Decides, then counts the decision (per CPU, and per key and path) and writes its event (every
/// refusal; allowed attempts too when the connection trail is on). In monitor mode a refusal
/// becomes `VERDICT_WOULD_DENY`.
#[inline(always)]
pub fn decide_and_record(a: &Attempt<'_>, s: &Submission) -> Decision {
    let mut d = evaluate(a);
    if d.verdict == VERDICT_DENIED && a.cfg.flags & FLAG_MONITOR != 0 {
        d.verdict = VERDICT_WOULD_DENY;
    }
    maps::count_decision(counter_index(a.path, d.verdict, d.reason));
    for state in [a.uid_state, a.cgroup_state].into_iter().flatten() {
        state.count(a.path, d.verdict, a.now);
    }
    if d.verdict != VERDICT_ALLOWED || a.cfg.flags & FLAG_EVENTS_ALLOWED != 0 {
        emit(a.cfg, a, &d, s);
    }
    d
}

#[inline(always)]
fn evaluate(a: &Attempt<'_>) -> Decision {
    let Caller {
        charged: uid,
        cgroup_id,
        ..
    } = a.caller;
    let flags = a.cfg.flags;
    // An approved break-glass override comes first: for its short life it lifts suspensions,
    // the kill switch and every rate limit. Destination block lists still apply.
    if flags & FLAG_OVERRIDES != 0
        && (maps::overridden(&KeyId::uid(uid), a.now)
            || maps::overridden(&KeyId::cgroup(cgroup_id), a.now))
    {
        return match dest_rule(a) {
            Some(r) if r.action == ACTION_BLOCK => {
                Decision::deny(REASON_BLOCK_DESTINATION, r.rule_id)
            }
            _ => Decision::allow(REASON_BREAK_GLASS, 0),
        };
    }
    // An operator's suspension comes next: it wins over every allow list.
    if flags & FLAG_SUSPENSIONS != 0
        && (maps::suspended(&KeyId::uid(uid), a.now)
            || maps::suspended(&KeyId::cgroup(cgroup_id), a.now))
    {
        return Decision::deny(REASON_SUSPENDED, 0);
    }
    let uid_rule = maps::uid_rule(uid, a.slot);
    if let Some(r) = uid_rule {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_USER, r.rule_id);
        }
    }
    // The kill switch lets only allow-listed UIDs through.
    if flags & FLAG_KILL_SWITCH != 0 {
        return Decision::deny(REASON_KILL_SWITCH, 0);
    }
    let cgroup_rule = maps::cgroup_rule(a.cfg, cgroup_id, a.slot);
    if let Some(r) = cgroup_rule {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_CGROUP, r.rule_id);
        }
    }
    if let Some(r) = dest_rule(a) {
        // The local MTA is not an allow-listed destination: what is handed to it is charged.
        if r.action == ACTION_ALLOW && a.path == PATH_DIRECT {
            return Decision::allow(REASON_ALLOW_DESTINATION, r.rule_id);
        }
        if r.action == ACTION_BLOCK {
            return Decision::deny(REASON_BLOCK_DESTINATION, r.rule_id);
        }
    }
    charge(a, uid_rule, cgroup_rule)
}

/// Takes a token from the UID's bucket, then from the cgroup's when a cgroup rule limits it,
/// then from the tenant's fleet budget when the limiting rule names a tenant (the cgroup rule's,
/// else the UID rule's); a refusal by a later bucket gives the earlier ones their tokens back.
#[inline(always)]
fn charge(a: &Attempt<'_>, uid_rule: Option<&Rule>, cgroup_rule: Option<&Rule>) -> Decision {
    let uid_limit = uid_rule.filter(|r| r.action == ACTION_LIMIT);
    let ((uid_rate, uid_own), uid_rule_id) = match uid_limit {
        Some(r) => (r.budgets.for_path(r.rate, a.path), r.rule_id),
        None => (
            a.cfg.default_budgets.for_path(a.cfg.default_rate, a.path),
            a.cfg.default_rule_id,
        ),
    };
    // A path with a budget of its own draws on the key's entry for that path.
    let uid_entry = if uid_own {
        KeyEntry::get(&KeyId::uid(a.caller.charged).own_budget(a.path))
    } else {
        a.uid_state
    };
    let Some(uid_state) = uid_entry else {
        return Decision::deny(REASON_STATE_ERROR, uid_rule_id);
    };
    let uid_bucket = uid_state.bucket();
    match uid_bucket.take(a.now, &uid_rate) {
        Take::Taken => {}
        Take::Empty => return Decision::deny(REASON_RATE_UID, uid_rule_id),
        Take::Contended => return Decision::deny(REASON_STATE_ERROR, uid_rule_id),
    }
    let Some(r) = cgroup_rule.filter(|r| r.action == ACTION_LIMIT) else {
        return match uid_limit {
            Some(u) if u.tenant != 0 => match charge_tenant(a, u) {
                Some(refused) => {
                    uid_bucket.give_back(&uid_rate);
                    refused
                }
                None => Decision::allow(REASON_WITHIN_LIMIT, uid_rule_id),
            },
            _ => Decision::allow(REASON_WITHIN_LIMIT, uid_rule_id),
        };
    };
    // Cgroups below a matched one draw on the matched cgroup's bucket; the cgroups of a shared
    // rule on the rule's bucket.
    let (rate, own) = r.budgets.for_path(r.rate, a.path);
    let own_cgroup = r.bucket == 0 || r.bucket == a.caller.cgroup_id;
    let key = if own_cgroup {
        KeyId::cgroup(a.caller.cgroup_id)
    } else {
        KeyId::bucket(r.bucket)
    };
    let state = if own {
        KeyEntry::get(&key.own_budget(a.path))
    } else if own_cgroup {
        a.cgroup_state
    } else {
        KeyEntry::get(&key)
    };
    let cgroup_bucket = match state {
        Some(s) => s.bucket(),
        None => {
            uid_bucket.give_back(&uid_rate);
            return Decision::deny(REASON_STATE_ERROR, r.rule_id);
        }
    };
    let refused = match cgroup_bucket.take(a.now, &rate) {
        Take::Taken => {
            let tenant_rule = match uid_limit {
                Some(u) if r.tenant == 0 => u,
                _ => r,
            };
            if tenant_rule.tenant == 0 {
                return Decision::allow(REASON_WITHIN_LIMIT, r.rule_id);
            }
            match charge_tenant(a, tenant_rule) {
                None => return Decision::allow(REASON_WITHIN_LIMIT, r.rule_id),
                Some(refused) => {
                    cgroup_bucket.give_back(&rate);
                    refused
                }
            }
        }
        Take::Empty => Decision::deny(REASON_RATE_CGROUP, r.rule_id),
        Take::Contended => Decision::deny(REASON_STATE_ERROR, r.rule_id),
    };
    uid_bucket.give_back(&uid_rate);
    refused
}

/// Takes a token from the fleet budget of `rule`'s tenant: None when taken, else the refusal.
#[inline(always)]
fn charge_tenant(a: &Attempt<'_>, rule: &Rule) -> Option<Decision> {
    match TenantBudget::get(rule.tenant).map(|t| t.take(a.now)) {
        Some(Ok(_)) => None,
        Some(Err(Take::Empty)) => Some(Decision::deny(REASON_RATE_TENANT, rule.rule_id)),
        _ => Some(Decision::deny(REASON_STATE_ERROR, rule.rule_id)),
    }
}

/// The longest destination prefix rule matching the attempt's destination (none for a
/// submission through the MTA's program, which has none).
#[inline(always)]
fn dest_rule(a: &Attempt<'_>) -> Option<&'static DestRule> {
    let d = &a.dest;
    let addr = &d.addr;
    if a.path == PATH_SENDMAIL {
        None
    } else if d.family == AF_INET {
        let v4 = [addr[0], addr[1], addr[2], addr[3]];
        DEST_V4.get(Key::new(SLOT_BITS + 32, dest_v4_key(a.slot, v4)))
    } else {
        DEST_V6.get(Key::new(SLOT_BITS + 128, dest_v6_key(a.slot, addr)))
    }
}
