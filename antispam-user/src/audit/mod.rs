//! The audit log: an append-only, fsync'd hash chain of JSON lines.
//!
//! Each record carries its sequence number, the hash of the record before it, and its own hash
//! over both and its content: `hash = sha256(prev_hash || canonical JSON of the record without
//! "hash")`. Editing a record breaks its hash; removing or reordering records breaks the sequence
//! and the link to the previous hash. `antispam audit verify` walks the chain and says where.
//! Removing records from the *end* leaves a valid shorter chain: compare the head (sequence and
//! hash, in `antispam_audit_head_sequence` and the status) with a copy kept elsewhere.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::SystemTime,
};

pub use event::*;
use serde_json::{json, Map, Value};

use crate::{clock, digest::sha256_hex, sys::files};

mod event;

/// The `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the last record is not JSON ({source}); run `antispam audit verify`", path.display())]
    DamagedTail {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: the last record has no {field}; run `antispam audit verify`", path.display())]
    IncompleteTail { path: PathBuf, field: &'static str },
    #[error("encoding an audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The hash of a record: over the previous hash and the record without its "hash" field, in
/// serde_json's canonical (sorted-key, compact) form.
fn record_hash(prev: &str, record: &Map<String, Value>) -> String {
    let mut content = record.clone();
    content.remove("hash");
    let mut data = prev.as_bytes().to_vec();
    data.extend_from_slice(Value::Object(content).to_string().as_bytes());
    sha256_hex(&data)
}

/// An open audit log, appending to the chain.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    head: String,
    /// Records written since the agent started, and failures to write one.
    pub written: u64,
    pub failures: u64,
    /// The mode the file had when `open` tightened it to 0600.
    pub tightened: Option<u32>,
    /// What `open` removed: a last record cut short.
    pub repaired: Option<LogRepaired>,
}

impl AuditLog {
    /// Opens (or creates, 0600) the log and finds the head of its chain.
    ///
    /// A last line without its newline is a record whose write was cut short (a crash, a full
    /// disk): it is removed and the removal is the next record (`log_repaired`, with the bytes
    /// removed), so the chain verifies and the damage is on record. A last line that is complete
    /// but cannot be read as a record is refused: appending to it would hide the damage.
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        let io = |what| {
            move |source| Error::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        let (file, tightened) = files::open_private_append(path).map_err(io("opening"))?;
        let text = std::fs::read(path).map_err(io("reading"))?;
        let good = files::complete_len(&text);
        let (seq, head) = match files::last_line(&text[..good]) {
            None => (0, GENESIS.to_string()),
            Some(l) => head_of(path, &String::from_utf8_lossy(l))?,
        };
        let mut log = AuditLog {
            path: path.to_path_buf(),
            file,
            seq,
            head,
            written: 0,
            failures: 0,
            tightened,
            repaired: None,
        };
        if good < text.len() {
            files::cut_at(&log.file, good as u64)
                .map_err(io("removing the cut-short last record of"))?;
            let repair = LogRepaired::new("audit", path, good as u64, &text[good..]);
            log.append(&AuditEvent::LogRepaired(repair.clone()))?;
            log.repaired = Some(repair);
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (sequence number, hash) of the last record.
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.head)
    }

    /// Appends one record and fsyncs it; returns its sequence number.
    pub fn append(&mut self, event: &AuditEvent) -> Result<u64, Error> {
        let Value::Object(rec) = serde_json::to_value(event)? else {
            unreachable!("an adjacently tagged enum serializes as an object");
        };
        self.write(rec)
    }

    /// Appends a record of any shape: for tests that stand in for older versions' records.
    #[cfg(test)]
    pub(crate) fn append_raw(&mut self, event: &str, details: Value) -> Result<u64, Error> {
        let mut rec = Map::new();
        rec.insert("event".into(), json!(event));
        rec.insert("details".into(), details);
        self.write(rec)
    }

    /// Chains `rec` (its `event` and `details`) to the head, writes it and fsyncs it.
    fn write(&mut self, mut rec: Map<String, Value>) -> Result<u64, Error> {
        rec.insert("seq".into(), json!(self.seq + 1));
        rec.insert("ts".into(), json!(clock::rfc3339_micros(SystemTime::now())));
        rec.insert("prev".into(), json!(self.head));
        let hash = record_hash(&self.head, &rec);
        rec.insert("hash".into(), json!(hash));
        let mut line = Value::Object(rec).to_string();
        line.push('\n');
        match files::append_whole(&mut self.file, line.as_bytes(), true) {
            Ok(()) => {
                self.seq += 1;
                self.head = hash;
                self.written += 1;
                Ok(self.seq)
            }
            Err(source) => {
                self.failures += 1;
                Err(Error::Io {
                    what: "writing the audit log",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// (sequence number, hash) of the record on the last line of a log.
fn head_of(path: &Path, line: &str) -> Result<(u64, String), Error> {
    let v: Value = serde_json::from_str(line).map_err(|source| Error::DamagedTail {
        path: path.to_path_buf(),
        source,
    })?;
    let missing = |field| Error::IncompleteTail {
        path: path.to_path_buf(),
        field,
    };
    let seq = v["seq"].as_u64().ok_or_else(|| missing("seq"))?;
    let hash = v["hash"].as_str().ok_or_else(|| missing("hash"))?;
    Ok((seq, hash.to_string()))
}

/// The result of verifying a chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: String,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
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
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let broken = |reason: String| Broken {
            line: line_no,
            reason,
        };
        let last_cut_short = line_no == text.lines().count() && !text.ends_with('\n');
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
        prev = hash.to_string();
        expected_seq += 1;
    }
    Ok(Verified {
        records: expected_seq - 1,
        head: prev,
        first_ts,
        last_ts,
    })
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write};

    use super::*;

    fn stop(reason: &str) -> AuditEvent {
        AuditEvent::AgentStop(AgentStop {
            reason: reason.into(),
            generation: 1,
        })
    }

    fn chain(n: usize) -> (PathBuf, String) {
        // Tests run in parallel: each gets its own directory.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("antispam-audit-{}-{n}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(&stop(&format!("i{i}"))).unwrap();
        }
        // Reopening continues the same chain.
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head().0, n as u64);
        log.append(&stop("reopened")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        (dir, text)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (dir, text) = chain(5);
        let v = verify(&text).unwrap();
        assert_eq!(v.records, 6);
        assert_eq!(v.head.len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn edits_removals_and_reorders_are_found() {
        let (dir, text) = chain(5);
        let lines: Vec<&str> = text.lines().collect();

        let edited = text.replace("\"i2\"", "\"i7\"");
        assert_eq!(verify(&edited).unwrap_err().line, 3);
        assert!(verify(&edited)
            .unwrap_err()
            .reason
            .contains("record 3 was altered"));

        let mut removed = lines.clone();
        removed.remove(2);
        let e = verify(&removed.join("\n")).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("records 3 to 3 were removed"), "{e:?}");

        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        let e = verify(&reordered.join("\n")).unwrap_err();
        assert_eq!(e.line, 2);

        // Renumbering a removal away still breaks the link to the previous hash.
        let forged = lines[3].replace("\"seq\":4", "\"seq\":3");
        let e = verify(&[lines[0], lines[1], &forged].join("\n")).unwrap_err();
        assert_eq!(e.line, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_tail_is_refused_on_open() {
        let (dir, _) = chain(1);
        let path = dir.join("audit.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{not json\n").unwrap();
        assert!(AuditLog::open(&path)
            .unwrap_err()
            .to_string()
            .contains("the last record is not JSON"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_cut_short_is_removed_recorded_and_the_chain_verifies() {
        let (dir, text) = chain(2);
        let path = dir.join("audit.jsonl");
        let half = &text.lines().last().unwrap()[..40];
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(half.as_bytes()).unwrap();
        let err = verify(&std::fs::read_to_string(&path).unwrap()).unwrap_err();
        assert!(err.reason.contains("cut short"), "{err:?}");

        let log = AuditLog::open(&path).unwrap();
        let r = log.repaired.clone().expect("repaired");
        assert_eq!(r.removed, half);
        assert_eq!(r.offset, text.len() as u64);
        assert_eq!(log.head().0, 4, "three records and the repair");
        let text = std::fs::read_to_string(&path).unwrap();
        let v = verify(&text).unwrap();
        assert_eq!(v.records, 4);
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "log_repaired");
        assert_eq!(last["details"]["removed"], half);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
