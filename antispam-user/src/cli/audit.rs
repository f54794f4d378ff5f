//! `antispam audit verify FILE [--key K] [--expect-head SEQ:HASH]` and `antispam audit
//! setup-keys`.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    audit::{
        self,
        seal::{Sealer, VerifyKey},
        Head,
    },
    clock,
};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Verify an audit log: its hash chain; with --key, every record's seal; with
    /// --expect-head, that it still holds a head seen elsewhere. Exit 0 if all holds, 1 with the
    /// first bad record, 2 if the file cannot be read.
    Verify {
        /// The audit log (default: the agent's default location).
        #[arg(default_value = crate::defaults::AUDIT_LOG)]
        file: PathBuf,
        /// The verification key `setup-keys` printed (AS1-…); once per key if it was replaced.
        /// Also from the environment (ANTISPAM_AUDIT_KEY), to keep it out of the shell history.
        #[arg(long = "key", value_name = "KEY", env = "ANTISPAM_AUDIT_KEY")]
        keys: Vec<String>,
        /// A head seen elsewhere (a checkpoint line, the metrics): the log must hold record SEQ
        /// with this hash. May be given several times.
        #[arg(long = "expect-head", value_name = "SEQ:HASH")]
        heads: Vec<Head>,
        /// The fleet store the agent appended its heads to (`antispam run --fleet-store`):
        /// every checkpoint there must be held (a log cut or rewritten after one fails).
        #[arg(long, value_name = "URL")]
        checkpoints: Option<String>,
        /// The host whose checkpoints to check (its --fleet-host). Default: this host's name.
        #[arg(long, value_name = "NAME", requires = "checkpoints")]
        fleet_host: Option<String>,
        /// As for `antispam run`.
        #[arg(long, value_name = "FILE", requires = "checkpoints")]
        fleet_password_file: Option<PathBuf>,
        #[arg(long, value_name = "FILE", requires = "checkpoints")]
        fleet_ca: Option<PathBuf>,
    },
    /// Make the sealing key: write the first epoch's key beside the audit log (0600) and print
    /// the verification key, once. Keep it off this host: whoever holds it can check the log,
    /// and seal records too.
    SetupKeys {
        #[command(flatten)]
        audit_log: super::args::AuditLog,
        /// How long one sealing key lives (default 15m): a root who takes the host can rewrite
        /// the records of the epoch it is in, no earlier one.
        #[arg(long, value_parser = humantime::parse_duration)]
        epoch: Option<Duration>,
        /// Replace an existing key file (records sealed with it then need its old key).
        #[arg(long)]
        force: bool,
    },
}

pub fn main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Verify {
            file,
            keys,
            mut heads,
            checkpoints,
            fleet_host,
            fleet_password_file,
            fleet_ca,
        } => {
            if let Some(url) = checkpoints {
                let store = crate::fleet::StoreConfig {
                    url,
                    ca: fleet_ca,
                    password_file: fleet_password_file,
                };
                let host = fleet_host.unwrap_or_else(crate::control::signed::host_name);
                match stored_heads(store, &host) {
                    Ok(h) => heads.extend(h),
                    Err(code) => return code,
                }
            }
            verify(&file, &keys, &heads)
        }
        Command::SetupKeys {
            audit_log,
            epoch,
            force,
        } => setup_keys(
            &audit_log.path,
            epoch.unwrap_or(crate::audit::seal::DEFAULT_EPOCH),
            force,
        ),
    }
}

