//! This process's effective capabilities (`CapEff` in /proc/self/status).

/// The capabilities the agent needs, with their numbers (linux/capability.h).
pub const NEEDED: [(&str, u32); 3] = [("CAP_NET_ADMIN", 12), ("CAP_PERFMON", 38), ("CAP_BPF", 39)];
const CAP_SYS_ADMIN: u32 = 21;
/// Changing a file's group to one the process is not a member of.
pub const CAP_CHOWN: u32 = 0;

/// The effective capability set, as a bit mask.
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))
}

/// Which of [`NEEDED`] `mask` lacks (CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as
/// the kernel lets it).
pub fn missing(mask: u64) -> Vec<&'static str> {
    let has = |n: u32| mask & (1 << n) != 0;
    NEEDED
        .iter()
        .filter(|(name, n)| !(has(*n) || (*name != "CAP_NET_ADMIN" && has(CAP_SYS_ADMIN))))
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert!(missing(u64::MAX).is_empty());
        assert_eq!(missing(0), ["CAP_NET_ADMIN", "CAP_PERFMON", "CAP_BPF"]);
        assert_eq!(missing(1 << 12 | 1 << 38), ["CAP_BPF"]);
        assert!(
            missing(1 << 12 | 1 << 21).is_empty(),
            "CAP_SYS_ADMIN covers BPF and PERFMON"
        );
        assert!(effective().is_ok());
    }
}
