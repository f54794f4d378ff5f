//! The `sendmail` path: every execution of one of the MTA's submission programs (Postfix's
//! `postdrop`, Exim's `exim4`, OpenSMTPD's `smtpctl`, as the policy lists them, known by inode)
//! is one message handed to the local MTA, decided like a connect.
//!
//! * `antispam_exec` (`lsm_cgroup/bprm_creds_for_exec`, BPF LSM): runs for the tasks of the
//!   attached cgroup subtree before the new program does; returning 0 makes `execve()` fail with
//!   EPERM, so `sendmail` fails at once and nothing is queued.
//! * `antispam_exec_fallback` (`tp_btf/sched_process_exec`) where BPF LSM programs cannot be
//!   loaded: the exec has happened, but the task has not returned to user space; over budget it
//!   gets SIGKILL, so the program never runs an instruction (the caller sees its child killed,
//!   not EPERM). A tracepoint runs for every task of the host: it decides only under the attach
//!   cgroup.
//!
//! Rust eBPF has no CO-RE relocations: the offsets of the kernel fields read here are load-time
//! globals, computed by the agent from the running kernel's BTF (antispam-user/src/kernel/
//! btf.rs) and frozen with the object's .rodata, so the verifier sees constants and allows
//! direct loads through the BTF-typed pointers.

use core::ptr::read_volatile;

use antispam_common::{
    event::{counter_index, PATH_SENDMAIL, REASON_MTA_PROGRAM, VERDICT_ALLOWED, VERDICT_DENIED},
    key::KeyId,
    rule::ACTION_ALLOW,
    stats,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_send_signal},
    macros::{btf_tracepoint, lsm_cgroup, map},
    maps::CgroupArray,
    programs::{BtfTracePointContext, LsmContext},
};

use crate::{
    decide::{decide_and_record, Attempt, Caller, Decision, Destination},
    events::Submission,
    maps::{self, KeyEntry},
};

/// `execve()` goes on.
const PASS: i32 = 1;
/// `execve()` fails with EPERM.
const REFUSE: i32 = 0;
const SIGKILL: u32 = 9;

#[map(name = "AS_ATTACH_CGROUP")]
static ATTACH_CGROUP: CgroupArray = CgroupArray::pinned(1, 0);

// Byte offsets of kernel fields, set by the agent (`must_exist`): see the module comment.
#[unsafe(no_mangle)]
static OFF_BPRM_FILE: u32 = 0;
#[unsafe(no_mangle)]
static OFF_FILE_INODE: u32 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_INO: u32 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_SB: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SB_DEV: u32 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_REAL_PARENT: u32 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_TGID: u32 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_COMM: u32 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_MM: u32 = 0;
#[unsafe(no_mangle)]
static OFF_MM_EXE_FILE: u32 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_CRED: u32 = 0;
#[unsafe(no_mangle)]
static OFF_CRED_EUID: u32 = 0;

/// An offset global, read at run time (a volatile read, so that the value comes from the frozen
/// .rodata rather than being folded to the 0 it is compiled with).
#[inline(always)]
fn off(v: &'static u32) -> usize {
    // SAFETY: a read of a static.
    unsafe { read_volatile(v) as usize }
}

/// A field at `offset` bytes into a kernel object.
///
/// # Safety
/// `base` is a BTF-typed kernel pointer (from the hook's arguments or `bpf_get_current_task_btf`,
/// or loaded through one) and `offset` the offset of a field of type `T` in its type: the
/// verifier checks both against the kernel's BTF and turns faults into zero reads.
#[inline(always)]
unsafe fn ld<T: Copy>(base: *const u8, offset: usize) -> T {
    // SAFETY: the caller's promise.
    unsafe { read_volatile(base.add(offset).cast::<T>()) }
}

/// A file as the policy's program table knows it: inode number and device.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    ino: u64,
    dev: u32,
}

