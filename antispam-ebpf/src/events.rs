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
    let comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
    entry.write(Event {
        ts_ns: a.now,
        cgroup_id: a.caller.cgroup_id,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid: a.caller.uid,
        gid: a.caller.gid,
        verdict: d.verdict,
        reason: d.reason,
        rule_id: d.rule_id,
        family: a.dest.family,
        dport: a.dest.port,
        generation: cfg.generation,
        daddr: a.dest.addr,
        comm,
        path: a.path,
        program: s.program,
        ppid: s.ppid,
        _pad: 0,
        pcomm: s.pcomm,
    });
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > (EVENTS_BYTES / 8) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
