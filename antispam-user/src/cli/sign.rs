//! `--sign-with KEY`: the operator's SSH signature on a request, made by `ssh-keygen -Y sign -n
//! antispam` (which asks for a FIDO2 key's touch or the key's passphrase itself).

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::control::signed::{host_name, Signature, SignedAction, NAMESPACE};

/// The key that signs a request.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SignWith {
    /// Sign the request with this SSH private key (or its .pub, with the key in ssh-agent):
    /// required when the policy says `[break_glass] require_signatures = true`. An ed25519-sk
    /// key (FIDO2) makes the signature need a touch.
    #[arg(long, value_name = "KEY", env = "ANTISPAM_SIGN_WITH")]
    pub sign_with: Option<PathBuf>,
}

impl SignWith {
    /// The signature over `action`, None without --sign-with; Err (printed) if ssh-keygen fails.
    pub fn sign(&self, action: &SignedAction<'_>) -> Result<Option<Signature>, ExitCode> {
        let Some(key) = &self.sign_with else {
            return Ok(None);
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = action.text(&host_name(), time);
        let fail = |why: String| {
            eprintln!(
                "antispam {}: signing with {}: {why}",
                action.name(),
                key.display()
            );
            ExitCode::from(2)
        };
        let mut child = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run ssh-keygen: {e}")))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!("ssh-keygen failed ({})", out.status)));
        }
        Ok(Some(Signature {
            sshsig: String::from_utf8_lossy(&out.stdout).into_owned(),
            time,
        }))
    }
}
