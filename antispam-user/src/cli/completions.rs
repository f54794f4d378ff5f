//! `antispam completions SHELL`: the shell's completion script on standard output (the Debian
//! package installs them; from source: `antispam completions bash > /etc/bash_completion.d/antispam`).

use std::process::ExitCode;

use clap::CommandFactory as _;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn main(args: Args) -> ExitCode {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "antispam", &mut std::io::stdout());
    ExitCode::SUCCESS
}
