//! `antispam break-glass request|approve|revoke|list`.

use std::process::ExitCode;

use super::{
    args::{ControlSocket, TargetArgs},
    table::{opt, table},
};
use crate::control::{status::BreakGlassView, Data, Request};

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
        socket: ControlSocket,
    },
    /// Approve another operator's request (the requester cannot approve their own).
    Approve {
        /// The request's id, as `request` printed it (bg-…).
        id: String,
        #[command(flatten)]
        socket: ControlSocket,
    },
    /// Withdraw a pending request, or end an override in force at once.
    Revoke {
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        socket: ControlSocket,
    },
    /// Show pending requests and overrides in force.
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: ControlSocket,
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

/// Table rows of the overrides in force and the pending requests (also used by `status`).
pub fn rows(v: &BreakGlassView) -> Vec<Vec<String>> {
    let active = v.active.iter().map(|g| ("in force", g, &g.expires_at));
    let pending = v.pending.iter().map(|g| ("pending", g, &g.lapses_at));
    active
        .chain(pending)
        .map(|(state, g, ends)| {
            vec![
                g.id.clone(),
                g.target.clone(),
                state.to_string(),
                g.requester.clone(),
                opt(&g.approver),
                opt(ends),
                g.reason.clone(),
            ]
        })
        .collect()
}

pub fn main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Request {
            target,
            reason,
            ttl,
            socket,
        } => {
            let target = match target.parse("break-glass request") {
                Ok(t) => t,
                Err(code) => return code,
            };
            super::tell(
                &socket,
                Request::BreakGlassAsk {
                    target,
                    reason,
                    ttl_secs: ttl.as_secs(),
                },
            )
        }
        Command::Approve { id, socket } => super::tell(&socket, Request::BreakGlassApprove { id }),
        Command::Revoke { id, reason, socket } => {
            super::tell(&socket, Request::BreakGlassRevoke { id, reason })
        }
        Command::List { json, socket } => list(&socket, json),
    }
}

fn list(socket: &ControlSocket, json: bool) -> ExitCode {
    let view = match super::ask(socket, &Request::BreakGlassList) {
        Ok(r) => match r.data {
            Some(Data::BreakGlass(v)) => v,
            _ => {
                eprintln!("antispam break-glass list: the agent sent no list");
                return ExitCode::FAILURE;
            }
        },
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let rows = rows(&view);
    if rows.is_empty() {
        println!("no break-glass request pending or in force");
    } else {
        print!("{}", table(&HEADER, &rows));
    }
    ExitCode::SUCCESS
}
