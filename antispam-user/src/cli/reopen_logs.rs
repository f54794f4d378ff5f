//! `antispam reopen-logs`: the running agent opens its event log's path anew, after logrotate
//! (or an operator) moved the file away. The package's logrotate rule runs it; unlike SIGHUP it
//! does not reload the policy.

use std::process::ExitCode;

use super::args::ControlSocket;
use crate::control::Request;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    socket: ControlSocket,
}

pub fn main(args: Args) -> ExitCode {
    super::tell(&args.socket, Request::ReopenLogs)
}
