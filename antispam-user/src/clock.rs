//! Clocks and time formatting. The kernel programs stamp with CLOCK_MONOTONIC
//! (`bpf_ktime_get_ns`); records for people and files use UTC wall-clock time.
//!
//! Nothing here panics or wraps, whatever the input: sums saturate, and times outside what
//! RFC 3339 can write (before 1970, after 9999) are written as the nearest one it can.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NS: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC now, in nanoseconds: the kernel programs' clock.
pub fn mono_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            (t.tv_sec().max(0) as u64)
                .saturating_mul(NS)
                .saturating_add(t.tv_nsec().max(0) as u64)
        })
        .unwrap_or(0)
}

/// The kernel clock's reading `d` from now.
pub fn mono_after(d: Duration) -> u64 {
    mono_now_ns().saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// Converts the kernel's CLOCK_MONOTONIC nanoseconds to wall-clock time (the offset between
/// the two clocks is read once).
#[derive(Clone, Copy)]
pub struct MonoToWall {
    offset_ns: i128,
}

impl MonoToWall {
    pub fn new() -> MonoToWall {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        MonoToWall {
            offset_ns: wall - i128::from(mono_now_ns()),
        }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (i128::from(mono_ns) + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time `ms` milliseconds after the Unix epoch (the latest time the clock holds, if later).
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or_else(|| UNIX_EPOCH + LATEST)
}

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// `t`, moved into what RFC 3339 can write (humantime's formatting panics outside it).
fn writable(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Err(_) => UNIX_EPOCH,
        Ok(d) if d > LATEST => UNIX_EPOCH + LATEST,
        Ok(_) => t,
    }
}

/// RFC 3339 in UTC, to the second: `2026-12-01T07:28:03Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(writable(t)).to_string()
}

/// RFC 3339 in UTC, to the microsecond (event and audit records).
pub fn rfc3339_micros(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(writable(t)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_readings_map_to_now() {
        let c = MonoToWall::new();
        let wall = c.wall(mono_now_ns());
        let skew = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "{skew:?}");
        assert_eq!(unix_ms(from_unix_ms(1234)), 1234);
        assert_eq!(rfc3339(from_unix_ms(0)), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn extreme_times_neither_panic_nor_wrap() {
        assert_eq!(rfc3339(from_unix_ms(u64::MAX)), "9999-12-31T23:59:59Z");
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_micros(before), "1970-01-01T00:00:00.000000Z");
        assert_eq!(mono_after(Duration::MAX), u64::MAX);
        assert!(MonoToWall::new().wall(u64::MAX) > SystemTime::now());
    }
}
