//! The decision programs for direct SMTP: `cgroup/connect4` and `cgroup/connect6`. Returning 0
//! makes `connect()` fail with EPERM at once.

use antispam_common::{
    event::{PATH_DIRECT, PATH_LOCAL_SMTP, VERDICT_DENIED},
    key::KeyId,
    net::{self, AF_INET, AF_INET6},
    stats,
};
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::generated::bpf_get_netns_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

use crate::{
    decide::{decide_and_record, Attempt, Caller, Destination},
    events::Submission,
    maps::{self, KeyEntry},
};

/// `connect()` goes on.
const PASS: i32 = 1;
/// `connect()` fails with EPERM.
const REFUSE: i32 = 0;
const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn antispam_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context pointer the kernel passed to this program.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return PASS;
    }
    let mut addr = [0u8; 16];
    let b = sa.user_ip4.to_ne_bytes();
    addr[0] = b[0];
    addr[1] = b[1];
    addr[2] = b[2];
    addr[3] = b[3];
    let port = u16::from_be(sa.user_port as u16);
    decide(
        &ctx,
        Destination {
            family: AF_INET,
            port,
            addr,
        },
    )
}

#[cgroup_sock_addr(connect6)]
pub fn antispam_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context pointer the kernel passed to this program.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return PASS;
    }
    let port = u16::from_be(sa.user_port as u16);
    // The verifier wants each 4-byte word of user_ip6 read on its own.
    let words = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let dest = match net::ipv4_mapped(&words) {
        Some(ip4) => {
            let mut addr = [0u8; 16];
            let b = ip4.to_ne_bytes();
            addr[0] = b[0];
            addr[1] = b[1];
            addr[2] = b[2];
            addr[3] = b[3];
            Destination {
                family: AF_INET,
                port,
                addr,
            }
        }
        None => Destination {
            family: AF_INET6,
            port,
            addr: net::ip6_bytes(&words),
        },
    };
    decide(&ctx, dest)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, dest: Destination) -> i32 {
    let slot = maps::active_slot();
    if !maps::is_smtp(slot, dest.port) {
        return PASS;
    }
    let Some(cfg) = maps::config(slot) else {
        maps::stat(stats::CONFIG_MISSING);
        return PASS;
    };
    let (caller, now) = Caller::current(cfg);
    let cgroup_id = caller.cgroup_id;
    // A connect to the host itself hands mail to the local MTA: a submission. Only in the
    // network namespace the MTA listens in: elsewhere loopback is that namespace's own, and a
    // NAT there may send it anywhere.
    // SAFETY: the context pointer the kernel passed to this program.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let host = cfg.host_netns == 0 || netns == cfg.host_netns;
    let path = if host && maps::is_local(dest.family, &dest.addr) {
        PATH_LOCAL_SMTP
    } else {
        PATH_DIRECT
    };
    let attempt = Attempt {
        cfg,
        slot,
        caller,
        path,
        dest,
        now,
        uid_state: KeyEntry::get(&KeyId::uid(caller.charged)),
        cgroup_state: KeyEntry::get(&KeyId::cgroup(cgroup_id)),
    };
    let d = decide_and_record(&attempt, &Submission::default());
    // Every decision is in the ring buffer's events; no aya-log here: its formatting
    // subprogram's stack on top of this one's is more than Linux 6.1's verifier allows.
    if d.verdict == VERDICT_DENIED {
        REFUSE
    } else {
        PASS
    }
}
