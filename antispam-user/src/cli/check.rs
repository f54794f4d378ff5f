//! `antispam check POLICY`: validate a policy; exit 0 with a summary, or 1 with every problem as
//! `FILE:LINE:COLUMN: reason`.

use std::{path::PathBuf, process::ExitCode};

use crate::{
    agent::policy_signers::PolicySigners,
    policy::{FileCheck, Policy},
};

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (TOML) to validate.
    policy: PathBuf,
    /// Check its signatures too, as `antispam run --policy-signers FILE` will (the policy's
    /// and every block list's FILE.sig, namespace antispam-policy).
    #[arg(long, value_name = "FILE")]
    policy_signers: Option<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    let signers = match args.policy_signers.as_deref().map(PolicySigners::load) {
        Some(Err(why)) => {
            eprintln!("{}:1:1: refused: {why}", args.policy.display());
            eprintln!(
                "{}: 1 problem(s); nothing was changed",
                args.policy.display()
            );
            return ExitCode::FAILURE;
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    match Policy::load_checked(&args.policy, signers.as_ref().map(|s| s as &dyn FileCheck)) {
        Ok(p) => {
            if let Some(by) = &p.signed_by {
                println!("{}: signed by {by}", args.policy.display());
            }
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
