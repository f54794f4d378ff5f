//! Repeat offenders. Refused connects (rate limits, block lists) are strikes against the UID or
//! cgroup; `strikes` of them within `window` make a suspension, and each suspension of the same
//! offender lasts longer (the policy's `durations`, the last one repeating). An offender's level
//! drops by one for every `forget_after` without a suspension. The book (and the suspensions in
//! force) is kept in a file, so an agent restart or a reboot forgets nothing.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::operations::Grant;
use crate::{control::Target, policy::SuspensionPolicy, sys::files};

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("reading the offence book {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the offence book {} is not valid: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the offence book {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is known of one offender.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offender {
    /// Suspensions so far (after decay): the next one lasts durations[level].
    pub level: u32,
    /// When the last suspension started (Unix ms).
    pub last_suspended_ms: Option<u64>,
    /// Strikes within the current window (Unix ms).
    pub strikes_ms: Vec<u64>,
}

/// A suspension in force, as saved for a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub target: Target,
    pub reason: String,
    pub by: String,
    pub trigger: String,
    pub since_ms: u64,
    pub until_ms: Option<u64>,
}

/// The kill switch, as saved for a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedKillSwitch {
    pub reason: String,
    pub by: String,
    pub since_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Book {
    #[serde(default)]
    pub offenders: BTreeMap<String, Offender>,
    #[serde(default)]
    pub suspensions: Vec<Saved>,
    /// The kill switch, when on.
    #[serde(default)]
    pub kill_switch: Option<SavedKillSwitch>,
    /// Break-glass overrides in force.
    #[serde(default)]
    pub break_glass: Vec<Grant>,
    #[serde(skip)]
    pub dirty: bool,
    /// The mode the file had when `load` tightened it to 0600.
    #[serde(skip)]
    pub tightened: Option<u32>,
}

/// The book's key of a target: "uid:1000", "cgroup:/system.slice/x.scope".
pub fn key(target: &Target) -> String {
    match target {
        Target::Uid(u) => format!("uid:{u}"),
        Target::Cgroup(p) => format!("cgroup:{p}"),
    }
}

/// A strike that made a suspension.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub duration: Duration,
    /// 1 for a first suspension, 2 for the second…
    pub level: u32,
    pub strikes: u32,
}

