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
    let args = cli::Cli::from_env();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    cli::main(args)
}
