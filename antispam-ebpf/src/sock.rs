//! `cgroup/sock_create`: no raw TCP under the attach point. A process with CAP_NET_RAW (a
//! container's root, by Docker's default) could make its own TCP on a raw socket and never
//! call `connect()`, which is where every SMTP connect is decided. Making a raw IPv4 or IPv6
//! socket of protocol TCP or `IPPROTO_RAW` (whole IP packets) fails with EPERM here, once per
//! socket: nothing runs per packet. Other raw sockets (ICMP: `ping`, `traceroute -I`) are made
//! as before. (Packet sockets, AF_PACKET, write whole frames: the SYN check on containers'
//! veths, `syn.rs`, stops those.)

use antispam_common::stats;
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};

use crate::maps::stat;

const PASS: i32 = 1;
/// `socket()` fails with EPERM.
const REFUSE: i32 = 0;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_RAW: u32 = 3;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_RAW: u32 = 255;

#[cgroup_sock(sock_create)]
pub fn antispam_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer the kernel passed to this program.
    let sk = unsafe { &*ctx.sock };
    // Every socket but a raw one returns after one compare.
    if sk.type_ != SOCK_RAW {
        return PASS;
    }
    if (sk.family == AF_INET || sk.family == AF_INET6)
        && (sk.protocol == IPPROTO_TCP || sk.protocol == IPPROTO_RAW)
    {
        stat(stats::RAW_SOCKETS_REFUSED);
        return REFUSE;
    }
    PASS
}
