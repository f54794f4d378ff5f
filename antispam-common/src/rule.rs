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

crate::user_pod!(Rule, DestRule);
