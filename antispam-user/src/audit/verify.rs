//! `antispam audit verify`: the hash chain, the seals (with the verification key), and the head
//! against a checkpoint kept elsewhere.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{
    record_hash,
    seal::{EpochKey, VerifyKey},
    GENESIS,
};

/// One record as the checks after the chain need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line in the file.
    pub line: usize,
    pub seq: u64,
    pub hash: String,
    pub event: String,
    pub epoch: Option<u64>,
    pub seal: Option<String>,
    /// `sealing_started`: the key it names.
    pub key_id: Option<String>,
}

/// The result of verifying a chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: String,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// Every record, in order (seq 1, 2, …).
    pub chain: Vec<Record>,
}

/// A place where the chain is broken: 1-based line and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub line: usize,
    pub reason: String,
}

/// Walks the chain in `text`; stops at the first break.
pub fn verify(text: &str) -> Result<Verified, Broken> {
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1u64;
    let mut first_ts = None;
    let mut last_ts = None;
    let mut chain = Vec::new();
    let count = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let broken = |reason: String| Broken {
            line: line_no,
            reason,
        };
        let last_cut_short = line_no == count && !text.ends_with('\n');
        let v: Value = serde_json::from_str(line).map_err(|e| {
            broken(if last_cut_short {
                format!("the last record was cut short ({e}): a write that did not finish (a crash or a full disk); `antispam run` removes it and records the repair")
            } else {
                format!("not a JSON record: {e}")
            })
        })?;
        let Value::Object(rec) = v else {
            return Err(broken("not a JSON object".into()));
        };
        let seq = rec
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| broken("no seq".into()))?;
        let rec_prev = rec
            .get("prev")
            .and_then(Value::as_str)
            .ok_or_else(|| broken("no prev".into()))?;
        let hash = rec
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| broken("no hash".into()))?;
        if record_hash(rec_prev, &rec) != hash {
            return Err(broken(format!(
                "record {seq} was altered: its hash does not match its content"
            )));
        }
        if seq != expected_seq {
            return Err(broken(if seq > expected_seq {
                format!(
                    "record {seq} follows record {}: records {expected_seq} to {} were removed",
                    expected_seq - 1,
                    seq - 1
                )
            } else {
                format!(
                    "record {seq} appears after record {}: records were reordered or duplicated",
                    expected_seq - 1
                )
            }));
        }
        if rec_prev != prev {
            return Err(broken(format!(
                "record {seq} does not follow the record before it (its prev hash differs): records were removed or reordered"
            )));
        }
        let ts = rec.get("ts").and_then(Value::as_str).map(str::to_string);
        if first_ts.is_none() {
            first_ts = ts.clone();
        }
        last_ts = ts;
        let event = rec
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        chain.push(Record {
            line: line_no,
            seq,
            hash: hash.to_string(),
            key_id: (event == "sealing_started")
                .then(|| rec["details"]["key_id"].as_str().map(str::to_string))
                .flatten(),
            event,
            epoch: rec.get("epoch").and_then(Value::as_u64),
            seal: rec.get("seal").and_then(Value::as_str).map(str::to_string),
        });
        prev = hash.to_string();
        expected_seq += 1;
    }
    Ok(Verified {
        records: expected_seq - 1,
        head: prev,
        first_ts,
        last_ts,
        chain,
    })
}

/// Records of one epoch whose seals verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRun {
    pub key_id: String,
    pub epoch: u64,
    /// When the epoch began and ended (Unix seconds).
    pub from: u64,
    pub to: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// The first record whose seal fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSeal {
    /// 0: the file as a whole.
    pub line: usize,
    pub seq: u64,
    pub epoch: Option<u64>,
    pub reason: String,
}

/// What the seals say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReport {
    /// Records before the first `sealing_started` (written before sealing was set up).
    pub unsealed_before: u64,
    /// The epochs that verified, in order, up to the first bad record.
    pub epochs: Vec<EpochRun>,
    pub bad: Option<BadSeal>,
}

impl SealReport {
    pub fn sealed_records(&self) -> u64 {
        self.epochs
            .iter()
            .map(|e| e.last_seq - e.first_seq + 1)
            .sum()
    }
}

