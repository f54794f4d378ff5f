//! `cgroup_skb/egress`: SMTP packets and bytes per UID and per cgroup.

use antispam_common::{key::KeyId, net, stats};
use aya_ebpf::{
    helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, programs::SkBuffContext, EbpfContext,
};

use crate::maps::{add, key_state, stat, PORTS};

const PASS: i32 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

#[cgroup_skb(egress)]
pub fn antispam_egress(ctx: SkBuffContext) -> i32 {
    if let Err(()) = count(&ctx) {
        stat(stats::PARSE_FAILED);
    }
    PASS
}

#[inline(always)]
fn count(ctx: &SkBuffContext) -> Result<(), ()> {
    // skb->protocol is a big-endian 16-bit value in a 32-bit field.
    let dport_offset = match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).map_err(|_| ())?;
            let proto: u8 = ctx.load(9).map_err(|_| ())?;
            if proto != IPPROTO_TCP {
                return Ok(());
            }
            ((vihl & 0x0f) as usize) * 4 + 2
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(6).map_err(|_| ())?;
            if next != IPPROTO_TCP {
                return Ok(());
            }
            40 + 2
        }
        _ => return Ok(()),
    };
    let dport: u16 = ctx.load(dport_offset).map_err(|_| ())?;
    let (word, bit) = net::port_slot(u16::from_be(dport));
    match PORTS.get(word) {
        Some(w) if *w & bit != 0 => {}
        _ => return Ok(()),
    }
    let len = ctx.len() as u64;
    let uid = ctx.get_socket_uid();
    // SAFETY: the skb pointer the kernel passed to this program.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    for key in [KeyId::uid(uid), KeyId::cgroup(cgroup_id)] {
        if let Some(state) = key_state(&key) {
            // SAFETY: pointers into a live map value.
            unsafe {
                add(&raw mut (*state).packets, 1);
                add(&raw mut (*state).bytes, len);
            }
        }
    }
    Ok(())
}
