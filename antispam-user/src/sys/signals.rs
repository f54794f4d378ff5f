//! The agent's signals (SIGHUP, SIGTERM, SIGINT) from the first instruction on: `main` blocks
//! them before anything else, so that one arriving during start-up waits (pending in the
//! kernel) instead of killing the process with the default action; the agent unblocks them
//! once its handlers are installed, and a signal that arrived meanwhile is delivered then.
//!
//! The mask is per thread and inherited: threads started after `block` (the async runtime's)
//! keep them blocked, and the kernel delivers a process-directed signal to the one thread that
//! does not block it, the main thread, once `unblock` ran there.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

fn agent_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    set
}

/// Blocks SIGHUP, SIGTERM and SIGINT in the calling thread (and every thread it starts later).
pub fn block() {
    // Only fails for an invalid `how`, which this is not.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&agent_signals()), None);
}

/// Unblocks them in the calling thread: pending ones are delivered at once (to the handlers
/// installed by then, or with their default action).
pub fn unblock() {
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&agent_signals()), None);
}