impl Book {
    /// Reads the book; a missing file is an empty book. A file open to group or others is
    /// tightened to 0600 (`tightened` says so).
    pub fn load(path: &Path) -> Result<Book, BookError> {
        let read = |source| BookError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Book::default()),
            Err(e) => return Err(read(e)),
        };
        let tightened = files::tighten(&f).map_err(read)?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(read)?;
        let mut book: Book = serde_json::from_str(&text).map_err(|source| BookError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        book.tightened = tightened;
        Ok(book)
    }

    /// Writes the book durably (temporary file, fsync, rename, fsync of the directory): after
    /// a crash or a full disk the file holds the old book or the new one, whole.
    pub fn save(&mut self, path: &Path) -> Result<(), BookError> {
        let text = serde_json::to_string_pretty(self).expect("the book serializes");
        files::write_durably(path, text.as_bytes()).map_err(|source| BookError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        self.dirty = false;
        Ok(())
    }

    /// Records one strike against `target` at `now_ms`; returns the suspension it makes, if any.
    pub fn strike(
        &mut self,
        target: &Target,
        now_ms: u64,
        p: &SuspensionPolicy,
    ) -> Option<Verdict> {
        let o = self.offenders.entry(key(target)).or_default();
        self.dirty = true;
        // Decay: one level forgiven for every forget_after without a suspension.
        let forget_ms = p.forget_after.as_millis().max(1) as u64;
        if let Some(last) = o.last_suspended_ms {
            let quiet = now_ms.saturating_sub(last) / forget_ms;
            if quiet > 0 {
                o.level = o
                    .level
                    .saturating_sub(quiet.min(u64::from(u32::MAX)) as u32);
                o.last_suspended_ms = if o.level == 0 {
                    None
                } else {
                    Some(last + quiet * forget_ms)
                };
            }
        }
        let window_ms = p.window.as_millis() as u64;
        o.strikes_ms
            .retain(|&t| now_ms.saturating_sub(t) < window_ms);
        o.strikes_ms.push(now_ms);
        if (o.strikes_ms.len() as u32) < p.strikes {
            return None;
        }
        let strikes = o.strikes_ms.len() as u32;
        o.strikes_ms.clear();
        let idx = (o.level as usize).min(p.durations.len() - 1);
        o.level += 1;
        o.last_suspended_ms = Some(now_ms);
        Some(Verdict {
            duration: p.durations[idx],
            level: o.level,
            strikes,
        })
    }

    /// Forgets offenders with no recent strike whose levels have all decayed (bounded memory).
    /// `window` and `forget_after` are the longest of the policy's suspension sections.
    pub fn prune(&mut self, now_ms: u64, window: Duration, forget_after: Duration) {
        let window_ms = window.as_millis() as u64;
        let forget_ms = forget_after.as_millis() as u64;
        let before = self.offenders.len();
        self.offenders.retain(|_, o| {
            let recent = o
                .strikes_ms
                .iter()
                .any(|&t| now_ms.saturating_sub(t) < window_ms);
            let remembered = o.last_suspended_ms.is_some_and(|last| {
                now_ms.saturating_sub(last) < forget_ms.saturating_mul(u64::from(o.level))
            });
            recent || remembered
        });
        if self.offenders.len() != before {
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SuspensionPolicy {
        SuspensionPolicy {
            strikes: 3,
            window: Duration::from_secs(600),
            durations: vec![Duration::from_secs(900), Duration::from_secs(3600)],
            forget_after: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn strikes_within_the_window_suspend_and_escalate() {
        let p = policy();
        let mut b = Book::default();
        let t = Target::Uid(1000);
        let s = 1_000_000u64;
        assert_eq!(b.strike(&t, s, &p), None);
        assert_eq!(b.strike(&t, s + 1000, &p), None);
        let v = b.strike(&t, s + 2000, &p).unwrap();
        assert_eq!((v.duration.as_secs(), v.level, v.strikes), (900, 1, 3));
        // Strikes spread wider than the window do not add up.
        assert_eq!(b.strike(&t, s + 10_000, &p), None);
        assert_eq!(b.strike(&t, s + 700_000, &p), None);
        assert_eq!(b.strike(&t, s + 1_400_000, &p), None);
        // Three more within the window: the second suspension is longer, the last repeats.
        assert_eq!(b.strike(&t, s + 1_401_000, &p), None);
        let v = b.strike(&t, s + 1_402_000, &p).unwrap();
        assert_eq!((v.duration.as_secs(), v.level), (3600, 2));
        for i in 0..2 {
            b.strike(&t, s + 1_500_000 + i, &p);
        }
        let v = b.strike(&t, s + 1_500_010, &p).unwrap();
        assert_eq!((v.duration.as_secs(), v.level), (3600, 3));
        // Other offenders are counted apart.
        assert_eq!(b.strike(&Target::Cgroup("/a".into()), s, &p), None);
    }

    #[test]
    fn levels_decay_after_quiet_periods_and_survive_a_reload() {
        let p = policy();
        let mut b = Book::default();
        let t = Target::Cgroup("/system.slice/docker-1.scope".into());
        let day = 86_400_000u64;
        for k in 0..3 {
            for i in 0..3 {
                b.strike(&t, k * 1_000_000 + i, &p);
            }
        }
        assert_eq!(b.offenders[&key(&t)].level, 3);
        // Two quiet days: two levels forgiven; the next suspension is the second duration.
        let later = 3_000_000 + 2 * day;
        b.strike(&t, later, &p);
        assert_eq!(b.offenders[&key(&t)].level, 1);

        let dir = std::env::temp_dir().join(format!("antispam-strikes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("offences.json");
        b.save(&path).unwrap();
        let mut back = Book::load(&path).unwrap();
        assert_eq!(back.offenders, b.offenders);
        back.strike(&t, later + 1, &p);
        let v = back.strike(&t, later + 2, &p).unwrap();
        assert_eq!((v.duration.as_secs(), v.level), (3600, 2));
        assert!(Book::load(&dir.join("missing.json"))
            .unwrap()
            .offenders
            .is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
