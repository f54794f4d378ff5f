//! The period a report covers, and how times are read and written.

use std::time::SystemTime;

use serde_json::Value;

/// The period a report covers, both ends included.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    pub since: SystemTime,
    pub until: SystemTime,
}

impl Period {
    pub(super) fn contains(&self, t: SystemTime) -> bool {
        self.since <= t && t <= self.until
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("{0} before now is out of range")]
    OutOfRange(String),
    #[error("{0:?} is neither a UTC time (2026-11-23T10:00:00Z), a date (2026-11-23) nor a duration back from now (24h, 7d)")]
    Unreadable(String),
}

/// Reads `--since`/`--until`: an RFC 3339 UTC time, a date (midnight UTC), or a duration back
/// from `now` (`24h`, `7d`).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, TimeError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")) {
        return Ok(t);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return now
            .checked_sub(d)
            .ok_or_else(|| TimeError::OutOfRange(s.to_string()));
    }
    Err(TimeError::Unreadable(s.to_string()))
}

/// Times in the report: RFC 3339 to the second (so they also compare as strings).
pub(super) fn stamp(t: SystemTime) -> String {
    crate::clock::rfc3339(t)
}

pub(super) fn time_of(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_three_forms() {
        let now = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let t = |s| stamp(parse_time(s, now).unwrap());
        assert_eq!(t("2026-11-23T10:00:00Z"), "2026-11-23T10:00:00Z");
        assert_eq!(t("2026-11-23"), "2026-11-23T00:00:00Z");
        assert_eq!(t("24h"), "2026-11-22T12:00:00Z");
        assert_eq!(t("7d"), "2026-11-16T12:00:00Z");
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .to_string()
            .contains("neither"));
    }
}
