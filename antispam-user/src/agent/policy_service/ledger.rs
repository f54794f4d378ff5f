//! The message and recipient buckets: one GCRA theoretical arrival time per (key, kind), the
//! same arithmetic as the kernel's connection buckets (`antispam_common::rate`), on the wall
//! clock (Unix nanoseconds) so that they mean the same after a restart or a reboot. Kept in
//! `mta-budgets.json` beside the audit log, written atomically within a second of a change and
//! when the agent stops.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use antispam_common::rate::{self, Rate};
use serde::{Deserialize, Serialize};

/// Buckets kept at most; beyond it, full buckets (TAT in the past) are dropped first, and a new
/// key is refused a bucket (its message is then decided as if its bucket were full).
pub const MAX_BUCKETS: usize = 262_144;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Key {
    Uid(u32),
    /// A cgroup rule's bucket: the matched cgroup's id, or a `shared = true` rule's
    /// (`antispam_common::key` bucket ids).
    Cgroup(u64),
    Sasl(String),
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Messages,
    Recipients,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Messages => "message",
            Kind::Recipients => "recipient",
        }
    }
}

/// One charge to make: `n` tokens of `rate` from the bucket (key, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: Key,
    pub kind: Kind,
    pub rate: Rate,
    pub n: u64,
}

/// The first charge that does not fit, and when it would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short {
    /// Index into the charges.
    pub index: usize,
    /// Nanoseconds until it fits; `None`: never (more than the burst at once).
    pub wait_ns: Option<u64>,
}

#[derive(Default)]
pub struct Ledger {
    tats: HashMap<(Key, Kind), u64>,
    pub dirty: bool,
}

/// The file's form.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    buckets: Vec<SavedBucket>,
}

#[derive(Serialize, Deserialize)]
struct SavedBucket {
    key: Key,
    budget: Kind,
    tat_unix_ns: u64,
}

/// Now on the wall clock, in nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Ledger {
    /// Checks every charge at `now`; with `commit`, takes them all, or none if one is short.
    pub fn charge(&mut self, charges: &[Charge], now: u64, commit: bool) -> Result<(), Short> {
        let mut next = Vec::with_capacity(charges.len());
        for (index, c) in charges.iter().enumerate() {
            let tat = self
                .tats
                .get(&(c.key.clone(), c.kind))
                .copied()
                .unwrap_or(0);
            // The same bucket may be charged twice (a UID's limit and its cgroup's share
            // nothing, but two charges of one key would): count what was already taken.
            let tat = next
                .iter()
                .rev()
                .find(|(k, _): &&((Key, Kind), u64)| *k == (c.key.clone(), c.kind))
                .map_or(tat, |(_, t)| *t);
            match rate::gcra_n(tat, now, &c.rate, c.n) {
                Some(t) => next.push(((c.key.clone(), c.kind), t)),
                None => {
                    return Err(Short {
                        index,
                        wait_ns: rate::wait_for(tat, now, &c.rate, c.n),
                    })
                }
            }
        }
        if commit {
            for (k, t) in next {
                if self.tats.len() >= MAX_BUCKETS && !self.tats.contains_key(&k) {
                    self.tats.retain(|_, tat| *tat > now);
                }
                if self.tats.len() < MAX_BUCKETS || self.tats.contains_key(&k) {
                    self.tats.insert(k, t);
                }
            }
            self.dirty = true;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// Reads the saved buckets; a missing file is an empty ledger, an unreadable one an error
    /// (the agent then starts with full buckets and says so).
    pub fn load(path: &Path) -> io::Result<Ledger> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ledger::default()),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_str(&text).map_err(io::Error::other)?;
        let now = now_ns();
        let tats = saved
            .buckets
            .into_iter()
            .filter(|b| b.tat_unix_ns > now)
            .take(MAX_BUCKETS)
            .map(|b| ((b.key, b.budget), b.tat_unix_ns))
            .collect();
        Ok(Ledger { tats, dirty: false })
    }

    /// Writes the buckets that are not full (the others mean nothing), atomically.
    pub fn save(&mut self, path: &Path) -> io::Result<()> {
        let now = now_ns();
        self.tats.retain(|_, t| *t > now);
        let mut buckets: Vec<SavedBucket> = self
            .tats
            .iter()
            .map(|((key, budget), t)| SavedBucket {
                key: key.clone(),
                budget: *budget,
                tat_unix_ns: *t,
            })
            .collect();
        buckets.sort_by(|a, b| (&a.key, a.budget).cmp(&(&b.key, b.budget)));
        let text = serde_json::to_vec(&Saved {
            version: 1,
            buckets,
        })
        .map_err(io::Error::other)?;
        let tmp: PathBuf = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn per_minute(n: u64) -> Rate {
        Rate::new(n, 60 * SEC, n).unwrap()
    }

    #[test]
    fn all_or_nothing() {
        let mut l = Ledger::default();
        let now = 1_000 * SEC;
        let msg = |k: Key, n| Charge {
            key: k,
            kind: Kind::Messages,
            rate: per_minute(3),
            n,
        };
        let rcpt = |n| Charge {
            key: Key::Uid(7),
            kind: Kind::Recipients,
            rate: per_minute(5),
            n,
        };
        assert!(l.charge(&[msg(Key::Uid(7), 1), rcpt(3)], now, true).is_ok());
        // 3 more recipients do not fit: nothing is taken, not even the message.
        let short = l
            .charge(&[msg(Key::Uid(7), 1), rcpt(3)], now, true)
            .unwrap_err();
        assert_eq!(short.index, 1);
        assert_eq!(short.wait_ns, Some(12 * SEC));
        assert!(l
            .charge(&[msg(Key::Uid(7), 1), rcpt(2)], now, false)
            .is_ok());
        assert!(l.charge(&[msg(Key::Uid(7), 1), rcpt(2)], now, true).is_ok());
        assert!(l.charge(&[msg(Key::Uid(7), 1)], now, true).is_ok());
        assert_eq!(
            l.charge(&[msg(Key::Uid(7), 1)], now, true)
                .unwrap_err()
                .index,
            0
        );
        assert!(
            l.charge(&[msg(Key::Uid(8), 1)], now, true).is_ok(),
            "a key of its own"
        );
        // The same bucket charged twice in one call counts twice.
        let mut l = Ledger::default();
        assert!(l
            .charge(&[msg(Key::Uid(1), 2), msg(Key::Uid(1), 2)], now, true)
            .is_err());
    }

    #[test]
    fn saved_and_loaded() {
        let dir = std::env::temp_dir().join(format!("antispam-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mta-budgets.json");
        let mut l = Ledger::default();
        let now = now_ns();
        let c = Charge {
            key: Key::Sasl("shop1".into()),
            kind: Kind::Messages,
            rate: per_minute(2),
            n: 2,
        };
        l.charge(std::slice::from_ref(&c), now, true).unwrap();
        l.save(&path).unwrap();
        let mut back = Ledger::load(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back
            .charge(&[Charge { n: 1, ..c }], now_ns(), true)
            .is_err());
        std::fs::write(&path, "not json").unwrap();
        assert!(Ledger::load(&path).is_err());
        assert_eq!(Ledger::load(&dir.join("none.json")).unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
