//! The maps, and small safe wrappers around their values used by every program. Every map is
//! pinned by name in the agent's pin directory, so that it outlives the agent (see
//! antispam-user/src/kernel/pins.rs).
//!
//! Values that several CPUs update at once (the per-key buckets and counters) are reached only
//! through [`KeyEntry`] and [`Bucket`], which use BPF atomic instructions; nothing else here
//! hands out a raw pointer.

use core::intrinsics::{atomic_cxchg, atomic_xadd, atomic_xsub, AtomicOrdering::Relaxed};

use antispam_common::{
    config::Config,
    key::{KeyId, KeyState, Override, Suspension},
    maps as m,
    rate::{gcra, Rate},
    rule::{CgroupKey, DestRule, Program, ProgramKey, Rule, UidKey},
    stats,
    tenant::{Lease, TenantUse},
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::generated::bpf_get_current_ancestor_cgroup_id,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
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

#[map(name = "AS_PROGRAMS")]
static PROGRAMS: HashMap<ProgramKey, Program> =
    HashMap::pinned(m::SLOTS * m::PROGRAMS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_PROGRAM_FILTER")]
static PROGRAM_FILTER: Array<u64> = Array::pinned(m::SLOTS * m::PROGRAM_FILTER_WORDS, 0);

#[map(name = "AS_LOCAL_ADDRS")]
static LOCAL_ADDRS: HashMap<[u8; 16], u32> = HashMap::pinned(m::LOCAL_ADDRS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_KEYS")]
static KEYS: HashMap<KeyId, KeyState> = HashMap::pinned(m::KEYS_MAX, 0);

#[map(name = "AS_LEASES")]
static LEASES: HashMap<u64, Lease> = HashMap::pinned(m::TENANTS_MAX, 0);

#[map(name = "AS_TENANT_USE")]
static TENANT_USE: HashMap<u64, TenantUse> = HashMap::pinned(m::TENANTS_MAX, 0);

#[map(name = "AS_SUBUIDS")]
static SUBUIDS: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(m::SUBUIDS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_VETHS")]
pub static VETHS: HashMap<u32, antispam_common::net::Veth> =
    HashMap::pinned(m::VETHS_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_SUSPENDED")]
static SUSPENDED: HashMap<KeyId, Suspension> = HashMap::pinned(m::SUSPENDED_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_OVERRIDES")]
static OVERRIDES: HashMap<KeyId, Override> = HashMap::pinned(m::OVERRIDES_MAX, BPF_F_NO_PREALLOC);

#[map(name = "AS_DECISIONS")]
static DECISIONS: PerCpuArray<u64> = PerCpuArray::pinned(antispam_common::event::DECISIONS_LEN, 0);

#[map(name = "AS_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::COUNT, 0);

#[map(name = "AS_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(m::EVENTS_BYTES, 0);

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

/// The configuration of rule set `slot`.
#[inline(always)]
pub fn config(slot: u32) -> Option<&'static Config> {
    CONFIG.get(slot)
}

/// The UID's rule in rule set `slot`.
#[inline(always)]
pub fn uid_rule(uid: u32, slot: u32) -> Option<&'static Rule> {
    // SAFETY: a lookup of plain data that only the agent rewrites, whole, with map updates.
    unsafe { UID_RULES.get(UidKey { uid, slot }) }
}

/// The cgroup's entry in rule set `slot` (a rule, or the marker of a known cgroup without one).
#[inline(always)]
fn cgroup_entry(id: u64, slot: u32) -> Option<&'static Rule> {
    // SAFETY: as for `uid_rule`.
    unsafe { CGROUP_RULES.get(CgroupKey::new(id, slot)) }
}

/// How far up the programs look for a new cgroup's rule (the verifier needs a bound; cgroup
/// trees are rarely deeper).
const ANCESTOR_LEVELS: u32 = 16;

/// The rule covering the current task's cgroup `id` in rule set `slot`: its own, or, for a
/// cgroup the agent has not seen yet (made a moment ago, perhaps with `clone3(CLONE_INTO_
/// CGROUP)`), that of its nearest ancestor below the attach point that has one, drawing on
/// that ancestor's bucket, as the agent will assign it a moment later.
#[inline(always)]
pub fn cgroup_rule(cfg: &Config, id: u64, slot: u32) -> Option<&'static Rule> {
    use antispam_common::{config::FLAG_CGROUP_RULES, rule::ACTION_NONE};
    if cfg.flags & FLAG_CGROUP_RULES == 0 {
        return None;
    }
    if let Some(r) = cgroup_entry(id, slot) {
        return (r.action != ACTION_NONE).then_some(r);
    }
    // Unknown to the agent: the nearest ancestor with an entry decides. First the cgroup's own
    // level (where the ancestor id is `id`), then upwards from its parent to the attach point:
    // two simple loops the verifier can follow (one loop carrying the best match so far makes
    // it give up: "the sequence of jumps is too complex").
    // The loops count from 0 with constant bounds (the verifier cannot bound a loop that
    // starts at a value read from a map).
    let first = cfg.attach_level & 0xff;
    let mut depth = 0;
    for i in 0..ANCESTOR_LEVELS {
        // SAFETY: a helper taking a level, allowed for these program types.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id((first + i) as i32) };
        if ancestor == id || ancestor == 0 {
            depth = i;
            break;
        }
    }
    for up in 1..=ANCESTOR_LEVELS {
        if up > depth {
            return None;
        }
        // SAFETY: as above.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id((first + depth - up) as i32) };
        if let Some(r) = cgroup_entry(ancestor, slot) {
            return (r.action != ACTION_NONE).then_some(r);
        }
    }
    None
}

/// The UID charged for `uid`: its owner's when it is a subordinate UID (`/etc/subuid`, used
/// by rootless containers), else itself.
#[inline(always)]
pub fn charged_uid(cfg: &Config, uid: u32) -> u32 {
    use antispam_common::config::FLAG_SUBUIDS;
    if cfg.flags & FLAG_SUBUIDS == 0 || uid < cfg.subuid_min {
        return uid;
    }
    match SUBUIDS.get(Key::new(32, uid.to_be_bytes())) {
        Some(owner) => *owner,
        None => uid,
    }
}

/// May `ino` be one of rule set `slot`'s submission programs? (No false negatives.)
#[inline(always)]
pub fn maybe_program(ino: u64, slot: u32) -> bool {
    let (word, bit) = antispam_common::rule::program_filter_bit(ino);
    match PROGRAM_FILTER.get(slot * m::PROGRAM_FILTER_WORDS + word) {
        Some(w) => *w & bit != 0,
        None => false,
    }
}

/// The submission program with this inode, in rule set `slot`.
#[inline(always)]
pub fn program(ino: u64, dev: u32, slot: u32) -> Option<&'static Program> {
    // SAFETY: a lookup of plain data that only the agent writes, whole.
    unsafe { PROGRAMS.get(ProgramKey { ino, dev, slot }) }
}

/// Is the destination the host itself (loopback, or one of its own addresses)?
#[inline(always)]
pub fn is_local(family: u16, addr: &[u8; 16]) -> bool {
    if antispam_common::net::is_loopback(family, addr) {
        return true;
    }
    let key = antispam_common::net::local_key(family, addr);
    // SAFETY: a lookup of plain data that only the agent writes, whole.
    unsafe { LOCAL_ADDRS.get(key).is_some() }
}

/// Is `key` suspended at `now`?
#[inline(always)]
pub fn suspended(key: &KeyId, now: u64) -> bool {
    // SAFETY: a lookup of plain data that only the agent writes, whole.
    match unsafe { SUSPENDED.get(key) } {
        Some(s) => s.active(now),
        None => false,
    }
}

/// Is `key` under a break-glass override at `now`?
#[inline(always)]
pub fn overridden(key: &KeyId, now: u64) -> bool {
    // SAFETY: as for `suspended`.
    match unsafe { OVERRIDES.get(key) } {
        Some(o) => o.active(now),
        None => false,
    }
}

/// Adds one to a per-CPU counter (no atomics needed: the slot belongs to this CPU).
#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: a valid pointer into this CPU's slot of the array; BPF programs are not
        // preempted by another program on the same CPU for these program types.
        unsafe { *p += 1 };
    }
}

