//! Ring-buffer events and decision codes.

/// The connect went through.
pub const VERDICT_ALLOWED: u32 = 1;
/// The connect failed with EPERM.
pub const VERDICT_DENIED: u32 = 2;
/// The connect would have been refused but went through because the policy is in monitor mode.
pub const VERDICT_WOULD_DENY: u32 = 3;
/// One past the largest verdict code.
pub const VERDICT_LIMIT: u32 = 4;

/// The UID is allow-listed.
pub const REASON_ALLOW_USER: u32 = 1;
/// The destination is allow-listed.
pub const REASON_ALLOW_DESTINATION: u32 = 2;
/// The connect fitted every rate limit that applies.
pub const REASON_WITHIN_LIMIT: u32 = 3;
/// The destination is block-listed.
pub const REASON_BLOCK_DESTINATION: u32 = 4;
/// The UID's bucket was empty.
pub const REASON_RATE_UID: u32 = 5;
/// The cgroup's bucket was empty.
pub const REASON_RATE_CGROUP: u32 = 6;
/// The cgroup is allow-listed.
pub const REASON_ALLOW_CGROUP: u32 = 7;
/// The rate-limit state could not be updated (map full, contention): refused, counted in stats.
pub const REASON_STATE_ERROR: u32 = 8;
/// The UID or cgroup is suspended.
pub const REASON_SUSPENDED: u32 = 9;
/// The kill switch is on and the UID is not allow-listed.
pub const REASON_KILL_SWITCH: u32 = 10;
/// An approved break-glass override lifts the limits, the suspension and the kill switch for the
/// UID or cgroup until it expires (destination block lists still apply).
pub const REASON_BREAK_GLASS: u32 = 11;
/// One past the largest reason code.
pub const REASON_LIMIT: u32 = 16;

/// Index into [`crate::maps::DECISIONS`] for a verdict and reason.
#[inline(always)]
pub const fn counter_index(verdict: u32, reason: u32) -> u32 {
    verdict * REASON_LIMIT + reason
}
/// Number of entries in [`crate::maps::DECISIONS`].
pub const DECISIONS_LEN: u32 = VERDICT_LIMIT * REASON_LIMIT;

/// The metric/JSON name of a verdict.
pub const fn verdict_name(verdict: u32) -> &'static str {
    match verdict {
        VERDICT_ALLOWED | VERDICT_WOULD_DENY => "allowed",
        VERDICT_DENIED => "denied",
        _ => "unknown",
    }
}

/// The metric/JSON name of a reason.
pub const fn reason_name(reason: u32) -> &'static str {
    match reason {
        REASON_ALLOW_USER => "allowlist_user",
        REASON_ALLOW_DESTINATION => "allowlist_destination",
        REASON_ALLOW_CGROUP => "allowlist_cgroup",
        REASON_WITHIN_LIMIT => "within_limit",
        REASON_BLOCK_DESTINATION => "blocklist_destination",
        REASON_RATE_UID => "rate_limit_uid",
        REASON_RATE_CGROUP => "rate_limit_cgroup",
        REASON_STATE_ERROR => "state_error",
        REASON_SUSPENDED => "suspended",
        REASON_KILL_SWITCH => "kill_switch",
        REASON_BREAK_GLASS => "break_glass",
        _ => "unknown",
    }
}

/// One decision on an SMTP connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the decision.
    pub ts_ns: u64,
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Thread-group id (the PID as userspace knows it).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `VERDICT_*`.
    pub verdict: u32,
    /// `REASON_*`.
    pub reason: u32,
    /// 1-based policy rule that decided, 0 for the default rate.
    pub rule_id: u32,
    /// `AF_INET` or `AF_INET6` (IPv4-mapped IPv6 destinations are reported as `AF_INET`).
    pub family: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// Policy generation the decision was made under.
    pub generation: u32,
    /// Destination address, network byte order; IPv4 in the first four bytes.
    pub daddr: [u8; 16],
    /// `comm` of the calling task, NUL-padded.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Event>() == 80);

crate::user_pod!(Event);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_distinct_and_in_range() {
        let mut seen = [false; DECISIONS_LEN as usize];
        for v in 1..VERDICT_LIMIT {
            for r in 1..REASON_LIMIT {
                let i = counter_index(v, r) as usize;
                assert!(i < seen.len());
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
    }

    #[test]
    fn names() {
        assert_eq!(verdict_name(VERDICT_WOULD_DENY), "allowed");
        assert_eq!(reason_name(REASON_RATE_CGROUP), "rate_limit_cgroup");
    }
}
