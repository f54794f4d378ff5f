//! `cgroup/sock_create`: no raw IP under the attach point. A process with CAP_NET_RAW (a
//! container's root, by Docker's default; a host-network container) could make its own TCP on
//! a raw socket and never call `connect()`, which is where every SMTP connect is decided: on a
//! raw socket of protocol TCP or `IPPROTO_RAW`, or with `IP_HDRINCL` on one of any protocol.
//! Making a raw IPv4 or IPv6 socket fails with EPERM here, once per socket: nothing runs per
//! packet. Raw ICMP sockets are the exception (`mtr`, `ping` where ICMP datagram sockets are
//! not allowed), and their one way to TCP, `IP_HDRINCL`, is named in docs/threat-model.md.
//! Packet sockets (AF_PACKET) write whole frames: the SYN check on containers' veths (`syn.rs`)
//! stops those.

use antispam_common::stats;
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};

use crate::maps::stat;

const PASS: i32 = 1;
/// `socket()` fails with EPERM.
const REFUSE: i32 = 0;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_RAW: u32 = 3;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

#[cgroup_sock(sock_create)]
pub fn antispam_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer the kernel passed to this program.
    let sk = unsafe { &*ctx.sock };
    // Every socket but a raw one returns after one compare.
    if sk.type_ != SOCK_RAW {
        return PASS;
    }
    let icmp = match sk.family {
        AF_INET => sk.protocol == IPPROTO_ICMP,
        AF_INET6 => sk.protocol == IPPROTO_ICMPV6,
        _ => return PASS,
    };
    if icmp {
        return PASS;
    }
    stat(stats::RAW_SOCKETS_REFUSED);
    REFUSE
}
