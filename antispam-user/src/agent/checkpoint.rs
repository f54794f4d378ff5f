//! The audit log's external anchor: its head (sequence and hash) logged as a checkpoint line at
//! INFO, with a fixed prefix, for syslog/journald to forward off the host; and the sealing key
//! evolved on time even when nothing is written.
//!
//! A checkpoint line is `antispam-audit-checkpoint seq=N hash=H sealed=KEY/EPOCH log=PATH
//! why=…`; an auditor passes `N:H` to `antispam audit verify --expect-head`, which fails on a
//! log cut (or rewritten) after it.

use std::time::{Duration, Instant, SystemTime};

use super::core::{sync_counters, Core};
use crate::audit::AuditLog;

/// The prefix of every checkpoint line (what a log shipper filters on).
pub const PREFIX: &str = "antispam-audit-checkpoint";

/// When to log the next checkpoint.
#[derive(Debug)]
pub struct Checkpoints {
    every: Duration,
    last: Option<Instant>,
}

impl Checkpoints {
    pub fn every(every: Duration) -> Checkpoints {
        Checkpoints {
            every: every.max(Duration::from_secs(1)),
            last: None,
        }
    }
}

/// Logs the head of `audit` as a checkpoint line.
pub fn log_head(audit: &AuditLog, why: &str) {
    let (seq, hash) = audit.head();
    let sealed = audit
        .sealing()
        .map_or("no".to_string(), |(k, e)| format!("{k}/{e}"));
    log::info!(
        "{PREFIX} seq={seq} hash={hash} sealed={sealed} log={} why={why}",
        audit.path().display()
    );
}

impl Core {
    /// Evolves the sealing key when its epoch ended (checkpointing then), and logs a
    /// checkpoint when one is due.
    pub fn audit_tick(&mut self) {
        let evolved = match self.audit.tick(SystemTime::now()) {
            Ok(e) => e,
            Err(e) => {
                self.errors.error("audit sealing", e);
                None
            }
        };
        sync_counters(&self.audit, &self.shared);
        let c = &mut self.checkpoints;
        let due = c.last.is_none_or(|t| t.elapsed() >= c.every);
        if let Some(epoch) = evolved {
            log_head(
                &self.audit,
                &format!("sealing key evolved to epoch {epoch}"),
            );
        } else if due {
            log_head(
                &self.audit,
                if c.last.is_none() {
                    "start"
                } else {
                    "periodic"
                },
            );
        } else {
            return;
        }
        self.checkpoints.last = Some(Instant::now());
    }
}
