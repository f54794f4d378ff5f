//! `antispam unsuspend --uid U | --cgroup PATH --reason TEXT`.

use std::process::ExitCode;

use crate::{
    cli::suspend::TargetArgs,
    control::{self, Request, SocketArg},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn main(args: Args) -> ExitCode {
    let target = match args.target.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("antispam unsuspend: {e}");
            return ExitCode::from(2);
        }
    };
    control::cli(
        &args.socket,
        Request::Unsuspend {
            target,
            reason: args.reason,
        },
    )
}
