//! Rule values in the UID, cgroup and destination maps.

use crate::rate::Rate;

/// Never limited, never refused.
pub const ACTION_ALLOW: u32 = 1;
/// Limited at the rule's rate.
pub const ACTION_LIMIT: u32 = 2;
/// Refused whatever the limits say (destinations only).
pub const ACTION_BLOCK: u32 = 3;

/// Rule id of "no rule": the `[default]` rate.
pub const RULE_DEFAULT: u32 = 0;

/// Value of [`crate::maps::UID_RULES`] and [`crate::maps::CGROUP_RULES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `ACTION_ALLOW` or `ACTION_LIMIT`.
    pub action: u32,
    /// 1-based index of the rule in the policy, reported in events.
    pub rule_id: u32,
    /// The rate for `ACTION_LIMIT`.
    pub rate: Rate,
    /// For cgroup rules: the bucket this cgroup draws on: a cgroup id (itself, or the matched
    /// ancestor for cgroups below it), or `BUCKET_SHARED | rule_id` for a `shared = true` rule
    /// (see [`crate::key::KeyId::bucket`]). Unused (0) for UID rules.
    pub bucket: u64,
}
const _: () = assert!(core::mem::size_of::<Rule>() == 32);

/// Value of the destination tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestRule {
    /// `ACTION_ALLOW` or `ACTION_BLOCK`.
    pub action: u32,
    /// 1-based index of the rule in the policy, reported in events.
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<DestRule>() == 8);

/// Key of [`crate::maps::UID_RULES`]: a UID in one of the two rule sets (see
/// [`crate::maps::ACTIVE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UidKey {
    pub uid: u32,
    /// 0 or 1: the rule set.
    pub slot: u32,
}
const _: () = assert!(core::mem::size_of::<UidKey>() == 8);

/// Key of [`crate::maps::CGROUP_RULES`]: a cgroup id in one of the two rule sets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupKey {
    pub id: u64,
    /// 0 or 1: the rule set.
    pub slot: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CgroupKey>() == 16);

impl CgroupKey {
    pub const fn new(id: u64, slot: u32) -> CgroupKey {
        CgroupKey { id, slot, _pad: 0 }
    }
}

/// Key data of the IPv4 destination trie: the rule set's number in the first byte, then the
/// address (a prefix length counts the slot byte's 8 bits: /24 is stored as 32).
#[inline(always)]
pub const fn dest_v4_key(slot: u32, a: [u8; 4]) -> [u8; 5] {
    [slot as u8, a[0], a[1], a[2], a[3]]
}

/// The same for the IPv6 trie.
#[inline(always)]
pub const fn dest_v6_key(slot: u32, a: &[u8; 16]) -> [u8; 17] {
    [
        slot as u8, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
        a[12], a[13], a[14], a[15],
    ]
}

/// Bits the slot byte adds to a destination prefix length.
pub const SLOT_BITS: u32 = 8;

crate::user_pod!(Rule, DestRule, UidKey, CgroupKey);
