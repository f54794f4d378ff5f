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

/// Key of [`crate::maps::KEYS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    /// `KIND_UID` or `KIND_CGROUP`.
    pub kind: u32,
    pub _pad: u32,
    pub id: u64,
}
const _: () = assert!(core::mem::size_of::<KeyId>() == 16);

impl KeyId {
    pub const fn uid(uid: u32) -> KeyId {
        KeyId {
            kind: KIND_UID,
            _pad: 0,
            id: uid as u64,
        }
    }
    pub const fn cgroup(id: u64) -> KeyId {
        KeyId {
            kind: KIND_CGROUP,
            _pad: 0,
            id,
        }
    }
    pub const fn shared(rule_id: u32) -> KeyId {
        KeyId {
            kind: KIND_SHARED,
            _pad: 0,
            id: rule_id as u64,
        }
    }
    /// The key of the bucket a cgroup rule's `bucket` field names.
    pub const fn bucket(bucket: u64) -> KeyId {
        if bucket & BUCKET_SHARED != 0 {
            KeyId {
                kind: KIND_SHARED,
                _pad: 0,
                id: bucket & !BUCKET_SHARED,
            }
        } else {
            KeyId::cgroup(bucket)
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
    }
}

/// Value of [`crate::maps::KEYS`]: the GCRA bucket and the counters of one UID or cgroup. Every
/// field is updated in place with atomic instructions; the entry is inserted once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// GCRA theoretical arrival time, `bpf_ktime_get_ns` clock.
    pub tat: u64,
    /// SMTP connects allowed.
    pub allowed: u64,
    /// SMTP connects refused.
    pub denied: u64,
    /// SMTP connects that would have been refused, allowed because the policy is in monitor mode.
    pub would_deny: u64,
    /// SMTP packets sent (egress program).
    pub packets: u64,
    /// SMTP bytes sent, IP headers included (egress program).
    pub bytes: u64,
    /// Time of the last SMTP connect, `bpf_ktime_get_ns` clock.
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<KeyState>() == 56);

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
