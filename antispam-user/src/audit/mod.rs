//! The audit log: an append-only, fsync'd hash chain of JSON lines.
//!
//! Each record carries its sequence number, the hash of the record before it, and its own hash
//! over both and its content: `hash = sha256(prev_hash || canonical JSON of the record without
//! "hash")`. Editing a record breaks its hash; removing or reordering records breaks the sequence
//! and the link to the previous hash. `antispam audit verify` walks the chain and says where.
//! Removing records from the *end* leaves a valid shorter chain: compare the head (sequence and
//! hash, in the metrics, the status and the agent's checkpoint lines) with a copy kept
//! elsewhere (`verify --expect-head`).
//!
//! With a sealing key beside the log (`antispam audit setup-keys`), every record also carries
//! `epoch` and `seal`, an HMAC of its hash with a key that evolves every epoch (see [`seal`]):
//! a root who rewrites the log and recomputes every hash cannot recompute the seals of epochs
//! before it took the host. The hash covers `epoch`, not `seal`.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::SystemTime,
};

pub use event::*;
use seal::{SealError, Sealer};
use serde_json::{json, Map, Value};
pub use verify::{check_head, check_seals, verify, Broken, Head, SealReport, Verified};

use crate::{clock, digest::sha256_hex, sys::files};

mod event;
pub mod seal;
mod verify;

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
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The hash of a record: over the previous hash and the record without its "hash" and "seal"
/// fields, in serde_json's canonical (sorted-key, compact) form.
fn record_hash(prev: &str, record: &Map<String, Value>) -> String {
    let mut content = record.clone();
    content.remove("hash");
    content.remove("seal");
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
    /// The sealing key, when there is a key file beside the log.
    sealer: Option<Sealer>,
    /// Why the log is not sealed although it should be (a key file that cannot be read).
    pub seal_problem: Option<String>,
    /// The clock epochs are read from (tests move it).
    now: fn() -> SystemTime,
}

