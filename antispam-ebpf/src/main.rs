//! antispam kernel programs.
//!
//! * `cgroup/connect4` and `cgroup/connect6` decide every TCP connect to an SMTP port made by a
//!   task in the attached cgroup subtree: allow-listed UID, cgroup or destination → allow;
//!   block-listed destination → refuse; otherwise every rate-limit bucket that applies (the UID's,
//!   and the cgroup's when a cgroup rule names it) must have room. Returning 0 makes `connect()`
//!   fail with EPERM at once.
//! * `cgroup/sock_create` refuses raw IP sockets but ICMP ones (TCP made without `connect()`):
//!   once per socket, nothing per packet.
//! * `cgroup_skb/egress`, attached only while a feature needs it (`--packet-accounting`, or
//!   sessions a suspension could not end), counts SMTP packets and bytes per UID and cgroup and
//!   drops those of suspended keys.
//! * `lsm_cgroup/bprm_creds_for_exec` (or its tracepoint fallback) decides every execution of
//!   the MTA's submission programs.
//! * `classifier` `antispam_syn`, on containers' host-side veths, drops SMTP SYNs that no
//!   connecting socket made.
//!
//! Every decision is counted in a per-CPU array and written to a ring buffer; errors are counted
//! in a per-CPU stats array, never dropped silently.
//!
//! On any target but BPF this crate is an empty binary, so that workspace-wide commands work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The BPF target has no compare-and-swap in core::sync::atomic (`atomic-cas` is false in its
// target spec) although the instructions exist (BPF_ATOMIC, kernel 5.12+): use the intrinsics.
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "core_intrinsics: the atomic intrinsics below"
    )
)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

#[cfg(target_arch = "bpf")]
mod connect;
#[cfg(target_arch = "bpf")]
mod decide;
#[cfg(target_arch = "bpf")]
mod egress;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod syn;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
