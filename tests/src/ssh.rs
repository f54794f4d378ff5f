//! SSH keys and signatures made by `ssh-keygen` (openssh-client), for the tests of signed
//! operator requests and signed policies.

use std::{path::Path, process::Command};

use crate::run_ok;

/// Is `ssh-keygen` here? Outside CI a test may skip (said loudly) when it is not; with
/// `CI=true` its absence fails the test.
pub fn available() -> bool {
    if Command::new("ssh-keygen").arg("-?").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "ssh-keygen is missing (openssh-client)"
    );
    eprintln!("SKIPPED: ssh-keygen is not installed (openssh-client)");
    false
}

/// Makes an ed25519 key `name` in `dir`; returns (private key path, public key line,
/// fingerprint as `ssh-keygen -l` prints it).
pub fn key(dir: &Path, name: &str) -> (String, String, String) {
    let p = dir.join(name).display().to_string();
    run_ok(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", &p],
    );
    let public = std::fs::read_to_string(format!("{p}.pub")).expect("public key");
    let fp = run_ok("ssh-keygen", &["-l", "-f", &format!("{p}.pub")])
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    (p, public.trim().to_string(), fp)
}

/// Signs `file` with `key` in `namespace` as an operator would: a detached `FILE.sig`
/// (replacing one there).
pub fn sign_file(key: &str, namespace: &str, file: &Path) {
    let _ = std::fs::remove_file(format!("{}.sig", file.display()));
    run_ok(
        "ssh-keygen",
        &[
            "-Y",
            "sign",
            "-f",
            key,
            "-n",
            namespace,
            &file.display().to_string(),
        ],
    );
}
