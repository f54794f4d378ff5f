//! Ring-buffer events and decision codes.

/// How mail left, or was about to: the mail path a decision belongs to. Codes are never reused.
///
/// A direct SMTP connect to a remote server.
pub const PATH_DIRECT: u32 = 0;
/// An execution of the MTA's privileged submission program (Postfix's `postdrop`, Exim's
/// `exim4`, OpenSMTPD's `smtpctl`): one message handed to the local MTA through `sendmail`.
pub const PATH_SENDMAIL: u32 = 1;
/// An SMTP connect to the local MTA (a loopback address or one of the host's own).
pub const PATH_LOCAL_SMTP: u32 = 2;
/// Reserved for the MTA policy service (one message or recipient at a time).
pub const PATH_POLICY_SERVICE: u32 = 3;
/// Number of mail paths (array sizes).
pub const PATHS: u32 = 4;
/// Paths that budgets and metrics know, in code order.
pub const PATH_CODES: [u32; 3] = [PATH_DIRECT, PATH_SENDMAIL, PATH_LOCAL_SMTP];

/// The metric/JSON name of a path.
pub const fn path_name(path: u32) -> &'static str {
    match path {
        PATH_DIRECT => "direct",
        PATH_SENDMAIL => "sendmail",
        PATH_LOCAL_SMTP => "local_smtp",
        PATH_POLICY_SERVICE => "policy_service",
        _ => "unknown",
    }
}

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
/// The MTA's submission program run again by a privileged instance of itself (Exim re-executing
/// itself to deliver): not a new submission, not charged.
pub const REASON_MTA_PROGRAM: u32 = 12;
/// The tenant's fleet budget was spent on this host: its lease (or, with no lease in force, its
/// `local_rate`) had no token left.
pub const REASON_RATE_TENANT: u32 = 13;
/// One past the largest reason code.
pub const REASON_LIMIT: u32 = 16;

/// Index into [`crate::maps::DECISIONS`] for a path, verdict and reason.
#[inline(always)]
pub const fn counter_index(path: u32, verdict: u32, reason: u32) -> u32 {
    ((path % PATHS) * VERDICT_LIMIT + verdict) * REASON_LIMIT + reason
}
/// Number of entries in [`crate::maps::DECISIONS`].
pub const DECISIONS_LEN: u32 = PATHS * VERDICT_LIMIT * REASON_LIMIT;

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
        REASON_MTA_PROGRAM => "mta_program",
        REASON_RATE_TENANT => "rate_limit_tenant",
        _ => "unknown",
    }
}

/// One decision: on an SMTP connect, or on an execution of the MTA's submission program.
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
    /// Destination address, network byte order; IPv4 in the first four bytes. Zero for
    /// `PATH_SENDMAIL`.
    pub daddr: [u8; 16],
    /// `comm` of the calling task, NUL-padded.
    pub comm: [u8; 16],
    /// `PATH_*`.
    pub path: u32,
    /// For `PATH_SENDMAIL`: 1 + the index of the submission program in the policy's list;
    /// 0 otherwise.
    pub program: u32,
    /// For `PATH_SENDMAIL`: the thread-group id of the caller's parent (e.g. the PHP process
    /// that ran `sendmail`); 0 otherwise.
    pub ppid: u32,
    /// The UID charged: `uid`, or for a subordinate UID (`/etc/subuid`) its owner's.
    pub charged_uid: u32,
    /// For `PATH_SENDMAIL`: `comm` of the caller's parent; zero otherwise.
    pub pcomm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Event>() == 112);

crate::user_pod!(Event);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_distinct_and_in_range() {
        let mut seen = [false; DECISIONS_LEN as usize];
        for p in 0..PATHS {
            for v in 1..VERDICT_LIMIT {
                for r in 1..REASON_LIMIT {
                    let i = counter_index(p, v, r) as usize;
                    assert!(i < seen.len());
                    assert!(!seen[i]);
                    seen[i] = true;
                }
            }
        }
        assert!(
            counter_index(PATHS + 1, 1, 1) < DECISIONS_LEN,
            "out-of-range paths wrap"
        );
    }

    #[test]
    fn path_names() {
        assert_eq!(path_name(PATH_DIRECT), "direct");
        assert_eq!(path_name(PATH_SENDMAIL), "sendmail");
        assert_eq!(path_name(PATH_LOCAL_SMTP), "local_smtp");
        assert_eq!(path_name(99), "unknown");
    }

    #[test]
    fn names() {
        assert_eq!(verdict_name(VERDICT_WOULD_DENY), "allowed");
        assert_eq!(reason_name(REASON_RATE_CGROUP), "rate_limit_cgroup");
    }
}
