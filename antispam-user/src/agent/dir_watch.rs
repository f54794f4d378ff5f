//! Changes to named entries of some directories, with inotify: how the agent follows its policy
//! file (written in place, replaced by an editor's rename, a Kubernetes ConfigMap's symlink
//! swap) and the MTA's submission programs (a package upgrade renames a new file over the old).
//! A burst of events becomes one change, once the watched entries have been quiet for
//! [`SETTLE`] (at most [`MAX_SETTLE`] after the first event).
//!
//! Each watch runs in its own task ([`WatchTask`]) and reports on a channel: the main loop's
//! other work (a storm of refused connects, operators' requests) can neither drop a settle
//! half-way nor start it again.

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt as _;
use inotify::{Event, EventStream, Inotify, WatchMask};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

/// Quiet time after the last event before reporting a change (an editor or a package manager
/// writes in several steps).
pub const SETTLE: Duration = Duration::from_millis(200);
/// A change is reported at most this long after its first event, even if the entries never
/// go quiet (something rewriting the file in a loop).
pub const MAX_SETTLE: Duration = Duration::from_secs(2);

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
        // Its detached signature too (`--policy-signers`): often written after the policy.
        let mut sig = name.clone();
        sig.push(".sig");
        DirWatch::new(&[dir], vec![name, sig, "..data".into()], mask)
    }

    fn relevant(&self, ev: &Event<OsString>) -> bool {
        ev.name
            .as_deref()
            .is_some_and(|n| self.names.iter().any(|x| x.as_os_str() == n))
    }

    /// Resolves once a watched entry has changed and the watched entries have then been quiet
    /// for [`SETTLE`] (events for other entries of the directories do not count), or
    /// [`MAX_SETTLE`] has passed. `None` if inotify fails.
    pub async fn changed(&mut self) -> Option<()> {
        while !self.pending {
            let ev = self.stream.next().await?.ok()?;
            self.pending = self.relevant(&ev);
        }
        let cap = Instant::now() + MAX_SETTLE;
        let mut quiet_at = Instant::now() + SETTLE;
        // Ends when quiet, at the cap, or if inotify fails (reported at the next call).
        while let Ok(Some(Ok(ev))) =
            tokio::time::timeout_at(quiet_at.min(cap), self.stream.next()).await
        {
            if self.relevant(&ev) {
                quiet_at = Instant::now() + SETTLE;
            }
        }
        self.pending = false;
        Some(())
    }
}

/// A [`DirWatch`] in a task of its own, reporting settled changes on a channel. The task ends
/// when this is dropped.
pub struct WatchTask {
    changes: mpsc::Receiver<()>,
    task: JoinHandle<()>,
}

impl WatchTask {
    pub fn spawn(mut watch: DirWatch) -> WatchTask {
        // One change waiting covers any that come before the main loop takes it.
        let (tx, changes) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            while watch.changed().await.is_some() {
                if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                    return;
                }
            }
        });
        WatchTask { changes, task }
    }

    /// Resolves at the next settled change; `None` once the watch has failed.
    pub async fn changed(&mut self) -> Option<()> {
        self.changes.recv().await
    }
}

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}
