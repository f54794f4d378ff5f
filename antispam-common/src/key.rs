//! Keys of the per-UID / per-cgroup state map, and the state itself.

/// A UID bucket: `id` is the UID.
pub const KIND_UID: u32 = 1;
/// A cgroup bucket: `id` is the cgroup v2 id (the inode number of its directory).
pub const KIND_CGROUP: u32 = 2;
/// The one bucket all cgroups of a `shared = true` rule draw on: `id` is the rule id.
pub const KIND_SHARED: u32 = 3;

/// Flag in [`crate::rule::Rule::bucket`]: the bucket is the shared bucket of the rule whose id
/// is in the low bits, not a cgroup's. Cgroup ids are inode numbers, far below 2^63.
pub const BUCKET_SHARED: u64 = 1 << 63;

/// [`KeyId::budget`] of the budget every mail path spends together (and of the entry that
/// holds the key's counters).
pub const BUDGET_ALL_PATHS: u32 = 0;

/// Key of [`crate::maps::KEYS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    /// `KIND_UID`, `KIND_CGROUP` or `KIND_SHARED`.
    pub kind: u32,
    /// `BUDGET_ALL_PATHS`, or `1 + path` for the bucket of a path the policy gives its own
    /// budget (`[limit.path.sendmail]`); such entries use only their `tat`.
    pub budget: u32,
    pub id: u64,
}
const _: () = assert!(core::mem::size_of::<KeyId>() == 16);

impl KeyId {
    pub const fn uid(uid: u32) -> KeyId {
        KeyId {
            kind: KIND_UID,
            budget: BUDGET_ALL_PATHS,
            id: uid as u64,
        }
    }
    pub const fn cgroup(id: u64) -> KeyId {
        KeyId {
            kind: KIND_CGROUP,
            budget: BUDGET_ALL_PATHS,
            id,
        }
    }
    pub const fn shared(rule_id: u32) -> KeyId {
        KeyId {
            kind: KIND_SHARED,
            budget: BUDGET_ALL_PATHS,
            id: rule_id as u64,
        }
    }
    /// The key of the bucket a cgroup rule's `bucket` field names.
    pub const fn bucket(bucket: u64) -> KeyId {
        if bucket & BUCKET_SHARED != 0 {
            KeyId {
                kind: KIND_SHARED,
                budget: BUDGET_ALL_PATHS,
                id: bucket & !BUCKET_SHARED,
            }
        } else {
            KeyId::cgroup(bucket)
        }
    }
    /// The same key's own bucket for mail path `path`.
    pub const fn own_budget(self, path: u32) -> KeyId {
        KeyId {
            budget: 1 + path,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys() {
        assert_eq!(KeyId::bucket(42), KeyId::cgroup(42));
        assert_eq!(KeyId::bucket(BUCKET_SHARED | 7), KeyId::shared(7));
        let own = KeyId::uid(1000).own_budget(crate::event::PATH_SENDMAIL);
        assert_eq!((own.kind, own.budget, own.id), (KIND_UID, 2, 1000));
        assert_ne!(own, KeyId::uid(1000));
    }
}

/// Value of [`crate::maps::KEYS`]: the GCRA bucket and the counters of one UID or cgroup. Every
/// field is updated in place with atomic instructions; the entry is inserted once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// GCRA theoretical arrival time, `bpf_ktime_get_ns` clock.
    pub tat: u64,
    /// Attempts allowed, by mail path (`crate::event::PATH_*`).
    pub allowed: [u64; crate::event::PATHS as usize],
    /// Attempts refused, by mail path.
    pub denied: [u64; crate::event::PATHS as usize],
    /// Attempts that would have been refused, allowed because the policy is in monitor mode.
    pub would_deny: [u64; crate::event::PATHS as usize],
    /// SMTP packets sent (egress program).
    pub packets: u64,
    /// SMTP bytes sent, IP headers included (egress program).
    pub bytes: u64,
    /// Time of the last attempt, `bpf_ktime_get_ns` clock.
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<KeyState>() == 128);

impl KeyState {
    /// Attempts allowed on every path.
    pub fn allowed_total(&self) -> u64 {
        self.allowed.iter().sum()
    }

    /// Attempts refused on every path.
    pub fn denied_total(&self) -> u64 {
        self.denied.iter().sum()
    }

    /// Would-be refusals on every path (monitor mode).
    pub fn would_deny_total(&self) -> u64 {
        self.would_deny.iter().sum()
    }
}

/// A suspension set by hand (`antispam suspend`).
pub const SUSPEND_MANUAL: u32 = 1;
/// A suspension set by the strikes policy.
pub const SUSPEND_STRIKES: u32 = 2;

/// Value of [`crate::maps::SUSPENDED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Suspension {
    /// End of the suspension, `bpf_ktime_get_ns` clock; 0: until lifted.
    pub until_ns: u64,
    /// `SUSPEND_*`.
    pub kind: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Suspension>() == 16);

impl Suspension {
    /// Is it in force at `now`?
    #[inline(always)]
    pub const fn active(&self, now: u64) -> bool {
        self.until_ns == 0 || now < self.until_ns
    }
}

/// Value of [`crate::maps::OVERRIDES`]: an approved break-glass override. The kernel ends it at
/// `until_ns` by itself, whether or not the agent is running.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Override {
    /// End of the override, `bpf_ktime_get_ns` clock (every override expires).
    pub until_ns: u64,
    pub _reserved: u64,
}
const _: () = assert!(core::mem::size_of::<Override>() == 16);

impl Override {
    pub const fn new(until_ns: u64) -> Override {
        Override {
            until_ns,
            _reserved: 0,
        }
    }

    /// Is it in force at `now`?
    #[inline(always)]
    pub const fn active(&self, now: u64) -> bool {
        now < self.until_ns
    }
}

crate::user_pod!(KeyId, KeyState, Suspension, Override);
