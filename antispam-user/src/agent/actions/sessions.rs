//! Ending the open SMTP sessions a suspension or the kill switch now refuses: in the agent's
//! network namespace and in every other one a process under the attach point is in (a
//! container's). What cannot be searched is said, and the packet program (`antispam_egress`)
//! is attached until then to drop those sessions' packets: nothing else runs per packet.

use super::Core;
use crate::{
    kernel::pins::Pins,
    sys::{netns, sockdiag},
};

/// Why the packet program runs when sessions could not be ended.
const UNENDED: &str =
    "open SMTP sessions of a suspended key could not be ended: their packets are dropped";

/// At most this many other network namespaces are searched per action.
const MAX_NAMESPACES: usize = 4096;

impl Core {
    /// Counts (`end` false) or ends the sessions `sel` picks; returns how many (None if the
    /// agent's own namespace could not be searched) and the words for the operator's reply.
    pub(super) fn sessions(
        &self,
        what: &str,
        sel: &sockdiag::Selector<'_>,
        end: bool,
    ) -> (Option<usize>, String) {
        let (n, note, unreached) = self.sessions_and_gaps(what, sel, end);
        if end {
            // The status says what the last action could not end (and clears it once one could).
            *self
                .shared
                .sessions_not_ended
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = unreached.map(|u| format!("{what}: {u}"));
        }
        (n, note)
    }

    /// Attaches the packet program while a feature needs it (`--packet-accounting`, or
    /// sessions that could not be ended while the kill switch or a suspension is in force) and
    /// detaches it when none does: after every operator's request, and every second (for
    /// suspensions by strikes). What could not be ended is forgotten once nothing refuses
    /// it any more.
    pub fn sync_packets(&mut self) {
        let stopping = self.kernel.rules.stopping();
        let unended = {
            let mut s = self
                .shared
                .sessions_not_ended
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !stopping {
                *s = None;
            }
            s.is_some()
        };
        let why = if self.packet_accounting {
            Some(crate::agent::PACKET_ACCOUNTING)
        } else if unended {
            Some(UNENDED)
        } else {
            None
        };
        if why == self.kernel.packets {
            return;
        }
        let pins = Pins {
            dir: self.pin_dir.clone(),
            adopting: true,
            older: Vec::new(),
        };
        let done = self.kernel.packets(why, &pins);
        *self
            .shared
            .packet_program
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.kernel.packets;
        if let Err(e) = done {
            self.errors.error(
                "packet program",
                format!(
                    "cannot {} the packet program: {e}",
                    if why.is_some() { "attach" } else { "detach" }
                ),
            );
        }
    }

    /// As `sessions`, with what could not be reached, if anything.
    fn sessions_and_gaps(
        &self,
        what: &str,
        sel: &sockdiag::Selector<'_>,
        end: bool,
    ) -> (Option<usize>, String, Option<String>) {
        let dirs = self.watcher.as_ref().map(|w| w.dirs()).unwrap_or_default();
        let found = netns::of_cgroups(dirs.iter().map(|d| d.as_path()), MAX_NAMESPACES);
        if found.unreadable > 0 && end {
            log::warn!(
                "{what}: the network namespaces of {} process(es) could not be looked at (CAP_SYS_PTRACE is needed to read another user's /proc/PID/ns/net); their sessions' packets are dropped",
                found.unreadable
            );
        }
        match sockdiag::sessions_in(sel, &found.namespaces, end) {
            Ok(e) => {
                for (ns, why) in e.failed.iter().filter(|_| end) {
                    log::warn!(
                        "{what}: could not search network namespace {} ({}) for open SMTP sessions ({why}); their packets are dropped",
                        ns.inode,
                        ns.path.display()
                    );
                }
                let mut note = format!("; {} open SMTP session(s) ended", e.sessions);
                let mut gaps = Vec::new();
                if e.namespaces > 1 {
                    note.push_str(&format!(" in {} network namespaces", e.namespaces));
                }
                if found.unreadable > 0 {
                    gaps.push(format!(
                        "the namespaces of {} process(es) could not be looked at",
                        found.unreadable
                    ));
                }
                if !e.failed.is_empty() {
                    gaps.push(format!(
                        "{} network namespace(s) could not be searched",
                        e.failed.len()
                    ));
                }
                let unreached = (!gaps.is_empty()).then(|| {
                    format!(
                        "{}: their sessions' packets are dropped (see the agent's log)",
                        gaps.join("; ")
                    )
                });
                if let Some(u) = &unreached {
                    note.push_str(&format!("; {u}"));
                }
                (Some(e.sessions), note, unreached)
            }
            Err(e) => {
                log::warn!(
                    "{what}: could not end the open SMTP sessions ({e}); their packets are dropped"
                );
                let unreached = format!(
                    "the open SMTP sessions could not be ended ({e}): their packets are dropped"
                );
                (None, format!("; {unreached}"), Some(unreached))
            }
        }
    }
}
