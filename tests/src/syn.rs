//! Hand-made TCP SYNs for the test binaries `raw_syn` and `packet_syn` (SMTP clients that make
//! their own TCP): the segment, checksums, and the wait for the server's answer.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 20-byte TCP SYN from `src:sport` to `dst`, with its checksum.
pub fn segment(src: Ipv4Addr, sport: u16, dst: SocketAddrV4, seq: u32) -> [u8; 20] {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65_535u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    tcp
}

/// A raw IPPROTO_TCP socket that sees the answers, with a 100 ms receive timeout, or the
/// errno of its refusal (under antispam's attach point: EPERM).
pub fn raw_tcp_socket() -> Result<libc::c_int, i32> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    with_timeout(fd)
}

/// A packet socket (AF_PACKET, SOCK_DGRAM, ETH_P_IP) that sees every IPv4 packet of this
/// network namespace, IP header first as on a raw socket, with a 100 ms receive timeout; exits
/// the process (status 2) when it cannot be made.
pub fn ip_listener() -> libc::c_int {
    let eth_p_ip = i32::from((libc::ETH_P_IP as u16).to_be());
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, eth_p_ip) };
    with_timeout(fd).unwrap_or_else(|e| {
        eprintln!("packet socket: {}", std::io::Error::from_raw_os_error(e));
        std::process::exit(2);
    })
}

/// `fd` with a 100 ms receive timeout, or the errno that kept it from being made.
fn with_timeout(fd: libc::c_int) -> Result<libc::c_int, i32> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt(2) with a timeval of ours and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(fd)
}

/// What `dst` answered to our port `sport` on the raw socket `fd` within 1 s: "synack", "rst"
/// or "none".
pub fn reply(fd: libc::c_int, dst: SocketAddrV4, sport: u16) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        // SAFETY: recv(2) into our buffer with its length; the socket times out every 100 ms.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 40 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0xf) * 4;
        let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        let Some(t) = buf.get(ihl..n as usize).filter(|t| t.len() >= 20) else {
            continue;
        };
        let (their, ours) = (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        );
        if from != *dst.ip() || their != dst.port() || ours != sport {
            continue;
        }
        match t[13] {
            f if f & 0x12 == 0x12 => return "synack",
            f if f & 0x04 != 0 => return "rst",
            _ => continue,
        }
    }
    "none"
}
