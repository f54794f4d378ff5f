//! `antispam suspend --uid U | --cgroup PATH --reason TEXT [--for DURATION]`.

use std::process::ExitCode;

use crate::control::{self, Request, SocketArg, Target};

/// Whom a suspension applies to.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// A UID, or a user name.
    #[arg(long)]
    uid: Option<String>,
    /// A cgroup path relative to the cgroup2 mount (e.g. /system.slice/docker-3f2a.scope); its
    /// descendants are covered too.
    #[arg(long)]
    cgroup: Option<String>,
}

impl TargetArgs {
    pub fn target(&self) -> Result<Target, String> {
        if let Some(c) = &self.cgroup {
            if !c.starts_with('/') {
                return Err(format!(
                    "cgroup {c:?} must start with '/' (relative to the cgroup2 mount)"
                ));
            }
            return Ok(Target::Cgroup(c.trim_end_matches('/').to_string()).normalize());
        }
        let u = self.uid.as_deref().unwrap_or_default();
        if let Ok(n) = u.parse::<u32>() {
            return Ok(Target::Uid(n));
        }
        match nix::unistd::User::from_name(u) {
            Ok(Some(user)) => Ok(Target::Uid(user.uid.as_raw())),
            _ => Err(format!("unknown user {u:?}")),
        }
    }
}

impl Target {
    fn normalize(self) -> Target {
        match self {
            Target::Cgroup(p) if p.is_empty() => Target::Cgroup("/".into()),
            t => t,
        }
    }
}

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
    socket: SocketArg,
}

pub fn main(args: Args) -> ExitCode {
    let target = match args.target.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("antispam suspend: {e}");
            return ExitCode::from(2);
        }
    };
    let for_secs = args.duration.map(|d| d.as_secs().max(1));
    control::cli(
        &args.socket,
        Request::Suspend {
            target,
            reason: args.reason,
            for_secs,
        },
    )
}
