//! The decision programs: `cgroup/connect4` and `cgroup/connect6`.

use antispam_common::{
    config::{
        Config, FLAG_EVENTS_ALLOWED, FLAG_KILL_SWITCH, FLAG_MONITOR, FLAG_OVERRIDES,
        FLAG_SUSPENSIONS,
    },
    event::*,
    key::{KeyId, KeyState},
    maps::EVENTS_BYTES,
    net::{self, AF_INET, AF_INET6},
    rate::{gcra, Rate},
    rule::{
        dest_v4_key, dest_v6_key, CgroupKey, DestRule, Rule, UidKey, ACTION_ALLOW, ACTION_BLOCK,
        ACTION_LIMIT, SLOT_BITS,
    },
    stats,
};
use aya_ebpf::{
    bindings::{bpf_sock_addr, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    macros::cgroup_sock_addr,
    maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;

use crate::maps::{
    active_slot, add, bump, cas, is_smtp, key_state, load, stat, sub, CGROUP_RULES, CONFIG,
    DECISIONS, DEST_V4, DEST_V6, EVENTS, OVERRIDES, SUSPENDED, UID_RULES,
};

/// `connect()` goes on.
const PASS: i32 = 1;
/// `connect()` fails with EPERM.
const REFUSE: i32 = 0;
const SOCK_STREAM: u32 = 1;
/// Attempts at a compare-and-swap on one bucket before giving up.
const CAS_TRIES: u32 = 8;

#[cgroup_sock_addr(connect4)]
pub fn antispam_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context pointer the kernel passed to this program.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return PASS;
    }
    let port = u16::from_be(sa.user_port as u16);
    let ip4 = sa.user_ip4;
    let mut addr = [0u8; 16];
    let b = ip4.to_ne_bytes();
    addr[0] = b[0];
    addr[1] = b[1];
    addr[2] = b[2];
    addr[3] = b[3];
    decide(&ctx, port, AF_INET, addr)
}

#[cgroup_sock_addr(connect6)]
pub fn antispam_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context pointer the kernel passed to this program.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return PASS;
    }
    let port = u16::from_be(sa.user_port as u16);
    // The verifier wants each 4-byte word of user_ip6 read on its own.
    let words = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    match net::ipv4_mapped(&words) {
        Some(ip4) => {
            let mut addr = [0u8; 16];
            let b = ip4.to_ne_bytes();
            addr[0] = b[0];
            addr[1] = b[1];
            addr[2] = b[2];
            addr[3] = b[3];
            decide(&ctx, port, AF_INET, addr)
        }
        None => decide(&ctx, port, AF_INET6, net::ip6_bytes(&words)),
    }
}

