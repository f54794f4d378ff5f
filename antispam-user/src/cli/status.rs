//! `antispam status`: what the running agent enforces, and usage per UID and cgroup. It asks the
//! agent over the control socket, like every operator command.

use std::{net::SocketAddr, process::ExitCode};

use super::{
    args::ControlSocket,
    break_glass,
    table::{opt, table},
};
use crate::control::{
    status::{KeyUsage, RuleView, Status},
    Data, Request,
};

#[derive(clap::Args)]
pub struct Args {
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: ControlSocket,
    /// Removed in 0.2: the status is no longer served over HTTP. Says so.
    #[arg(long, alias = "metrics-addr", hide = true, env = "ANTISPAM_ADDR")]
    addr: Option<SocketAddr>,
}

fn fetch(args: &Args) -> Result<Status, ExitCode> {
    if let Some(addr) = args.addr {
        eprintln!(
            "antispam status: --addr {addr}: the agent no longer serves its status over HTTP (it names users and operators); it comes over the control socket (--control-socket, root or the operators group)"
        );
        return Err(ExitCode::from(2));
    }
    match super::ask(&args.socket, &Request::Status)?.data {
        Some(Data::Status(s)) => Ok(*s),
        _ => {
            eprintln!("antispam status: the agent sent no status");
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn main(args: Args) -> ExitCode {
    let status = match fetch(&args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{}", render(&status));
    }
    ExitCode::SUCCESS
}

pub fn render(v: &Status) -> String {
    let mut out = summary(v);
    out.push_str(&kill_switch(v));
    let bg = break_glass::rows(&v.break_glass);
    if !bg.is_empty() {
        out.push_str("BREAK GLASS\n");
        out.push_str(&table(&break_glass::HEADER, &bg));
        out.push('\n');
    }
    out.push_str(&suspensions(v));
    out.push_str("RULES\n");
    let rules: Vec<Vec<String>> = v.rules.iter().map(rule_row).collect();
    out.push_str(&table(&["RULE", "LINE", "RATE", "APPLIES TO"], &rules));
    out.push_str("\nUSAGE (most refused first)\n");
    let keys: Vec<Vec<String>> = v.keys.iter().map(usage_row).collect();
    out.push_str(&table(
        &[
            "KIND",
            "NAME",
            "RULE",
            "LIMIT",
            "AVAILABLE",
            "ALLOWED",
            "DENIED",
            "WOULD_DENY",
            "BYTES",
        ],
        &keys,
    ));
    out.push_str(&fleet(v));
    out.push_str(&kernel_errors(v));
    out
}

/// Tenants' fleet budgets, when the policy names any.
fn fleet(v: &Status) -> String {
    let f = &v.fleet;
    if f.tenants.is_empty() {
        return String::new();
    }
    let store = match (&f.store, &f.host) {
        (Some(s), Some(h)) => format!(
            "{s} as {h}, leases of {} ms, {}{}",
            f.lease_ms,
            if f.connected {
                "reached"
            } else {
                "NOT reached"
            },
            f.last_error
                .as_deref()
                .filter(|_| !f.connected)
                .map_or(String::new(), |e| format!(" ({e})"))
        ),
        _ => "none (--fleet-store not given): every tenant on local_rate".to_string(),
    };
    let rows: Vec<Vec<String>> = f
        .tenants
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.rate.clone(),
                t.local_rate.clone(),
                t.state.clone(),
                if t.state == "leased" {
                    format!("{} for {} ms", t.lease_tokens, t.lease_ends_in_ms)
                } else {
                    "-".to_string()
                },
                t.leased_used.to_string(),
                t.local_used.to_string(),
                t.refused.to_string(),
            ]
        })
        .collect();
    format!(
        "\nFLEET store {store}\n{}",
        table(
            &[
                "TENANT",
                "FLEET RATE",
                "LOCAL RATE",
                "STATE",
                "LEASE",
                "LEASED",
                "LOCAL",
                "REFUSED"
            ],
            &rows
        )
    )
}

