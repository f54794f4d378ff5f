//! Parsers for the values inside a policy: rates, users, destinations, cgroup patterns.
//! Each returns a [`ValueError`] for the caller to locate in the file.

use std::net::IpAddr;

use antispam_common::rate::Rate;
use ipnet::IpNet;

const RATE_FORMS: &str = "expected \"N/second\", \"N/minute\", \"N/hour\" or \"N/day\"";

/// What is wrong with one value.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("malformed rate {text:?}: {RATE_FORMS}")]
    RateForm { text: String },
    #[error("malformed rate {text:?}: {count:?} is not a whole number")]
    RateCount { text: String, count: String },
    #[error("rate {text:?} allows nothing: use a [[block]] rule to refuse, or a positive count")]
    RateZero { text: String },
    #[error("malformed rate {text:?}: unknown unit {unit:?}, {RATE_FORMS}")]
    RateUnit { text: String, unit: String },
    #[error("burst must be at least 1, not {0}")]
    Burst(i64),
    #[error("rate {text:?} with burst {burst} is out of range")]
    RateRange { text: String, burst: u64 },
    #[error("empty user name")]
    EmptyUser,
    #[error("UID range {0:?} runs backwards")]
    BackwardsRange(String),
    #[error("{0} is not a valid UID (0 to 4294967294)")]
    Uid(i64),
    #[error("looking up user {name:?}: {errno}")]
    UserLookup { name: String, errno: nix::Error },
    #[error("{text:?} has host bits set: did you mean \"{network}\"?")]
    HostBits { text: String, network: IpNet },
    #[error("{0:?} is not an IP address or CIDR (e.g. \"192.0.2.0/24\", \"2001:db8::/32\")")]
    Destination(String),
    #[error("cgroup {0:?} must start with '/': paths are relative to the cgroup2 mount, e.g. \"/system.slice/docker-*.scope\"")]
    CgroupRelative(String),
    #[error("cgroup {0:?} must not contain \"..\"")]
    CgroupDotDot(String),
    #[error("cgroup pattern {text:?}: {source}")]
    CgroupGlob {
        text: String,
        #[source]
        source: glob::PatternError,
    },
}

impl ValueError {
    /// The problem without the text that caused it (for lines of files the policy names).
    pub fn without_text(&self) -> String {
        match self {
            ValueError::HostBits { .. } => {
                "a CIDR with host bits set (the address part after the prefix must be zero)".into()
            }
            ValueError::Destination(_) => {
                "not an IP address or CIDR (the line is not shown)".into()
            }
            other => other.to_string(),
        }
    }

    /// Is this about the burst (to be reported at the `burst` key rather than the `rate`)?
    pub fn is_burst(&self) -> bool {
        matches!(self, ValueError::Burst(_))
    }
}

/// A rate as written, and its GCRA form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u64,
    pub period: Period,
    pub burst: u64,
    pub gcra: Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

impl Period {
    pub const fn seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }
}

impl std::fmt::Display for RateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (burst {})",
            self.count,
            self.period.name(),
            self.burst
        )
    }
}

/// Parses "N/unit" with unit second|minute|hour|day (also s, m, h, d and plurals), and an
/// optional burst (default N).
pub fn parse_rate(text: &str, burst: Option<i64>) -> Result<RateSpec, ValueError> {
    let (count, unit) = text.split_once('/').ok_or_else(|| ValueError::RateForm {
        text: text.to_string(),
    })?;
    let count: u64 = count.trim().parse().map_err(|_| ValueError::RateCount {
        text: text.to_string(),
        count: count.trim().to_string(),
    })?;
    if count == 0 {
        return Err(ValueError::RateZero {
            text: text.to_string(),
        });
    }
    let period = match unit.trim() {
        "s" | "sec" | "second" | "seconds" => Period::Second,
        "m" | "min" | "minute" | "minutes" => Period::Minute,
        "h" | "hour" | "hours" => Period::Hour,
        "d" | "day" | "days" => Period::Day,
        other => {
            return Err(ValueError::RateUnit {
                text: text.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let burst = match burst {
        None => count,
        Some(b) if b >= 1 => b as u64,
        Some(b) => return Err(ValueError::Burst(b)),
    };
    let gcra = Rate::new(count, period.seconds() * 1_000_000_000, burst).ok_or_else(|| {
        ValueError::RateRange {
            text: text.to_string(),
            burst,
        }
    })?;
    Ok(RateSpec {
        count,
        period,
        burst,
        gcra,
    })
}

/// An inclusive range of UIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    pub fn len(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

/// What a user entry names.
pub enum UserRef {
    Range(UidRange),
    Name(String),
}

/// Parses a number, a range "a-b", or returns the text as a name to resolve.
pub fn parse_user_text(text: &str) -> Result<UserRef, ValueError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ValueError::EmptyUser);
    }
    if let Some((a, b)) = t.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            if a > b {
                return Err(ValueError::BackwardsRange(t.to_string()));
            }
            return Ok(UserRef::Range(UidRange { first: a, last: b }));
        }
    }
    if let Ok(n) = t.parse::<u32>() {
        return Ok(UserRef::Range(UidRange { first: n, last: n }));
    }
    Ok(UserRef::Name(t.to_string()))
}

