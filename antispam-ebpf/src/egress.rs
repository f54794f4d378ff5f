//! `cgroup_skb/egress`: SMTP packets and bytes per UID and per cgroup, and the end of SMTP
//! sessions of suspended UIDs and cgroups (their packets are dropped, so a session that was open
//! when the suspension started goes no further). A program here runs for every packet of the
//! attach point's tasks, so the agent attaches it only while a feature needs it: packet
//! accounting (`antispam run --packet-accounting`), or a suspension or the kill switch that left
//! sessions it could not end with SOCK_DESTROY (in a network namespace it could not enter).
//! Raw sockets are refused when made (`sock.rs`).

use antispam_common::{
    config::{Config, FLAG_KILL_SWITCH, FLAG_OVERRIDES, FLAG_SUSPENSIONS},
    key::KeyId,
    rule::ACTION_ALLOW,
    stats,
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};

use crate::maps::{self, active_slot, is_smtp, overridden, stat, suspended, KeyEntry};

const PASS: i32 = 1;
const DROP: i32 = 0;

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
