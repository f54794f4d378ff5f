//! `antispam unsuspend --uid U | --cgroup PATH --reason TEXT`.

use std::process::ExitCode;

use super::args::{ControlSocket, TargetArgs};
use crate::control::Request;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    socket: ControlSocket,
}

pub fn main(args: Args) -> ExitCode {
    let target = match args.target.parse("unsuspend") {
        Ok(t) => t,
        Err(code) => return code,
    };
    super::tell(
        &args.socket,
        Request::Unsuspend {
            target,
            reason: args.reason,
        },
    )
}
