//! Per-test temporary directory for policy files, logs and diagnostics.

use std::fs;
use std::path::{Path, PathBuf};

/// `std::env::temp_dir()/antispam-test-<pid>-<n>`, removed (recursively) on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        let path = std::env::temp_dir().join(format!(
            "antispam-test-{}-{}",
            std::process::id(),
            crate::next_seq()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        if std::env::var_os("ANTISPAM_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}
