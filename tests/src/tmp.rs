//! Per-test temporary directory for policy files, logs and diagnostics.

use std::fs;
use std::path::{Path, PathBuf};

/// `std::env::temp_dir()/antispam-test-<pid>-<n>`, removed (recursively) on drop, with its
/// pin directory in the BPF filesystem, `/sys/fs/bpf/antispam-test-<pid>-<n>`, which agents
/// started with this directory use (`--pin-dir`) and which is removed (detaching the programs
/// pinned there) on drop too.
pub struct TestDir {
    path: PathBuf,
    pins: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        let name = format!("antispam-test-{}-{}", std::process::id(), crate::next_seq());
        let path = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestDir {
            path,
            pins: Path::new("/sys/fs/bpf").join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pin root for agents of this test (created by the agent).
    pub fn pins(&self) -> &Path {
        &self.pins
    }

    /// Unpins everything agents of this test left: their programs detach.
    pub fn remove_pins(&self) {
        match fs::remove_dir_all(&self.pins) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("WARNING: removing {}: {e}", self.pins.display())
            }
            _ => {}
        }
    }

    /// Writes `content` to `<dir>/<name>` and returns the path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        self.remove_pins();
        if std::env::var_os("ANTISPAM_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}
