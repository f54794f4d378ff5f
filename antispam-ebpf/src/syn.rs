//! `classifier` `antispam_syn`: the SYN check on the host side of a container's veth (tc
//! ingress: what the container sends). A process with CAP_NET_RAW (a container's root, by
//! Docker's default) can write whole frames on a packet socket (AF_PACKET), which no connect
//! hook and no cgroup program sees. Every TCP SYN to an SMTP port that leaves the container is
//! checked against the container's own sockets: a connecting socket (SYN_SENT) with that
//! 4-tuple exists when, and only when, `connect()` made the SYN, so the connect hook decided
//! it. Any other such SYN is dropped and counted (`packet_smtp_syns_dropped`).
//!
//! The lookup runs in the container's network namespace (`bpf_skc_lookup_tcp` with its nsid,
//! which the agent keeps per device in `AS_VETHS`). Only SYNs to SMTP ports pay for it; every
//! other packet returns after reading at most three header fields.

use antispam_common::stats;
use aya_ebpf::{
    bindings::{bpf_sock_tuple, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp},
    macros::classifier,
    programs::TcContext,
};

use crate::maps::{active_slot, is_smtp, stat, VETHS};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// `TCP_SYN_SENT` in the kernel's TCP states.
const TCP_SYN_SENT: u32 = 2;
/// IPv6 extension headers walked to find the TCP header (the verifier needs a bound).
const IPV6_EXT_HEADERS: usize = 4;

#[classifier]
pub fn antispam_syn(ctx: TcContext) -> i32 {
    check(&ctx)
}

/// Where a packet's TCP header is, if it is TCP in a first (or only) fragment.
#[inline(always)]
fn tcp_offset(ctx: &TcContext, ethertype: u16) -> Option<usize> {
    match ethertype {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
            // A later fragment has no TCP header (and cannot be reassembled without the first).
            (proto == IPPROTO_TCP && u16::from_be(frag) & 0x1fff == 0)
                .then_some(ETH_HLEN + usize::from(vihl & 0xf) * 4)
        }
        ETH_P_IPV6 => {
            let mut next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            let mut at = ETH_HLEN + 40;
            for _ in 0..IPV6_EXT_HEADERS {
                match next {
                    IPPROTO_TCP => return Some(at),
                    // Hop-by-hop, routing, destination options: (length + 1) × 8 bytes.
                    0 | 43 | 60 => {
                        let len: u8 = ctx.load(at + 1).ok()?;
                        next = ctx.load(at).ok()?;
                        at += (usize::from(len) + 1) * 8;
                    }
                    // Fragment: 8 bytes; a later fragment has no TCP header.
                    44 => {
                        let off: u16 = ctx.load(at + 2).ok()?;
                        if u16::from_be(off) & 0xfff8 != 0 {
                            return None;
                        }
                        next = ctx.load(at).ok()?;
                        at += 8;
                    }
                    _ => return None,
                }
            }
            (next == IPPROTO_TCP).then_some(at)
        }
        _ => None,
    }
}

#[inline(always)]
fn check(ctx: &TcContext) -> i32 {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return TC_ACT_OK;
    };
    let ethertype = u16::from_be(ethertype);
    let Some(tcp) = tcp_offset(ctx, ethertype) else {
        return TC_ACT_OK;
    };
    let Ok(flags) = ctx.load::<u8>(tcp + 13) else {
        return TC_ACT_OK;
    };
    if flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return TC_ACT_OK;
    }
    let (Ok(sport), Ok(dport)) = (ctx.load::<u16>(tcp), ctx.load::<u16>(tcp + 2)) else {
        return TC_ACT_OK;
    };
    if !is_smtp(active_slot(), u16::from_be(dport)) {
        return TC_ACT_OK;
    }
    // SAFETY: a context field load.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a plain map lookup; the value is copied at once.
    let Some(nsid) = (unsafe { VETHS.get(ifindex) }).map(|v| v.nsid) else {
        return TC_ACT_OK;
    };
    // The tuple as the lookup wants it: from the point of view of a packet arriving at the
    // socket (source = the remote end).
    // SAFETY: an all-zero tuple is a valid value of this plain-data union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if ethertype == ETH_P_IP {
        let (Ok(src), Ok(dst)) = (
            ctx.load::<u32>(ETH_HLEN + 12),
            ctx.load::<u32>(ETH_HLEN + 16),
        ) else {
            return TC_ACT_OK;
        };
        tuple.__bindgen_anon_1.ipv4.saddr = dst;
        tuple.__bindgen_anon_1.ipv4.daddr = src;
        tuple.__bindgen_anon_1.ipv4.sport = dport;
        tuple.__bindgen_anon_1.ipv4.dport = sport;
        12
    } else {
        let (Ok(src), Ok(dst)) = (
            ctx.load::<[u32; 4]>(ETH_HLEN + 8),
            ctx.load::<[u32; 4]>(ETH_HLEN + 24),
        ) else {
            return TC_ACT_OK;
        };
        tuple.__bindgen_anon_1.ipv6.saddr = dst;
        tuple.__bindgen_anon_1.ipv6.daddr = src;
        tuple.__bindgen_anon_1.ipv6.sport = dport;
        tuple.__bindgen_anon_1.ipv6.dport = sport;
        36
    };
    // SAFETY: the context, a tuple of `size` bytes on the stack, the namespace id; a socket
    // found is released before returning.
    let sk =
        unsafe { bpf_skc_lookup_tcp(ctx.skb.skb.cast(), &raw mut tuple, size, u64::from(nsid), 0) };
    if !sk.is_null() {
        // SAFETY: a non-null socket the helper returned: its common fields are readable.
        let state = unsafe { (*sk).state };
        // SAFETY: the reference the lookup took.
        unsafe { bpf_sk_release(sk.cast()) };
        if state == TCP_SYN_SENT {
            return TC_ACT_OK;
        }
    }
    stat(stats::PACKET_SYN_DROPS);
    TC_ACT_SHOT
}
