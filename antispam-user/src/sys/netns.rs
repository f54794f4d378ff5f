//! Network namespaces.

use std::{
    collections::BTreeMap,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

/// `SO_NETNS_COOKIE` (Linux 5.14): the cookie of a socket's network namespace, which BPF
/// programs get from `bpf_get_netns_cookie`.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of this process's network namespace.
pub fn cookie() -> std::io::Result<u64> {
    // SAFETY: a plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt(2) into a u64 we own, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// A network namespace, by a process in it: `/proc/PID/ns/net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's inode in nsfs (what `ip netns identify` and `lsns` show).
    pub inode: u64,
    pub path: PathBuf,
}

/// The inode of the calling thread's network namespace.
pub fn own_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// The network namespaces of some processes, and how many processes could not be looked at.
#[derive(Debug, Default)]
pub struct Found {
    pub namespaces: Vec<Namespace>,
    /// Processes whose namespace this process may not see (reading `/proc/PID/ns/net` of
    /// another user's process needs CAP_SYS_PTRACE).
    pub unreadable: usize,
}

/// The network namespaces, other than this process's, of the processes in the cgroups
/// `cgroups` (directories of the cgroup2 hierarchy); at most `max`, by inode. Processes that
/// exit meanwhile are left out.
pub fn of_cgroups<'a>(cgroups: impl IntoIterator<Item = &'a Path>, max: usize) -> Found {
    let own = own_inode().ok();
    let mut found: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut unreadable = 0;
    'cgroups: for cg in cgroups {
        let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) else {
            continue;
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            let m = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    unreadable += 1;
                    continue;
                }
                Err(_) => continue,
            };
            if Some(m.ino()) != own {
                found.entry(m.ino()).or_insert(path);
                if found.len() >= max {
                    break 'cgroups;
                }
            }
        }
    }
    Found {
        namespaces: found
            .into_iter()
            .map(|(inode, path)| Namespace { inode, path })
            .collect(),
        unreadable,
    }
}

/// Runs `f` on a thread of its own that joined the network namespace `ns` (setns(2), which
/// needs CAP_SYS_ADMIN): sockets it opens belong to that namespace. The calling thread's
/// namespace does not change.
pub fn run_in<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = std::fs::File::open(ns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on a namespace file we hold open; it changes this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread in the namespace panicked")))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_namespace_has_a_cookie() {
        let a = super::cookie().expect("SO_NETNS_COOKIE");
        assert_ne!(a, 0);
        assert_eq!(super::cookie().unwrap(), a, "stable");
    }

    #[test]
    fn this_namespace_is_left_out_and_run_in_it_works() {
        // A directory without cgroup.procs: nothing, no error.
        let none = super::of_cgroups([std::path::Path::new("/proc/self")], 10);
        assert!(none.namespaces.is_empty(), "{none:?}");
        let inode = super::own_inode().expect("/proc/self/ns/net");
        let there = super::run_in(std::path::Path::new("/proc/self/ns/net"), || {
            super::own_inode().ok()
        });
        // setns needs CAP_SYS_ADMIN; without it the error comes back instead of a panic.
        match there {
            Ok(got) => assert_eq!(got, Some(inode)),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
