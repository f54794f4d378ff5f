//! What the agent needs of the running kernel, probed before anything is loaded, so that a
//! kernel below the floor is refused with one line naming what it lacks and the Linux version
//! that has it, instead of a verifier log.
//!
//! Each probe asks the kernel itself (a map created and closed, a program of a few
//! instructions loaded and closed, a syscall with an invalid descriptor); nothing is attached
//! and nothing outlives the probe. The versions are those of mainline Linux: distributions
//! backport features, so the version is named, never compared.

use std::{fmt, io, path::Path};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};

/// Where the kernel publishes its own BTF (CONFIG_DEBUG_INFO_BTF).
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// One thing the agent needs of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// What it is, as an operator would look it up.
    pub name: &'static str,
    /// The mainline Linux release that brought it ("5.12").
    pub since: &'static str,
}

/// The running kernel lacks features the agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// `uname -r`.
    pub release: String,
    pub missing: Vec<Feature>,
}

impl Unsupported {
    /// The newest of the versions the missing features need.
    pub fn needs(&self) -> &'static str {
        self.missing
            .iter()
            .map(|f| f.since)
            .max_by_key(|v| version_key(v))
            .unwrap_or("?")
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .missing
            .iter()
            .map(|m| format!("{} (Linux {})", m.name, m.since))
            .collect();
        write!(
            f,
            "this kernel (Linux {}) lacks {}: antispam needs Linux {} or newer (tested on 6.1 and 6.12); nothing was loaded",
            self.release,
            list.join(", "),
            self.needs()
        )
    }
}

impl std::error::Error for Unsupported {}

/// `"5.12"` → (5, 12), for ordering.
fn version_key(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// What a probe found.
enum Found {
    Yes,
    No,
    /// The probe itself failed (no permission, no bpf() at all).
    Unknown(io::Error),
}

/// Why the check could not decide.
#[derive(Debug, thiserror::Error)]
#[error("probing the kernel's BPF features ({what}): {source}{}", hint(source))]
pub struct ProbeError {
    pub what: &'static str,
    #[source]
    pub source: io::Error,
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            " (the agent runs as root with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
        }
        Some(libc::ENOSYS) => " (this kernel has no bpf() system call: CONFIG_BPF_SYSCALL)",
        _ => "",
    }
}

/// The features the agent's programs use, with the probe for each.
fn probes() -> Vec<(Feature, fn() -> Found)> {
    let f = |name, since| Feature { name, since };
    vec![
        (f("cgroup connect programs", "4.17"), || {
            program(ProgramType::CgroupSockAddr)
        }),
        (f("cgroup skb programs", "4.10"), || {
            program(ProgramType::CgroupSkb)
        }),
        (f("LPM trie maps", "4.11"), || map(MapType::LpmTrie)),
        (f("cgroup array maps", "4.8"), || map(MapType::CgroupArray)),
        (f("per-CPU array maps", "4.6"), || map(MapType::PerCpuArray)),
        (f("the kernel's BTF (CONFIG_DEBUG_INFO_BTF)", "5.4"), || {
            if Path::new(VMLINUX_BTF).is_file() {
                Found::Yes
            } else {
                Found::No
            }
        }),
        (
            f("BPF links on cgroups (BPF_LINK_CREATE)", "5.7"),
            link_create,
        ),
        (
            f(
                "bpf_get_current_ancestor_cgroup_id in connect programs",
                "5.7",
            ),
            || {
                helper(
                    ProgramType::CgroupSockAddr,
                    BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id,
                )
            },
        ),
        (
            f("bpf_get_current_cgroup_id in connect programs", "5.7"),
            || {
                helper(
                    ProgramType::CgroupSockAddr,
                    BpfHelper::BPF_FUNC_get_current_cgroup_id,
                )
            },
        ),
        (f("bpf_get_netns_cookie in connect programs", "5.7"), || {
            helper(
                ProgramType::CgroupSockAddr,
                BpfHelper::BPF_FUNC_get_netns_cookie,
            )
        }),
        (f("bpf_skb_cgroup_id in cgroup skb programs", "5.7"), || {
            helper(ProgramType::CgroupSkb, BpfHelper::BPF_FUNC_skb_cgroup_id)
        }),
        (f("bpf_sk_fullsock in cgroup skb programs", "5.1"), || {
            helper(ProgramType::CgroupSkb, BpfHelper::BPF_FUNC_sk_fullsock)
        }),
        (f("BPF ring buffer maps", "5.8"), || map(MapType::RingBuf)),
        (
            f(
                "BPF atomics (64-bit fetch-and-add and compare-and-swap)",
                "5.12",
            ),
            atomics,
        ),
        (f("SO_NETNS_COOKIE", "5.14"), netns_cookie),
    ]
}