/// Counts one decision (see `antispam_common::event::counter_index`).
#[inline(always)]
pub fn count_decision(index: u32) {
    bump(&DECISIONS, index);
}

/// Counts something only the kernel side can see (`antispam_common::stats`).
#[inline(always)]
pub fn stat(index: u32) {
    bump(&STATS, index);
}

/// Adds `n` to a shared `u64` (BPF_ATOMIC_ADD).
///
/// # Safety
/// `p` points to a live, 8-byte aligned `u64` inside a map value.
#[inline(always)]
unsafe fn add(p: *mut u64, n: u64) {
    // SAFETY: the caller's promise.
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(p, n) };
}

/// Subtracts `n` from a shared `u64`.
///
/// # Safety
/// As for [`add`].
#[inline(always)]
unsafe fn sub(p: *mut u64, n: u64) {
    // SAFETY: the caller's promise.
    unsafe { atomic_xsub::<u64, u64, { Relaxed }>(p, n) };
}

/// Compare-and-swap (BPF_CMPXCHG): `Ok(())` when `*p` was `old` and is now `new`, otherwise
/// `Err(actual)`.
///
/// # Safety
/// As for [`add`].
#[inline(always)]
unsafe fn cas(p: *mut u64, old: u64, new: u64) -> Result<(), u64> {
    // SAFETY: the caller's promise.
    match unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(p, old, new) } {
        (_, true) => Ok(()),
        (actual, false) => Err(actual),
    }
}