/// Checks every record's seal with the verification keys (one per `sealing_started`).
///
/// Records before the first `sealing_started` may be unsealed (the log is older than its key);
/// from there on every record must be sealed, in epochs that never go back, with the key that
/// the last `sealing_started` names. A log with no sealed record fails: the seals were removed.
pub fn check_seals(chain: &[Record], keys: &[VerifyKey], now: SystemTime) -> SealReport {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut report = SealReport {
        unsealed_before: 0,
        epochs: Vec::new(),
        bad: None,
    };
    let mut current: Option<(&VerifyKey, EpochKey, u64)> = None;
    for r in chain {
        let bad = |reason: String| BadSeal {
            line: r.line,
            seq: r.seq,
            epoch: r.epoch,
            reason,
        };
        if r.event == "sealing_started" {
            let id = r.key_id.clone().unwrap_or_default();
            let Some(vk) = keys.iter().find(|k| k.id() == id) else {
                report.bad = Some(bad(format!(
                    "record {} starts sealing with key {id}, which is not a verification key given (--key)",
                    r.seq
                )));
                return report;
            };
            current = Some((vk, vk.first_key(), r.seq));
        }
        let Some((vk, key, started_at)) = current.as_mut() else {
            if r.seal.is_some() {
                report.bad = Some(bad(format!(
                    "record {} is sealed but no sealing_started record comes before it: the records before it were rewritten",
                    r.seq
                )));
                return report;
            }
            report.unsealed_before += 1;
            continue;
        };
        let (Some(seal), Some(epoch)) = (r.seal.as_deref(), r.epoch) else {
            report.bad = Some(bad(format!(
                "record {} is not sealed, but sealing began at record {started_at}: it was written or rewritten without the key",
                r.seq
            )));
            return report;
        };
        if epoch < key.epoch {
            report.bad = Some(bad(format!(
                "record {} is sealed in epoch {epoch}, after a record of epoch {}: epochs only go forward",
                r.seq, key.epoch
            )));
            return report;
        }
        let latest = now.saturating_sub(vk.start) / vk.epoch_secs + 1;
        if epoch > latest {
            report.bad = Some(bad(format!(
                "record {} is sealed in epoch {epoch}, which has not begun yet (now is in epoch {})",
                r.seq,
                latest - 1
            )));
            return report;
        }
        key.advance_to(epoch);
        if !key.check(&r.hash, seal) {
            report.bad = Some(bad(format!(
                "record {} (epoch {epoch}) does not match its seal: it was changed or written after epoch {epoch}'s key was erased, or sealed with another key",
                r.seq
            )));
            return report;
        }
        let id = vk.id();
        match report.epochs.last_mut() {
            Some(run) if run.epoch == epoch && run.key_id == id => run.last_seq = r.seq,
            _ => report.epochs.push(EpochRun {
                key_id: id,
                epoch,
                from: vk.epoch_start(epoch),
                to: vk.epoch_start(epoch + 1),
                first_seq: r.seq,
                last_seq: r.seq,
            }),
        }
    }
    if current.is_none() {
        report.bad = Some(BadSeal {
            line: 0,
            seq: 0,
            epoch: None,
            reason: "no record is sealed: the log was never sealed, or its seals were removed"
                .into(),
        });
    }
    report
}

/// A head seen elsewhere (a checkpoint): `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// A `--expect-head` that is not `SEQ:HASH`.
#[derive(Debug, thiserror::Error)]
pub enum BadHead {
    #[error("{0:?}: expected SEQ:HASH")]
    Form(String),
    #[error("{0:?}: the sequence number is not a number")]
    Sequence(String),
    #[error("{0:?}: the hash is 64 hex digits")]
    Hash(String),
}

impl std::str::FromStr for Head {
    type Err = BadHead;

    fn from_str(s: &str) -> Result<Head, BadHead> {
        let (seq, hash) = s.split_once(':').ok_or_else(|| BadHead::Form(s.into()))?;
        let seq = seq
            .trim()
            .parse()
            .map_err(|_| BadHead::Sequence(s.into()))?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadHead::Hash(s.into()));
        }
        Ok(Head { seq, hash })
    }
}

/// How a log does not hold a checkpoint.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadNotHeld {
    #[error(
        "the log ends at record {records}, but a checkpoint saw record {seen}: records {} and on were removed",
        records + 1
    )]
    Cut { records: u64, seen: u64 },
    #[error(
        "record {seq} (line {line}) has hash {hash}, but a checkpoint saw {seen}: the log was rewritten from there or before"
    )]
    Rewritten {
        seq: u64,
        line: usize,
        hash: String,
        seen: String,
    },
}

/// Does the chain hold the checkpoint `head`? Err says how it does not.
pub fn check_head(v: &Verified, head: &Head) -> Result<(), HeadNotHeld> {
    match v.chain.get((head.seq as usize).wrapping_sub(1)) {
        None => Err(HeadNotHeld::Cut {
            records: v.records,
            seen: head.seq,
        }),
        Some(r) if r.hash != head.hash => Err(HeadNotHeld::Rewritten {
            seq: r.seq,
            line: r.line,
            hash: r.hash.clone(),
            seen: head.hash.clone(),
        }),
        Some(_) => Ok(()),
    }
}
