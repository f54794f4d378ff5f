//! The peers, inside the bench netns only: an nftables `meta skuid` meter and iptables
//! `-m owner` + `-m hashlimit` (one rule per UID, the way CSF/cPanel do it). Each is loaded once
//! and switched on and off by adding or deleting its hook (base chain), so the "no filter"
//! baseline runs with no netfilter hook registered at all.

use std::fmt::Write as _;

use anyhow::Result;

use super::{env::Netns, SMTP_PORT};

/// A rate no storm here reaches: every connect is counted and allowed.
pub const HUGE_RATE: u64 = 1_000_000;

/// Above this many UIDs, iptables rules share one hashlimit table: loading 100,000 rules with
/// a table each did not finish in 120 s here (every table name is looked up in a list).
pub const IPT_DISTINCT_NAMES_MAX: u32 = 1000;

pub fn nft_load(ns: &Netns, dir: &std::path::Path) -> Result<()> {
    let rules = format!(
        "table inet asbench {{
  set uids {{ typeof meta skuid; size 2097152; flags dynamic; }}
  chain uidlimit {{ update @uids {{ meta skuid counter limit rate over {HUGE_RATE}/second burst {HUGE_RATE} packets }} drop; }}
}}
"
    );
    let f = dir.join("asbench.nft");
    std::fs::write(&f, rules)?;
    ns.exec("nft", &["-f", &f.to_string_lossy()])?;
    Ok(())
}

/// Forgets every UID's meter entry (between scale steps).
pub fn nft_flush_set(ns: &Netns) -> Result<()> {
    ns.exec("nft", &["flush", "set", "inet", "asbench", "uids"])?;
    Ok(())
}

pub fn nft_on(ns: &Netns) -> Result<()> {
    ns.exec(
        "nft",
        &["add chain inet asbench out { type filter hook output priority 0; policy accept; }"],
    )?;
    ns.exec(
        "nft",
        &[&format!(
            "add rule inet asbench out tcp dport {SMTP_PORT} tcp flags & (syn | ack | rst) == syn jump uidlimit"
        )],
    )?;
    Ok(())
}

pub fn nft_off(ns: &Netns) -> Result<()> {
    ns.exec("nft", &["delete", "chain", "inet", "asbench", "out"])?;
    Ok(())
}

/// Loads chain ASB with one `-m owner --uid-owner U -m hashlimit` rule per UID in `a..=b`.
pub fn ipt_load(ns: &Netns, dir: &std::path::Path, a: u32, b: u32) -> Result<()> {
    let distinct = b - a < IPT_DISTINCT_NAMES_MAX;
    let mut s = String::from("*filter\n:ASB - [0:0]\n");
    for uid in a..=b {
        let name = if distinct {
            format!("asb{uid}")
        } else {
            "asb".to_string()
        };
        let _ = writeln!(
            s,
            "-A ASB -m owner --uid-owner {uid} -m hashlimit --hashlimit-above {HUGE_RATE}/sec \
             --hashlimit-burst {HUGE_RATE} --hashlimit-name {name} --hashlimit-htable-size 16 \
             --hashlimit-htable-expire 3600000 -j DROP"
        );
    }
    s.push_str("COMMIT\n");
    let f = dir.join("asbench.iptables");
    std::fs::write(&f, s)?;
    ns.exec("iptables-restore", &[&f.to_string_lossy()])?;
    // iptables-restore may create the built-in base chains; the baseline must have no hooks.
    ipt_drop_base_chains(ns);
    Ok(())
}

fn jump() -> Vec<String> {
    [
        "-p",
        "tcp",
        "--dport",
        &SMTP_PORT.to_string(),
        "--syn",
        "-j",
        "ASB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn ipt_on(ns: &Netns) -> Result<()> {
    let mut args = vec!["-A".to_string(), "OUTPUT".to_string()];
    args.extend(jump());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.exec("iptables", &args)?;
    Ok(())
}

pub fn ipt_off(ns: &Netns) -> Result<()> {
    let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
    args.extend(jump());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.exec("iptables", &args)?;
    ipt_drop_base_chains(ns);
    Ok(())
}

/// iptables-nft leaves empty built-in chains (hooks) behind; delete them (errors ignored: a
/// chain that does not exist or is not empty stays as it is).
fn ipt_drop_base_chains(ns: &Netns) {
    for chain in ["OUTPUT", "INPUT", "FORWARD"] {
        let _ = ns.exec("nft", &["delete", "chain", "ip", "filter", chain]);
    }
}

pub fn ipt_flush(ns: &Netns) -> Result<()> {
    ns.exec("iptables", &["-F", "ASB"])?;
    Ok(())
}
