//! Shared pieces of the load generators: raw sockets, bounded loops, JSON output.
//!
//! The generators are run by `cargo xtask bench` inside the bench's own network namespace and
//! cgroups; every loop they run is bounded both by a duration and by a maximum count.

use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

/// Longest any generator may run, whatever it is asked.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// `sockaddr_in` for an IPv4 socket address.
pub fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `setsockopt` with a plain value.
pub fn setsockopt<T>(fd: i32, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling *thread's* real, effective and saved UIDs (raw syscall: glibc's wrapper
/// would change every thread of the process).
pub fn thread_setresuid(r: u32, e: u32, s: u32) -> io::Result<()> {
    // SAFETY: a raw syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, r, e, s) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Parses "A" or "A-B" (inclusive).
pub fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u32 = a.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    let b: u32 = b.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    if b < a {
        return Err(format!("{s}: empty range"));
    }
    Ok((a, b))
}

/// Parses a duration in milliseconds, capped at [`MAX_DURATION`].
pub fn bounded_ms(ms: u64) -> Duration {
    Duration::from_millis(ms).min(MAX_DURATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("5"), Ok((5, 5)));
        assert_eq!(parse_range("100000-100009"), Ok((100_000, 100_009)));
        assert!(parse_range("9-1").is_err());
        assert!(parse_range("x").is_err());
    }
}
