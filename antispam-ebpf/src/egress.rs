//! `cgroup_skb/egress`: SMTP packets and bytes per UID and per cgroup, and the end of SMTP
//! sessions of suspended UIDs and cgroups (their packets are dropped, so a session that was open
//! when the suspension started goes no further).

use antispam_common::{
    config::{FLAG_OVERRIDES, FLAG_SUSPENSIONS},
    key::KeyId,
    net, stats,
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};

use crate::{
    connect::{overridden, suspended},
    maps::{add, key_state, stat, CONFIG, PORTS},
};

const PASS: i32 = 1;
const DROP: i32 = 0;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

#[cgroup_skb(egress)]
pub fn antispam_egress(ctx: SkBuffContext) -> i32 {
    match count(&ctx) {
        Ok(verdict) => verdict,
        Err(()) => {
            stat(stats::PARSE_FAILED);
            PASS
        }
    }
}

#[inline(always)]
fn count(ctx: &SkBuffContext) -> Result<i32, ()> {
    // Fast path: the socket's remote port is in the context (no helper call, no packet read).
    // The kernel loads it as the big-endian port shifted into the upper 16 bits. Traffic to
    // other ports, most of a host's, returns here.
    let remote = u16::from_be((ctx.skb.remote_port() >> 16) as u16);
    let (word, bit) = net::port_slot(remote);
    match PORTS.get(word) {
        Some(w) if *w & bit != 0 => {}
        _ => return Ok(PASS),
    }
    // skb->protocol is a big-endian 16-bit value in a 32-bit field.
    let dport_offset = match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).map_err(|_| ())?;
            let proto: u8 = ctx.load(9).map_err(|_| ())?;
            if proto != IPPROTO_TCP {
                return Ok(PASS);
            }
            ((vihl & 0x0f) as usize) * 4 + 2
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(6).map_err(|_| ())?;
            if next != IPPROTO_TCP {
                return Ok(PASS);
            }
            40 + 2
        }
        _ => return Ok(PASS),
    };
    let dport: u16 = ctx.load(dport_offset).map_err(|_| ())?;
    let (word, bit) = net::port_slot(u16::from_be(dport));
    match PORTS.get(word) {
        Some(w) if *w & bit != 0 => {}
        _ => return Ok(PASS),
    }
    let len = ctx.len() as u64;
    let uid = ctx.get_socket_uid();
    // SAFETY: the skb pointer the kernel passed to this program.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    let flags = CONFIG.get(0).map_or(0, |c| c.flags);
    if flags & FLAG_SUSPENSIONS != 0 {
        // SAFETY: a helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        if (suspended(&KeyId::uid(uid), now) || suspended(&KeyId::cgroup(cgroup_id), now))
            && !(flags & FLAG_OVERRIDES != 0
                && (overridden(&KeyId::uid(uid), now)
                    || overridden(&KeyId::cgroup(cgroup_id), now)))
        {
            stat(stats::SUSPENDED_DROPS);
            return Ok(DROP);
        }
    }
    for key in [KeyId::uid(uid), KeyId::cgroup(cgroup_id)] {
        if let Some(state) = key_state(&key) {
            // SAFETY: pointers into a live map value.
            unsafe {
                add(&raw mut (*state).packets, 1);
                add(&raw mut (*state).bytes, len);
            }
        }
    }
    Ok(PASS)
}
