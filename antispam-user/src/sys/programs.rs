//! The MTA's submission programs as the kernel sees them: the inode and device of each file.
//! A package upgrade replaces a program with a new file (a new inode), so the agent resolves
//! them again whenever their directories change.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// One program found on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    pub ino: u64,
    /// The device in the kernel's encoding (`MAJOR << 20 | MINOR`), as in the super block.
    pub dev: u32,
    /// 1 + its index in the policy's list.
    pub index: u32,
}

/// The kernel's encoding of a device number from `stat(2)`'s (userspace) encoding.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

/// Resolves `programs` (following symlinks: Debian's /usr/sbin/sendmail links to exim4). Paths
/// that do not exist on this host are left out; other errors are reported with the path.
pub fn resolve(programs: &[PathBuf]) -> (Vec<Resolved>, Vec<(PathBuf, std::io::Error)>) {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (i, p) in programs.iter().enumerate() {
        match std::fs::metadata(p) {
            Ok(m) => found.push(Resolved {
                ino: m.ino(),
                dev: kernel_dev(m.dev()),
                index: i as u32 + 1,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push((p.clone(), e)),
        }
    }
    (found, failed)
}

/// The directories to watch for replaced programs: each program's own directory, and the
/// directory a symlink points into.
pub fn directories(programs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add = |p: &Path| {
        if let Some(d) = p.parent() {
            if d.is_dir() && !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    };
    for p in programs {
        add(p);
        if let Ok(real) = std::fs::canonicalize(p) {
            add(&real);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_in_the_kernel_encoding() {
        // 8:1 (sda1) is 0x801 for stat, 0x800001 in the kernel; 259:65536 needs the wide form.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
    }

    #[test]
    fn present_programs_are_found_and_absent_ones_skipped() {
        let programs = vec![
            PathBuf::from("/bin/sh"),
            PathBuf::from("/nonexistent/antispam-program"),
        ];
        let (found, failed) = resolve(&programs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].index, 1);
        let m = std::fs::metadata("/bin/sh").unwrap();
        assert_eq!(found[0].ino, m.ino());
        assert!(failed.is_empty());
        assert!(directories(&programs).contains(&PathBuf::from("/bin")));
    }
}
