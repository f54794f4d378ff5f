//! `antispam report --since WHEN [--until WHEN] [--format markdown|json] [--audit-log FILE]
//! [--events FILE]...`: the evidence for an audit over a period. Exit 0; 1 when the audit log's
//! hash chain is broken (the report is still printed, with the break); 2 when a file cannot be
//! read or an argument is wrong.

use std::{
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::Context as _;

use crate::report::{self, Period, Records, Report, Trail};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// Headings and tables, for people.
    Markdown,
    /// One JSON object with the same content, for tools.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Start of the period: a UTC time (2026-11-23T10:00:00Z), a date (2026-11-23, midnight
    /// UTC) or a duration back from now (24h, 7d).
    #[arg(long)]
    since: String,
    /// End of the period, in the same forms (default: now).
    #[arg(long)]
    until: Option<String>,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    format: Format,
    #[command(flatten)]
    audit_log: super::args::AuditLog,
    /// An event log (JSON lines) to count refusals in; repeat for rotated files. Default: the
    /// files the agent wrote (`event_log` of the audit log's agent_start records).
    #[arg(long = "events")]
    events: Vec<PathBuf>,
    /// The verification key (`antispam audit setup-keys`): the report says whether every
    /// record's seal holds. Also from ANTISPAM_AUDIT_KEY.
    #[arg(long = "key", value_name = "KEY", env = "ANTISPAM_AUDIT_KEY")]
    keys: Vec<String>,
    /// The last checkpoint kept off the host (`antispam-audit-checkpoint seq=N hash=H` lines):
    /// the report says whether the log still holds it.
    #[arg(long = "expect-head", value_name = "SEQ:HASH")]
    heads: Vec<crate::audit::Head>,
}

pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("antispam report: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    let since = report::parse_time(&args.since, now).context("--since")?;
    let until = match &args.until {
        Some(u) => report::parse_time(u, now).context("--until")?,
        None => now,
    };
    if since > until {
        anyhow::bail!("--since is after --until");
    }
    let period = Period { since, until };
    let audit_path = args.audit_log.path.display().to_string();
    let bytes = std::fs::read(&args.audit_log.path)
        .with_context(|| format!("{audit_path}: cannot read"))?;
    // Not UTF-8 is damage the chain check names, not a reason to refuse to report.
    let text = String::from_utf8_lossy(&bytes);
    let records = Records::parse(&text);

    let trail = if args.events.is_empty() {
        let named = records.event_logs(&period);
        let mut trail = Trail::from_audit(period, &named);
        for path in &named.files {
            match open(path) {
                Ok(log) => trail.read(&path.display().to_string(), log),
                Err(e) => {
                    trail.unreadable(&path.display().to_string(), format!("cannot read: {e}"))
                }
            }
        }
        trail
    } else {
        let mut trail = Trail::new(period);
        for path in &args.events {
            let log = open(path).with_context(|| format!("{}: cannot read", path.display()))?;
            trail.read(&path.display().to_string(), log);
        }
        trail
    };

    let mut keys = Vec::new();
    for k in &args.keys {
        keys.push(crate::audit::seal::VerifyKey::parse(k).context("--key")?);
    }
    let chain = crate::audit::verify(&text);
    let (seal, checkpoints) = match &chain {
        Ok(v) => (
            (!keys.is_empty()).then(|| crate::audit::check_seals(&v.chain, &keys, now)),
            args.heads
                .iter()
                .map(|h| {
                    let why = crate::audit::check_head(v, h).err().map(|e| e.to_string());
                    report::Checkpoint {
                        seq: h.seq,
                        hash: h.hash.clone(),
                        held: why.is_none(),
                        why,
                    }
                })
                .collect(),
        ),
        Err(_) => (None, Vec::new()),
    };
    let mut r = Report::build(&audit_path, chain, &records, trail.finish(), period, now);
    r.check_evidence(seal, checkpoints);
    match args.format {
        Format::Markdown => print!("{}", r.markdown()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
    }
    if let report::Chain::Broken { line, reason } = &r.chain {
        eprintln!("antispam report: {audit_path}:{line}: audit chain BROKEN: {reason}");
        return Ok(ExitCode::FAILURE);
    }
    if let report::Seal::Broken { line, reason, .. } = &r.seal {
        eprintln!("antispam report: {audit_path}:{line}: audit seal BROKEN: {reason}");
    }
    for c in r.checkpoints.iter().filter(|c| !c.held) {
        eprintln!(
            "antispam report: {audit_path}: checkpoint {} not held: {}",
            c.seq,
            c.why.as_deref().unwrap_or("")
        );
    }
    if !r.evidence_holds() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn open(path: &Path) -> std::io::Result<BufReader<File>> {
    File::open(path).map(BufReader::new)
}
