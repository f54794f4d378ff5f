//! `antispam audit verify FILE`: check the audit log's hash chain.

use std::{path::PathBuf, process::ExitCode};

use crate::audit;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Verify the hash chain of an audit log: exit 0 if intact, 1 with the first broken line.
    Verify {
        /// The audit log (default: the agent's default location).
        #[arg(default_value = crate::defaults::AUDIT_LOG)]
        file: PathBuf,
    },
}

pub fn main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Verify { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            match audit::verify(&text) {
                Ok(v) => {
                    println!(
                        "{}: ok: {} records, {} to {}, head {}",
                        file.display(),
                        v.records,
                        v.first_ts.as_deref().unwrap_or("-"),
                        v.last_ts.as_deref().unwrap_or("-"),
                        v.head
                    );
                    ExitCode::SUCCESS
                }
                Err(b) => {
                    eprintln!("{}:{}: chain broken: {}", file.display(), b.line, b.reason);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
