//! Start-up records: what opening the logs and the offence book found (a mode tightened, a half
//! line removed), and `agent_start`, written before the policy is in force.

use std::path::{Path, PathBuf};

use antispam_common::maps::programs::CONNECT4;

use super::{book::Book, event_log::Opened, Config, Error};
use crate::{
    audit::{AgentStart, AuditEvent, AuditLog, FileModeTightened},
    kernel::pins::{self, Pins},
    policy::Policy,
    sys::{cgroupfs, files::PRIVATE},
};

/// Records the modes tightened and the event log's half line removed when they were opened
/// (the audit log records its own repair as it opens).
pub fn record_opened(
    audit: &mut AuditLog,
    config: &Config,
    events: &Opened,
    book: &Book,
    book_path: &Path,
) -> Result<(), Error> {
    let mut tightened: Vec<(PathBuf, u32)> = Vec::new();
    if let Some(m) = audit.tightened {
        tightened.push((audit.path().to_path_buf(), m));
    }
    if let (Some(m), Some(p)) = (events.tightened, &config.log) {
        tightened.push((p.clone(), m));
    }
    if let Some(m) = book.tightened {
        tightened.push((book_path.to_path_buf(), m));
    }
    if let Some(r) = &audit.repaired {
        log::warn!(
            "audit log {}: removed a last record cut short ({} bytes at offset {}, kept in the log_repaired record)",
            audit.path().display(),
            r.removed_bytes,
            r.offset
        );
    }
    for (path, was) in tightened {
        log::warn!(
            "{} was mode {was:04o}, open to others: set to {PRIVATE:04o}",
            path.display()
        );
        audit.append(&AuditEvent::FileModeTightened(FileModeTightened {
            path,
            was: format!("{was:04o}"),
            now: format!("{PRIVATE:04o}"),
        }))?;
    }
    if let Some(r) = &events.repaired {
        log::warn!(
            "event log {}: removed a half line left at its end ({} bytes at offset {}, kept in the audit log's log_repaired record)",
            r.path.display(),
            r.removed_bytes,
            r.offset
        );
        audit.append(&AuditEvent::LogRepaired(r.clone()))?;
    }
    Ok(())
}

/// The `agent_start` record.
pub fn start_record(
    config: &Config,
    policy: &Policy,
    mount: &Path,
    dir: &Path,
    generation: u32,
    pins: &Pins,
) -> AuditEvent {
    // A previous agent's links are there, to be taken over (so far they keep enforcing).
    let took_over = pins.adopting
        || pins
            .older
            .iter()
            .any(|d| pins::link_path(d, CONNECT4).exists());
    AuditEvent::AgentStart(AgentStart {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        cgroup: cgroupfs::relative(mount, dir),
        policy: policy.origin.clone(),
        policy_sha256: policy.sha256.clone(),
        mode: policy.mode.name().to_string(),
        generation,
        pin_dir: pins.dir.clone(),
        took_over,
        event_log: config
            .log
            .as_deref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        policy_signed_by: policy.signed_by.clone(),
    })
}
