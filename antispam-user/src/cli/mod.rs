//! Command-line interface: one module per subcommand.

mod audit;
mod check;
pub mod run;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Stops a Linux host from being used to send spam: rate limits and block lists for outbound SMTP
/// connections, enforced in the kernel per UID and per cgroup.
#[derive(Parser)]
#[command(name = "antispam", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground: load the policy, attach to the cgroup, enforce.
    Run(run::Args),
    /// Validate a policy file without touching anything that is running.
    Check(check::Args),
    /// Show what the running agent enforces now.
    Status(status::Args),
    /// Work with the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::Command),
}

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(a) => run::main(a),
        Command::Check(a) => check::main(a),
        Command::Status(a) => status::main(a),
        Command::Audit(c) => audit::main(c),
    }
}
