//! Reading a guest's console: the markers of the run script and libtest's own lines.

use std::time::Duration;

use super::guest::{BEGIN, BOOTED, END, ERROR, INIT, RESULT};

/// One test binary's run in the guest.
#[derive(Debug, Default)]
pub struct Binary {
    pub name: String,
    /// The exit status in the guest (124 = killed by the guest's `timeout`).
    pub rc: Option<i32>,
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    /// Whether libtest printed its `test result:` line (not if the binary crashed).
    pub finished: bool,
    pub failures: Vec<String>,
    pub started: Duration,
    /// Until its end marker, or the last console line if it has none.
    pub took: Duration,
    seen_ok: u32,
    seen_failed: u32,
}

impl Binary {
    fn add_failure(&mut self, name: &str) {
        if !self.failures.iter().any(|f| f == name) {
            self.failures.push(name.to_string());
        }
    }

    pub fn passed(&self) -> u32 {
        if self.finished {
            self.passed
        } else {
            self.seen_ok
        }
    }

    /// Failed tests; a binary that failed without saying which test failed (it crashed, was
    /// killed, or never ran) counts as one.
    pub fn failed(&self) -> u32 {
        let failed = if self.finished {
            self.failed
        } else {
            self.seen_failed
        };
        if failed == 0 && self.rc != Some(0) {
            1
        } else {
            failed
        }
    }
}

/// Everything the console said about one VM run.
#[derive(Debug, Default)]
pub struct Console {
    /// When the initramfs's /init started (the kernel has booted).
    pub init: Option<Duration>,
    /// When the run script started, just before the first test binary.
    pub boot: Option<Duration>,
    pub booted_line: Option<String>,
    pub binaries: Vec<Binary>,
    /// The guest's final status.
    pub rc: Option<i32>,
    pub errors: Vec<String>,
    /// `systemd-analyze security`'s overall exposure of the unit (the systemd guest).
    pub security: Option<String>,
    in_failures: bool,
    pending_failures: Vec<String>,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

fn rc_of(s: &str) -> Option<i32> {
    s.split_whitespace()
        .find_map(|w| w.strip_prefix("rc="))
        .and_then(|v| v.parse().ok())
}

/// `N word;` in libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
fn count(summary: &str, word: &str) -> u32 {
    let words: Vec<&str> = summary.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches([';', ',']) == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

impl Console {
    /// Takes one console line seen `at` after QEMU started; true once the run is over.
    pub fn line(&mut self, line: &str, at: Duration) -> bool {
        if let Some(b) = self.binaries.last_mut().filter(|b| b.rc.is_none()) {
            b.took = at.saturating_sub(b.started);
        }
        if let Some(rest) = after(line, RESULT) {
            self.rc = rc_of(rest);
            return true;
        }
        if let Some(rest) = after(line, ERROR) {
            self.errors.push(rest.to_string());
        } else if let Some(rest) = after(line, super::systemd::SECURITY) {
            self.security = Some(rest.to_string());
        } else if after(line, INIT).is_some() {
            self.init = Some(at);
        } else if let Some(rest) = after(line, BOOTED) {
            self.boot = Some(at);
            self.booted_line = Some(rest.to_string());
        } else if let Some(rest) = after(line, BEGIN) {
            self.binaries.push(Binary {
                name: rest.to_string(),
                started: at,
                ..Binary::default()
            });
            self.in_failures = false;
        } else if let Some(rest) = after(line, END) {
            if let Some(b) = self.binaries.last_mut() {
                b.rc = rc_of(rest);
                b.took = at.saturating_sub(b.started);
            }
        } else if let Some(rest) = line.strip_prefix("test ") {
            // `test NAME ... ok`: counted only while libtest's summary has not come (a binary
            // that crashes or is killed never prints one).
            if let (Some(b), Some((name, verdict))) =
                (self.binaries.last_mut(), rest.rsplit_once(" ... "))
            {
                match verdict.trim() {
                    "ok" => b.seen_ok += 1,
                    "FAILED" => {
                        b.seen_failed += 1;
                        b.add_failure(name.trim());
                    }
                    _ => {}
                }
            }
            if let Some(summary) = rest.strip_prefix("result: ") {
                self.summary(summary);
            }
        } else if line.trim_end() == "failures:" {
            // libtest prints two such sections: the output of each failed test, then their
            // names; the last one before `test result:` wins.
            self.in_failures = true;
            self.pending_failures.clear();
        } else if self.in_failures {
            let t = line.trim();
            if line.starts_with("    ") && !t.is_empty() && !t.contains(' ') {
                self.pending_failures.push(t.to_string());
            }
        }
        false
    }

    /// libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
    fn summary(&mut self, rest: &str) {
        if let Some(b) = self.binaries.last_mut() {
            b.finished = true;
            b.passed += count(rest, "passed");
            b.failed += count(rest, "failed");
            b.ignored += count(rest, "ignored");
            for f in std::mem::take(&mut self.pending_failures) {
                b.add_failure(&f);
            }
        }
        self.in_failures = false;
    }

    pub fn passed(&self) -> u32 {
        self.binaries.iter().map(Binary::passed).sum()
    }

    /// Failed tests, plus one for each binary that failed without reporting a failed test
    /// (crashed, timed out, or never ran).
    pub fn failed(&self) -> u32 {
        self.binaries.iter().map(Binary::failed).sum()
    }

    pub fn ignored(&self) -> u32 {
        self.binaries.iter().map(|b| b.ignored).sum()
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_markers_and_libtest_lines() {
        let mut c = Console::default();
        let t = Duration::from_secs;
        let lines = [
            "ANTISPAM-VM-INIT kernel=6.1.0-57-amd64",
            "ANTISPAM-VM-BOOTED kernel=6.1.0-57-amd64 uptime=2.5s",
            "ANTISPAM-VM-BEGIN limits",
            "running 2 tests",
            "test a ... ok",
            "test b ... FAILED",
            "",
            "failures:",
            "",
            "---- b stdout ----",
            "    assertion failed: x",
            "",
            "failures:",
            "    b",
            "",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "ANTISPAM-VM-END limits rc=101",
            "ANTISPAM-VM-BEGIN harness",
            "test c ... ok",
            "Segmentation fault",
            "ANTISPAM-VM-END harness rc=139",
        ];
        for (i, l) in lines.iter().enumerate() {
            assert!(!c.line(l, t(i as u64)));
        }
        assert!(c.line("[  9.0] ANTISPAM-VM-RESULT rc=1", t(30)));
        assert_eq!((c.init, c.boot), (Some(t(0)), Some(t(1))));
        assert_eq!(c.rc, Some(1));
        assert_eq!(c.binaries.len(), 2);
        let l = &c.binaries[0];
        assert_eq!((l.passed, l.failed, l.rc), (1, 1, Some(101)));
        assert_eq!(l.failures, ["b"]);
        assert_eq!(l.took, t(14));
        assert!(!c.binaries[1].finished);
        assert_eq!((c.binaries[1].passed(), c.binaries[1].failed()), (1, 1));
        assert_eq!((c.passed(), c.failed()), (2, 2));
    }
}
