//! `antispam uninstall --reason TEXT [--cgroup DIR]`: removes what the agent left in the kernel.
//!
//! The programs and maps are pinned so that enforcement survives the agent; this is how they go.
//! A running agent is asked over its control socket (it audits the step, unpins and exits);
//! whatever is left is unpinned here and audited in the audit log.

use std::{path::PathBuf, process::ExitCode};

use serde_json::json;

use crate::{
    audit::AuditLog,
    cli::run::DEFAULT_AUDIT_LOG,
    control::{self, Request, SocketArg},
    pins,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// Only the attach point at this cgroup directory (default: every attach point).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// The agent's --pin-dir.
    #[arg(long, default_value = pins::DEFAULT_ROOT)]
    pin_dir: PathBuf,
    /// The agent's --audit-log, where the uninstall is recorded when no agent is running.
    #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
    audit_log: PathBuf,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn main(args: Args) -> ExitCode {
    let only = match &args.cgroup {
        Some(dir) => match crate::cgroupfs::cgroup_id(dir) {
            Ok(id) => Some(id),
            Err(e) => {
                eprintln!("antispam uninstall: cgroup {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut failed = false;
    // A running agent does it itself, and audits it.
    if args.socket.path.exists() {
        match control::call(
            &args.socket.path,
            &Request::Uninstall {
                reason: args.reason.clone(),
            },
        ) {
            Ok(r) if r.ok => println!("{}", r.message),
            Ok(r) => {
                eprintln!("antispam uninstall: the agent refused: {}", r.message);
                failed = true;
            }
            Err(e) => eprintln!("antispam uninstall: {e}; unpinning directly"),
        }
    }
    let left: Vec<_> = pins::instances(&args.pin_dir)
        .into_iter()
        .filter(|(_, id, _)| only.is_none_or(|o| o == *id))
        .collect();
    if left.is_empty() {
        if !failed {
            println!(
                "nothing (more) of antispam is pinned under {}",
                args.pin_dir.display()
            );
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let mut removed = Vec::new();
    for (dir, id, _) in &left {
        match pins::remove(dir) {
            Ok(n) => {
                println!(
                    "unpinned {n} objects from {} (cgroup id {id})",
                    dir.display()
                );
                removed.push(json!({"pin_dir": dir, "cgroup_id": id, "unpinned": n}));
            }
            Err(e) => {
                eprintln!("antispam uninstall: {}: {e}", dir.display());
                failed = true;
            }
        }
    }
    // The root goes too when nothing else is in it.
    let _ = std::fs::remove_dir(&args.pin_dir);
    let by = {
        let uid = nix::unistd::getuid().as_raw();
        json!({
            "uid": uid,
            "user": nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name),
            "login_uid": std::fs::read_to_string("/proc/self/loginuid").ok().map(|s| s.trim().to_string()),
            "pid": std::process::id(),
        })
    };
    match AuditLog::open(&args.audit_log).and_then(|mut log| {
        log.append(
            "uninstall",
            json!({"reason": args.reason, "by": by, "removed": removed, "agent_running": false}),
        )
    }) {
        Ok(seq) => println!("recorded in {} (record {seq})", args.audit_log.display()),
        Err(e) => {
            eprintln!("antispam uninstall: could not record it in the audit log: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
