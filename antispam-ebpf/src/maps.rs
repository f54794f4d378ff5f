//! The maps, and small helpers around them used by every program. Every map is pinned by name
//! in the agent's pin directory, so that it outlives the agent (see antispam-user/src/pins.rs).

use core::intrinsics::{atomic_cxchg, atomic_xadd, atomic_xsub, AtomicOrdering::Relaxed};

use antispam_common::{
    config::Config,
    key::{KeyId, KeyState, Override, Suspension},
    maps as m,
    rule::{CgroupKey, DestRule, Rule, UidKey},
    stats,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

#[map(name = "AS_ACTIVE")]
pub static ACTIVE: Array<u32> = Array::pinned(1, 0);

#[map(name = "AS_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(m::SLOTS, 0);

#[map(name = "AS_PORTS")]
pub static PORTS: Array<u64> = Array::pinned(m::SLOTS * m::PORTS_WORDS, 0);

#[map(name = "AS_UID_RULES")]
pub static UID_RULES: HashMap<UidKey, Rule> =
    HashMap::pinned(m::SLOTS * m::UID_RULES_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_CGROUP_RULES")]
pub static CGROUP_RULES: HashMap<CgroupKey, Rule> =
    HashMap::pinned(m::SLOTS * m::CGROUP_RULES_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_DEST_V4")]
pub static DEST_V4: LpmTrie<[u8; 5], DestRule> =
    LpmTrie::pinned(m::SLOTS * m::DEST_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_DEST_V6")]
pub static DEST_V6: LpmTrie<[u8; 17], DestRule> =
    LpmTrie::pinned(m::SLOTS * m::DEST_MAX, BPF_F_NO_PREALLOC);

/// The rule set in force (see `antispam_common::maps::ACTIVE`).
#[inline(always)]
pub fn active_slot() -> u32 {
    match ACTIVE.get(0) {
        Some(s) => *s & 1,
        None => 0,
    }
}

/// Is `port` an SMTP port in rule set `slot`?
#[inline(always)]
pub fn is_smtp(slot: u32, port: u16) -> bool {
    let (word, bit) = antispam_common::net::port_slot(port);
    match PORTS.get(slot * m::PORTS_WORDS + word) {
        Some(w) => *w & bit != 0,
        None => false,
    }
}

#[map(name = "AS_KEYS")]
pub static KEYS: LruHashMap<KeyId, KeyState> = LruHashMap::pinned(m::KEYS_MAX, 0);

#[map(name = "AS_SUSPENDED")]
pub static SUSPENDED: HashMap<KeyId, Suspension> =
    HashMap::pinned(m::SUSPENDED_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_OVERRIDES")]
pub static OVERRIDES: HashMap<KeyId, Override> =
    HashMap::pinned(m::OVERRIDES_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_DECISIONS")]
pub static DECISIONS: PerCpuArray<u64> =
    PerCpuArray::pinned(antispam_common::event::DECISIONS_LEN, 0);

#[map(name = "AS_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::COUNT, 0);

#[map(name = "AS_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(m::EVENTS_BYTES, 0);

/// Adds one to a per-CPU counter (no atomics needed: the slot belongs to this CPU).
#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: a valid pointer into this CPU's slot of the array; BPF programs are not
        // preempted by another program on the same CPU for these program types.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn stat(index: u32) {
    bump(&STATS, index);
}

// SAFETY (all four below): `p` points into a map value, 8-byte aligned (every `KeyState` field
// is a `u64` at an offset that is a multiple of 8), alive for the whole program run.

/// Adds `n` to a shared counter in a map value (BPF_ATOMIC_ADD).
#[inline(always)]
pub fn add(p: *mut u64, n: u64) {
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(p, n) };
}

/// Subtracts `n` from a shared value in a map value.
#[inline(always)]
pub fn sub(p: *mut u64, n: u64) {
    unsafe { atomic_xsub::<u64, u64, { Relaxed }>(p, n) };
}

/// Reads a shared value in a map value.
#[inline(always)]
pub fn load(p: *mut u64) -> u64 {
    // A plain 8-byte load is single-copy atomic on every BPF JIT; the compare-and-swap that
    // follows catches any change made in between.
    unsafe { core::ptr::read_volatile(p) }
}

/// Compare-and-swap (BPF_CMPXCHG): `Ok(())` when `*p` was `old` and is now `new`, otherwise
/// `Err(actual)`.
#[inline(always)]
pub fn cas(p: *mut u64, old: u64, new: u64) -> Result<(), u64> {
    match unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(p, old, new) } {
        (_, true) => Ok(()),
        (actual, false) => Err(actual),
    }
}

/// The state entry of `key`, inserted zeroed (a full bucket) when missing.
#[inline(always)]
pub fn key_state(key: &KeyId) -> Option<*mut KeyState> {
    if let Some(p) = KEYS.get_ptr_mut(key) {
        return Some(p);
    }
    // BPF_NOEXIST: when two CPUs race to create the entry, one insert fails and both then use
    // the entry that won.
    let _ = KEYS.insert(
        key,
        KeyState::default(),
        aya_ebpf::bindings::BPF_NOEXIST as u64,
    );
    match KEYS.get_ptr_mut(key) {
        Some(p) => Some(p),
        None => {
            stat(stats::MAP_UPDATE_FAILED);
            None
        }
    }
}
