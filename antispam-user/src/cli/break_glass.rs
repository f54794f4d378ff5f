//! `antispam break-glass request|approve|revoke|list`.

use std::process::ExitCode;

use serde_json::Value;

use crate::{
    cli::{
        status::{s, table},
        suspend::TargetArgs,
    },
    control::{self, Request, SocketArg},
};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Ask for an override of one UID or cgroup: its rate limits, suspension and the kill switch
    /// stop applying to it (destination block lists still do) once a second operator approves,
    /// until the TTL runs out.
    Request {
        #[command(flatten)]
        target: TargetArgs,
        /// Why (recorded in the audit log and shown to the approver).
        #[arg(long)]
        reason: String,
        /// How long the override lasts once approved (at most 24h), e.g. 30m, 2h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Approve another operator's request (the requester cannot approve their own).
    Approve {
        /// The request's id, as `request` printed it (bg-…).
        id: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Withdraw a pending request, or end an override in force at once.
    Revoke {
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show pending requests and overrides in force.
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
}

pub const HEADER: [&str; 7] = [
    "ID",
    "TARGET",
    "STATE",
    "REQUESTED BY",
    "APPROVED BY",
    "ENDS",
    "REASON",
];

/// Table rows of the `{"active": [...], "pending": [...]}` answer (also used by `status`).
pub fn rows(v: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (state, key, ends) in [
        ("in force", "active", "expires_at"),
        ("pending", "pending", "lapses_at"),
    ] {
        for g in v[key].as_array().into_iter().flatten() {
            rows.push(vec![
                s(&g["id"]),
                s(&g["target"]),
                state.to_string(),
                s(&g["requester"]),
                s(&g["approver"]),
                s(&g[ends]),
                s(&g["reason"]),
            ]);
        }
    }
    rows
}

pub fn main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Request {
            target,
            reason,
            ttl,
            socket,
        } => {
            let target = match target.target() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("antispam break-glass request: {e}");
                    return ExitCode::from(2);
                }
            };
            control::cli(
                &socket,
                Request::BreakGlassAsk {
                    target,
                    reason,
                    ttl_secs: ttl.as_secs(),
                },
            )
        }
        Command::Approve { id, socket } => control::cli(&socket, Request::BreakGlassApprove { id }),
        Command::Revoke { id, reason, socket } => {
            control::cli(&socket, Request::BreakGlassRevoke { id, reason })
        }
        Command::List { json, socket } => {
            match control::call(&socket.path, &Request::BreakGlassList) {
                Ok(r) if r.ok => {
                    let data = r.data.unwrap_or(Value::Null);
                    if json {
                        println!("{data:#}");
                    } else {
                        let rows = rows(&data);
                        if rows.is_empty() {
                            println!("no break-glass request pending or in force");
                        } else {
                            print!("{}", table(&HEADER, &rows));
                        }
                    }
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!("antispam break-glass list: {}", r.message);
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("antispam break-glass list: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
