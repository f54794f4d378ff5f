//! Test cgroups under a per-run directory of the cgroup v2 mount.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup v2 mount point, from /proc/self/mountinfo (None if there is none).
pub fn find_cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in info.lines() {
        // Fields: id parent major:minor root mountpoint opts... - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        if fields.len() >= 5 && fields[3] == "/" {
            return Some(PathBuf::from(unescape_mountinfo(fields[4])));
        }
    }
    None
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount point; panics if there is none (call `require_kernel()` first).
pub fn cgroup2_mount() -> PathBuf {
    find_cgroup2_mount().expect("no cgroup2 mount found in /proc/self/mountinfo")
}

/// A cgroup made by the test. The top-level guard (from `new`) owns a per-run parent directory
/// `<mount>/antispam-test-<pid>-<nanos>`; `child()` makes nested cgroups.
///
/// Drop kills every process left in the subtree, removes all directories below it deepest
/// first, then itself, and (for the top-level guard) the per-run parent.
pub struct TestCgroup {
    path: PathBuf,
    mount: PathBuf,
    run_dir: Option<PathBuf>,
    /// False for a borrowed handle (see `adopt`), which removes nothing on drop.
    owned: bool,
}

impl TestCgroup {
    /// Creates `<mount>/antispam-test-<pid>-<nanos>/<name>`.
    pub fn new(name: &str) -> TestCgroup {
        assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
        let mount = cgroup2_mount();
        let run_dir = mount.join(format!(
            "antispam-test-{}-{}{}",
            std::process::id(),
            crate::nanos(),
            crate::next_seq()
        ));
        fs::create_dir(&run_dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", run_dir.display()));
        let path = run_dir.join(name);
        if let Err(e) = fs::create_dir(&path) {
            let _ = fs::remove_dir(&run_dir);
            panic!("cannot create cgroup {}: {e}", path.display());
        }
        TestCgroup {
            path,
            mount,
            run_dir: Some(run_dir),
            owned: true,
        }
    }

    /// Creates a nested cgroup `<self>/<name>`. The returned guard removes only its own
    /// subtree; the parent's guard removes everything below it anyway.
    pub fn child(&self, name: &str) -> TestCgroup {
        assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
        let path = self.path.join(name);
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        TestCgroup {
            path,
            mount: self.mount.clone(),
            run_dir: None,
            owned: true,
        }
    }

    /// A handle on a test cgroup another guard owns (e.g. to use it from another thread): it
    /// removes nothing when dropped.
    pub fn adopt(path: &Path) -> TestCgroup {
        TestCgroup {
            path: path.to_path_buf(),
            mount: cgroup2_mount(),
            run_dir: None,
            owned: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id (the inode number of the cgroup directory).
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
            .ino()
    }

    /// Path relative to the cgroup2 mount, with a leading '/'.
    pub fn relative(&self) -> String {
        let rel = self
            .path
            .strip_prefix(&self.mount)
            .expect("cgroup under its mount");
        format!("/{}", rel.display())
    }

    /// PIDs currently in this cgroup (not its descendants).
    pub fn pids(&self) -> Vec<i32> {
        read_pids(&self.path)
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// All directories of the subtree rooted at `dir`, deepest first, `dir` last.
fn subtree_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        if depth > 32 {
            return;
        }
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out, depth + 1);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    walk(dir, &mut out, 0);
    out
}

fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

fn kill_subtree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let kill_file = dir.join("cgroup.kill");
    let used_kill = kill_file.exists() && fs::write(&kill_file, "1").is_ok();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if !used_kill {
            for d in subtree_deepest_first(dir) {
                for pid in read_pids(&d) {
                    // Never signal ourselves or pid <= 1, whatever the file says.
                    if pid > 1 && pid as u32 != std::process::id() {
                        // SAFETY: kill(2) with a concrete pid.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        if !populated(dir) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remove_subtree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    kill_subtree(dir);
    for d in subtree_deepest_first(dir) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    if Instant::now() >= deadline {
                        eprintln!("WARNING: could not remove cgroup {}: {e}", d.display());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        remove_subtree(&self.path);
        if let Some(run_dir) = &self.run_dir {
            remove_subtree(run_dir);
        }
    }
}
