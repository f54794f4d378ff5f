//! `antispam suspend --uid U | --cgroup PATH --reason TEXT [--for DURATION]`.

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
    /// How long, e.g. 15m, 1h, 2d; until lifted by hand if not given.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    #[command(flatten)]
    socket: ControlSocket,
}

pub fn main(args: Args) -> ExitCode {
    let target = match args.target.parse("suspend") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let for_secs = args.duration.map(|d| d.as_secs().max(1));
    super::tell(
        &args.socket,
        Request::Suspend {
            target,
            reason: args.reason,
            for_secs,
        },
    )
}
