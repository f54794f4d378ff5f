//! `antispam check POLICY`: validate a policy; exit 0 with a summary, or 1 with every problem as
//! `FILE:LINE:COLUMN: reason`.

use std::{path::PathBuf, process::ExitCode};

use crate::policy::Policy;

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (TOML) to validate.
    policy: PathBuf,
}

pub fn main(args: Args) -> ExitCode {
    match Policy::load(&args.policy) {
        Ok(p) => {
            for w in &p.warnings {
                eprintln!("{w} (warning)");
            }
            println!("{p}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            eprintln!(
                "{}: {} problem(s); nothing was changed",
                args.policy.display(),
                problems.0.len()
            );
            ExitCode::FAILURE
        }
    }
}