/// Attempts at a compare-and-swap on one bucket before giving up.
const CAS_TRIES: u32 = 8;

/// What taking a token from a bucket did.
pub enum Take {
    Taken,
    Empty,
    /// Other CPUs changed the bucket on every attempt.
    Contended,
}

/// The GCRA bucket (its theoretical arrival time) of one key.
#[derive(Clone, Copy)]
pub struct Bucket(*mut u64);

impl Bucket {
    /// Takes one token, race-free across CPUs.
    #[inline(always)]
    pub fn take(self, now: u64, rate: &Rate) -> Take {
        if rate.interval_ns == 0 {
            return Take::Taken;
        }
        // A plain 8-byte load is single-copy atomic on every BPF JIT; the compare-and-swap
        // that follows catches any change made in between.
        // SAFETY: `self.0` points into a live map value (see `KeyEntry`).
        let mut current = unsafe { core::ptr::read_volatile(self.0) };
        for _ in 0..CAS_TRIES {
            let Some(next) = gcra(current, now, rate) else {
                return Take::Empty;
            };
            // SAFETY: as above.
            match unsafe { cas(self.0, current, next) } {
                Ok(()) => return Take::Taken,
                Err(actual) => current = actual,
            }
        }
        stat(stats::CAS_CONTENDED);
        Take::Contended
    }

    /// Gives back a token taken for an attempt refused after all (by another bucket).
    #[inline(always)]
    pub fn give_back(self, rate: &Rate) {
        if rate.interval_ns != 0 {
            // SAFETY: `self.0` points into a live map value (see `KeyEntry`).
            unsafe { sub(self.0, rate.interval_ns) };
        }
    }
}

/// A fresh per-key state: a full bucket, no counts.
static FRESH: KeyState = KeyState {
    tat: 0,
    allowed: [0; antispam_common::event::PATHS as usize],
    denied: [0; antispam_common::event::PATHS as usize],
    would_deny: [0; antispam_common::event::PATHS as usize],
    packets: 0,
    bytes: 0,
    last_ns: 0,
};

/// A live entry of the per-key state map. The map keeps the value alive for the whole program
/// run (an LRU eviction only unlinks it), and every `KeyState` field is a `u64` at an offset that
/// is a multiple of 8, so the atomic helpers' requirements hold for every field pointer.
#[derive(Clone, Copy)]
pub struct KeyEntry(*mut KeyState);

