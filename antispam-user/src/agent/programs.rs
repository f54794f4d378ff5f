//! The MTA's submission programs (the policy's `[sendmail] programs`): resolved to the inodes
//! the kernel program knows them by, at every load, and again when a package upgrade replaces
//! one (inotify on their directories).

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
};

use inotify::WatchMask;

use super::{core::Core, dir_watch::DirWatch};
use crate::{
    control::status::ProgramView,
    sys::programs::{self, Resolved},
};

/// Resolves the programs of a policy; what cannot be read is logged.
pub fn resolve(paths: &[PathBuf]) -> Vec<Resolved> {
    let (found, failed) = programs::resolve(paths);
    for (p, e) in failed {
        log::warn!(
            "cannot read {} ({e}): mail submitted through it is not counted",
            p.display()
        );
    }
    found
}

/// The status of each program of the policy.
pub fn views(paths: &[PathBuf], resolved: &[Resolved]) -> Vec<ProgramView> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let r = resolved.iter().find(|r| r.index as usize == i + 1);
            ProgramView {
                path: p.display().to_string(),
                present: r.is_some(),
                inode: r.map(|r| r.ino),
            }
        })
        .collect()
}

/// Watches the directories of the programs for files replaced, removed or created.
pub fn watch(paths: &[PathBuf]) -> io::Result<DirWatch> {
    let mut names: Vec<OsString> = Vec::new();
    for p in paths {
        names.extend(p.file_name().map(OsString::from));
        if let Some(n) = std::fs::canonicalize(p)
            .ok()
            .as_deref()
            .and_then(Path::file_name)
        {
            names.push(n.to_os_string());
        }
    }
    let mask = WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB;
    DirWatch::new(&programs::directories(paths), names, mask)
}

impl Core {
    /// A program file was replaced, removed or appeared: the kernel follows its new inode.
    pub fn programs_changed(&mut self) {
        let paths = self.shared.enforced().policy.sendmail_programs.clone();
        let now = resolve(&paths);
        if now == *self.shared.programs() {
            return;
        }
        match self.kernel.rules.set_programs(&now) {
            Ok(()) => {
                log::info!("submission programs now: {}", describe(&paths, &now));
                *self.shared.programs() = now;
            }
            Err(e) => log::error!("following the replaced submission programs: {e}"),
        }
    }
}

/// "path (inode N), path (absent)" for the log.
pub fn describe(paths: &[PathBuf], resolved: &[Resolved]) -> String {
    views(paths, resolved)
        .iter()
        .map(|v| match v.inode {
            Some(i) => format!("{} (inode {i})", v.path),
            None => format!("{} (absent)", v.path),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
