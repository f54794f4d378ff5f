//! The cgroup v2 filesystem: where it is mounted, ids and paths of its directories.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use super::Error;

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo (never assumed: it is
/// /sys/fs/cgroup on current distros and /sys/fs/cgroup/unified on hybrid layouts).
pub fn cgroup2_mount() -> Result<PathBuf, Error> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(Error::Mountinfo)?;
    mount_from_mountinfo(&text).ok_or(Error::NoCgroup2)
}

fn mount_from_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The cgroup id of a cgroup v2 directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` returns for tasks in it.
pub fn cgroup_id(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// The cgroup level of a path relative to the mount: "/" is 0, "/a" 1, "/a/b" 2.
pub fn level(relative: &str) -> u32 {
    relative.split('/').filter(|c| !c.is_empty()).count() as u32
}

/// `path` relative to the mount, with a leading '/': "/" for the root.
pub fn relative(mount: &Path, path: &Path) -> String {
    match path.strip_prefix(mount) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".into(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Every cgroup directory under `root` (itself included), parents before children, as
/// (path relative to `mount`, id). Directories that vanish during the walk are skipped.
pub fn walk(mount: &Path, root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(id) = cgroup_id(&dir) else { continue };
        out.push((relative(mount, &dir), id));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut children: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        children.sort();
        stack.extend(children.into_iter().rev());
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Names cgroup ids for events and metrics, rescanning the tree when it meets an id it does not
/// know (at most once a second, so a storm of unknown ids cannot turn into a storm of scans).
pub struct CgroupNames {
    mount: PathBuf,
    root: PathBuf,
    inner: Mutex<NamesInner>,
}

struct NamesInner {
    by_id: HashMap<u64, String>,
    /// Cgroups that are gone, oldest first: their names are kept a while for late events.
    gone: std::collections::VecDeque<u64>,
    last_scan: Option<Instant>,
}

/// How many names of gone cgroups are remembered.
const GONE_KEPT: usize = 4096;

impl CgroupNames {
    pub fn new(mount: PathBuf, root: PathBuf) -> CgroupNames {
        CgroupNames {
            mount,
            root,
            inner: Mutex::new(NamesInner {
                by_id: HashMap::new(),
                gone: std::collections::VecDeque::new(),
                last_scan: None,
            }),
        }
    }

    /// The path of cgroup `id` relative to the mount, if it exists (or existed recently).
    pub fn name(&self, id: u64) -> Option<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = inner.by_id.get(&id) {
            return Some(n.clone());
        }
        if inner
            .last_scan
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        let tree = walk(&self.mount, &self.root);
        if inner.by_id.len() + tree.len() >= 200_000 {
            inner.by_id.clear();
        }
        inner.by_id.extend(tree.into_iter().map(|(p, id)| (id, p)));
        inner.last_scan = Some(Instant::now());
        inner.by_id.get(&id).cloned()
    }

    /// Records a cgroup's path (the watcher calls this as cgroups appear). Names of cgroups that
    /// are gone are kept (bounded), so late events still name them.
    pub fn insert(&self, id: u64, path: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_id.len() >= 200_000 {
            inner.by_id.clear();
        }
        inner.by_id.insert(id, path.to_string());
    }

    /// Notes that a cgroup is gone: its name stays for the next GONE_KEPT removals, so events
    /// still in flight name it, and then goes, so churn does not grow the agent's memory.
    pub fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.gone.push_back(id);
        while inner.gone.len() > GONE_KEPT {
            if let Some(old) = inner.gone.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// The name, or the id in brackets when the cgroup is gone.
    pub fn label(&self, id: u64) -> String {
        self.name(id).unwrap_or_else(|| format!("[cgroup {id}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_from_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            mount_from_mountinfo(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            mount_from_mountinfo("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn relative_paths() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(relative(m, m), "/");
        assert_eq!(
            relative(m, Path::new("/sys/fs/cgroup/system.slice/x.scope")),
            "/system.slice/x.scope"
        );
    }
}