/// The inode behind a `struct file *`, and its number.
///
/// # Safety
/// `file` is a BTF-typed `struct file *` (or null).
#[inline(always)]
unsafe fn inode_of(file: *const u8) -> Option<(*const u8, u64)> {
    if file.is_null() {
        return None;
    }
    // SAFETY: `file` is a struct file; each load follows a field of the type loaded from.
    unsafe {
        let inode: *const u8 = ld(file, off(&OFF_FILE_INODE));
        if inode.is_null() {
            return None;
        }
        Some((inode, ld(inode, off(&OFF_INODE_INO))))
    }
}

/// The device of an inode's file system.
///
/// # Safety
/// `inode` is a BTF-typed `struct inode *`.
#[inline(always)]
unsafe fn dev_of(inode: *const u8) -> Option<u32> {
    // SAFETY: `inode` is a struct inode.
    unsafe {
        let sb: *const u8 = ld(inode, off(&OFF_INODE_SB));
        if sb.is_null() {
            return None;
        }
        Some(ld(sb, off(&OFF_SB_DEV)))
    }
}

/// The identity of the file behind a `struct file *`.
///
/// # Safety
/// As for [`inode_of`].
#[inline(always)]
unsafe fn identity(file: *const u8) -> Option<Identity> {
    // SAFETY: the caller's promise.
    unsafe {
        let (inode, ino) = inode_of(file)?;
        Some(Identity {
            ino,
            dev: dev_of(inode)?,
        })
    }
}

/// The file being executed, if it may be a submission program (most execs leave here after an
/// inode read and one array read: the filter has no false negatives). None for the others, and
/// (counted) when a field cannot be read.
///
/// # Safety
/// `file` is a BTF-typed `struct file *` (or null).
#[inline(always)]
unsafe fn candidate(file: *const u8) -> Option<Identity> {
    // SAFETY: the caller's promise.
    let Some((inode, ino)) = (unsafe { inode_of(file) }) else {
        maps::stat(stats::EXEC_READ_FAILED);
        return None;
    };
    if !maps::maybe_program(ino, maps::active_slot()) {
        return None;
    }
    // SAFETY: `inode` came from `inode_of`.
    let Some(dev) = (unsafe { dev_of(inode) }) else {
        maps::stat(stats::EXEC_READ_FAILED);
        return None;
    };
    Some(Identity { ino, dev })
}

/// The executable of a task, and its effective UID.
///
/// # Safety
/// `task` is a BTF-typed `struct task_struct *`.
#[inline(always)]
unsafe fn exe_and_euid(task: *const u8) -> Option<(Identity, u32)> {
    if task.is_null() {
        return None;
    }
    // SAFETY: `task` is a task_struct; its mm may be null (a kernel thread).
    unsafe {
        let mm: *const u8 = ld(task, off(&OFF_TASK_MM));
        if mm.is_null() {
            return None;
        }
        let exe = identity(ld(mm, off(&OFF_MM_EXE_FILE)))?;
        let cred: *const u8 = ld(task, off(&OFF_TASK_CRED));
        if cred.is_null() {
            return None;
        }
        Some((exe, ld(cred, off(&OFF_CRED_EUID))))
    }
}

/// The parent of `task`: (tgid, comm) — who ran `sendmail` (a PHP process, a shell).
///
/// # Safety
/// As for [`exe_and_euid`].
#[inline(always)]
unsafe fn parent(task: *const u8) -> (*const u8, u32, [u8; 16]) {
    // SAFETY: `task` is a task_struct; comm is char[16], read as two words.
    unsafe {
        let p: *const u8 = ld(task, off(&OFF_TASK_REAL_PARENT));
        if p.is_null() {
            return (p, 0, [0; 16]);
        }
        let tgid: u32 = ld(p, off(&OFF_TASK_TGID));
        let c0: u64 = ld(p, off(&OFF_TASK_COMM));
        let c1: u64 = ld(p, off(&OFF_TASK_COMM) + 8);
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(&c0.to_ne_bytes());
        comm[8..].copy_from_slice(&c1.to_ne_bytes());
        (p, tgid, comm)
    }
}

