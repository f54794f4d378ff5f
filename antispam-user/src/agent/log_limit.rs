//! Repeated errors, summarised: the first of a kind is logged at once, the next ones within
//! [`WINDOW`] are counted and logged as one line ("… (N more in the last 10 s)") when the window
//! ends. A disk that stays full, an event log that cannot be written, cost a few lines a
//! minute, not one per event.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// How long repeats of an error are counted before they are summarised.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Kinds of errors tracked at once, at most (the kinds are the call sites: a handful).
const MAX_KINDS: usize = 64;

struct Seen {
    since: Instant,
    repeats: u64,
    last: String,
}

#[derive(Default)]
pub struct LogLimit {
    seen: BTreeMap<&'static str, Seen>,
}

impl LogLimit {
    /// Logs `message` at ERROR unless an error of the same `kind` was logged within the window
    /// (then it is counted, and summarised by [`LogLimit::flush`]).
    pub fn error(&mut self, kind: &'static str, message: impl std::fmt::Display) {
        let now = Instant::now();
        let message = message.to_string();
        match self.seen.get_mut(kind) {
            Some(s) if now.duration_since(s.since) < WINDOW => {
                s.repeats += 1;
                s.last = message;
            }
            _ => {
                log::error!("{message}");
                if self.seen.len() >= MAX_KINDS {
                    self.flush_all();
                }
                self.seen.insert(
                    kind,
                    Seen {
                        since: now,
                        repeats: 0,
                        last: message,
                    },
                );
            }
        }
    }

    /// Logs the summary of every kind whose window has ended, and forgets it (call it every
    /// second or so).
    pub fn flush(&mut self) {
        let now = Instant::now();
        let ended: Vec<&'static str> = self
            .seen
            .iter()
            .filter(|(_, s)| now.duration_since(s.since) >= WINDOW)
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            if let Some(s) = self.seen.remove(k) {
                summarise(&s);
            }
        }
    }

    fn flush_all(&mut self) {
        for s in std::mem::take(&mut self.seen).values() {
            summarise(s);
        }
    }
}

fn summarise(s: &Seen) {
    if s.repeats > 0 {
        log::error!(
            "{} ({} more in the last {} s)",
            s.last,
            s.repeats,
            WINDOW.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_not_logged() {
        let mut l = LogLimit::default();
        for i in 0..1000 {
            l.error("event log", format!("writing event {i}: disk full"));
        }
        let s = &l.seen["event log"];
        assert_eq!(s.repeats, 999);
        assert_eq!(s.last, "writing event 999: disk full");
        l.error("audit", "other");
        assert_eq!(l.seen.len(), 2);
        l.flush();
        assert_eq!(l.seen.len(), 2, "the windows have not ended");
    }
}
