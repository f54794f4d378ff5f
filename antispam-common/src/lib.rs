//! Types and pure logic shared by the antispam kernel programs and the agent.
//!
//! Everything that crosses the kernel/user boundary (map keys and values, ring-buffer events) is
//! `#[repr(C)]`, built from fixed-width integers with explicit padding, and has its size pinned by
//! a `const` assertion. Codes (verdicts, reasons, rule actions) are `u32` constants whose values are
//! never reused. The logic both sides run (rate arithmetic, address classification) is plain
//! functions here so host unit tests exercise the exact code the kernel runs.
#![no_std]

pub mod config;
pub mod event;
pub mod key;
pub mod maps;
pub mod net;
pub mod rate;
pub mod rule;
pub mod stats;
pub mod tenant;

/// Implements `aya::Pod` for the listed types when the `user` feature is on.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, made only of integers and arrays of
            // integers, with every padding byte spelled out as a field.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use user_pod;
