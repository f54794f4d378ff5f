//! Reload on file change: the directory of the policy file is watched with inotify, so that
//! every way of changing the file is seen (written in place, replaced by an editor's rename, a
//! Kubernetes ConfigMap's symlink swap). A burst of events becomes one reload, once the directory
//! has been quiet for [`SETTLE`]; the reload itself skips a file whose content is unchanged.

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};

/// Quiet time after the last change before reloading (an editor writes in several steps).
pub const SETTLE: Duration = Duration::from_millis(200);

pub struct PolicyWatch {
    stream: EventStream<Vec<u8>>,
    name: OsString,
    /// A relevant change was seen and not reported yet. Kept here, not in the future, so that a
    /// `select!` that drops `changed()` mid-way loses nothing.
    pending: bool,
}

impl PolicyWatch {
    pub fn new(policy: &Path) -> io::Result<PolicyWatch> {
        let dir: PathBuf = match policy.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = policy
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_os_string();
        let inotify = Inotify::init()?;
        inotify.watches().add(
            &dir,
            WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::ONLYDIR,
        )?;
        Ok(PolicyWatch {
            stream: inotify.into_event_stream(vec![0u8; 4096])?,
            name,
            pending: false,
        })
    }

    /// Resolves once the policy file (or, for a ConfigMap, the `..data` symlink it goes
    /// through) has changed and the directory has then been quiet for [`SETTLE`]. `None` if
    /// inotify fails.
    pub async fn changed(&mut self) -> Option<()> {
        while !self.pending {
            let ev = self.stream.next().await?.ok()?;
            self.pending = ev
                .name
                .as_deref()
                .is_some_and(|n| n == self.name.as_os_str() || n == "..data");
        }
        // Let the burst settle: wait until no event arrives for SETTLE.
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE, self.stream.next()).await {}
        self.pending = false;
        Some(())
    }
}
