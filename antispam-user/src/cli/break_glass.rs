//! `antispam break-glass request|approve|revoke|list`.

use std::process::ExitCode;

use super::{
    args::{ControlSocket, TargetArgs},
    sign::SignWith,
    table::{opt, table},
};
use crate::control::{
    signed::SignedAction,
    status::{BreakGlassView, GrantView},
    Data, Request,
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
        /// Evidence for it (an alert, a metric at the time): recorded and shown to the
        /// approver. Give it once per signal.
        #[arg(long, value_name = "TEXT")]
        evidence: Vec<String>,
        #[command(flatten)]
        socket: ControlSocket,
        #[command(flatten)]
        sign: SignWith,
    },
    /// Approve another operator's request (the requester cannot approve their own): shows the
    /// request and its evidence, then approves it.
    Approve {
        /// The request's id, as `request` printed it (bg-…).
        id: String,
        #[command(flatten)]
        socket: ControlSocket,
        #[command(flatten)]
        sign: SignWith,
    },
    /// Withdraw a pending request, or end an override in force at once.
    Revoke {
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        socket: ControlSocket,
        #[command(flatten)]
        sign: SignWith,
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

pub const HEADER: [&str; 8] = [
    "ID",
    "TARGET",
    "STATE",
    "REQUESTED BY",
    "APPROVED BY",
    "ENDS",
    "REASON",
    "EVIDENCE",
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
                if g.evidence.is_empty() {
                    "-".to_string()
                } else {
                    g.evidence.join("; ")
                },
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
            evidence,
            socket,
            sign,
        } => {
            let target = match target.parse("break-glass request") {
                Ok(t) => t,
                Err(code) => return code,
            };
            let signature = match sign.sign(&SignedAction::BreakGlassRequest {
                target: target.to_string(),
                ttl_secs: ttl.as_secs(),
                reason: &reason,
                evidence: &evidence,
            }) {
                Ok(s) => s,
                Err(code) => return code,
            };
            super::tell(
                &socket,
                Request::BreakGlassAsk {
                    target,
                    reason,
                    ttl_secs: ttl.as_secs(),
                    evidence,
                    signature,
                },
            )
        }
        Command::Approve { id, socket, sign } => approve(&socket, id, &sign),
        Command::Revoke {
            id,
            reason,
            socket,
            sign,
        } => {
            let signature = match sign.sign(&SignedAction::BreakGlassRevoke {
                id: &id,
                reason: &reason,
            }) {
                Ok(s) => s,
                Err(code) => return code,
            };
            super::tell(
                &socket,
                Request::BreakGlassRevoke {
                    id,
                    reason,
                    signature,
                },
            )
        }
        Command::List { json, socket } => list(&socket, json),
    }
}

/// Shows the request to the approver (what is asked, by whom, the evidence cited), signs what
/// was shown, and approves it.
fn approve(socket: &ControlSocket, id: String, sign: &SignWith) -> ExitCode {
    let pending: Option<GrantView> = match super::ask(socket, &Request::BreakGlassList) {
        Ok(r) => match r.data {
            Some(Data::BreakGlass(v)) => v.pending.into_iter().find(|g| g.id == id),
            _ => None,
        },
        Err(code) => return code,
    };
    let Some(g) = pending else {
        return super::tell(
            socket,
            Request::BreakGlassApprove {
                id,
                signature: None,
            },
        );
    };
    println!(
        "Approving {} for {} ({}): {}",
        g.id,
        g.target,
        humantime::format_duration(std::time::Duration::from_secs(g.ttl_secs)),
        g.reason
    );
    println!(
        "requested by {}{} at {}",
        g.requester,
        g.requester_key
            .as_ref()
            .map_or(String::new(), |k| format!(" with key {k}")),
        g.requested_at
    );
    if g.evidence.is_empty() {
        println!("evidence cited: none");
    } else {
        println!("evidence cited:");
        for e in &g.evidence {
            println!("  - {e}");
        }
    }
    // Target is held as the agent shows it; the signed text uses that same form.
    let signature = match sign.sign(&SignedAction::BreakGlassApprove {
        id: &g.id,
        target: g.target.clone(),
        ttl_secs: g.ttl_secs,
        reason: &g.reason,
        evidence: &g.evidence,
    }) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::tell(socket, Request::BreakGlassApprove { id, signature })
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
