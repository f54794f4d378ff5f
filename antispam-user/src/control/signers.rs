//! The allowed signers file (the format of ssh-keygen(1)'s ALLOWED SIGNERS) and the check of an
//! SSH signature (SSHSIG) against it. The signature and the keys are parsed and verified by the
//! `ssh-key` crate; only the file's lines are split here.
//!
//! A line is `principals [options] keytype base64 [comment]`. Options understood:
//! `namespaces="…"` (the key signs only in these; it must include the namespace checked:
//! `antispam` for operators' requests, `antispam-policy` for policy files). Lines with
//! `cert-authority`, `valid-after` or `valid-before` are refused (not supported), so no key is
//! trusted more widely than its line says.

use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, PublicKey, SshSig};

use super::signed::{Signer, NAMESPACE};

#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error("allowed signers {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("allowed signers {}:{line}: {why}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("not an SSH signature: {0}")]
    BadSignature(String),
    #[error("the signature is in namespace {got:?}, not {want:?} (sign with ssh-keygen -Y sign -n {want})")]
    Namespace { got: String, want: &'static str },
    #[error("the key {fingerprint} is not in the allowed signers file {}", path.display())]
    Unlisted { fingerprint: String, path: PathBuf },
    #[error("the FIDO key {fingerprint} signed without a touch (user presence not asserted)")]
    NoTouch { fingerprint: String },
    #[error("the signature by {fingerprint} does not verify ({why}): it was made over other text")]
    Invalid { fingerprint: String, why: String },
}

/// One line of the file.
#[derive(Debug, Clone)]
struct Entry {
    principals: Vec<String>,
    key: PublicKey,
}

/// For a FIDO key's signature (`sk-…`), did the authenticator assert user presence (a touch)?
/// The signed data carries its flags byte, bit 0 (as OpenSSH requires by default); `ssh-key`
/// verifies the signature over the flags but does not look at them. True for other keys.
fn touched(sig: &SshSig) -> bool {
    const USER_PRESENT: u8 = 0x01;
    match sig.algorithm() {
        Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256 => {
            // Raw signature, then flags (1 byte) and counter (4 bytes).
            let data = sig.signature_bytes();
            data.len() >= 5 && data[data.len() - 5] & USER_PRESENT != 0
        }
        _ => true,
    }
}

/// The `SHA256:…` fingerprint of the key that made an armored signature, if it can be read.
pub fn fingerprint_of(sshsig: &str) -> Option<String> {
    SshSig::from_pem(sshsig.trim().as_bytes())
        .ok()
        .map(|s| s.public_key().fingerprint(HashAlg::Sha256).to_string())
}

/// The keys allowed to sign operators' requests.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    /// The SSHSIG namespace signatures are checked in.
    namespace: &'static str,
    entries: Vec<Entry>,
}

/// Splits off the first field, keeping double-quoted parts (options) whole.
fn field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

/// The comma-separated options of a line, keeping quoted commas.
fn options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-") || s.starts_with("sk-") || s.starts_with("ecdsa-sha2-")
}

impl AllowedSigners {
    /// The keys of `path` that sign operators' requests (namespace `antispam`).
    pub fn load(path: &Path) -> Result<AllowedSigners, SignersError> {
        Self::load_for(path, NAMESPACE)
    }

    /// The keys of `path` that sign in `namespace`.
    pub fn load_for(path: &Path, namespace: &'static str) -> Result<AllowedSigners, SignersError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_for(path, &text, namespace)
    }

    #[cfg(test)]
    pub fn parse(path: &Path, text: &str) -> Result<AllowedSigners, SignersError> {
        Self::parse_for(path, text, NAMESPACE)
    }