fn setup_keys(log: &std::path::Path, epoch: Duration, force: bool) -> ExitCode {
    let path = audit::key_path(log);
    let made = VerifyKey::generate(SystemTime::now(), epoch)
        .and_then(|vk| Sealer::create(&path, &vk, force).map(|_| vk));
    let vk = match made {
        Ok(vk) => vk,
        Err(e) => {
            eprintln!("antispam audit setup-keys: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "Sealing key written to {} (0600). The agent seals {} from its next record on.",
        path.display(),
        log.display()
    );
    println!("The verification key, shown only now: keep it off this host (a password manager, paper, the auditor):");
    println!();
    println!("    {}", vk.encode());
    println!();
    println!(
        "key id {}, epochs of {} from {} (for a QR code: qrencode -t ansiutf8 'KEY')",
        vk.id(),
        humantime::format_duration(Duration::from_secs(vk.epoch_secs)),
        clock::rfc3339(UNIX_EPOCH + Duration::from_secs(vk.start))
    );
    println!(
        "An auditor checks the log with: antispam audit verify {} --key KEY",
        log.display()
    );
    ExitCode::SUCCESS
}

/// The heads `host` appended to the fleet store, as `--expect-head`s.
fn stored_heads(store: crate::fleet::StoreConfig, host: &str) -> Result<Vec<Head>, ExitCode> {
    let url = store.redacted();
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("antispam audit verify: {e}");
            ExitCode::from(2)
        })?
        .block_on(async {
            let mut s = crate::fleet::Store::new(store, Duration::from_secs(10))?;
            s.checkpoints(host).await
        });
    match fetched {
        Ok(c) if c.is_empty() => {
            eprintln!(
                "antispam audit verify: {url} holds no checkpoint of host {host:?} (stream {}): nothing to hold the log to",
                crate::fleet::checkpoint_key(host)
            );
            Err(ExitCode::FAILURE)
        }
        Ok(c) => {
            println!(
                "{} checkpoints of host {host:?} in {url}, {} to {}",
                c.len(),
                c.first().map_or("-", |c| c.time.as_str()),
                c.last().map_or("-", |c| c.time.as_str())
            );
            Ok(c.into_iter()
                .map(|c| Head {
                    seq: c.seq,
                    hash: c.hash,
                })
                .collect())
        }
        Err(e) => {
            eprintln!("antispam audit verify: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn when(secs: u64) -> String {
    clock::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

fn verify(file: &std::path::Path, keys: &[String], heads: &[Head]) -> ExitCode {
    let mut parsed = Vec::new();
    for k in keys {
        match VerifyKey::parse(k) {
            Ok(k) => parsed.push(k),
            Err(e) => {
                eprintln!("antispam audit verify: --key: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let v = match audit::verify(&text) {
        Ok(v) => v,
        Err(b) => {
            eprintln!("{}:{}: chain broken: {}", file.display(), b.line, b.reason);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{}: ok: {} records, {} to {}, head {}",
        file.display(),
        v.records,
        v.first_ts.as_deref().unwrap_or("-"),
        v.last_ts.as_deref().unwrap_or("-"),
        v.head
    );
    let mut failed = false;
    if !parsed.is_empty() {
        let r = audit::check_seals(&v.chain, &parsed, SystemTime::now());
        if r.unsealed_before > 0 {
            println!(
                "{}: records 1 to {} were written before sealing began (not sealed)",
                file.display(),
                r.unsealed_before
            );
        }
        for e in &r.epochs {
            println!(
                "{}: epoch {} ({} to {}, key {}): records {} to {} sealed ok",
                file.display(),
                e.epoch,
                when(e.from),
                when(e.to),
                e.key_id,
                e.first_seq,
                e.last_seq
            );
        }
        match &r.bad {
            None => println!(
                "{}: sealed: {} records in {} epoch(s) verify with the key",
                file.display(),
                r.sealed_records(),
                r.epochs.len()
            ),
            Some(b) => {
                failed = true;
                let epoch = b.epoch.map_or(String::new(), |e| format!(", epoch {e}"));
                if b.line == 0 {
                    eprintln!("{}: seal broken: {}", file.display(), b.reason);
                } else {
                    eprintln!(
                        "{}:{}: seal broken at record {}{epoch}: {}",
                        file.display(),
                        b.line,
                        b.seq,
                        b.reason
                    );
                }
            }
        }
    }
    for h in heads {
        match audit::check_head(&v, h) {
            Ok(()) => println!(
                "{}: holds the checkpoint {}:{}",
                file.display(),
                h.seq,
                h.hash
            ),
            Err(why) => {
                failed = true;
                eprintln!("{}: checkpoint {} not held: {why}", file.display(), h.seq);
            }
        }
    }
    log::debug!("verified in {:?}", started.elapsed());
    if std::env::var_os("ANTISPAM_VERIFY_TIMING").is_some() {
        eprintln!("verified in {:?}", started.elapsed());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
