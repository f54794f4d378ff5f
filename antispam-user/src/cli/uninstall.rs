//! `antispam uninstall --reason TEXT [--cgroup DIR]`: removes what the agent left in the kernel.
//!
//! The programs and maps are pinned so that enforcement survives the agent; this is how they go.
//! A running agent is asked over its control socket (it audits the step, unpins and exits);
//! whatever is left is unpinned here and audited in the audit log.

use std::{path::PathBuf, process::ExitCode};

use super::args::{self, ControlSocket, PinDir};
use crate::{
    audit::{Actor, AuditEvent, AuditLog, Uninstall, Unpinned},
    control::{client, Request},
    kernel::pins,
    sys::{cgroupfs, procfs, users},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// Only the attach point at this cgroup directory (default: every attach point).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    pin_dir: PinDir,
    /// Where the uninstall is recorded when no agent is running.
    #[command(flatten)]
    audit_log: args::AuditLog,
    #[command(flatten)]
    socket: ControlSocket,
}

pub fn main(args: Args) -> ExitCode {
    let only = match &args.cgroup {
        Some(dir) => match cgroupfs::cgroup_id(dir) {
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
        let req = Request::Uninstall {
            reason: args.reason.clone(),
        };
        match client::call(&args.socket.path, &req) {
            Ok(r) if r.ok => println!("{}", r.message),
            Ok(r) => {
                eprintln!("antispam uninstall: the agent refused: {}", r.message);
                failed = true;
            }
            Err(e) => eprintln!("antispam uninstall: {e}; unpinning directly"),
        }
    }
    let left: Vec<_> = pins::instances(&args.pin_dir.path)
        .into_iter()
        .filter(|(_, id, _)| only.is_none_or(|o| o == *id))
        .collect();
    if left.is_empty() {
        if !failed {
            println!(
                "nothing (more) of antispam is pinned under {}",
                args.pin_dir.path.display()
            );
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let (removed, unpin_failed) = unpin(&left);
    failed |= unpin_failed;
    // The root goes too when nothing else is in it.
    let _ = std::fs::remove_dir(&args.pin_dir.path);
    failed |= !record(&args, removed);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Unpins each attach point's directory; returns what was removed and whether any failed.
fn unpin(left: &[(PathBuf, u64, u32)]) -> (Vec<Unpinned>, bool) {
    let mut removed = Vec::new();
    let mut failed = false;
    for (dir, id, _) in left {
        let filters = crate::kernel::syn::remove_filters(dir);
        if filters > 0 {
            println!("removed the SYN check from {filters} container device(s)");
        }
        match pins::remove(dir) {
            Ok(n) => {
                println!(
                    "unpinned {n} objects from {} (cgroup id {id})",
                    dir.display()
                );
                removed.push(Unpinned {
                    pin_dir: dir.clone(),
                    cgroup_id: *id,
                    unpinned: n,
                });
            }
            Err(e) => {
                eprintln!("antispam uninstall: {}: {e}", dir.display());
                failed = true;
            }
        }
    }
    (removed, failed)
}

/// Records the uninstall in the audit log; false if it could not.
fn record(args: &Args, removed: Vec<Unpinned>) -> bool {
    let uid = nix::unistd::getuid().as_raw();
    let pid = std::process::id() as i32;
    let by = Actor {
        user: users::name_or_number(uid),
        uid: Some(uid),
        pid: Some(pid),
        process_uid: None,
        login_uid: procfs::login_uid(pid),
    };
    let event = AuditEvent::Uninstall(Uninstall {
        reason: args.reason.clone(),
        by,
        pin_dir: None,
        unpinned: None,
        removed: Some(removed),
        agent_running: false,
    });
    let path = &args.audit_log.path;
    match AuditLog::open(path).and_then(|mut log| log.append(&event)) {
        Ok(seq) => {
            println!("recorded in {} (record {seq})", path.display());
            true
        }
        Err(e) => {
            eprintln!("antispam uninstall: could not record it in the audit log: {e}");
            false
        }
    }
}
