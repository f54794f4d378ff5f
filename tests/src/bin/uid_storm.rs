//! uid_storm ADDR FIRST COUNT
//!
//! Run as root inside a test cgroup: for each UID from FIRST, FIRST + COUNT (<= 400,000), sets
//! the thread's real UID to it (the connect hook charges the real UID; the effective UID stays
//! root so the next one can be set) and makes one non-blocking TCP connect to ADDR, then closes
//! the socket. Prints one JSON line: {"attempts":N,"eperm":N,"other":N,"secs":F}. Stands in
//! for the many distinct UIDs a user namespace could bring.

use std::{net::SocketAddrV4, os::fd::FromRawFd as _, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: uid_storm ADDR FIRST COUNT");
        std::process::exit(2);
    }
    let addr: SocketAddrV4 = args[1].parse().expect("an IPv4 socket address");
    let first: u32 = args[2].parse().expect("FIRST");
    let count: u32 = args[3].parse::<u32>().expect("COUNT").min(400_000);
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    let (mut eperm, mut other) = (0u64, 0u64);
    for uid in first..first.saturating_add(count) {
        // SAFETY: raw syscalls (per thread, unlike glibc's setresuid) on plain integers; the
        // saved and effective UIDs stay 0, so the real UID can be set again.
        unsafe {
            if libc::syscall(libc::SYS_setresuid, uid, 0, 0) != 0 {
                eprintln!("setresuid({uid}): {}", std::io::Error::last_os_error());
                std::process::exit(2);
            }
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            if fd < 0 {
                other += 1;
                continue;
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            use std::os::fd::AsRawFd as _;
            let r = libc::connect(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if r != 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EPERM) => eperm += 1,
                    Some(libc::EINPROGRESS) => {}
                    _ => other += 1,
                }
            }
            if libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0 {
                std::process::exit(2);
            }
        }
    }
    println!(
        "{{\"attempts\":{count},\"eperm\":{eperm},\"other\":{other},\"secs\":{:.3}}}",
        start.elapsed().as_secs_f64()
    );
}
