//! The event log's rate bound. Any local user can make refused connects as fast as the kernel
//! refuses them (tens of thousands a second); written one line each, they would fill the disk
//! (and with it the audit log and the offence book). So refusals are written in detail up to
//! `per_key` a second for each UID, cgroup, mail path and reason, and `total` a second over
//! all keys; the rest of each second is folded into one summary line per key (the last event's
//! fields, with `count` and `first_ts`). Nothing is dropped silently: every refusal is in a
//! line, and the kernel's counters (`antispam_smtp_connections_total`) count each one.
//! Allowed connects are not folded: the policy's rates bound them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use antispam_common::event::{self as ev, Event};

/// How long one bound applies before it starts again.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// `--log-refusals-per-key` when not given.
pub const DEFAULT_PER_KEY: u32 = 10;
/// `--log-refusals-per-second` when not given.
pub const DEFAULT_TOTAL: u32 = 1000;
/// Keys summarised per interval at most; refusals of further keys go to one "other" line.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    uid: u32,
    cgroup_id: u64,
    path: u32,
    verdict: u32,
    reason: u32,
}

/// The key refusals of keys past [`MAX_KEYS`] are summarised under: uid 4294967295, cgroup 0.
const OTHER: (u32, u64) = (u32::MAX, 0);

impl Key {
    fn of(e: &Event) -> Key {
        Key {
            uid: e.uid,
            cgroup_id: e.cgroup_id,
            path: e.path,
            verdict: e.verdict,
            reason: e.reason,
        }
    }
}

/// The events one summary line stands for.
pub struct Folded {
    pub count: u64,
    pub first_ns: u64,
    /// The last event folded (its fields make the line).
    pub last: Event,
}

#[derive(Default)]
struct PerKey {
    written: u32,
    folded: Option<Folded>,
}

pub struct Bound {
    per_key: u32,
    total: u32,
    started: Instant,
    written: u32,
    keys: HashMap<Key, PerKey>,
}

/// Is this event a refusal (folded past the bound)?
pub fn is_refusal(e: &Event) -> bool {
    e.verdict == ev::VERDICT_DENIED || e.verdict == ev::VERDICT_WOULD_DENY
}

impl Bound {
    pub fn new(per_key: u32, total: u32) -> Bound {
        Bound {
            per_key,
            total,
            started: Instant::now(),
            written: 0,
            keys: HashMap::new(),
        }
    }

    /// True if `e` is to be written in detail; false if it was folded into its key's summary.
    pub fn admit(&mut self, e: &Event) -> bool {
        if !is_refusal(e) {
            return true;
        }
        let mut key = Key::of(e);
        if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(&key) {
            (key.uid, key.cgroup_id) = OTHER;
        }
        let k = self.keys.entry(key).or_default();
        if k.written < self.per_key && self.written < self.total {
            k.written += 1;
            self.written += 1;
            return true;
        }
        match &mut k.folded {
            Some(f) => {
                f.count += 1;
                f.last = *e;
            }
            None => {
                k.folded = Some(Folded {
                    count: 1,
                    first_ns: e.ts_ns,
                    last: *e,
                });
            }
        }
        if key.uid == OTHER.0 && key.cgroup_id == OTHER.1 {
            if let Some(f) = &mut k.folded {
                f.last.uid = OTHER.0;
                f.last.cgroup_id = OTHER.1;
            }
        }
        false
    }

    /// At the end of an interval (or with `force`), the summaries of what was folded, and a
    /// new interval; otherwise nothing.
    pub fn take(&mut self, now: Instant, force: bool) -> Vec<Folded> {
        if !force && now.duration_since(self.started) < INTERVAL {
            return Vec::new();
        }
        self.started = now;
        self.written = 0;
        let mut out: Vec<Folded> = self.keys.drain().filter_map(|(_, k)| k.folded).collect();
        out.sort_by_key(|f| f.first_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(uid: u32, ts_ns: u64) -> Event {
        Event {
            uid,
            ts_ns,
            verdict: ev::VERDICT_DENIED,
            reason: ev::REASON_RATE_UID,
            ..Event::default()
        }
    }

    #[test]
    fn a_flood_becomes_a_few_lines_and_loses_no_count() {
        let mut b = Bound::new(10, 1000);
        let written = (0..5000).filter(|i| b.admit(&refused(1000, *i))).count();
        assert_eq!(written, 10);
        let mut allowed = refused(1000, 0);
        allowed.verdict = ev::VERDICT_ALLOWED;
        assert!(b.admit(&allowed), "allowed connects are never folded");
        assert!(
            b.take(Instant::now(), false).is_empty(),
            "the interval goes on"
        );
        let s = b.take(Instant::now(), true);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].count, s[0].first_ns, s[0].last.ts_ns),
            (4990, 10, 4999)
        );
        assert!(
            b.admit(&refused(1000, 6000)),
            "a new interval writes in detail again"
        );
    }

    #[test]
    fn the_total_bounds_many_keys() {
        let mut b = Bound::new(10, 100);
        let written = (0..1000u32)
            .filter(|u| b.admit(&refused(*u, u64::from(*u))))
            .count();
        assert_eq!(written, 100);
        let folded: u64 = b.take(Instant::now(), true).iter().map(|f| f.count).sum();
        assert_eq!(folded, 900);
    }
}
