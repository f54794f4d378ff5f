//! `cgroup_skb/egress`: SMTP packets and bytes per UID and per cgroup, the end of SMTP sessions
//! of suspended UIDs and cgroups (their packets are dropped, so a session that was open when the
//! suspension started goes no further), and no SMTP from raw sockets: a process with
//! CAP_NET_RAW (a container's root, by Docker's default) could make its own TCP and never call
//! `connect()`; its TCP packets to SMTP ports are dropped.

use antispam_common::{
    config::{Config, FLAG_KILL_SWITCH, FLAG_OVERRIDES, FLAG_SUSPENSIONS},
    key::KeyId,
    rule::ACTION_ALLOW,
    stats,
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_sk_fullsock, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};

use crate::maps::{self, active_slot, is_smtp, overridden, stat, suspended, KeyEntry};

const PASS: i32 = 1;
const DROP: i32 = 0;
const SOCK_RAW: u32 = 3;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_RAW: u32 = 255;

/// Are the SMTP packets of `uid` in `cgroup_id` to be dropped: suspended, or stopped by the
/// kill switch (not allow-listed), and not under a break-glass override? The same as the connect
/// decision, for sessions that were open before (including those in other network namespaces,
/// which the agent may not be able to end).
#[inline(always)]
fn stopped(cfg: &Config, slot: u32, uid: u32, cgroup_id: u64) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if cfg.flags & FLAG_OVERRIDES != 0
        && (overridden(&KeyId::uid(uid), now) || overridden(&KeyId::cgroup(cgroup_id), now))
    {
        return false;
    }
    if cfg.flags & FLAG_SUSPENSIONS != 0
        && (suspended(&KeyId::uid(uid), now) || suspended(&KeyId::cgroup(cgroup_id), now))
    {
        return true;
    }
    cfg.flags & FLAG_KILL_SWITCH != 0
        && !maps::uid_rule(uid, slot).is_some_and(|r| r.action == ACTION_ALLOW)
}

#[cgroup_skb(egress)]
pub fn antispam_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx)
}

#[inline(always)]
fn count(ctx: &SkBuffContext) -> i32 {
    // The socket's remote port is in the context: no helper call, no packet read. The kernel
    // loads it as the big-endian port shifted into the upper 16 bits. This program runs only
    // for full sockets, so it is the port every packet of the socket goes to. Traffic to other
    // ports, most of a host's, returns here. (A UDP socket connected to an SMTP port is counted
    // too; reading the headers to tell would cost every SMTP packet three helper calls.)
    let remote = u16::from_be((ctx.skb.remote_port() >> 16) as u16);
    let slot = active_slot();
    if !is_smtp(slot, remote) {
        // A raw socket's local "port" is its protocol: only IPPROTO_TCP and IPPROTO_RAW ones
        // can send TCP. Every other packet returns here after one compare.
        let local = ctx.skb.local_port();
        if local == u32::from(IPPROTO_TCP) || local == IPPROTO_RAW {
            return raw(ctx, slot);
        }
        return PASS;
    }
    let len = ctx.len() as u64;
    let Some(cfg) = maps::config(slot) else {
        return PASS;
    };
    let uid = maps::charged_uid(cfg, ctx.get_socket_uid());
    // SAFETY: the skb pointer the kernel passed to this program.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    if cfg.flags & (FLAG_SUSPENSIONS | FLAG_KILL_SWITCH) != 0 && stopped(cfg, slot, uid, cgroup_id)
    {
        stat(stats::SUSPENDED_DROPS);
        return DROP;
    }
    for key in [KeyId::uid(uid), KeyId::cgroup(cgroup_id)] {
        if let Some(state) = KeyEntry::get(&key) {
            state.count_packet(len);
        }
    }
    PASS
}

/// A packet of a socket whose local port is 6 or 255: if the socket is raw and the packet is
/// TCP to an SMTP port, or TCP whose ports cannot be seen (an IPv4 fragment past the first, an
/// IPv6 packet behind extension headers), it is dropped.
#[inline(always)]
fn raw(ctx: &SkBuffContext, slot: u32) -> i32 {
    // SAFETY: a context field load: the packet's socket, or null.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    // SAFETY: a non-null socket of the context; null unless it is a full socket.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return PASS;
    }
    // SAFETY: non-null: a full socket the verifier lets us read.
    if unsafe { (*sk).type_ } != SOCK_RAW {
        return PASS;
    }
    let Ok(first) = ctx.load::<u8>(0) else {
        return PASS;
    };
    let port_at = match first >> 4 {
        4 => {
            let Ok(proto) = ctx.load::<u8>(9) else {
                return PASS;
            };
            if proto != IPPROTO_TCP {
                return PASS;
            }
            let Ok(frag) = ctx.load::<u16>(6) else {
                return PASS;
            };
            if u16::from_be(frag) & 0x1fff != 0 {
                return drop_raw();
            }
            usize::from(first & 0xf) * 4 + 2
        }
        6 => {
            let Ok(next) = ctx.load::<u8>(6) else {
                return PASS;
            };
            match next {
                IPPROTO_TCP => 42,
                // Hop-by-hop, routing, fragment, destination options: the TCP header is
                // further on, or in another fragment.
                0 | 43 | 44 | 60 => return drop_raw(),
                _ => return PASS,
            }
        }
        _ => return PASS,
    };
    let Ok(port) = ctx.load::<u16>(port_at) else {
        return PASS;
    };
    if is_smtp(slot, u16::from_be(port)) {
        return drop_raw();
    }
    PASS
}

#[inline(always)]
fn drop_raw() -> i32 {
    stat(stats::RAW_SMTP_DROPS);
    DROP
}
