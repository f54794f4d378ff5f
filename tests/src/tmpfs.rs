//! A small tmpfs for "disk full": mounted in the test's directory, filled to the last byte on
//! request, unmounted on drop (also when the test panics).

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use crate::TestDir;

/// A tmpfs of a given size at `<test dir>/<name>`.
pub struct TestTmpfs {
    path: PathBuf,
}

impl TestTmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel).
    pub fn new(dir: &TestDir, name: &str, bytes: u64) -> TestTmpfs {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let opts = format!("size={bytes},mode=0755");
        crate::run_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "antispam-test",
                &path.display().to_string(),
            ],
        );
        TestTmpfs { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Fills the filesystem: a file grows until the kernel says ENOSPC. Returns its size.
    pub fn fill(&self) -> u64 {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("open the filler");
        let block = [0u8; 4096];
        let mut written = 0u64;
        // Bounded: the filesystem is small, and every write either adds bytes or fails.
        for _ in 0..1_000_000 {
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.sync_all();
        written
    }

    /// Makes room again: the filler goes.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for TestTmpfs {
    fn drop(&mut self) {
        if !crate::run_quiet("umount", &["-l", &self.path.display().to_string()]) {
            eprintln!("WARNING: umount {} failed", self.path.display());
        }
    }
}