/// Probes every feature: Ok when the kernel has them all.
pub fn check() -> Result<Result<(), Unsupported>, ProbeError> {
    let mut missing = Vec::new();
    for (feature, probe) in probes() {
        match probe() {
            Found::Yes => log::debug!(
                "kernel feature: {} (Linux {}): yes",
                feature.name,
                feature.since
            ),
            Found::No => missing.push(feature),
            Found::Unknown(source) => {
                return Err(ProbeError {
                    what: feature.name,
                    source,
                })
            }
        }
    }
    if missing.is_empty() {
        return Ok(Ok(()));
    }
    Ok(Err(Unsupported {
        release: release(),
        missing,
    }))
}

/// `uname -r` of the running kernel.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn from_probe<E: std::error::Error + 'static>(r: Result<bool, E>) -> Found {
    match r {
        Ok(true) => Found::Yes,
        Ok(false) => Found::No,
        Err(e) => {
            // The syscall's errno, from aya's error chain (EPERM without the capabilities).
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if let Some(errno) = s
                    .downcast_ref::<io::Error>()
                    .and_then(io::Error::raw_os_error)
                {
                    return Found::Unknown(io::Error::from_raw_os_error(errno));
                }
                src = s.source();
            }
            Found::Unknown(io::Error::other(super::error_chain(&e)))
        }
    }
}

fn program(t: ProgramType) -> Found {
    from_probe(is_program_supported(t))
}

fn map(t: MapType) -> Found {
    from_probe(is_map_supported(t))
}

fn helper(t: ProgramType, h: BpfHelper) -> Found {
    from_probe(is_helper_supported(t, h))
}

/// `bpf(2)` commands and the fields of `union bpf_attr` the raw probes use.
mod raw {
    use std::io;

    pub const BPF_PROG_LOAD: libc::c_long = 5;
    pub const BPF_LINK_CREATE: libc::c_long = 28;
    pub const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
    pub const BPF_CGROUP_INET_EGRESS: u32 = 1;

    /// `union bpf_attr`, zeroed past the fields set (the kernel refuses non-zero bytes it does
    /// not know).
    #[repr(C, align(8))]
    pub struct Attr(pub [u32; 32]);

    /// One `struct bpf_insn`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Insn {
        pub code: u8,
        /// dst_reg in the low nibble, src_reg in the high one.
        pub regs: u8,
        pub off: i16,
        pub imm: i32,
    }

    pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// `bpf(cmd, attr, sizeof attr)`: the new descriptor (or 0), or the error.
    pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
        // SAFETY: attr is a valid, writable union bpf_attr of the size passed; the kernel reads
        // and writes only within it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                (attr as *mut Attr).cast::<libc::c_void>(),
                std::mem::size_of::<Attr>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

/// BPF_LINK_CREATE (5.7) with an invalid program descriptor: a kernel that has the command
/// looks the program up and says EBADF; one that does not says EINVAL.
fn link_create() -> Found {
    let mut attr = raw::Attr([0; 32]);
    attr.0[0] = u32::MAX; // prog_fd
    attr.0[1] = u32::MAX; // target_fd
    attr.0[2] = raw::BPF_CGROUP_INET_EGRESS; // attach_type
    match raw::bpf(raw::BPF_LINK_CREATE, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Found::Yes,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Found::No,
        Err(e) => Found::Unknown(e),
        // Cannot succeed with those descriptors; were it to, the link is closed here.
        Ok(fd) => {
            // SAFETY: a descriptor the kernel just returned to us.
            unsafe { libc::close(fd as libc::c_int) };
            Found::Yes
        }
    }
}

