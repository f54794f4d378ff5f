//! The single-entry configuration map.

use crate::{rate::Rate, rule::Budgets};

/// Refuse nothing: decide, count and log what would have been refused.
pub const FLAG_MONITOR: u32 = 1 << 0;
/// Emit an event for allowed connects too (the connection trail), not only for refusals.
pub const FLAG_EVENTS_ALLOWED: u32 = 1 << 1;
/// Refuse every SMTP connect except from allow-listed UIDs (outbreak containment).
pub const FLAG_KILL_SWITCH: u32 = 1 << 2;
/// The suspension map has entries: only then do the programs look there.
pub const FLAG_SUSPENSIONS: u32 = 1 << 3;
/// The break-glass override map has entries: only then do the programs look there.
pub const FLAG_OVERRIDES: u32 = 1 << 4;
/// The policy has cgroup rules: a cgroup the agent has not seen yet (created a moment ago)
/// takes the rule of its nearest known ancestor, found by the programs themselves.
pub const FLAG_CGROUP_RULES: u32 = 1 << 5;
/// Subordinate UIDs (`/etc/subuid`) are charged to their owner: the programs look UIDs at or
/// above `subuid_min` up in the subordinate ranges.
pub const FLAG_SUBUIDS: u32 = 1 << 6;

/// Entry 0 of [`crate::maps::CONFIG`]. Zeroed (no ports, no flags) means "decide nothing".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Policy generation, bumped by the agent at every successful load.
    pub generation: u32,
    /// Rate of every UID that no `[[limit]]` or `[[allow]]` rule names.
    pub default_rate: Rate,
    /// Rule id reported for decisions under the default rate.
    pub default_rule_id: u32,
    pub _pad: u32,
    /// Paths with a default budget of their own (`[default.path.NAME]`).
    pub default_budgets: Budgets,
    /// The network namespace the local MTA listens in (the agent's, `SO_NETNS_COOKIE`): only a
    /// connect made in it to loopback or a host address is a local submission. 0: unknown
    /// (every loopback connect is local).
    pub host_netns: u64,
    /// The cgroup level of the attach point (the root of the cgroup v2 mount is 0): how far up
    /// the programs look for a new cgroup's rule.
    pub attach_level: u32,
    /// The lowest subordinate UID of any user (with `FLAG_SUBUIDS`).
    pub subuid_min: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 120);

crate::user_pod!(Config);
