//! packet_syn IFNAME DST_MAC SRC_IP DST_IP:PORT
//!
//! Writes one IPv4 TCP SYN to DST_IP:PORT as a link-layer frame on a packet socket (AF_PACKET,
//! SOCK_DGRAM: the kernel adds the Ethernet header for DST_MAC) on device IFNAME, with
//! PACKET_QDISC_BYPASS (past the device's egress qdisc too), and waits at most 1 s for the
//! answer on a raw TCP socket. Needs CAP_NET_RAW. No connect(), no IP stack on the way out: what
//! an SMTP client that makes its own frames does. Prints one JSON line:
//! {"sent":bool,"errno":N,"reply":"synack"|"rst"|"none"}.

use std::net::{Ipv4Addr, SocketAddrV4};

use antispam_tests::syn::{self, checksum};

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("a MAC address"))
        .collect();
    v.try_into().expect("six bytes")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: packet_syn IFNAME DST_MAC SRC_IP DST_IP:PORT");
        std::process::exit(2);
    }
    let ifname = std::ffi::CString::new(args[1].as_str()).expect("IFNAME");
    let dst_mac = mac(&args[2]);
    let src: Ipv4Addr = args[3].parse().expect("SRC_IP");
    let dst: SocketAddrV4 = args[4].parse().expect("DST_IP:PORT");
    let sport = 41_000 + (std::process::id() % 20_000) as u16;

    let tcp = syn::segment(src, sport, dst, 0x0bad_cafe);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = Vec::with_capacity(40);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);

    // SAFETY: plain socket syscalls on descriptors this function owns; every buffer is ours,
    // passed with its length.
    unsafe {
        let ifindex = libc::if_nametoindex(ifname.as_ptr());
        if ifindex == 0 {
            eprintln!("no device {:?}", args[1]);
            std::process::exit(2);
        }
        let eth_p_ip = (libc::ETH_P_IP as u16).to_be();
        let pkt = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(eth_p_ip));
        // Listen before sending: the answer can be quick.
        let raw = syn::ip_listener();
        if pkt < 0 {
            eprintln!("sockets: {}", std::io::Error::last_os_error());
            std::process::exit(2);
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            pkt,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut ll: libc::sockaddr_ll = std::mem::zeroed();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = eth_p_ip;
        ll.sll_ifindex = ifindex as i32;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&dst_mac);
        let n = libc::sendto(
            pkt,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        let (sent, errno) = if n == frame.len() as isize {
            (true, 0)
        } else {
            (
                false,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(-1),
            )
        };
        let reply = if sent {
            syn::reply(raw, dst, sport)
        } else {
            "none"
        };
        libc::close(pkt);
        libc::close(raw);
        println!("{{\"sent\":{sent},\"errno\":{errno},\"reply\":\"{reply}\"}}");
    }
}