struct Decision {
    verdict: u32,
    reason: u32,
    rule_id: u32,
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
fn decide(ctx: &SockAddrContext, port: u16, family: u16, addr: [u8; 16]) -> i32 {
    let slot = active_slot();
    if !is_smtp(slot, port) {
        return PASS;
    }
    let Some(cfg) = CONFIG.get(slot) else {
        stat(stats::CONFIG_MISSING);
        return PASS;
    };
    let uid_gid = bpf_get_current_uid_gid();
    let uid = uid_gid as u32;
    let gid = (uid_gid >> 32) as u32;
    // SAFETY: helpers without arguments, allowed for this program type.
    let (cgroup_id, now) = unsafe { (bpf_get_current_cgroup_id(), bpf_ktime_get_ns()) };

    let uid_state = key_state(&KeyId::uid(uid));
    let cgroup_state = key_state(&KeyId::cgroup(cgroup_id));
    let mut d = evaluate(
        cfg,
        slot,
        uid,
        cgroup_id,
        family,
        &addr,
        now,
        uid_state,
        cgroup_state,
    );
    if d.verdict == VERDICT_DENIED && cfg.flags & FLAG_MONITOR != 0 {
        d.verdict = VERDICT_WOULD_DENY;
    }

    bump(&DECISIONS, counter_index(d.verdict, d.reason));
    for state in [uid_state, cgroup_state].into_iter().flatten() {
        // SAFETY: pointers into live map values returned by the map helpers.
        let counter = unsafe {
            match d.verdict {
                VERDICT_ALLOWED => &raw mut (*state).allowed,
                VERDICT_DENIED => &raw mut (*state).denied,
                _ => &raw mut (*state).would_deny,
            }
        };
        add(counter, 1);
        // SAFETY: as above; a plain store of the last time seen, races only pick one of two
        // nearly equal times.
        unsafe { (*state).last_ns = now };
    }

    if d.verdict != VERDICT_ALLOWED || cfg.flags & FLAG_EVENTS_ALLOWED != 0 {
        emit(cfg, &d, uid, gid, cgroup_id, family, port, addr, now);
    }
    if d.verdict == VERDICT_DENIED {
        debug!(
            ctx,
            "antispam: refused uid {} port {} reason {}", uid, port, d.reason
        );
        REFUSE
    } else {
        PASS
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn evaluate(
    cfg: &Config,
    slot: u32,
    uid: u32,
    cgroup_id: u64,
    family: u16,
    addr: &[u8; 16],
    now: u64,
    uid_state: Option<*mut KeyState>,
    cgroup_state: Option<*mut KeyState>,
) -> Decision {
    // An approved break-glass override comes first: for its short life it lifts suspensions,
    // the kill switch and every rate limit. Destination block lists still apply.
    if cfg.flags & FLAG_OVERRIDES != 0
        && (overridden(&KeyId::uid(uid), now) || overridden(&KeyId::cgroup(cgroup_id), now))
    {
        return match dest_rule(slot, family, addr) {
            Some(r) if r.action == ACTION_BLOCK => {
                Decision::deny(REASON_BLOCK_DESTINATION, r.rule_id)
            }
            _ => Decision::allow(REASON_BREAK_GLASS, 0),
        };
    }
    // An operator's suspension comes next: it wins over every allow list.
    if cfg.flags & FLAG_SUSPENSIONS != 0
        && (suspended(&KeyId::uid(uid), now) || suspended(&KeyId::cgroup(cgroup_id), now))
    {
        return Decision::deny(REASON_SUSPENDED, 0);
    }
    // SAFETY: map lookups; the values are plain data that only the agent rewrites whole.
    let uid_rule: Option<&Rule> = unsafe { UID_RULES.get(UidKey { uid, slot }) };
    if let Some(r) = uid_rule {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_USER, r.rule_id);
        }
    }
    // The kill switch lets only allow-listed UIDs through.
    if cfg.flags & FLAG_KILL_SWITCH != 0 {
        return Decision::deny(REASON_KILL_SWITCH, 0);
    }
    // SAFETY: as above.
    let cgroup_rule: Option<&Rule> = unsafe { CGROUP_RULES.get(CgroupKey::new(cgroup_id, slot)) };
    if let Some(r) = cgroup_rule {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_CGROUP, r.rule_id);
        }
    }
    if let Some(r) = dest_rule(slot, family, addr) {
        if r.action == ACTION_ALLOW {
            return Decision::allow(REASON_ALLOW_DESTINATION, r.rule_id);
        }
        if r.action == ACTION_BLOCK {
            return Decision::deny(REASON_BLOCK_DESTINATION, r.rule_id);
        }
    }

    let (uid_rate, uid_rule_id) = match uid_rule {
        Some(r) if r.action == ACTION_LIMIT => (r.rate, r.rule_id),
        _ => (cfg.default_rate, cfg.default_rule_id),
    };
    let Some(uid_state) = uid_state else {
        return Decision::deny(REASON_STATE_ERROR, uid_rule_id);
    };
    // SAFETY: pointer into a live map value.
    let uid_tat = unsafe { &raw mut (*uid_state).tat };
    match take(uid_tat, now, &uid_rate) {
        Take::Taken => {}
        Take::Empty => return Decision::deny(REASON_RATE_UID, uid_rule_id),
        Take::Contended => return Decision::deny(REASON_STATE_ERROR, uid_rule_id),
    }

    let Some(r) = cgroup_rule else {
        return Decision::allow(REASON_WITHIN_LIMIT, uid_rule_id);
    };
    if r.action != ACTION_LIMIT {
        return Decision::allow(REASON_WITHIN_LIMIT, uid_rule_id);
    }
    // Cgroups below a matched one draw on the matched cgroup's bucket; the cgroups of a shared
    // rule on the rule's bucket.
    let bucket_state = if r.bucket == 0 || r.bucket == cgroup_id {
        cgroup_state
    } else {
        key_state(&KeyId::bucket(r.bucket))
    };
    let refused = match bucket_state {
        // SAFETY: pointer into a live map value.
        Some(state) => match take(unsafe { &raw mut (*state).tat }, now, &r.rate) {
            Take::Taken => return Decision::allow(REASON_WITHIN_LIMIT, r.rule_id),
            Take::Empty => Decision::deny(REASON_RATE_CGROUP, r.rule_id),
            Take::Contended => Decision::deny(REASON_STATE_ERROR, r.rule_id),
        },
        None => Decision::deny(REASON_STATE_ERROR, r.rule_id),
    };
    // The UID's token was taken for a connect that is refused after all: give it back.
    if uid_rate.interval_ns != 0 {
        sub(uid_tat, uid_rate.interval_ns);
    }
    refused
}

