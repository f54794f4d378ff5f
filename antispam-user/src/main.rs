//! `antispam`: the agent (`run`) and its command-line tools.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//! cli/      argument parsing and printing, one file per subcommand (nothing imports it)
//! agent/    the running agent: its state, main loop, operator actions, HTTP, metrics, status
//! kernel/   policy/   control/   sys/   audit/   report/      what the agent drives
//! defaults  clock  digest                                     shared leaves
//! antispam-common                                             types shared with the kernel
//! ```

mod agent;
mod audit;
mod cli;
mod clock;
mod control;
mod defaults;
mod digest;
mod fleet;
mod kernel;
mod mta;
mod policy;
mod report;
mod sys;

fn main() -> std::process::ExitCode {
    // Before anything else: SIGHUP, SIGTERM and SIGINT wait until the agent has its handlers
    // (`agent::run` unblocks them), so one arriving during start-up is handled, not fatal.
    sys::signals::block();
    let args = cli::Cli::from_env();
    if !args.runs_the_agent() {
        // The other commands keep the default actions (Ctrl-C stops them).
        sys::signals::unblock();
    }
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format_target(false);
    if stderr_is_the_journal() {
        // Under systemd: the journal stamps each line and reads its priority from a `<N>`
        // prefix (sd-daemon(3)), so `journalctl -p warning` finds warnings and errors.
        logger.format(|buf, record| {
            use std::io::Write as _;
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            // Each line of a multi-line message is an entry of its own: each gets the prefix.
            let text = record.args().to_string();
            for line in text.lines() {
                writeln!(buf, "<{priority}>{line}")?;
            }
            Ok(())
        });
    }
    logger.init();
    cli::main(args)
}

/// Whether standard error is the journal's stream: systemd sets `JOURNAL_STREAM` to its
/// "device:inode", which must be standard error's (a child the service started with its own
/// stderr inherits the variable, not the stream).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
