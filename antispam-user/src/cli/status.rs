//! `antispam status`: what the running agent enforces, and usage per UID and cgroup.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::Duration,
};

use serde_json::Value;

#[derive(clap::Args)]
pub struct Args {
    /// Address of the running agent's HTTP endpoint (its --metrics-addr).
    #[arg(long, default_value = crate::http::DEFAULT_ADDR, env = "ANTISPAM_ADDR")]
    addr: SocketAddr,
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn fetch(addr: SocketAddr) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        format!("cannot reach the agent at {addr}: {e} (is `antispam run` running? see --addr)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    let (head, json) = body
        .split_once("\r\n\r\n")
        .ok_or("malformed reply from the agent")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "the agent answered: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    serde_json::from_str(json).map_err(|e| format!("malformed status JSON: {e}"))
}

pub fn main(args: Args) -> ExitCode {
    let v = match fetch(args.addr) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("antispam status: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    print!("{}", render(&v));
    ExitCode::SUCCESS
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, widths from the content.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn render(v: &Value) -> String {
    let mut out = format!(
        "antispam {}: mode {}, policy {} (generation {}), attached to cgroup {} ({} programs)\nports {}, default rate {}\n\n",
        s(&v["version"]),
        s(&v["mode"]),
        s(&v["policy"]),
        s(&v["generation"]),
        s(&v["cgroup"]),
        s(&v["programs_attached"]),
        v["ports"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default(),
        s(&v["default_rate"]),
    );
    let rules: Vec<Vec<String>> = v["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let mut what = Vec::new();
                    for (k, label) in [
                        ("users", "users"),
                        ("cgroups", "cgroups"),
                        ("destinations", "destinations"),
                    ] {
                        if let Some(list) = r[k].as_array().filter(|l| !l.is_empty()) {
                            let shown: Vec<String> = list.iter().take(4).map(s).collect();
                            let more = if list.len() > 4 {
                                format!(" +{}", list.len() - 4)
                            } else {
                                String::new()
                            };
                            what.push(format!("{label} {}{more}", shown.join(",")));
                        }
                    }
                    vec![s(&r["name"]), s(&r["line"]), s(&r["rate"]), what.join("; ")]
                })
                .collect()
        })
        .unwrap_or_default();
    if v["kill_switch"]["on"] == true {
        out.push_str(&format!(
            "KILL SWITCH ON since {} by {}: {} (only allow-listed UIDs may send)\n\n",
            s(&v["kill_switch"]["since"]),
            s(&v["kill_switch"]["by"]),
            s(&v["kill_switch"]["reason"])
        ));
    }
    let susp: Vec<Vec<String>> = v["suspensions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    vec![
                        s(&x["target"]),
                        s(&x["since"]),
                        s(&x["until"]),
                        s(&x["by"]),
                        s(&x["reason"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let bg = crate::cli::break_glass::rows(&v["break_glass"]);
    if !bg.is_empty() {
        out.push_str("BREAK GLASS\n");
        out.push_str(&table(&crate::cli::break_glass::HEADER, &bg));
        out.push('\n');
    }
    if !susp.is_empty() {
        out.push_str("SUSPENDED\n");
        out.push_str(&table(&["TARGET", "SINCE", "UNTIL", "BY", "REASON"], &susp));
        out.push('\n');
    }
    out.push_str("RULES\n");
    out.push_str(&table(&["RULE", "LINE", "RATE", "APPLIES TO"], &rules));
    let keys: Vec<Vec<String>> = v["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| {
                    vec![
                        s(&k["kind"]),
                        s(&k["name"]),
                        s(&k["rule"]),
                        s(&k["limit"]),
                        s(&k["available"]),
                        s(&k["allowed"]),
                        s(&k["denied"]),
                        s(&k["would_deny"]),
                        s(&k["bytes"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str("\nUSAGE (most refused first)\n");
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
    let errs: Vec<String> = v["kernel_errors"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect()
        })
        .unwrap_or_default();
    if !errs.is_empty() {
        out.push_str(&format!("\nkernel errors: {}\n", errs.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables() {
        let v = serde_json::json!({
            "version": "0.1.0", "mode": "enforce", "policy": "/etc/antispam/policy.toml", "generation": 2,
            "cgroup": "/", "programs_attached": 3, "ports": [25, 587], "default_rate": "30/minute (burst 30)",
            "rules": [{"name": "limit[0]", "line": 7, "rate": "10/hour (burst 10)", "users": ["1000-1999"], "cgroups": [], "destinations": []}],
            "keys": [{"kind": "uid", "name": "alice", "rule": "limit[0]", "limit": "10/hour (burst 10)", "available": 0, "allowed": 10, "denied": 3, "would_deny": 0, "bytes": 1234}],
            "kernel_errors": {"ringbuf_full": 0},
        });
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
