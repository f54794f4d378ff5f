//! Decisions as ring-buffer events for the agent.

use antispam_common::{config::Config, event::Event, maps::EVENTS_BYTES, stats};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
};

use crate::{
    decide::{Attempt, Decision},
    maps::{stat, EVENTS},
};

/// What a `sendmail` decision adds to its event.
#[derive(Default)]
pub struct Submission {
    /// 1 + the program's index in the policy's list.
    pub program: u32,
    pub ppid: u32,
    pub pcomm: [u8; 16],
}

/// Writes one event. No event wakes the agent by itself (a wakeup costs the caller microseconds
/// and, during an outbreak, one context switch per refusal): the agent drains every 50 ms, and
/// is woken early only when the ring is an eighth full.
#[inline(always)]
pub fn emit(cfg: &Config, a: &Attempt<'_>, d: &Decision, s: &Submission) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        stat(stats::RINGBUF_FULL);
        return;
    };
    let e = entry.as_mut_ptr();
    // Field by field into the ring buffer's memory: an `Event` built on the stack first would
    // take 112 of the program's 512 bytes of stack.
    // SAFETY: `e` points to reserved ring-buffer memory the size of an `Event`, ours until
    // submitted; every field is written before the submit.
    unsafe {
        (*e).ts_ns = a.now;
        (*e).cgroup_id = a.caller.cgroup_id;
        (*e).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*e).uid = a.caller.uid;
        (*e).gid = a.caller.gid;
        (*e).verdict = d.verdict;
        (*e).reason = d.reason;
        (*e).rule_id = d.rule_id;
        (*e).family = a.dest.family;
        (*e).dport = a.dest.port;
        (*e).generation = cfg.generation;
        (*e).daddr = a.dest.addr;
        (*e).comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
        (*e).path = a.path;
        (*e).program = s.program;
        (*e).ppid = s.ppid;
        (*e).charged_uid = a.caller.charged;
        (*e).pcomm = s.pcomm;
    }
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > (EVENTS_BYTES / 8) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