/// The longest destination prefix rule matching `addr`.
#[inline(always)]
fn dest_rule(slot: u32, family: u16, addr: &[u8; 16]) -> Option<&'static DestRule> {
    if family == AF_INET {
        let a = [addr[0], addr[1], addr[2], addr[3]];
        DEST_V4.get(Key::new(SLOT_BITS + 32, dest_v4_key(slot, a)))
    } else {
        DEST_V6.get(Key::new(SLOT_BITS + 128, dest_v6_key(slot, addr)))
    }
}

/// Is `key` under a break-glass override at `now`?
#[inline(always)]
pub fn overridden(key: &KeyId, now: u64) -> bool {
    // SAFETY: a map lookup of plain data.
    match unsafe { OVERRIDES.get(key) } {
        Some(o) => o.active(now),
        None => false,
    }
}

/// Is `key` suspended at `now`?
#[inline(always)]
pub fn suspended(key: &KeyId, now: u64) -> bool {
    // SAFETY: a map lookup of plain data.
    match unsafe { SUSPENDED.get(key) } {
        Some(s) => s.active(now),
        None => false,
    }
}

enum Take {
    Taken,
    Empty,
    Contended,
}

/// Takes one token from the bucket whose TAT is at `tat`, race-free across CPUs.
#[inline(always)]
fn take(tat: *mut u64, now: u64, rate: &Rate) -> Take {
    if rate.interval_ns == 0 {
        return Take::Taken;
    }
    let mut current = load(tat);
    for _ in 0..CAS_TRIES {
        let Some(next) = gcra(current, now, rate) else {
            return Take::Empty;
        };
        match cas(tat, current, next) {
            Ok(_) => return Take::Taken,
            Err(actual) => current = actual,
        }
    }
    stat(stats::CAS_CONTENDED);
    Take::Contended
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    cfg: &Config,
    d: &Decision,
    uid: u32,
    gid: u32,
    cgroup_id: u64,
    family: u16,
    port: u16,
    addr: [u8; 16],
    now: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        stat(stats::RINGBUF_FULL);
        return;
    };
    let comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
    entry.write(Event {
        ts_ns: now,
        cgroup_id,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid,
        gid,
        verdict: d.verdict,
        reason: d.reason,
        rule_id: d.rule_id,
        family,
        dport: port,
        generation: cfg.generation,
        daddr: addr,
        comm,
    });
    // No event wakes the agent by itself (a wakeup costs the caller microseconds and, during an
    // outbreak, one context switch per refusal): the agent drains every 50 ms, and is woken
    // early only when the ring is an eighth full.
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > (EVENTS_BYTES / 8) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    };
    entry.submit(flags);
}
