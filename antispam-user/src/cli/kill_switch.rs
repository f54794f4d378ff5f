//! `antispam kill-switch on|off --reason TEXT`.

use std::process::ExitCode;

use super::{args::ControlSocket, sign::SignWith};
use crate::control::{signed::SignedAction, Request};

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
    #[command(flatten)]
    sign: SignWith,
}

pub fn main(args: Args) -> ExitCode {
    let on = matches!(args.state, State::On);
    let signature = match args.sign.sign(&SignedAction::KillSwitch {
        on,
        reason: &args.reason,
    }) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::tell(
        &args.socket,
        Request::KillSwitch {
            on,
            reason: args.reason,
            signature,
        },
    )
}
