//! `antispam kill-switch on|off --reason TEXT`.

use std::process::ExitCode;

use super::args::ControlSocket;
use crate::control::Request;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum State {
    On,
    Off,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// on: refuse all SMTP except from allow-listed UIDs; off: back to the policy.
    #[arg(value_enum)]
    state: State,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    socket: ControlSocket,
}

pub fn main(args: Args) -> ExitCode {
    super::tell(
        &args.socket,
        Request::KillSwitch {
            on: matches!(args.state, State::On),
            reason: args.reason,
        },
    )
}
