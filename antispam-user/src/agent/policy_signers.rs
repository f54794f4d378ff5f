//! Signed policies (`antispam run --policy-signers FILE`): where configuration management pushes
//! one policy to many hosts, a host loads only what a listed key signed. Every file the policy
//! is read from (the policy itself, each block list) needs a detached SSH signature beside it,
//! `FILE.sig`, made with `ssh-keygen -Y sign -f KEY -n antispam-policy FILE`, by a key of the
//! allowed signers file in namespace `antispam-policy`. A missing, unlisted or wrong signature
//! refuses the policy as a syntax error does: at start the agent does not start; on reload the
//! policy in force stays, and the refusal is logged and audited. The allowed signers file is
//! read again at every load, so a key is added or removed without a restart.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use crate::{
    control::signers::{AllowedSigners, SignersError},
    policy::FileCheck,
};

/// The SSHSIG namespace of a policy's signatures (not `antispam`: a signed operator request
/// is never a policy, nor the other way round).
pub const NAMESPACE: &str = "antispam-policy";

/// A signature file larger than this is not one (an armored SSHSIG is well under 2 KiB).
const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// Why a file's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("its signature cannot be checked: {0}")]
    Signers(SignersError),
    #[error(
        "signatures are required (--policy-signers) and {} cannot be read ({error}): sign it with `ssh-keygen -Y sign -f KEY -n {NAMESPACE} {}`",
        sig.display(),
        file.display()
    )]
    Missing {
        file: PathBuf,
        sig: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", sig.display())]
    Bad { sig: PathBuf, error: SignersError },
}

/// The detached signature of `file`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".sig");
    PathBuf::from(name)
}

/// The keys that may sign policies, as read for one load.
pub struct PolicySigners(AllowedSigners);

impl PolicySigners {
    /// Reads the allowed signers file `path` (its keys in namespace `antispam-policy`).
    pub fn load(path: &Path) -> Result<PolicySigners, SignatureError> {
        AllowedSigners::load_for(path, NAMESPACE)
            .map(PolicySigners)
            .map_err(SignatureError::Signers)
    }

    /// Who signed `data`, the content of `file`, in `file.sig`.
    pub fn verify(&self, file: &Path, data: &[u8]) -> Result<String, SignatureError> {
        let sig = signature_path(file);
        let mut text = String::new();
        if let Err(error) = std::fs::File::open(&sig)
            .and_then(|f| f.take(MAX_SIGNATURE_BYTES).read_to_string(&mut text))
        {
            return Err(SignatureError::Missing {
                file: file.to_path_buf(),
                sig,
                error,
            });
        }
        self.0
            .verify_bytes(data, &text)
            .map(|s| format!("{} ({})", s.principal(), s.fingerprint))
            .map_err(|error| SignatureError::Bad { sig, error })
    }
}

impl FileCheck for PolicySigners {
    fn check(&self, path: &Path, data: &[u8]) -> Result<String, Box<dyn std::error::Error>> {
        Ok(self.verify(path, data)?)
    }
}

/// Loads the signers (when signatures are required) for one policy load.
pub fn for_load(signers: Option<&Path>) -> Result<Option<PolicySigners>, SignatureError> {
    signers.map(PolicySigners::load).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_sits_beside_the_file() {
        assert_eq!(
            signature_path(Path::new("/etc/antispam/policy.toml")),
            PathBuf::from("/etc/antispam/policy.toml.sig")
        );
    }

    #[test]
    fn an_unsigned_file_is_refused_with_how_to_sign_it() {
        let dir = std::env::temp_dir().join(format!("antispam-ps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let signers = dir.join("allowed_signers");
        std::fs::write(
            &signers,
            "ops@example namespaces=\"antispam-policy\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICBrnXfVRsBccO+p2KFH3TyRj/wgqFQ1TkpEe+brC8mk\n",
        )
        .unwrap();
        let s = PolicySigners::load(&signers).expect("signers");
        let why = s
            .verify(&dir.join("policy.toml"), b"mode = \"enforce\"\n")
            .unwrap_err()
            .to_string();
        assert!(why.contains("policy.toml.sig cannot be read"), "{why}");
        assert!(why.contains("-n antispam-policy"), "{why}");
        std::fs::write(dir.join("policy.toml.sig"), "not a signature").unwrap();
        let why = s
            .verify(&dir.join("policy.toml"), b"mode = \"enforce\"\n")
            .unwrap_err()
            .to_string();
        assert!(why.contains("not an SSH signature"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