    pub fn parse_for(
        path: &Path,
        text: &str,
        namespace: &'static str,
    ) -> Result<AllowedSigners, SignersError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| SignersError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let (principals, rest) = field(line);
            let principals: Vec<String> = principals
                .split(',')
                .map(|p| p.trim_matches('"').to_string())
                .filter(|p| !p.is_empty())
                .collect();
            if principals.is_empty() {
                return Err(bad("no principal".into()));
            }
            let (next, after) = field(rest);
            let key_text = if is_key_type(next) {
                rest.trim()
            } else {
                let mut ours = true;
                for opt in options(next) {
                    let (name, value) = opt.split_once('=').unwrap_or((opt, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "namespaces" => {
                            ours = value
                                .trim_matches('"')
                                .split(',')
                                .any(|n| n.trim() == namespace);
                        }
                        other => {
                            return Err(bad(format!(
                                "option {other:?} is not supported here (only namespaces=)"
                            )))
                        }
                    }
                }
                if !ours {
                    // The key signs only in other namespaces: not one of ours.
                    continue;
                }
                after.trim()
            };
            let key = PublicKey::from_openssh(key_text)
                .map_err(|e| bad(format!("not a public key: {e}")))?;
            entries.push(Entry { principals, key });
        }
        Ok(AllowedSigners {
            path: path.to_path_buf(),
            namespace,
            entries,
        })
    }

    /// Checks `sshsig` (armored) over `text`: signed in this file's namespace, by a listed key.
    /// Returns who signed.
    pub fn verify(&self, text: &str, sshsig: &str) -> Result<Signer, SignersError> {
        self.verify_bytes(text.as_bytes(), sshsig)
    }

    /// [`AllowedSigners::verify`] over bytes (a file as read).
    pub fn verify_bytes(&self, data: &[u8], sshsig: &str) -> Result<Signer, SignersError> {
        let sig = SshSig::from_pem(sshsig.trim().as_bytes())
            .map_err(|e| SignersError::BadSignature(e.to_string()))?;
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        if sig.namespace() != self.namespace {
            return Err(SignersError::Namespace {
                got: sig.namespace().to_string(),
                want: self.namespace,
            });
        }
        let listed: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.key.key_data() == sig.public_key())
            .collect();
        let Some(first) = listed.first() else {
            return Err(SignersError::Unlisted {
                fingerprint,
                path: self.path.clone(),
            });
        };
        first
            .key
            .verify(self.namespace, data, &sig)
            .map_err(|e| SignersError::Invalid {
                fingerprint: fingerprint.clone(),
                why: e.to_string(),
            })?;
        if !touched(&sig) {
            return Err(SignersError::NoTouch { fingerprint });
        }
        let mut principals: Vec<String> = Vec::new();
        for e in &listed {
            for p in &e.principals {
                if !principals.contains(p) {
                    principals.push(p.clone());
                }
            }
        }
        Ok(Signer {
            principals,
            fingerprint,
            key_type: first.key.algorithm().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICBrnXfVRsBccO+p2KFH3TyRj/wgqFQ1TkpEe+brC8mk alice@x";

    #[test]
    fn lines_are_split_into_principals_options_and_keys() {
        let p = Path::new("/a");
        let text = format!(
            "# comment\n\nalice,alice@corp {ALICE}\nbob namespaces=\"git,antispam\" {ALICE}\ncarol namespaces=\"git\" {ALICE}\n"
        );
        let s = AllowedSigners::parse(p, &text).unwrap();
        assert_eq!(s.entries.len(), 2, "carol's key signs only for git");
        assert_eq!(s.entries[0].principals, ["alice", "alice@corp"]);
        assert_eq!(s.entries[1].principals, ["bob"]);
        let e =
            AllowedSigners::parse(p, &format!("dave valid-after=20260101 {ALICE}\n")).unwrap_err();
        assert!(
            e.to_string().contains("/a:1: option \"valid-after\""),
            "{e}"
        );
        let e = AllowedSigners::parse(p, "erin ssh-ed25519 AAAA\n").unwrap_err();
        assert!(e.to_string().contains("not a public key"), "{e}");
        let e = s.verify("x", "nonsense").unwrap_err();
        assert!(matches!(e, SignersError::BadSignature(_)), "{e}");
    }

    /// A real `ssh-keygen` key and signature (skipped where ssh-keygen is missing).
    #[test]
    fn ssh_keygen_signatures_verify_and_nothing_else_does() {
        use std::{io::Write, process::Command};
        let dir = std::env::temp_dir().join(format!("antispam-signers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "k", "-f"])
            .arg(&key)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("ssh-keygen is not installed: skipped");
            return;
        }
        let sign = |ns: &str, text: &str| {
            let mut c = Command::new("ssh-keygen")
                .args(["-q", "-Y", "sign", "-n", ns, "-f"])
                .arg(&key)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
        };
        let public = std::fs::read_to_string(dir.join("k.pub")).unwrap();
        let signers = AllowedSigners::parse(&dir, &format!("alice {public}")).unwrap();
        let sig = sign("antispam", "the text");
        let who = signers.verify("the text", &sig).unwrap();
        assert_eq!(who.principals, ["alice"]);
        assert!(who.fingerprint.starts_with("SHA256:"), "{who:?}");
        assert_eq!(who.key_type, "ssh-ed25519");
        let e = signers.verify("another text", &sig).unwrap_err();
        assert!(matches!(e, SignersError::Invalid { .. }), "{e}");
        let e = signers
            .verify("the text", &sign("git", "the text"))
            .unwrap_err();
        assert!(matches!(e, SignersError::Namespace { .. }), "{e}");
        let nobody = AllowedSigners::parse(&dir, &format!("bob {ALICE}\n")).unwrap();
        let e = nobody.verify("the text", &sig).unwrap_err();
        assert!(matches!(e, SignersError::Unlisted { .. }), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
