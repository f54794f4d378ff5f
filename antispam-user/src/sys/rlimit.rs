//! The open-file limit: the agent holds map, program, link and ring-buffer descriptors besides
//! its sockets, so it raises its soft limit to the hard one (systemd's default soft limit is
//! 1,024; its hard limit 524,288).

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) into a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: setrlimit(2) from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, r.rlim_cur))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let (before, after) = super::raise_nofile().expect("rlimit");
        assert!(after >= before);
    }
}
