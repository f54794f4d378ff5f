//! Forward-secure sealing of the audit log, in the way journald's Forward Secure Sealing works.
//!
//! `antispam audit setup-keys` draws a 128-bit seed, prints it once as the *verification key*
//! (with the start time and the epoch length) and writes only the first epoch's sealing key to
//! the key file beside the log. Time is cut into epochs (15 minutes by default); the sealing key
//! of epoch n+1 is `SHA-256(DOMAIN_EVOLVE || key_n)`, and when an epoch begins the agent
//! replaces the key file with the new key (durably) and overwrites the old one in memory. Each
//! record carries `epoch` and `seal = HMAC-SHA-256(key_epoch, DOMAIN_SEAL || hash)`, where
//! `hash` is the record's chain hash (which covers `seq`, `epoch`, `prev` and the content).
//!
//! So a root who takes the host at time T holds only the key of T's epoch: it cannot seal a
//! record of an earlier epoch, and a log rewritten and re-hashed fails verification with the
//! verification key from the first record it changed in an earlier epoch. The hash function
//! cannot be run backwards, so no later key gives an earlier one. The verification key derives
//! every epoch's key: whoever holds it can seal, so it stays off the host, with the auditor.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::sys::files;

/// How long one sealing key lives, unless `setup-keys --epoch` says otherwise.
pub const DEFAULT_EPOCH: Duration = Duration::from_secs(15 * 60);
/// The shortest and longest epoch `setup-keys` accepts.
pub const MIN_EPOCH: Duration = Duration::from_secs(10);
pub const MAX_EPOCH: Duration = Duration::from_secs(24 * 3600);

const DOMAIN_KEY0: &[u8] = b"antispam-seal-key0\0";
const DOMAIN_EVOLVE: &[u8] = b"antispam-seal-evolve\0";
const DOMAIN_SEAL: &[u8] = b"antispam-seal-1\0";
const DOMAIN_ID: &[u8] = b"antispam-seal-id\0";
/// The key file's `format`.
const FORMAT: &str = "antispam-seal-1";
/// The verification key's prefix (version 1).
const PREFIX: &str = "AS1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a sealing key file: {why}", path.display())]
    BadKeyFile { path: PathBuf, why: String },
    #[error("{}: a sealing key already exists; --force replaces it (records sealed with the old key then need the old verification key)", path.display())]
    Exists { path: PathBuf },
    #[error("not a verification key ({why}); it looks like AS1-XXXXXXXX-XXXXXXXX-XXXXXXXX-XXXXXXXX-START-SECONDS")]
    BadVerifyKey { why: String },
    #[error(
        "the epoch must be between {} and {}",
        humantime::format_duration(MIN_EPOCH),
        humantime::format_duration(MAX_EPOCH)
    )]
    Epoch,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&s[2 * i..2 * i + 2]).ok()?;
        *o = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// One epoch's sealing key. Dropping or evolving it overwrites the old bytes.
pub struct EpochKey {
    pub epoch: u64,
    key: Zeroizing<[u8; 32]>,
}

impl EpochKey {
    /// The next epoch's key; the old one is overwritten in place.
    pub fn evolve(&mut self) {
        let mut h = Sha256::new();
        h.update(DOMAIN_EVOLVE);
        h.update(&self.key[..]);
        let mut next: [u8; 32] = h.finalize().into();
        self.key.copy_from_slice(&next);
        next.zeroize();
        self.epoch += 1;
    }

    /// Evolves up to `epoch` (never back).
    pub fn advance_to(&mut self, epoch: u64) -> bool {
        let moved = epoch > self.epoch;
        while self.epoch < epoch {
            self.evolve();
        }
        moved
    }

    /// The seal of a record whose chain hash is `hash`.
    pub fn seal(&self, hash: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..]).expect("HMAC takes any key");
        mac.update(DOMAIN_SEAL);
        mac.update(hash.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Compares in constant time.
    pub fn check(&self, hash: &str, seal: &str) -> bool {
        let Some(tag) = unhex::<32>(seal) else {
            return false;
        };
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..]).expect("HMAC takes any key");
        mac.update(DOMAIN_SEAL);
        mac.update(hash.as_bytes());
        mac.verify_slice(&tag).is_ok()
    }
}

/// What the auditor keeps: the seed, the start of epoch 0 and the epoch length.
#[derive(Clone)]
pub struct VerifyKey {
    seed: Zeroizing<[u8; 16]>,
    pub start: u64,
    pub epoch_secs: u64,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyKey({})", self.id())
    }
}

