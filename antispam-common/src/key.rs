//! Keys of the per-UID / per-cgroup state map, and the state itself.

/// A UID bucket: `id` is the UID.
pub const KIND_UID: u32 = 1;
/// A cgroup bucket: `id` is the cgroup v2 id (the inode number of its directory).
pub const KIND_CGROUP: u32 = 2;

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

crate::user_pod!(KeyId, KeyState);
