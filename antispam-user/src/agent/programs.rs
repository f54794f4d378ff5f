//! The MTA's submission programs (the policy's `[sendmail] programs`): resolved to the inodes
//! the kernel program knows them by, at every load, and again when a package upgrade replaces
//! one (inotify on their directories).

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
};

use futures_util::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};

use super::{core::Core, policy_watch::SETTLE};
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

/// Changes in the directories of the programs.
pub struct ProgramWatch {
    stream: EventStream<Vec<u8>>,
    names: Vec<OsString>,
    pending: bool,
}

impl ProgramWatch {
    pub fn new(paths: &[PathBuf]) -> io::Result<ProgramWatch> {
        let inotify = Inotify::init()?;
        let mut names = Vec::new();
        for dir in programs::directories(paths) {
            inotify.watches().add(
                &dir,
                WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::ATTRIB
                    | WatchMask::ONLYDIR,
            )?;
        }
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
        Ok(ProgramWatch {
            stream: inotify.into_event_stream(vec![0u8; 4096])?,
            names,
            pending: false,
        })
    }

    /// Resolves once a program's directory entry changed and the directory has been quiet for
    /// [`SETTLE`] (a package manager renames a new file over the old one). None if inotify
    /// fails.
    pub async fn changed(&mut self) -> Option<()> {
        while !self.pending {
            let ev = self.stream.next().await?.ok()?;
            self.pending = ev
                .name
                .as_deref()
                .is_some_and(|n| self.names.iter().any(|x| x.as_os_str() == n));
        }
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE, self.stream.next()).await {}
        self.pending = false;
        Some(())
    }
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