/// Is the program being run again by a privileged instance of itself (`runner`: the task that
/// executes, or for the fallback its parent)? Exim re-executes itself as root to deliver what
/// was already charged; a customer cannot: the runner must be the same program, as root or as an
/// allow-listed UID.
#[inline(always)]
fn reexec(runner: Option<(Identity, u32)>, program: Identity, slot: u32) -> bool {
    match runner {
        Some((exe, euid)) if exe == program => {
            euid == 0 || maps::uid_rule(euid, slot).is_some_and(|r| r.action == ACTION_ALLOW)
        }
        _ => false,
    }
}

#[lsm_cgroup(hook = "bprm_creds_for_exec")]
pub fn antispam_exec(ctx: LsmContext) -> i32 {
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: the hook's argument is a `struct linux_binprm *`; current is the task executing.
    let (file, task) = unsafe {
        (
            ld::<*const u8>(bprm, off(&OFF_BPRM_FILE)),
            bpf_get_current_task_btf() as *const u8,
        )
    };
    // SAFETY: BTF-typed pointers from above.
    let Some(program) = (unsafe { candidate(file) }) else {
        return PASS;
    };
    // SAFETY: as above.
    let runner = unsafe { exe_and_euid(task) };
    match decide(program, runner, task) {
        Some(d) if d.verdict == VERDICT_DENIED => REFUSE,
        _ => PASS,
    }
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn antispam_exec_fallback(ctx: BtfTracePointContext) -> i32 {
    // (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    // SAFETY: the tracepoint's arguments are BTF-typed.
    let Some(program) = (unsafe { candidate(ld(bprm, off(&OFF_BPRM_FILE))) }) else {
        return 0;
    };
    // Cheap first: most execs are of other programs; the cgroup test costs about 100 ns.
    if maps::program(program.ino, program.dev, maps::active_slot()).is_none() {
        return 0;
    }
    if !matches!(ATTACH_CGROUP.current_task_under_cgroup(0), Ok(true)) {
        return 0;
    }
    // The task already runs the new program: whoever executed it is best seen in its parent
    // (Exim's daemon forks, and the child executes exim again).
    // SAFETY: BTF-typed task pointer.
    let runner = unsafe {
        let (p, _, _) = parent(task);
        exe_and_euid(p)
    };
    if let Some(d) = decide(program, runner, task) {
        if d.verdict == VERDICT_DENIED {
            // SAFETY: a helper allowed for tracing programs; signals the current task.
            unsafe { bpf_send_signal(SIGKILL) };
            maps::stat(stats::EXEC_KILLED);
        }
    }
    0
}

/// Decides an execution of `program` by `task` (None: not a submission program).
#[inline(always)]
fn decide(program: Identity, runner: Option<(Identity, u32)>, task: *const u8) -> Option<Decision> {
    let slot = maps::active_slot();
    let p = maps::program(program.ino, program.dev, slot)?;
    let Some(cfg) = maps::config(slot) else {
        maps::stat(stats::CONFIG_MISSING);
        return None;
    };
    let (caller, now) = Caller::current(cfg);
    let cgroup_id = caller.cgroup_id;
    if reexec(runner, program, slot) {
        maps::count_decision(counter_index(
            PATH_SENDMAIL,
            VERDICT_ALLOWED,
            REASON_MTA_PROGRAM,
        ));
        return Some(Decision {
            verdict: VERDICT_ALLOWED,
            reason: REASON_MTA_PROGRAM,
            rule_id: 0,
        });
    }
    // SAFETY: BTF-typed task pointer.
    let (_, ppid, pcomm) = unsafe { parent(task) };
    let attempt = Attempt {
        cfg,
        slot,
        caller,
        path: PATH_SENDMAIL,
        dest: Destination::default(),
        now,
        uid_state: KeyEntry::get(&KeyId::uid(caller.charged)),
        cgroup_state: KeyEntry::get(&KeyId::cgroup(cgroup_id)),
    };
    let s = Submission {
        program: p.index,
        ppid,
        pcomm,
    };
    Some(decide_and_record(&attempt, &s))
}
