//! The decision every program shares: may this caller hand mail to this destination now?
//! Order: an approved break-glass override (block lists still apply), a suspension, the UID's
//! allow rule, the kill switch, the cgroup's allow rule, the destination lists, then the
//! buckets (the UID's, and the cgroup's when a cgroup rule limits it).

use antispam_common::{
    config::{Config, FLAG_KILL_SWITCH, FLAG_OVERRIDES, FLAG_SUSPENSIONS},
    event::*,
    key::KeyId,
    net::AF_INET,
    rule::{
        dest_v4_key, dest_v6_key, DestRule, Rule, ACTION_ALLOW, ACTION_BLOCK, ACTION_LIMIT,
        SLOT_BITS,
    },
};
use aya_ebpf::maps::lpm_trie::Key;

use crate::maps::{self, KeyEntry, Take, DEST_V4, DEST_V6};

/// Who is asking, as the kernel knows it.
#[derive(Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
}

/// Where the mail goes.
#[derive(Clone, Copy)]
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

#[inline(always)]
pub fn evaluate(a: &Attempt<'_>) -> Decision {
    let Caller { uid, cgroup_id, .. } = a.caller;
    let flags = a.cfg.flags;
    // An approved break-glass override comes first: for its short life it lifts suspensions,
    // the kill switch and every rate limit. Destination block lists still apply.
    if flags & FLAG_OVERRIDES != 0
        && (maps::overridden(&KeyId::uid(uid), a.now)
            || maps::overridden(&KeyId::cgroup(cgroup_id), a.now))
    {
        return match dest_rule(a.slot, &a.dest) {
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
    let cgroup_rule = maps::cgroup_rule(cgroup_id, a.slot);
    if let Some(r) = cgroup_rule {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_CGROUP, r.rule_id);
        }
    }
    if let Some(r) = dest_rule(a.slot, &a.dest) {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_DESTINATION, r.rule_id);
        }
        if r.action == ACTION_BLOCK {
            return Decision::deny(REASON_BLOCK_DESTINATION, r.rule_id);
        }
    }
    charge(a, uid_rule, cgroup_rule)
}

/// Takes a token from the UID's bucket, then from the cgroup's when a cgroup rule limits it; a
/// refusal by the cgroup gives the UID's token back.
#[inline(always)]
fn charge(a: &Attempt<'_>, uid_rule: Option<&Rule>, cgroup_rule: Option<&Rule>) -> Decision {
    let (uid_rate, uid_rule_id) = match uid_rule {
        Some(r) if r.action == ACTION_LIMIT => (r.rate, r.rule_id),
        _ => (a.cfg.default_rate, a.cfg.default_rule_id),
    };
    let Some(uid_state) = a.uid_state else {
        return Decision::deny(REASON_STATE_ERROR, uid_rule_id);
    };
    let uid_bucket = uid_state.bucket();
    match uid_bucket.take(a.now, &uid_rate) {
        Take::Taken => {}
        Take::Empty => return Decision::deny(REASON_RATE_UID, uid_rule_id),
        Take::Contended => return Decision::deny(REASON_STATE_ERROR, uid_rule_id),
    }
    let r = match cgroup_rule {
        Some(r) if r.action == ACTION_LIMIT => r,
        _ => return Decision::allow(REASON_WITHIN_LIMIT, uid_rule_id),
    };
    // Cgroups below a matched one draw on the matched cgroup's bucket; the cgroups of a shared
    // rule on the rule's bucket.
    let state = if r.bucket == 0 || r.bucket == a.caller.cgroup_id {
        a.cgroup_state
    } else {
        KeyEntry::get(&KeyId::bucket(r.bucket))
    };
    let refused = match state.map(|s| s.bucket().take(a.now, &r.rate)) {
        Some(Take::Taken) => return Decision::allow(REASON_WITHIN_LIMIT, r.rule_id),
        Some(Take::Empty) => Decision::deny(REASON_RATE_CGROUP, r.rule_id),
        Some(Take::Contended) | None => Decision::deny(REASON_STATE_ERROR, r.rule_id),
    };
    uid_bucket.give_back(&uid_rate);
    refused
}

/// The longest destination prefix rule matching `dest`.
#[inline(always)]
fn dest_rule(slot: u32, dest: &Destination) -> Option<&'static DestRule> {
    let a = &dest.addr;
    if dest.family == AF_INET {
        let v4 = [a[0], a[1], a[2], a[3]];
        DEST_V4.get(Key::new(SLOT_BITS + 32, dest_v4_key(slot, v4)))
    } else {
        DEST_V6.get(Key::new(SLOT_BITS + 128, dest_v6_key(slot, a)))
    }
}