impl VerifyKey {
    /// A fresh seed from the kernel's random source.
    pub fn generate(start: SystemTime, epoch: Duration) -> Result<VerifyKey, SealError> {
        if !(MIN_EPOCH..=MAX_EPOCH).contains(&epoch) {
            return Err(SealError::Epoch);
        }
        let mut seed = Zeroizing::new([0u8; 16]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed[..]))
            .map_err(|source| SealError::Io {
                what: "reading",
                path: "/dev/urandom".into(),
                source,
            })?;
        Ok(VerifyKey {
            seed,
            start: unix_secs(start),
            epoch_secs: epoch.as_secs(),
        })
    }

    /// `AS1-` and the seed as four groups of 8 upper-case hex digits, the start (Unix seconds)
    /// and the epoch length (seconds): only characters of QR codes' alphanumeric mode.
    pub fn encode(&self) -> String {
        let h = hex(&self.seed[..]).to_ascii_uppercase();
        format!(
            "{PREFIX}-{}-{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..16],
            &h[16..24],
            &h[24..32],
            self.start,
            self.epoch_secs
        )
    }

    pub fn parse(text: &str) -> Result<VerifyKey, SealError> {
        let bad = |why: &str| SealError::BadVerifyKey { why: why.into() };
        let parts: Vec<&str> = text.trim().split('-').collect();
        if parts.len() != 7 || !parts[0].eq_ignore_ascii_case(PREFIX) {
            return Err(bad("seven parts separated by '-', the first AS1"));
        }
        let seed = unhex::<16>(&parts[1..5].concat().to_ascii_lowercase())
            .ok_or_else(|| bad("the seed is 32 hex digits"))?;
        let start = parts[5].parse().map_err(|_| bad("the start is a number"))?;
        let epoch_secs: u64 = parts[6].parse().map_err(|_| bad("the epoch is a number"))?;
        if epoch_secs == 0 {
            return Err(bad("the epoch is at least a second"));
        }
        Ok(VerifyKey {
            seed: Zeroizing::new(seed),
            start,
            epoch_secs,
        })
    }

    /// A public name of the key (not secret: records name the key they were sealed with).
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(DOMAIN_ID);
        h.update(&self.seed[..]);
        hex(&h.finalize()[..8])
    }

    /// The key of epoch 0.
    pub fn first_key(&self) -> EpochKey {
        let mut h = Sha256::new();
        h.update(DOMAIN_KEY0);
        h.update(&self.seed[..]);
        EpochKey {
            epoch: 0,
            key: Zeroizing::new(h.finalize().into()),
        }
    }

    /// When epoch `e` begins (Unix seconds).
    pub fn epoch_start(&self, e: u64) -> u64 {
        self.start.saturating_add(e.saturating_mul(self.epoch_secs))
    }
}

/// The key file: the current epoch's key and nothing that gives an earlier one.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    key_id: String,
    start: u64,
    epoch_secs: u64,
    epoch: u64,
    key: String,
    /// Set once the log has a `sealing_started` record for this key.
    #[serde(default)]
    announced: bool,
}

/// The agent's sealing state, kept in the key file.
pub struct Sealer {
    path: PathBuf,
    pub key_id: String,
    pub start: u64,
    pub epoch_secs: u64,
    key: EpochKey,
    pub announced: bool,
    /// Failures to replace the key file (the old key is then still on disk).
    pub write_failures: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({}, epoch {})", self.key_id, self.key.epoch)
    }
}

