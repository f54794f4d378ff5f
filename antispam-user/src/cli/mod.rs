//! Command-line interface: argument parsing and printing, one module per subcommand. Nothing
//! outside `cli/` (and `main.rs`) uses it; it reaches the running agent through
//! `control::client` and runs it through `agent::run`.

mod args;
mod audit;
mod break_glass;
mod check;
mod completions;
mod kill_switch;
mod manpages;
mod reopen_logs;
mod report;
mod run;
mod sign;
mod status;
mod suspend;
mod table;
mod uninstall;
mod unsuspend;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::control::{client, Request, Response};

/// Stops a Linux host from being used to send spam: rate limits and block lists for outbound SMTP
/// connections, enforced in the kernel per UID and per cgroup.
#[derive(Parser)]
#[command(name = "antispam", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only move it to the heap"
)]
enum Command {
    /// Run the agent in the foreground: load the policy, attach to the cgroup, enforce.
    Run(run::Args),
    /// Validate a policy file without touching anything that is running.
    Check(check::Args),
    /// Show what the running agent enforces now.
    Status(status::Args),
    /// Suspend a UID or a cgroup: its SMTP connects are refused and its open SMTP sessions stop.
    Suspend(suspend::Args),
    /// Lift a suspension.
    Unsuspend(unsuspend::Args),
    /// Refuse all SMTP except from allow-listed UIDs (outbreak containment), or end that.
    KillSwitch(kill_switch::Args),
    /// Emergency override of one UID or cgroup, time-limited, approved by a second operator.
    #[command(subcommand)]
    BreakGlass(break_glass::Command),
    /// Detach and remove everything antispam pinned in the kernel (programs, maps); a running
    /// agent stops.
    Uninstall(uninstall::Args),
    /// Work with the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Evidence for auditors over a period: audit chain, policy changes, refusals, suspensions,
    /// kill switch, break glass (Markdown or JSON).
    Report(report::Args),
    /// Make the running agent open its event log anew (after logrotate moved it); the policy
    /// is not reloaded.
    ReopenLogs(reopen_logs::Args),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Manpages(manpages::Args),
}

impl Cli {
    /// Parses the command line. The deprecated `ANTISPAM_SOCKET` still names the control socket
    /// when `ANTISPAM_CONTROL_SOCKET` is not set (for one release).
    pub fn from_env() -> Cli {
        if let Some(old) = std::env::var_os("ANTISPAM_SOCKET") {
            if std::env::var_os("ANTISPAM_CONTROL_SOCKET").is_none() {
                // SAFETY: called first thing in main, before any other thread exists.
                unsafe { std::env::set_var("ANTISPAM_CONTROL_SOCKET", old) };
            }
        }
        Cli::parse()
    }

    /// Is this `antispam run`?
    pub fn runs_the_agent(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(a) => run::main(a),
        Command::Check(a) => check::main(a),
        Command::Status(a) => status::main(a),
        Command::Audit(c) => audit::main(c),
        Command::Report(a) => report::main(a),
        Command::Suspend(a) => suspend::main(a),
        Command::Unsuspend(a) => unsuspend::main(a),
        Command::KillSwitch(a) => kill_switch::main(a),
        Command::BreakGlass(c) => break_glass::main(c),
        Command::Uninstall(a) => uninstall::main(a),
        Command::ReopenLogs(a) => reopen_logs::main(a),
        Command::Completions(a) => completions::main(a),
        Command::Manpages(a) => manpages::main(a),
    }
}

pub use crate::kernel::error_chain as chain;

/// Sends `req` to the agent; returns its answer when it was carried out, or prints why not
/// and returns the exit status: 1 when the agent refused, 2 when it could not be reached.
pub fn ask(socket: &args::ControlSocket, req: &Request) -> Result<Response, ExitCode> {
    match client::call(&socket.path, req) {
        Ok(r) if r.ok => Ok(r),
        Ok(r) => {
            eprintln!("antispam {}: {}", req.name(), r.message);
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("antispam {}: {e}", req.name());
            Err(ExitCode::from(2))
        }
    }
}

/// Sends `req` and prints the agent's message: exit status 0 if it was done.
pub fn tell(socket: &args::ControlSocket, req: Request) -> ExitCode {
    match ask(socket, &req) {
        Ok(r) => {
            println!("{}", r.message);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// clap's own consistency checks over every subcommand (duplicate ids, bad defaults...).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn old_flag_spellings_still_work() {
        let cli = Cli::try_parse_from([
            "antispam",
            "kill-switch",
            "on",
            "--reason",
            "r",
            "--socket",
            "/tmp/x.sock",
        ]);
        assert!(cli.is_ok(), "--socket is an alias of --control-socket");
        let cli = Cli::try_parse_from(["antispam", "status", "--addr", "127.0.0.1:9897"]);
        assert!(cli.is_ok(), "status --addr is kept for one release");
        let cli = Cli::try_parse_from([
            "antispam",
            "uninstall",
            "--reason",
            "r",
            "--pin-dir",
            "/sys/fs/bpf/x",
            "--audit-log",
            "/tmp/a",
            "--control-socket",
            "/tmp/s",
        ]);
        assert!(cli.is_ok(), "{:?}", cli.err());
    }
}
