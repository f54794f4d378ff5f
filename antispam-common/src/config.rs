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
}
const _: () = assert!(core::mem::size_of::<Config>() == 104);

crate::user_pod!(Config);