impl Sealer {
    /// Writes a new key file for `vk` (0600, durably); refuses to replace one unless `force`.
    pub fn create(path: &Path, vk: &VerifyKey, force: bool) -> Result<Sealer, SealError> {
        if path.exists() && !force {
            return Err(SealError::Exists {
                path: path.to_path_buf(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SealError::Io {
                what: "creating the directory of",
                path: path.to_path_buf(),
                source,
            })?;
        }
        let s = Sealer {
            path: path.to_path_buf(),
            key_id: vk.id(),
            start: vk.start,
            epoch_secs: vk.epoch_secs,
            key: vk.first_key(),
            announced: false,
            write_failures: 0,
        };
        s.save()?;
        Ok(s)
    }

    /// The key file at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<Sealer>, SealError> {
        let text = match std::fs::read(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SealError::Io {
                    what: "reading",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let bad = |why: String| SealError::BadKeyFile {
            path: path.to_path_buf(),
            why,
        };
        let mut f: KeyFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if f.format != FORMAT {
            return Err(bad(format!("format {:?}", f.format)));
        }
        if f.epoch_secs == 0 {
            return Err(bad("epoch_secs is 0".into()));
        }
        let key = unhex::<32>(&f.key).ok_or_else(|| bad("key is not 64 hex digits".into()));
        f.key.zeroize();
        Ok(Some(Sealer {
            path: path.to_path_buf(),
            key_id: f.key_id,
            start: f.start,
            epoch_secs: f.epoch_secs,
            key: EpochKey {
                epoch: f.epoch,
                key: Zeroizing::new(key?),
            },
            announced: f.announced,
            write_failures: 0,
        }))
    }

    /// Replaces the key file durably with the key in memory.
    fn save(&self) -> Result<(), SealError> {
        let f = KeyFile {
            format: FORMAT.into(),
            key_id: self.key_id.clone(),
            start: self.start,
            epoch_secs: self.epoch_secs,
            epoch: self.key.epoch,
            key: hex(&self.key.key[..]),
            announced: self.announced,
        };
        let text = Zeroizing::new(serde_json::to_vec(&f).expect("plain fields serialize"));
        let mut f = f;
        f.key.zeroize();
        files::write_durably(&self.path, &text).map_err(|source| SealError::Io {
            what: "replacing the sealing key",
            path: self.path.clone(),
            source,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn epoch(&self) -> u64 {
        self.key.epoch
    }

    /// The epoch `now` falls in (0 before the start).
    pub fn epoch_at(&self, now: SystemTime) -> u64 {
        unix_secs(now).saturating_sub(self.start) / self.epoch_secs
    }

    /// Moves to the epoch of `now`: the new key replaces the old one in memory at once and on
    /// disk durably. A failed write leaves the old key on disk (an earlier key only gives this
    /// one, so sealing goes on) and is retried at the next call. Returns whether it moved.
    pub fn advance(&mut self, now: SystemTime) -> Result<bool, SealError> {
        let moved = self.key.advance_to(self.epoch_at(now));
        if moved || self.write_failures > 0 {
            if let Err(e) = self.save() {
                self.write_failures += 1;
                return Err(e);
            }
            self.write_failures = 0;
        }
        Ok(moved)
    }

    /// Records that the log now says sealing started with this key.
    pub fn set_announced(&mut self) -> Result<(), SealError> {
        self.announced = true;
        self.save()
    }

    /// The seal of the record whose chain hash is `hash`, with the current epoch's key.
    pub fn seal(&self, hash: &str) -> String {
        self.key.seal(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verification_key_round_trips_in_qr_alphanumerics() {
        let vk = VerifyKey::generate(
            UNIX_EPOCH + Duration::from_secs(1_764_579_600),
            DEFAULT_EPOCH,
        )
        .unwrap();
        let s = vk.encode();
        assert!(
            s.starts_with("AS1-") && s.ends_with("-1764579600-900"),
            "{s}"
        );
        assert!(s
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || c == '-'));
        let back = VerifyKey::parse(&s).unwrap();
        assert_eq!(back.id(), vk.id());
        assert_eq!(back.first_key().seal("h"), vk.first_key().seal("h"));
        assert!(VerifyKey::parse("AS1-00-1-2").is_err());
        assert!(VerifyKey::parse(&s.replace("-900", "-0")).is_err());
    }

    #[test]
    fn keys_evolve_one_way_and_seals_differ_per_epoch() {
        let vk = VerifyKey::generate(SystemTime::now(), DEFAULT_EPOCH).unwrap();
        let mut k = vk.first_key();
        let s0 = k.seal("h");
        assert!(k.check("h", &s0));
        k.evolve();
        assert_eq!(k.epoch, 1);
        assert!(
            !k.check("h", &s0),
            "epoch 1's key does not make epoch 0's seal"
        );
        let mut j = vk.first_key();
        j.advance_to(5);
        k.advance_to(5);
        assert_eq!(j.seal("h"), k.seal("h"));
        assert!(!j.advance_to(3), "never back");
        assert_eq!(j.epoch, 5);
        assert!(!j.check("h", "zz"));
    }

    #[test]
    fn the_key_file_keeps_only_the_current_key() {
        let dir = std::env::temp_dir().join(format!("antispam-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.key");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let vk = VerifyKey::generate(t0, Duration::from_secs(60)).unwrap();
        let mut s = Sealer::create(&path, &vk, false).unwrap();
        assert!(matches!(
            Sealer::create(&path, &vk, false),
            Err(SealError::Exists { .. })
        ));
        let first = std::fs::read_to_string(&path).unwrap();
        let k0 = hex(&vk.first_key().key[..]);
        assert!(first.contains(&k0));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        assert!(s.advance(t0 + Duration::from_secs(150)).unwrap());
        assert_eq!(s.epoch(), 2);
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(!now.contains(&k0), "epoch 0's key is gone from the file");
        let mut k2 = vk.first_key();
        k2.advance_to(2);
        assert_eq!(s.seal("h"), k2.seal("h"));
        let back = Sealer::load(&path).unwrap().unwrap();
        assert_eq!(back.epoch(), 2);
        assert_eq!(back.seal("h"), k2.seal("h"));
        assert!(
            !s.advance(t0 + Duration::from_secs(10)).unwrap(),
            "clock back"
        );
        assert!(Sealer::load(&dir.join("none")).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