impl KeyEntry {
    /// The entry of `key`, inserted zeroed (a full bucket) when missing. None (counted) when
    /// the map is full: the attempt is then refused if it needs a bucket (fail closed).
    #[inline(always)]
    pub fn get(key: &KeyId) -> Option<KeyEntry> {
        if let Some(p) = KEYS.get_ptr_mut(key) {
            return Some(KeyEntry(p));
        }
        // BPF_NOEXIST: when two CPUs race to create the entry, one insert fails and both then
        // use the entry that won. The zeroed value comes from .rodata, not the stack.
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "a reference to the static, not a copy of it on the 512-byte stack"
        )]
        let _ = KEYS.insert(key, &FRESH, BPF_NOEXIST as u64);
        match KEYS.get_ptr_mut(key) {
            Some(p) => Some(KeyEntry(p)),
            None => {
                stat(stats::MAP_UPDATE_FAILED);
                None
            }
        }
    }

    /// The key's bucket.
    #[inline(always)]
    pub fn bucket(self) -> Bucket {
        // SAFETY: a field of the live value; no reference is made.
        Bucket(unsafe { &raw mut (*self.0).tat })
    }

    /// Counts one decision of `verdict` on mail path `path` at `now`.
    #[inline(always)]
    pub fn count(self, path: u32, verdict: u32, now: u64) {
        use antispam_common::event::{PATHS, VERDICT_ALLOWED, VERDICT_DENIED};
        let p = (path % PATHS) as usize;
        // SAFETY: fields of the live value (`p` is in bounds); no reference is made.
        unsafe {
            let counters = match verdict {
                VERDICT_ALLOWED => &raw mut (*self.0).allowed,
                VERDICT_DENIED => &raw mut (*self.0).denied,
                _ => &raw mut (*self.0).would_deny,
            };
            add(counters.cast::<u64>().add(p), 1);
            // A plain store of the last time seen: racing CPUs only pick one of two nearly
            // equal times.
            (*self.0).last_ns = now;
        }
    }

    /// Counts one SMTP packet of `len` bytes.
    #[inline(always)]
    pub fn count_packet(self, len: u64) {
        // SAFETY: fields of the live value; no reference is made.
        unsafe {
            add(&raw mut (*self.0).packets, 1);
            add(&raw mut (*self.0).bytes, len);
        }
    }
}

/// A tenant's fleet budget on this host (see `antispam_common::tenant`).
#[derive(Clone, Copy)]
pub struct TenantBudget {
    lease: Lease,
    used: *mut TenantUse,
}

/// Which part of a tenant's budget a token came from.
#[derive(Clone, Copy)]
pub enum TenantToken {
    Leased,
    Local,
}

impl TenantBudget {
    /// The budget of the tenant with key `key`. None when the agent made no entries for it
    /// (the attempt is then refused: fail closed).
    #[inline(always)]
    pub fn get(key: u64) -> Option<TenantBudget> {
        // SAFETY: a copy of plain data the agent replaces whole (a hash map update swaps in a
        // new element).
        let lease = unsafe { *LEASES.get(key)? };
        let used = TENANT_USE.get_ptr_mut(key)?;
        Some(TenantBudget { lease, used })
    }

    /// Takes one token: from the lease while it is in force (none left: refused), else from
    /// the `local_rate` bucket. Race-free across CPUs.
    #[inline(always)]
    pub fn take(self, now: u64) -> Result<TenantToken, Take> {
        let taken = if self.lease.active(now) {
            self.take_leased().map(|()| TenantToken::Leased)
        } else {
            // SAFETY: a field of a live map value, 8-byte aligned.
            let bucket = Bucket(unsafe { &raw mut (*self.used).tat });
            match bucket.take(now, &self.lease.local) {
                Take::Taken => {
                    // SAFETY: as above.
                    unsafe { add(&raw mut (*self.used).fallback, 1) };
                    Ok(TenantToken::Local)
                }
                other => Err(other),
            }
        };
        if taken.is_err() {
            // SAFETY: as above.
            unsafe { add(&raw mut (*self.used).refused, 1) };
        }
        taken
    }

    #[inline(always)]
    fn take_leased(self) -> Result<(), Take> {
        // SAFETY: a field of a live map value, 8-byte aligned.
        let p = unsafe { &raw mut (*self.used).taken };
        // SAFETY: as above; a plain 8-byte load is single-copy atomic.
        let mut current = unsafe { core::ptr::read_volatile(p) };
        for _ in 0..CAS_TRIES {
            if current >= self.lease.granted {
                return Err(Take::Empty);
            }
            // SAFETY: as above.
            match unsafe { cas(p, current, current + 1) } {
                Ok(()) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
        stat(stats::CAS_CONTENDED);
        Err(Take::Contended)
    }
}
