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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    cli::main(args)
}
