//! raw_syn ADDR
//!
//! Sends one TCP SYN to the IPv4 ADDR from a raw socket (IPPROTO_TCP: the kernel adds the IP
//! header; needs CAP_NET_RAW), the way an SMTP client that makes its own TCP starts, and waits
//! at most 1 s for the answer. Prints one JSON line:
//! {"sent":bool,"errno":N,"reply":"synack"|"rst"|"none"}.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 {
        eprintln!("usage: raw_syn ADDR");
        std::process::exit(2);
    }
    let dst: SocketAddrV4 = args[1].parse().expect("an IPv4 socket address");
    // The source address the kernel will use: that of a UDP socket "connected" to ADDR.
    let probe = UdpSocket::bind("0.0.0.0:0").expect("udp");
    probe.connect(dst).expect("route to ADDR");
    let src = match probe.local_addr().expect("local address") {
        std::net::SocketAddr::V4(a) => *a.ip(),
        other => panic!("not IPv4: {other}"),
    };
    let sport = 40_000 + (std::process::id() % 20_000) as u16;
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
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

    // SAFETY: plain socket syscalls on descriptors this function owns; buffers are ours with
    // their lengths.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
        if fd < 0 {
            eprintln!("raw socket: {}", std::io::Error::last_os_error());
            std::process::exit(2);
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let n = libc::sendto(
            fd,
            tcp.as_ptr().cast(),
            tcp.len(),
            0,
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let (sent, errno) = if n == tcp.len() as isize {
            (true, 0)
        } else {
            (
                false,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(-1),
            )
        };
        let mut reply = "none";
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
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
            reply = match t[13] {
                f if f & 0x12 == 0x12 => "synack",
                f if f & 0x04 != 0 => "rst",
                _ => continue,
            };
            break;
        }
        libc::close(fd);
        println!("{{\"sent\":{sent},\"errno\":{errno},\"reply\":\"{reply}\"}}");
    }
}
