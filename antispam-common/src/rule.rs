//! Rule values in the UID, cgroup and destination maps.

use crate::rate::Rate;

/// Never limited, never refused.
pub const ACTION_ALLOW: u32 = 1;
/// Limited at the rule's rate.
pub const ACTION_LIMIT: u32 = 2;
/// Refused whatever the limits say (destinations only).
pub const ACTION_BLOCK: u32 = 3;
/// A cgroup the agent knows and no rule covers (so the programs need not look further).
pub const ACTION_NONE: u32 = 4;

/// Rule id of "no rule": the `[default]` rate.
pub const RULE_DEFAULT: u32 = 0;

/// The budgets of a rule (or of the default rate): one rate for every mail path together, and
/// optionally a path's own rate (`[limit.path.NAME]`), spent instead of the common one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Bit `1 << path` set: that path has its own budget, `own[path]`.
    pub own_paths: u32,
    pub _pad: u32,
    pub own: [Rate; crate::event::PATHS as usize],
}
const _: () = assert!(core::mem::size_of::<Budgets>() == 72);

impl Budgets {
    /// The rate `path` is charged at, and whether it is the path's own budget.
    #[inline(always)]
    pub const fn for_path(&self, common: Rate, path: u32) -> (Rate, bool) {
        if path < crate::event::PATHS && self.own_paths & (1 << path) != 0 {
            (self.own[path as usize], true)
        } else {
            (common, false)
        }
    }
}

/// Value of [`crate::maps::UID_RULES`] and [`crate::maps::CGROUP_RULES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `ACTION_ALLOW` or `ACTION_LIMIT`.
    pub action: u32,
    /// 1-based index of the rule in the policy, reported in events.
    pub rule_id: u32,
    /// The rate for `ACTION_LIMIT`, spent by every path without a budget of its own.
    pub rate: Rate,
    /// For cgroup rules: the bucket this cgroup draws on: a cgroup id (itself, or the matched
    /// ancestor for cgroups below it), or `BUCKET_SHARED | rule_id` for a `shared = true` rule
    /// (see [`crate::key::KeyId::bucket`]). Unused (0) for UID rules.
    pub bucket: u64,
    /// Paths with a budget of their own.
    pub budgets: Budgets,
    /// For `ACTION_LIMIT`: the [`crate::tenant::tenant_key`] of the tenant whose fleet budget
    /// the rule also spends, 0 for none.
    pub tenant: u64,
}
const _: () = assert!(core::mem::size_of::<Rule>() == 112);

impl Rule {
    /// The entry of a cgroup the agent knows and no rule covers.
    pub const fn known() -> Rule {
        Rule {
            action: ACTION_NONE,
            rule_id: 0,
            rate: Rate {
                interval_ns: 0,
                tolerance_ns: 0,
            },
            bucket: 0,
            budgets: Budgets {
                own_paths: 0,
                _pad: 0,
                own: [Rate {
                    interval_ns: 0,
                    tolerance_ns: 0,
                }; crate::event::PATHS as usize],
            },
            tenant: 0,
        }
    }
}

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

/// Key of [`crate::maps::PROGRAMS`]: an MTA submission program (a file) in one rule set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramKey {
    /// Inode number of the program file.
    pub ino: u64,
    /// Device of its file system, in the kernel's encoding (`MAJOR << 20 | MINOR`, the
    /// `s_dev` of its super block).
    pub dev: u32,
    /// 0 or 1: the rule set.
    pub slot: u32,
}
const _: () = assert!(core::mem::size_of::<ProgramKey>() == 16);

/// Value of [`crate::maps::PROGRAMS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// 1 + the index of the program in the policy's `[sendmail] programs`.
    pub index: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Program>() == 8);

/// Word (in one rule set's part of `PROGRAM_FILTER`) and bit of an inode number: a
/// multiplicative hash, so that consecutive inode numbers spread over the bitmap.
#[inline(always)]
pub const fn program_filter_bit(ino: u64) -> (u32, u64) {
    let bits = crate::maps::PROGRAM_FILTER_WORDS * 64;
    let h = (ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 % bits;
    (h / 64, 1 << (h % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_bits_are_in_range_and_spread() {
        let mut seen = [0u64; crate::maps::PROGRAM_FILTER_WORDS as usize];
        for ino in 1_000_000..1_000_064u64 {
            let (w, b) = program_filter_bit(ino);
            assert!(w < crate::maps::PROGRAM_FILTER_WORDS);
            assert_eq!(b.count_ones(), 1);
            seen[w as usize] |= b;
        }
        let set: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(set > 50, "64 consecutive inodes hit only {set} bits");
    }
}

crate::user_pod!(Rule, Budgets, DestRule, UidKey, CgroupKey, ProgramKey, Program);