fn summary(v: &Status) -> String {
    let ports: Vec<String> = v.ports.iter().map(u16::to_string).collect();
    let own: Vec<String> = v
        .default_paths
        .iter()
        .map(|(p, r)| format!("{p} {r}"))
        .collect();
    let own = if own.is_empty() {
        String::new()
    } else {
        format!(" (own budgets: {})", own.join(", "))
    };
    let s = &v.sendmail;
    let present: Vec<&str> = s
        .programs
        .iter()
        .filter(|p| p.present)
        .map(|p| p.path.as_str())
        .collect();
    let why = s
        .why
        .as_deref()
        .map_or(String::new(), |w| format!(" ({w})"));
    let a = &v.audit;
    let sealed = match (&a.seal_key, a.seal_epoch, &a.seal_problem) {
        (Some(k), Some(e), _) => format!("sealed (key {k}, epoch {e})"),
        (_, _, Some(p)) => format!("NOT SEALED: {p}"),
        _ => "not sealed (antispam audit setup-keys)".to_string(),
    };
    let audit = format!(
        "audit log {}: head {}:{}, {sealed}\n",
        a.path, a.head_sequence, a.head_hash
    );
    format!(
        "antispam {}: mode {}, policy {}{} (generation {}), attached to cgroup {} ({} programs)\nports {}, default rate {}{own}\nsendmail: hook {}{why}; counting {}\npacket program: {}\n{audit}\n",
        v.version,
        v.mode,
        v.policy,
        v.policy_signed_by
            .as_deref()
            .map_or(String::new(), |by| format!(" signed by {by}")),
        v.generation,
        v.cgroup,
        v.programs_attached,
        ports.join(","),
        v.default_rate,
        s.hook.name(),
        if present.is_empty() { "no program (none present)".to_string() } else { present.join(", ") },
        v.packet_program.as_deref().map_or("off (nothing runs per packet)".to_string(), |w| format!("on ({w})")),
    )
}

fn kill_switch(v: &Status) -> String {
    let k = &v.kill_switch;
    if !k.on {
        return String::new();
    }
    format!(
        "KILL SWITCH ON since {} by {}: {} (only allow-listed UIDs may send)\n\n",
        opt(&k.since),
        opt(&k.by),
        opt(&k.reason)
    )
}

fn suspensions(v: &Status) -> String {
    if v.suspensions.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = v
        .suspensions
        .iter()
        .map(|x| {
            vec![
                x.target.clone(),
                x.since.clone(),
                opt(&x.until),
                x.by.clone(),
                x.reason.clone(),
            ]
        })
        .collect();
    format!(
        "SUSPENDED\n{}\n",
        table(&["TARGET", "SINCE", "UNTIL", "BY", "REASON"], &rows)
    )
}

/// A rule and (the first four of) what it applies to.
fn rule_row(r: &RuleView) -> Vec<String> {
    let mut what = Vec::new();
    for (label, list) in [
        ("users", &r.users),
        ("cgroups", &r.cgroups),
        ("destinations", &r.destinations),
    ] {
        if list.is_empty() {
            continue;
        }
        let shown: Vec<&str> = list.iter().take(4).map(String::as_str).collect();
        let more = if list.len() > 4 {
            format!(" +{}", list.len() - 4)
        } else {
            String::new()
        };
        what.push(format!("{label} {}{more}", shown.join(",")));
    }
    vec![
        r.name.clone(),
        r.line.to_string(),
        opt(&r.rate),
        what.join("; "),
    ]
}

fn usage_row(k: &KeyUsage) -> Vec<String> {
    vec![
        k.kind.clone(),
        k.name.clone(),
        k.rule.clone(),
        k.limit.clone(),
        opt(&k.available),
        k.allowed.to_string(),
        k.denied.to_string(),
        k.would_deny.to_string(),
        k.bytes.to_string(),
    ]
}

fn kernel_errors(v: &Status) -> String {
    let errs: Vec<String> = v
        .kernel_errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if errs.is_empty() {
        String::new()
    } else {
        format!("\nkernel errors: {}\n", errs.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::{KeyUsage, RuleView};

    #[test]
    fn renders_tables() {
        let v = Status {
            version: "0.1.0".into(),
            mode: "enforce".into(),
            policy: "/etc/antispam/policy.toml".into(),
            generation: 2,
            cgroup: "/".into(),
            programs_attached: 3,
            ports: vec![25, 587],
            default_rate: "30/minute (burst 30)".into(),
            rules: vec![RuleView {
                name: "limit[0]".into(),
                line: 7,
                rate: Some("10/hour (burst 10)".into()),
                users: vec!["1000-1999".into()],
                ..Default::default()
            }],
            keys: vec![KeyUsage {
                kind: "uid".into(),
                name: "alice".into(),
                rule: "limit[0]".into(),
                limit: "10/hour (burst 10)".into(),
                available: Some(0),
                allowed: 10,
                denied: 3,
                bytes: 1234,
                ..Default::default()
            }],
            kernel_errors: [("ringbuf_full".to_string(), 0)].into(),
            ..Default::default()
        };
        let out = render(&v);
        assert!(out.contains("mode enforce"), "{out}");
        assert!(
            out.contains("limit[0]  7     10/hour (burst 10)  users 1000-1999"),
            "{out}"
        );
        assert!(out.contains("uid   alice"), "{out}");
        assert!(!out.contains("kernel errors"));
    }
}