pub fn uid_number(n: i64) -> Result<u32, ValueError> {
    u32::try_from(n)
        .ok()
        .filter(|&u| u != u32::MAX)
        .ok_or(ValueError::Uid(n))
}

/// Resolves a user name through the system's user database (NSS).
pub fn resolve_user(name: &str) -> Result<Option<u32>, ValueError> {
    nix::unistd::User::from_name(name)
        .map(|u| u.map(|u| u.uid.as_raw()))
        .map_err(|errno| ValueError::UserLookup {
            name: name.to_string(),
            errno,
        })
}

/// Parses a CIDR or a bare address (a host prefix). Host bits must be zero, so a typo such as
/// "192.0.2.1/24" is caught rather than silently meaning 192.0.2.0/24.
pub fn parse_destination(text: &str) -> Result<IpNet, ValueError> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(ValueError::HostBits {
                text: t.to_string(),
                network: net.trunc(),
            });
        }
        return Ok(net);
    }
    if let Ok(addr) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(ValueError::Destination(t.to_string()))
}

/// The IPv4 network inside an IPv4-mapped IPv6 network (`::ffff:0:0/96` and longer), which the
/// kernel side treats as IPv4.
pub fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// Checks a cgroup path pattern: absolute (relative to the cgroup2 mount), no `..`, valid glob.
pub fn parse_cgroup_pattern(text: &str) -> Result<glob::Pattern, ValueError> {
    if !text.starts_with('/') {
        return Err(ValueError::CgroupRelative(text.to_string()));
    }
    if text.split('/').any(|c| c == "..") {
        return Err(ValueError::CgroupDotDot(text.to_string()));
    }
    glob::Pattern::new(text).map_err(|source| ValueError::CgroupGlob {
        text: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("30/minute", None).unwrap();
        assert_eq!((r.count, r.period, r.burst), (30, Period::Minute, 30));
        assert_eq!(r.gcra.interval_ns, 2_000_000_000);
        let r = parse_rate(" 10 / hour ", Some(2)).unwrap();
        assert_eq!((r.count, r.burst), (10, 2));
        assert!(parse_rate("10 per hour", None)
            .unwrap_err()
            .to_string()
            .contains("malformed"));
        assert!(parse_rate("ten/hour", None)
            .unwrap_err()
            .to_string()
            .contains("whole number"));
        assert!(parse_rate("10/fortnight", None)
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_rate("0/second", None).is_err());
        assert!(parse_rate("1/second", Some(0)).is_err());
        assert!(parse_rate("2000000000/second", None).is_err());
    }

    #[test]
    fn users() {
        assert!(matches!(
            parse_user_text("1000-1999"),
            Ok(UserRef::Range(UidRange {
                first: 1000,
                last: 1999
            }))
        ));
        assert!(matches!(
            parse_user_text("42"),
            Ok(UserRef::Range(UidRange {
                first: 42,
                last: 42
            }))
        ));
        assert!(matches!(parse_user_text("www-data"), Ok(UserRef::Name(n)) if n == "www-data"));
        assert!(parse_user_text("20-10").is_err());
        assert!(uid_number(-1).is_err());
        assert_eq!(resolve_user("root").unwrap(), Some(0));
        assert_eq!(resolve_user("no-such-user-antispam").unwrap(), None);
    }

    #[test]
    fn destinations() {
        assert_eq!(
            parse_destination("192.0.2.0/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            parse_destination("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(parse_destination("::1").unwrap().to_string(), "::1/128");
        assert!(parse_destination("192.0.2.1/24")
            .unwrap_err()
            .to_string()
            .contains("192.0.2.0/24"));
        assert!(parse_destination("192.0.2.0/33").is_err());
        assert!(parse_destination("mail.example.com").is_err());
        let mapped = parse_destination("::ffff:192.0.2.0/120").unwrap();
        assert_eq!(unmap(mapped).to_string(), "192.0.2.0/24");
    }

    #[test]
    fn cgroup_patterns() {
        assert!(parse_cgroup_pattern("/system.slice/docker-*.scope").is_ok());
        assert!(parse_cgroup_pattern("system.slice").is_err());
        assert!(parse_cgroup_pattern("/a/../b").is_err());
        assert!(parse_cgroup_pattern("/a/[").is_err());
    }
}
