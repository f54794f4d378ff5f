//! `reopen-logs`: the events task opens the event log's path anew at its next drain (every
//! 50 ms), as it does on SIGHUP. Nothing is changed that the audit log records.

use std::sync::atomic::Ordering;

use crate::{agent::core::Core, control::Reply};

impl Core {
    pub fn reopen_logs(&self) -> Reply {
        self.shared.reopen_log.store(true, Ordering::Relaxed);
        Reply::said("the event log is opened anew within 50 ms (standard output: nothing to do)")
    }
}
