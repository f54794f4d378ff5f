//! Changes to named entries of some directories, with inotify: how the agent follows its policy
//! file (written in place, replaced by an editor's rename, a Kubernetes ConfigMap's symlink
//! swap) and the MTA's submission programs (a package upgrade renames a new file over the old).
//! A burst of events becomes one change, once the directories have been quiet for [`SETTLE`].

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};

/// Quiet time after the last event before reporting a change (an editor or a package manager
/// writes in several steps).
pub const SETTLE: Duration = Duration::from_millis(200);

pub struct DirWatch {
    stream: EventStream<Vec<u8>>,
    /// The entry names that matter (in any of the directories).
    names: Vec<OsString>,
    /// A relevant change was seen and not reported yet. Kept here, not in the future, so that a
    /// `select!` that drops `changed()` mid-way loses nothing.
    pending: bool,
}

impl DirWatch {
    /// Watches `dirs` for changes to entries named `names`.
    pub fn new(dirs: &[PathBuf], names: Vec<OsString>, mask: WatchMask) -> io::Result<DirWatch> {
        let inotify = Inotify::init()?;
        for dir in dirs {
            inotify.watches().add(dir, mask | WatchMask::ONLYDIR)?;
        }
        Ok(DirWatch {
            stream: inotify.into_event_stream(vec![0u8; 4096])?,
            names,
            pending: false,
        })
    }

    /// Watches the directory of the policy file for changes to it (or to a ConfigMap's `..data`
    /// symlink it goes through).
    pub fn policy(policy: &Path) -> io::Result<DirWatch> {
        let dir: PathBuf = match policy.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = policy
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_os_string();
        let mask = WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE;
        DirWatch::new(&[dir], vec![name, "..data".into()], mask)
    }

    /// Resolves once a watched entry has changed and the directories have then been quiet for
    /// [`SETTLE`]. `None` if inotify fails.
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