/// A cgroup skb program that does a 64-bit atomic fetch-and-add and a compare-and-swap on a
/// stack slot (BPF_ATOMIC with BPF_FETCH and BPF_CMPXCHG, Linux 5.12; older kernels refuse the
/// instructions before verifying: "BPF_XADD uses reserved fields").
fn atomics() -> Found {
    use raw::insn;
    const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
    const ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const FETCH_ADD: i32 = 0x01; // BPF_ADD | BPF_FETCH
    const CMPXCHG: i32 = 0xf1; // BPF_CMPXCHG (0xf0 | BPF_FETCH)
    let insns = [
        insn(MOV64_IMM, 1, 0, 0, 0),           // r1 = 0
        insn(STX_DW, 10, 1, -8, 0),            // *(u64 *)(r10 - 8) = r1
        insn(MOV64_IMM, 1, 0, 0, 1),           // r1 = 1
        insn(ATOMIC_DW, 10, 1, -8, FETCH_ADD), // r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
        insn(MOV64_IMM, 0, 0, 0, 1),           // r0 = 1
        insn(MOV64_IMM, 1, 0, 0, 2),           // r1 = 2
        insn(ATOMIC_DW, 10, 1, -8, CMPXCHG),   // r0 = atomic_cmpxchg((u64 *)(r10 - 8), r0, r1)
        insn(MOV64_IMM, 0, 0, 0, 1),           // r0 = 1 (let the packet through)
        insn(EXIT, 0, 0, 0, 0),
    ];
    let license = c"GPL";
    let mut attr = raw::Attr([0; 32]);
    attr.0[0] = raw::BPF_PROG_TYPE_CGROUP_SKB;
    attr.0[1] = insns.len() as u32;
    let insns_ptr = insns.as_ptr() as u64;
    attr.0[2] = insns_ptr as u32;
    attr.0[3] = (insns_ptr >> 32) as u32;
    let license_ptr = license.as_ptr() as u64;
    attr.0[4] = license_ptr as u32;
    attr.0[5] = (license_ptr >> 32) as u32;
    match raw::bpf(raw::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => {
            // SAFETY: a descriptor the kernel just returned to us, closed once.
            unsafe { libc::close(fd as libc::c_int) };
            Found::Yes
        }
        // Refused as an instruction the kernel does not know (EINVAL), or by the verifier
        // (EACCES): a kernel that has the atomics accepts this program.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EACCES)) => Found::No,
        Err(e) => Found::Unknown(e),
    }
}

/// `getsockopt(SO_NETNS_COOKIE)` (Linux 5.14): the agent tells the kernel programs which
/// network namespace is the local MTA's by its cookie.
fn netns_cookie() -> Found {
    match crate::sys::netns::cookie() {
        Ok(_) => Found::Yes,
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Found::No,
        Err(e) => Found::Unknown(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_naming_the_newest_version_needed() {
        let u = Unsupported {
            release: "5.10.0-46-amd64".into(),
            missing: vec![
                Feature {
                    name: "BPF atomics",
                    since: "5.12",
                },
                Feature {
                    name: "SO_NETNS_COOKIE",
                    since: "5.14",
                },
                Feature {
                    name: "x",
                    since: "5.9",
                },
            ],
        };
        assert_eq!(u.needs(), "5.14");
        let s = u.to_string();
        assert!(!s.contains('\n'));
        assert!(s.contains("Linux 5.10.0-46-amd64"), "{s}");
        assert!(s.contains("BPF atomics (Linux 5.12)"), "{s}");
        assert!(s.contains("needs Linux 5.14 or newer"), "{s}");
    }

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("5.14") > version_key("5.8"));
        assert!(version_key("6.1") > version_key("5.14"));
    }

    #[test]
    fn instructions_pack_registers() {
        let i = raw::insn(0xdb, 10, 1, -8, 0xf1);
        assert_eq!(i.regs, 0x1a);
        assert_eq!(std::mem::size_of::<raw::Insn>(), 8);
        assert_eq!(std::mem::size_of::<raw::Attr>(), 128);
    }
}
