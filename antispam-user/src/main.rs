//! `antispam`: the agent (`run`) and its command-line tools.

mod assign;
mod audit;
mod breakglass;
mod cgroupfs;
mod cli;
mod compile;
mod control;
mod error;
mod events;
mod http;
mod kernel;
mod metrics;
mod names;
mod ops;
mod pins;
mod policy;
mod policy_watch;
mod report;
mod sockdiag;
mod state;
mod status;
mod strikes;
mod watch;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    cli::main(args)
}
