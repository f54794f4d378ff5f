//! What /proc says about a process.

/// The groups of a process: primary and supplementary, from /proc (what the kernel checks).
pub fn groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut groups: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if let Some(gid) = status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|g| g.split_whitespace().nth(1)?.parse().ok())
    {
        groups.push(gid);
    }
    groups
}

/// `/proc/PID/loginuid`: the audit login UID; unset (4294967295) is None.
pub fn login_uid(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|u| *u != u32::MAX)
}
