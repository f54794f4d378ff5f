//! The exec hook of the `sendmail` path: which program decides executions of the MTA's
//! submission programs on this kernel, and the kernel-structure offsets it needs.
//!
//! `antispam_exec` (BPF LSM, `lsm_cgroup`) refuses an execution over budget with EPERM before
//! the program runs. Where the kernel will not run BPF LSM programs (BPF LSM not in its active
//! list, or trampoline programs refused, as some virtualised kernels do), the fallback
//! `antispam_exec_fallback` (`tp_btf/sched_process_exec`) kills the program with SIGKILL before
//! its first instruction; the caller then sees its child killed, not EPERM.

use antispam_common::maps::programs::{EXEC, EXEC_FALLBACK};
use aya::{
    programs::{BtfTracePoint, LsmCgroup},
    Btf, Ebpf, EbpfLoader,
};

use super::{btf, program, Error};
use crate::control::status::ExecHook;

/// Where the running kernel lists its active LSMs.
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// `antispam run --exec-hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecHookChoice {
    /// BPF LSM where the kernel runs it, else the tracepoint fallback.
    Auto,
    /// BPF LSM only: refuse to start without it.
    Lsm,
    /// The tracepoint fallback.
    Tracepoint,
}

/// The byte offsets the exec programs read kernel fields at, named as their globals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets([u32; FIELDS.len()]);

/// (global, struct, member, size in bytes): every kernel field the exec programs read.
const FIELDS: [(&str, &str, &str, u64); 12] = [
    ("OFF_BPRM_FILE", "linux_binprm", "file", 8),
    ("OFF_FILE_INODE", "file", "f_inode", 8),
    ("OFF_INODE_INO", "inode", "i_ino", 8),
    ("OFF_INODE_SB", "inode", "i_sb", 8),
    ("OFF_SB_DEV", "super_block", "s_dev", 4),
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent", 8),
    ("OFF_TASK_TGID", "task_struct", "tgid", 4),
    ("OFF_TASK_COMM", "task_struct", "comm", 16),
    ("OFF_TASK_MM", "task_struct", "mm", 8),
    ("OFF_MM_EXE_FILE", "mm_struct", "exe_file", 8),
    ("OFF_TASK_CRED", "task_struct", "cred", 8),
    ("OFF_CRED_EUID", "cred", "euid", 4),
];

/// Why the offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(transparent)]
    Btf(#[from] btf::Error),
    #[error("{ty}.{member} is {size} bytes in this kernel, not {expected}")]
    Size {
        ty: &'static str,
        member: &'static str,
        size: u64,
        expected: u64,
    },
}

impl Offsets {
    /// The offsets in the running kernel, from its BTF.
    pub fn of_running_kernel() -> Result<Offsets, OffsetError> {
        Offsets::from_btf(&btf::Btf::from_sys_fs()?)
    }

    pub fn from_btf(b: &btf::Btf) -> Result<Offsets, OffsetError> {
        let mut o = [0u32; FIELDS.len()];
        for (i, (_, ty, member, expected)) in FIELDS.iter().enumerate() {
            let (offset, size) = b.field(ty, member)?;
            if size != *expected {
                return Err(OffsetError::Size {
                    ty,
                    member,
                    size,
                    expected: *expected,
                });
            }
            o[i] = offset;
        }
        Ok(Offsets(o))
    }

    /// Sets every offset global of the object.
    pub fn set<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (i, (global, ..)) in FIELDS.iter().enumerate() {
            loader.override_global(global, &self.0[i], true);
        }
    }
}

/// Is BPF LSM in the kernel's active LSM list? None when the list cannot be read (securityfs
/// not mounted): then only loading a program tells.
fn bpf_lsm_listed() -> Option<bool> {
    let list = std::fs::read_to_string(LSM_LIST).ok()?;
    Some(list.trim().split(',').any(|l| l == "bpf"))
}

/// Loads the exec program `choice` asks for: (the hook loaded, why it is not BPF LSM).
/// `offsets` failed: no exec program can run (the hook is `None`, or an error for an explicit
/// choice).
pub fn load(
    ebpf: &mut Ebpf,
    choice: ExecHookChoice,
    offsets: Result<(), &OffsetError>,
) -> Result<(ExecHook, Option<String>), Error> {
    if let Err(e) = offsets {
        let why = format!("the kernel's BTF does not give the fields the exec hook reads: {e}");
        return match choice {
            ExecHookChoice::Auto => Ok((ExecHook::None, Some(why))),
            _ => Err(Error::ExecHook(why)),
        };
    }
    let btf = Btf::from_sys_fs().map_err(|e| Error::ExecHook(format!("reading BTF: {e}")))?;
    let lsm_why = match choice {
        ExecHookChoice::Tracepoint => "--exec-hook tracepoint".to_string(),
        _ => match load_lsm(ebpf, &btf) {
            Ok(()) => return Ok((ExecHook::Lsm, None)),
            Err(why) if choice == ExecHookChoice::Lsm => {
                return Err(Error::ExecHook(why.to_string()))
            }
            Err(why) => why.to_string(),
        },
    };
    let p: &mut BtfTracePoint = program(ebpf, EXEC_FALLBACK)?;
    match p.load("sched_process_exec", &btf) {
        Ok(()) => Ok((ExecHook::Tracepoint, Some(lsm_why))),
        Err(e) if choice == ExecHookChoice::Auto => Ok((
            ExecHook::None,
            Some(format!(
                "{lsm_why}; the tracepoint fallback failed too: {e}"
            )),
        )),
        Err(e) => Err(Error::program(EXEC_FALLBACK)(e)),
    }
}

/// Why the BPF LSM program cannot run here.
#[derive(Debug, thiserror::Error)]
enum LsmUnavailable {
    #[error(
        "BPF LSM is not active ({LSM_LIST} lacks bpf: add it to the kernel's lsm= boot parameter)"
    )]
    NotActive,
    #[error(transparent)]
    Object(Box<Error>),
    /// The kernel's refusal, its verifier log left out (see `--kernel-debug`).
    #[error("the kernel refused to load the BPF LSM program: {0}")]
    Refused(String),
}

/// Loads the BPF LSM program, or says why it cannot run here.
fn load_lsm(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LsmUnavailable> {
    if bpf_lsm_listed() == Some(false) {
        return Err(LsmUnavailable::NotActive);
    }
    let p: &mut LsmCgroup = program(ebpf, EXEC).map_err(|e| LsmUnavailable::Object(Box::new(e)))?;
    p.load("bprm_creds_for_exec", btf).map_err(|e| {
        let text = super::error_chain(&e);
        // aya appends the verifier's log, empty when the kernel refused before verifying.
        let text = text.split(". Verifier output: :").next().unwrap_or(&text);
        LsmUnavailable::Refused(text.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field the programs read is in this kernel's BTF, with the width they read.
    #[test]
    fn the_running_kernel_has_every_field() {
        if !std::path::Path::new(btf::VMLINUX).exists() {
            eprintln!("SKIP: no {} on this machine", btf::VMLINUX);
            return;
        }
        let o = Offsets::of_running_kernel().expect("offsets");
        // None of these fields is the first of its struct in any kernel since 5.x.
        assert!(o.0.iter().all(|&x| x > 0), "{o:?}");
    }
}
