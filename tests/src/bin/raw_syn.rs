//! raw_syn ADDR | raw_syn --socket FAMILY PROTOCOL
//!
//! With `--socket`: only makes a raw socket of FAMILY (4 or 6) and PROTOCOL, and prints
//! {"made":bool,"errno":N}.
//!
//! Sends one TCP SYN to the IPv4 ADDR from a raw socket (IPPROTO_TCP: the kernel adds the IP
//! header; needs CAP_NET_RAW), the way an SMTP client that makes its own TCP starts, and waits
//! at most 1 s for the answer. Prints one JSON line:
//! {"made":bool,"sent":bool,"errno":N,"reply":"synack"|"rst"|"none"} ("made": the raw socket
//! could be made; when not, errno says why).

use std::net::{SocketAddrV4, UdpSocket};

use antispam_tests::syn;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--socket" {
        let family = if args[2] == "6" {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        let protocol: i32 = args[3].parse().expect("PROTOCOL");
        // SAFETY: socket(2), and close(2) of what it returned.
        let (made, errno) = unsafe {
            let fd = libc::socket(family, libc::SOCK_RAW, protocol);
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
            if fd >= 0 {
                libc::close(fd);
            }
            (fd >= 0, if fd >= 0 { 0 } else { errno })
        };
        println!("{{\"made\":{made},\"errno\":{errno}}}");
        return;
    }
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
    let tcp = syn::segment(src, sport, dst, 0x1234_5678);

    // SAFETY: plain socket syscalls on descriptors this function owns; buffers are ours with
    // their lengths.
    unsafe {
        let fd = match syn::raw_tcp_socket() {
            Ok(fd) => fd,
            Err(errno) => {
                println!("{{\"made\":false,\"sent\":false,\"errno\":{errno},\"reply\":\"none\"}}");
                return;
            }
        };
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
        let reply = if sent {
            syn::reply(fd, dst, sport)
        } else {
            "none"
        };
        libc::close(fd);
        println!("{{\"made\":true,\"sent\":{sent},\"errno\":{errno},\"reply\":\"{reply}\"}}");
    }
}