/// The key file of an audit log: beside it, `audit.key` for `audit.jsonl`.
pub fn key_path(log: &Path) -> PathBuf {
    log.with_extension("key")
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
            sealer: None,
            seal_problem: None,
            now: SystemTime::now,
        };
        let last_sealed = files::last_line(&text[..good])
            .is_some_and(|l| String::from_utf8_lossy(l).contains("\"seal\":"));
        log.load_sealer(SystemTime::now())?;
        if good < text.len() {
            files::cut_at(&log.file, good as u64)
                .map_err(io("removing the cut-short last record of"))?;
            let repair = LogRepaired::new("audit", path, good as u64, &text[good..]);
            log.append(&AuditEvent::LogRepaired(repair.clone()))?;
            log.repaired = Some(repair);
        }
        log.announce(last_sealed)?;
        Ok(log)
    }

    /// Loads the key file, if there is one. A key file that cannot be read leaves the log
    /// unsealed (`seal_problem`, and a `sealing_unavailable` record): enforcement does not stop
    /// for it, and `audit verify --key` fails on the unsealed records.
    fn load_sealer(&mut self, now: SystemTime) -> Result<(), Error> {
        let path = key_path(&self.path);
        match Sealer::load(&path) {
            Ok(Some(mut s)) => {
                if let Err(e) = s.advance(now) {
                    log::error!("audit sealing: {e}");
                }
                self.sealer = Some(s);
                self.seal_problem = None;
            }
            Ok(None) => {}
            Err(e) => {
                if self.seal_problem.is_none() {
                    self.seal_problem = Some(e.to_string());
                    self.append(&AuditEvent::SealingUnavailable(SealingUnavailable {
                        key_file: path,
                        error: e.to_string(),
                    }))?;
                }
            }
        }
        Ok(())
    }

    /// Records `sealing_started` when the key has not sealed the log's tail yet (a new key, or
    /// a log whose last record is not sealed).
    fn announce(&mut self, last_sealed: bool) -> Result<(), Error> {
        let Some(s) = self.sealer.as_ref() else {
            return Ok(());
        };
        if s.announced && last_sealed {
            return Ok(());
        }
        let event = AuditEvent::SealingStarted(SealingStarted {
            key_id: s.key_id.clone(),
            key_file: s.path().to_path_buf(),
            start: clock::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.start)),
            epoch_secs: s.epoch_secs,
            epoch: s.epoch(),
        });
        self.append(&event)?;
        if let Some(s) = self.sealer.as_mut() {
            if let Err(e) = s.set_announced() {
                log::error!("audit sealing: {e}");
            }
        }
        Ok(())
    }

    /// Evolves the sealing key when its epoch has ended, so that the old key is gone even when
    /// nothing is written; picks up a key file written since the log was opened. Returns the
    /// new epoch when the key evolved.
    pub fn tick(&mut self, now: SystemTime) -> Result<Option<u64>, Error> {
        match self.sealer.as_mut() {
            Some(s) => match s.advance(now) {
                Ok(true) => Ok(Some(s.epoch())),
                Ok(false) => Ok(None),
                Err(e) => Err(Error::Seal(e)),
            },
            None => {
                if key_path(&self.path).exists() && self.seal_problem.is_none() {
                    self.load_sealer(now)?;
                    self.announce(false)?;
                }
                Ok(None)
            }
        }
    }

    /// Reads epochs from `now` instead of the system clock.
    #[cfg(test)]
    pub(crate) fn set_clock(&mut self, now: fn() -> SystemTime) {
        self.now = now;
    }

    /// (key id, current epoch) when the log is sealed.
    pub fn sealing(&self) -> Option<(&str, u64)> {
        self.sealer.as_ref().map(|s| (s.key_id.as_str(), s.epoch()))
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
        if let Some(s) = self.sealer.as_mut() {
            // A key file that cannot be replaced is counted and retried (and reported,
            // summarised) by `tick`; the record is sealed with the key in memory either way.
            let _ = s.advance((self.now)());
            rec.insert("epoch".into(), json!(s.epoch()));
        }
        let hash = record_hash(&self.head, &rec);
        if let Some(s) = &self.sealer {
            rec.insert("seal".into(), json!(s.seal(&hash)));
        }
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

/// `text` with each record passed through `edit` (its 0-based index and the record) and every
/// hash computed again the way the chain does: what a root who rewrites the log does. Seals are
/// kept as they were (they cannot be computed without the key).
#[cfg(test)]
pub(crate) fn rehash(text: &str, edit: impl Fn(usize, &mut Map<String, Value>)) -> String {
    let mut prev = GENESIS.to_string();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(Value::Object(mut rec)) = serde_json::from_str::<Value>(line) else {
            panic!("line {}: not a record", i + 1);
        };
        edit(i, &mut rec);
        rec.insert("prev".into(), json!(prev));
        let hash = record_hash(&prev, &rec);
        rec.insert("hash".into(), json!(hash));
        prev = hash;
        out.push_str(&Value::Object(rec).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        fs::OpenOptions,
        io::Write,
        sync::atomic::{AtomicU64, Ordering},
        time::{Duration, UNIX_EPOCH},
    };

    use super::{seal::VerifyKey, *};

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

    /// The test clock, in Unix seconds.
    static NOW: AtomicU64 = AtomicU64::new(2_000_000_000);

    fn test_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW.load(Ordering::Relaxed))
    }

    /// A sealed log: two unsealed records, then a key (epochs of 60 s), five records in epoch 0,
    /// three in epoch 2. Returns the directory, the log's text and the verification key.
    fn sealed_chain() -> (
        PathBuf,
        String,
        VerifyKey,
        std::sync::MutexGuard<'static, ()>,
    ) {
        // The test clock is shared: one sealed chain at a time.
        static CLOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, _) = chain(1);
        let path = dir.join("audit.jsonl");
        let t0 = 2_000_000_000;
        let vk = VerifyKey::generate(
            UNIX_EPOCH + Duration::from_secs(t0),
            Duration::from_secs(60),
        )
        .unwrap();
        seal::Sealer::create(&key_path(&path), &vk, false).unwrap();
        NOW.store(t0 + 5, Ordering::Relaxed);
        let mut log = AuditLog::open(&path).unwrap();
        log.set_clock(test_now);
        assert_eq!(
            log.sealing().map(|(k, e)| (k.to_string(), e)),
            Some((vk.id(), 0))
        );
        for i in 0..4 {
            log.append(&stop(&format!("e0-{i}"))).unwrap();
        }
        NOW.store(t0 + 150, Ordering::Relaxed);
        for i in 0..3 {
            log.append(&stop(&format!("e2-{i}"))).unwrap();
        }
        assert_eq!(log.sealing().unwrap().1, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        (dir, text, vk, guard)
    }

    #[test]
    fn a_sealed_log_verifies_epoch_by_epoch_with_its_key() {
        let (dir, text, vk, _clock) = sealed_chain();
        let v = verify(&text).unwrap();
        assert_eq!(v.records, 10);
        let r = check_seals(&v.chain, std::slice::from_ref(&vk), test_now());
        assert_eq!(r.bad, None);
        assert_eq!(r.unsealed_before, 2, "the records before the key");
        let runs: Vec<(u64, u64, u64)> = r
            .epochs
            .iter()
            .map(|e| (e.epoch, e.first_seq, e.last_seq))
            .collect();
        assert_eq!(runs, vec![(0, 3, 7), (2, 8, 10)]);
        assert_eq!(v.chain[2].event, "sealing_started");
        // The key file holds epoch 2's key only.
        let key_file = std::fs::read_to_string(key_path(&dir.join("audit.jsonl"))).unwrap();
        assert!(key_file.contains("\"epoch\":2"), "{key_file}");
        // Another key does not verify it.
        let other = VerifyKey::generate(test_now(), Duration::from_secs(60)).unwrap();
        let r = check_seals(&v.chain, &[other], test_now());
        assert!(r
            .bad
            .unwrap()
            .reason
            .contains("which is not a verification key given"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_rewritten_with_every_hash_recomputed_fails_the_seal_check() {
        let (dir, text, vk, _clock) = sealed_chain();
        // Record 5 (epoch 0) changed, every hash after it recomputed: the chain holds.
        let forged = rehash(&text, |i, rec| {
            if i == 4 {
                rec["details"]["reason"] = json!("nothing happened");
            }
        });
        let v = verify(&forged).expect("the recomputed chain verifies without the key");
        let r = check_seals(&v.chain, std::slice::from_ref(&vk), test_now());
        let bad = r.bad.expect("the seal check fails");
        assert_eq!((bad.seq, bad.line, bad.epoch), (5, 5, Some(0)), "{bad:?}");
        assert!(bad.reason.contains("does not match its seal"), "{bad:?}");
        assert_eq!(r.epochs.len(), 1, "epoch 0 up to record 4 verified");
        assert_eq!(r.epochs[0].last_seq, 4);

        // Seals stripped from every record: fails at sealing_started, which is not sealed.
        let strip = |rec: &mut Map<String, Value>| {
            rec.remove("seal");
            rec.remove("epoch");
        };
        let v = verify(&rehash(&text, |_, rec| strip(rec))).unwrap();
        let bad = check_seals(&v.chain, std::slice::from_ref(&vk), test_now())
            .bad
            .unwrap();
        assert_eq!((bad.seq, bad.line), (3, 3), "{bad:?}");
        // ... and with sealing_started made into another record, nothing is sealed: fails.
        let stripped = rehash(&text, |_, rec| {
            strip(rec);
            if rec["event"] == "sealing_started" {
                rec.insert("event".into(), json!("agent_stop"));
            }
        });
        let v = verify(&stripped).unwrap();
        let bad = check_seals(&v.chain, std::slice::from_ref(&vk), test_now())
            .bad
            .unwrap();
        assert_eq!(bad.line, 0);
        assert!(bad.reason.contains("no record is sealed"), "{bad:?}");

        // The records up to epoch 2 unsealed (sealing_started among them): fails at the first
        // sealed record left.
        let head_stripped = rehash(&text, |i, rec| {
            if i < 7 {
                strip(rec);
                if rec["event"] == "sealing_started" {
                    rec.insert("event".into(), json!("agent_stop"));
                }
            }
        });
        let v = verify(&head_stripped).unwrap();
        let bad = check_seals(&v.chain, std::slice::from_ref(&vk), test_now())
            .bad
            .unwrap();
        assert_eq!(bad.seq, 8, "{bad:?}");
        assert!(
            bad.reason
                .contains("no sealing_started record comes before it"),
            "{bad:?}"
        );

        // An unsealed record appended after sealing began (the key file removed).
        std::fs::remove_file(key_path(&dir.join("audit.jsonl"))).unwrap();
        let mut log = AuditLog::open(&dir.join("audit.jsonl")).unwrap();
        assert!(log.sealing().is_none());
        log.append(&stop("unsealed")).unwrap();
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
        let v = verify(&text).unwrap();
        let bad = check_seals(&v.chain, std::slice::from_ref(&vk), test_now())
            .bad
            .unwrap();
        assert_eq!(bad.seq, 11);
        assert!(
            bad.reason
                .contains("is not sealed, but sealing began at record 3"),
            "{bad:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_log_cut_after_a_checkpoint_fails_the_head_check() {
        let (dir, text, _, _clock) = sealed_chain();
        let v = verify(&text).unwrap();
        let head: Head = format!("{}:{}", v.records, v.head).parse().unwrap();
        assert_eq!(check_head(&v, &head), Ok(()));
        let cut: String = text.lines().take(8).map(|l| format!("{l}\n")).collect();
        let c = verify(&cut).expect("a cut log is a valid shorter chain");
        let e = check_head(&c, &head).unwrap_err();
        assert!(e.to_string().contains("the log ends at record 8"), "{e}");
        let other: Head = format!("3:{}", v.head).parse().unwrap();
        assert!(check_head(&v, &other)
            .unwrap_err()
            .to_string()
            .contains("rewritten"));
        assert!("3".parse::<Head>().is_err() && "x:ab".parse::<Head>().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_written_while_the_log_is_open_is_picked_up_at_the_next_tick() {
        let (dir, _) = chain(1);
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        assert!(log.sealing().is_none());
        assert_eq!(log.tick(SystemTime::now()).unwrap(), None);
        let vk = VerifyKey::generate(SystemTime::now(), Duration::from_secs(60)).unwrap();
        seal::Sealer::create(&key_path(&path), &vk, false).unwrap();
        log.tick(SystemTime::now()).unwrap();
        assert_eq!(log.sealing().map(|(k, _)| k.to_string()), Some(vk.id()));
        log.append(&stop("sealed")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v = verify(&text).unwrap();
        assert_eq!(v.chain[2].event, "sealing_started");
        let r = check_seals(&v.chain, std::slice::from_ref(&vk), SystemTime::now());
        assert_eq!((r.sealed_records(), r.unsealed_before, r.bad), (2, 2, None));
        // Reopened with the key: no second sealing_started.
        drop(log);
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&stop("again")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("sealing_started").count(), 1);
        // A damaged key file leaves the log unsealed, on record.
        std::fs::write(key_path(&path), "{").unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert!(log.sealing().is_none() && log.seal_problem.is_some());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().last().unwrap().contains("sealing_unavailable"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Sealing cost per record and verification time, for docs/design.md (run with
    /// `cargo test --release -p antispam-user seal_figures -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn seal_figures() {
        let (dir, _) = chain(0);
        let path = dir.join("audit.jsonl");
        let n = 100_000;
        let vk = VerifyKey::generate(SystemTime::now(), Duration::from_secs(900)).unwrap();
        let mut log = AuditLog::open(&path).unwrap();
        let t = std::time::Instant::now();
        let unsealed: Vec<String> = (0..n)
            .map(|i| {
                let mut r = Map::new();
                r.insert("event".into(), json!("agent_stop"));
                r.insert(
                    "details".into(),
                    json!({"reason": format!("r{i}"), "generation": 1}),
                );
                r.insert("seq".into(), json!(i + 1));
                record_hash(GENESIS, &r)
            })
            .collect();
        let hash_only = t.elapsed();
        let k = vk.first_key();
        let t = std::time::Instant::now();
        for h in &unsealed {
            std::hint::black_box(k.seal(h));
        }
        let seal_only = t.elapsed();
        seal::Sealer::create(&key_path(&path), &vk, true).unwrap();
        log.load_sealer(SystemTime::now()).unwrap();
        // Appends without fsync would not be the agent's; count a few with it.
        let t = std::time::Instant::now();
        for i in 0..200 {
            log.append(&stop(&format!("s{i}"))).unwrap();
        }
        let appends = t.elapsed() / 200;
        let mut big = std::fs::read_to_string(&path).unwrap();
        let line = big.lines().last().unwrap().to_string();
        // A large sealed log: the same record shape, rehashed and sealed in memory.
        big.clear();
        let mut prev = GENESIS.to_string();
        for i in 0..n {
            let Ok(Value::Object(mut rec)) = serde_json::from_str::<Value>(&line) else {
                unreachable!()
            };
            rec.insert("seq".into(), json!(i + 1));
            rec.insert("prev".into(), json!(prev));
            rec.insert("epoch".into(), json!(0));
            rec.insert(
                "event".into(),
                json!(if i == 0 {
                    "sealing_started"
                } else {
                    "agent_stop"
                }),
            );
            if i == 0 {
                rec.insert("details".into(), json!({"key_id": vk.id()}));
            }
            rec.remove("seal");
            let h = record_hash(&prev, &rec);
            rec.insert("seal".into(), json!(k.seal(&h)));
            rec.insert("hash".into(), json!(h));
            prev = h;
            big.push_str(&Value::Object(rec).to_string());
            big.push('\n');
        }
        let t = std::time::Instant::now();
        let v = verify(&big).unwrap();
        let chain_time = t.elapsed();
        let t = std::time::Instant::now();
        let r = check_seals(&v.chain, std::slice::from_ref(&vk), SystemTime::now());
        let seal_time = t.elapsed();
        assert_eq!(r.bad, None);
        eprintln!(
            "per record: hash {:?}, seal {:?}; append with fsync {appends:?}; {n} records ({} MB): chain {chain_time:?}, seals {seal_time:?}",
            hash_only / n as u32,
            seal_only / n as u32,
            big.len() / 1_000_000
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
