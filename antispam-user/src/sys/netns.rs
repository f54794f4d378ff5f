//! Network namespaces.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `SO_NETNS_COOKIE` (Linux 5.14): the cookie of a socket's network namespace, which BPF
/// programs get from `bpf_get_netns_cookie`.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of this process's network namespace.
pub fn cookie() -> std::io::Result<u64> {
    // SAFETY: a plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt(2) into a u64 we own, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_namespace_has_a_cookie() {
        let a = super::cookie().expect("SO_NETNS_COOKIE");
        assert_ne!(a, 0);
        assert_eq!(super::cookie().unwrap(), a, "stable");
    }
}
