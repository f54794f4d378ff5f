//! Ending the open SMTP sessions a suspension or the kill switch now refuses: in the agent's
//! network namespace and in every other one a process under the attach point is in (a
//! container's). What cannot be searched is said; the egress program drops those sessions'
//! packets either way.

use super::Core;
use crate::sys::{netns, sockdiag};

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
                if e.namespaces > 1 {
                    note.push_str(&format!(" in {} network namespaces", e.namespaces));
                }
                if found.unreadable > 0 {
                    note.push_str(&format!(
                        "; the namespaces of {} process(es) could not be looked at: their sessions' packets are dropped (see the agent's log)",
                        found.unreadable
                    ));
                }
                if !e.failed.is_empty() {
                    note.push_str(&format!(
                        "; {} network namespace(s) could not be searched: their sessions' packets are dropped (see the agent's log)",
                        e.failed.len()
                    ));
                }
                (Some(e.sessions), note)
            }
            Err(e) => {
                log::warn!(
                    "{what}: could not end the open SMTP sessions ({e}); their packets are dropped"
                );
                (
                    None,
                    format!("; the open SMTP sessions could not be ended ({e}): their packets are dropped"),
                )
            }
        }
    }
}
