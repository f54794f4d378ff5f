//! What the agent follows of the host besides cgroups and policy: the subordinate UID ranges
//! (charged to their owners), read again when `/etc/subuid` changes.

use std::{os::unix::fs::MetadataExt as _, path::Path, time::SystemTime};

use super::core::Core;
use crate::{kernel::maps::SUBUIDS_FLAG, sys::subuid};

/// What identifies a version of the subuid file: (modification time, inode, size).
pub type FileStamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.ino(), m.size()))
}

impl Core {
    /// Writes the subordinate UID ranges to the kernel when the file (or the policy's
    /// `subordinate_uids`) changed since the last call.
    pub fn sync_subuids(&mut self) {
        let charge = self.shared.enforced().policy.charge_subordinate_uids;
        let path = Path::new(subuid::SUBUID);
        let now = stamp(path).filter(|_| charge);
        if self.subuid_stamp == Some(now) {
            return;
        }
        let ranges = if charge {
            match subuid::read(path) {
                Ok((ranges, skipped)) => {
                    for (line, why) in skipped {
                        log::warn!("{}:{line}: {why}: left out", path.display());
                    }
                    ranges
                }
                Err(e) => {
                    log::error!(
                        "reading {}: {e}; subordinate UIDs are charged as themselves",
                        path.display()
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let table = subuid::table(&ranges);
        let min = ranges.iter().map(|r| r.start).min().unwrap_or(u32::MAX);
        let result = self.kernel.subuids.sync(&table).and_then(|()| {
            let mut host = self.kernel.rules.host();
            host.subuid_min = min;
            self.kernel.rules.set_host(host)?;
            self.kernel.rules.set_flag(SUBUIDS_FLAG, !table.is_empty())
        });
        match result {
            Ok(()) => {
                if !ranges.is_empty() {
                    log::info!(
                        "subordinate UIDs: {} ranges of {} users are charged to their owners",
                        ranges.len(),
                        ranges
                            .iter()
                            .map(|r| r.owner)
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                    );
                }
                self.subuid_stamp = Some(now);
            }
            Err(e) => log::error!("writing the subordinate UID ranges: {e}"),
        }
    }
}
