//! What outlives the agent: maps and links pinned in the BPF filesystem.
//!
//! Everything for one attach point lives in `<root>/cg<cgroup id>-<layout>/`: the maps (by name,
//! `AS_*`) and the three links (`link_antispam_*`). While the links are pinned, the programs stay
//! attached and enforce the last policy with the last suspensions, whether or not an agent runs;
//! a new agent adopts the maps (buckets, counters, suspensions, queued events) and swaps its own
//! programs into the links with BPF_LINK_UPDATE, so there is no instant without enforcement.
//!
//! `<layout>` is a fingerprint of the map definitions. An agent whose maps differ (an upgrade that
//! changed them) cannot reuse the old maps: it creates new ones, still takes over the old links
//! the same way, and removes the old directory. `antispam uninstall` unpins everything, which
//! detaches the programs.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use antispam_common::maps as m;

#[cfg(test)]
use super::layout::layout;
use super::{layout::layout_for, Error};

/// The pin directory of one attach point, and what was found there.
#[derive(Debug)]
pub struct Pins {
    pub dir: PathBuf,
    /// Links of a previous agent with the same map layout: its maps are reused.
    pub adopting: bool,
    /// Directories of the same attach point with another layout (an older version's), whose
    /// links are taken over and which are then removed.
    pub older: Vec<PathBuf>,
}

/// The pin file of a program's link.
pub fn link_path(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("link_{program}"))
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// The instance directories under `root`: (path, cgroup id, layout).
pub fn instances(root: &Path) -> Vec<(PathBuf, u64, u32)> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, u64, u32)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (id, layout) = name.strip_prefix("cg")?.split_once('-')?;
            Some((
                e.path(),
                id.parse().ok()?,
                u32::from_str_radix(layout, 16).ok()?,
            ))
        })
        .collect();
    v.sort();
    v
}

/// Finds or makes the pin directory for the cgroup with id `cgroup_id`.
///
/// The tree belongs to root alone: whoever can write a directory on the way can unpin the links
/// and detach the programs. bpffs mounted by hand is mode 1777, so any user could create the
/// agent's directories first; the root and instance directories are therefore created 0700 and
/// refused if they exist owned by someone else or writable by others, and every ancestor
/// between the BPF filesystem's mount and the root must be writable only by root or be sticky.
pub fn prepare(root: &Path, cgroup_id: u64, max_keys: u32) -> Result<Pins, Error> {
    let parent = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(parent) {
        return Err(Error::NotBpffs(root.to_path_buf()));
    }
    for a in root
        .ancestors()
        .skip(1)
        .filter(|a| a.exists() && is_bpffs(a))
    {
        check_ancestor(a)?;
    }
    private_dir(root)?;
    let dir = root.join(format!("cg{cgroup_id}-{:08x}", layout_for(max_keys)));
    private_dir(&dir)?;
    let adopting = link_path(&dir, m::programs::CONNECT4).exists();
    let older = instances(root)
        .into_iter()
        .filter(|(p, id, _)| *id == cgroup_id && *p != dir)
        .map(|(p, _, _)| p)
        .collect();
    Ok(Pins {
        dir,
        adopting,
        older,
    })
}

/// Makes `dir` (mode 0700, owned by root) or checks that it is so: a directory (not a
/// symlink), owned by root, writable by nobody else.
fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            // Whatever the umask.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::io(format!("chmod 0700 {}", dir.display())))
        }
        Err(e) => Err(Error::io(format!("inspecting {}", dir.display()))(e)),
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            if !m.file_type().is_dir() || m.uid() != 0 || mode & 0o022 != 0 {
                return Err(Error::UnsafePinDir {
                    path: dir.to_path_buf(),
                    owner: m.uid(),
                    mode,
                    dir: m.file_type().is_dir(),
                });
            }
            Ok(())
        }
    }
}

/// A directory above the pin root: others may write it only if it is sticky (then they cannot
/// rename or remove what root made in it), as bpffs mounted by hand (1777) is.
fn check_ancestor(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(dir).map_err(Error::io(format!("inspecting {}", dir.display())))?;
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(Error::UnsafePinDir {
            path: dir.to_path_buf(),
            owner: m.uid(),
            mode,
            dir: true,
        });
    }
    Ok(())
}

/// Removes a pin directory: unpinning the links detaches the programs (once no process holds
/// them open), unpinning the maps frees them. Returns the number of objects unpinned.
pub fn remove(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        std::fs::remove_file(e?.path())?;
        n += 1;
    }
    std::fs::remove_dir(dir)?;
    Ok(n)
}

/// BPF_OBJ_GET: opens a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: bpf(2) with a correctly sized attribute; `c` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new file descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// BPF_LINK_UPDATE: the link runs `prog` from now on, atomically (no instant with neither).
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    const BPF_LINK_UPDATE: libc::c_long = 29;
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: bpf(2) with a correctly sized, initialized attribute for this command.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &attr as *const LinkUpdate,
            std::mem::size_of::<LinkUpdate>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable_and_names_directories() {
        assert_eq!(layout(), layout());
        let tmp = std::env::temp_dir().join(format!("antispam-pins-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join(format!("cg42-{:08x}", layout()))).unwrap();
        std::fs::create_dir_all(tmp.join("cg42-00000001")).unwrap();
        std::fs::create_dir_all(tmp.join("unrelated")).unwrap();
        let found = instances(&tmp);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|(_, id, _)| *id == 42));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
