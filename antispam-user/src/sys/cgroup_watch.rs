//! Follows the cgroup tree under the attach point with inotify, so that cgroups (containers,
//! pods, services) that appear after the agent started are covered within milliseconds, and
//! cgroups that go away are dropped from the maps. No polling: the kernel reports each `mkdir`
//! and `rmdir` in cgroupfs.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    io,
    path::{Path, PathBuf},
};

use futures_util::StreamExt as _;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};

use super::cgroupfs::{cgroup_id, relative};

/// A change in the cgroup tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created { path: String, id: u64 },
    Removed { path: String, id: u64 },
}

pub struct CgroupWatcher {
    mount: PathBuf,
    root: PathBuf,
    stream: EventStream<Vec<u8>>,
    /// Watched directory of each watch descriptor (path relative to the mount).
    dirs: HashMap<WatchDescriptor, String>,
    /// Every cgroup under the attach point: path relative to the mount → id.
    tree: BTreeMap<String, u64>,
    /// Directories that could not be watched (e.g. fs.inotify.max_user_watches reached).
    pub watch_errors: u64,
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

impl CgroupWatcher {
    /// Starts watching `root` (a directory of the cgroup2 hierarchy mounted at `mount`) and
    /// everything below it.
    pub fn new(mount: &Path, root: &Path) -> io::Result<CgroupWatcher> {
        let inotify = Inotify::init()?;
        let stream = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
        let mut w = CgroupWatcher {
            mount: mount.to_path_buf(),
            root: root.to_path_buf(),
            stream,
            dirs: HashMap::new(),
            tree: BTreeMap::new(),
            watch_errors: 0,
        };
        w.scan(root);
        Ok(w)
    }

    /// Every cgroup known, (path relative to the mount, id).
    pub fn tree(&self) -> Vec<(String, u64)> {
        self.tree.iter().map(|(p, id)| (p.clone(), *id)).collect()
    }

    /// The directory of every cgroup known.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.tree.keys().map(|rel| self.abs(rel)).collect()
    }

    pub fn id_of(&self, path: &str) -> Option<u64> {
        self.tree.get(path).copied()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    fn abs(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }

    fn child(parent: &str, name: &OsStr) -> String {
        let name = name.to_string_lossy();
        if parent == "/" {
            format!("/{name}")
        } else {
            format!("{parent}/{name}")
        }
    }

    /// Watches `dir` and every directory below it; returns the cgroups not known before.
    /// Watching before listing means a child created in between is seen either way.
    fn scan(&mut self, dir: &Path) -> Vec<(String, u64)> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        let mut budget = 1_000_000usize;
        while let Some(d) = stack.pop() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                log::error!(
                    "cgroup tree under {} is larger than a million directories; stopped scanning",
                    dir.display()
                );
                break;
            }
            let rel = relative(&self.mount, &d);
            match self.stream.watches().add(&d, MASK) {
                Ok(wd) => {
                    self.dirs.insert(wd, rel.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.watch_errors += 1;
                    log::warn!("cannot watch cgroup {rel} ({e}); cgroups created below it are covered at the next reload");
                }
            }
            let Ok(id) = cgroup_id(&d) else { continue };
            if self.tree.insert(rel.clone(), id) != Some(id) {
                found.push((rel, id));
            }
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        found
    }

    /// Forgets `rel` and everything below it.
    fn forget(&mut self, rel: &str) -> Vec<Change> {
        let prefix = format!("{rel}/");
        let gone: Vec<String> = self
            .tree
            .range(rel.to_string()..)
            .take_while(|(p, _)| p.as_str() == rel || p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        gone.into_iter()
            .filter_map(|p| {
                self.tree
                    .remove(&p)
                    .map(|id| Change::Removed { path: p, id })
            })
            .collect()
    }

    /// Rebuilds the tree from the filesystem (after an inotify queue overflow).
    fn rescan(&mut self) -> Vec<Change> {
        let old = std::mem::take(&mut self.tree);
        let root = self.root.clone();
        self.scan(&root);
        let mut changes: Vec<Change> = old
            .iter()
            .filter(|(p, id)| self.tree.get(*p) != Some(id))
            .map(|(p, id)| Change::Removed {
                path: p.clone(),
                id: *id,
            })
            .collect();
        changes.extend(
            self.tree
                .iter()
                .filter(|(p, id)| old.get(*p) != Some(id))
                .map(|(p, id)| Change::Created {
                    path: p.clone(),
                    id: *id,
                }),
        );
        changes
    }

    /// Waits for the next change(s) in the tree. Never returns an empty list; returns None if
    /// inotify fails (the caller then runs without following the tree).
    pub async fn next(&mut self) -> Option<Vec<Change>> {
        loop {
            let event = match self.stream.next().await? {
                Ok(e) => e,
                Err(e) => {
                    log::error!("cgroup watch failed: {e}");
                    return None;
                }
            };
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                log::warn!("cgroup watch queue overflowed: rescanning the cgroup tree");
                let changes = self.rescan();
                if !changes.is_empty() {
                    return Some(changes);
                }
                continue;
            }
            if event.mask.contains(EventMask::IGNORED) {
                self.dirs.remove(&event.wd);
                continue;
            }
            if !event.mask.contains(EventMask::ISDIR) {
                continue;
            }
            let (Some(parent), Some(name)) = (self.dirs.get(&event.wd), event.name.as_deref())
            else {
                continue;
            };
            let rel = Self::child(parent, name);
            let changes: Vec<Change> = if event
                .mask
                .intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                let abs = self.abs(&rel);
                self.scan(&abs)
                    .into_iter()
                    .map(|(path, id)| Change::Created { path, id })
                    .collect()
            } else if event
                .mask
                .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
            {
                self.forget(&rel)
            } else {
                Vec::new()
            };
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }
}
