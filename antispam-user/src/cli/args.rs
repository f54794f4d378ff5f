//! Arguments several commands share, spelled the same everywhere: `--control-socket`,
//! `--pin-dir`, `--audit-log`, and whom an action is about (`--uid` / `--cgroup`).
//! Older spellings are kept as hidden aliases for one release (see docs/operations.md).

use std::path::PathBuf;

use crate::{control::Target, defaults};

/// The running agent's control socket.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlSocket {
    /// The running agent's control socket (its --control-socket).
    #[arg(
        id = "control_socket",
        long = "control-socket",
        alias = "socket",
        value_name = "PATH",
        default_value = defaults::CONTROL_SOCKET,
        env = "ANTISPAM_CONTROL_SOCKET"
    )]
    pub path: PathBuf,
}

/// The agent's pin directory in the BPF filesystem.
#[derive(clap::Args, Debug, Clone)]
pub struct PinDir {
    /// Directory in the BPF filesystem where the programs and maps are pinned (the agent's
    /// --pin-dir).
    #[arg(id = "pin_dir", long = "pin-dir", value_name = "DIR", default_value = defaults::PIN_DIR)]
    pub path: PathBuf,
}

/// The agent's audit log.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditLog {
    /// The tamper-evident audit log (the agent's --audit-log).
    #[arg(id = "audit_log", long = "audit-log", value_name = "FILE", default_value = defaults::AUDIT_LOG)]
    pub path: PathBuf,
}

/// Whom an action applies to.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// A UID, or a user name.
    #[arg(long)]
    uid: Option<String>,
    /// A cgroup path relative to the cgroup2 mount (e.g. /system.slice/docker-3f2a.scope); its
    /// descendants are covered too.
    #[arg(long)]
    cgroup: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cgroup {0:?} must start with '/' (relative to the cgroup2 mount)")]
    RelativeCgroup(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
}

impl TargetArgs {
    /// The target, or (printed) why there is none and exit status 2.
    pub fn parse(&self, command: &str) -> Result<Target, std::process::ExitCode> {
        self.target().map_err(|e| {
            eprintln!("antispam {command}: {e}");
            std::process::ExitCode::from(2)
        })
    }

    pub fn target(&self) -> Result<Target, TargetError> {
        if let Some(c) = &self.cgroup {
            if !c.starts_with('/') {
                return Err(TargetError::RelativeCgroup(c.clone()));
            }
            let path = c.trim_end_matches('/');
            return Ok(Target::Cgroup(
                if path.is_empty() { "/" } else { path }.to_string(),
            ));
        }
        let u = self.uid.as_deref().unwrap_or_default();
        if let Ok(n) = u.parse::<u32>() {
            return Ok(Target::Uid(n));
        }
        match nix::unistd::User::from_name(u) {
            Ok(Some(user)) => Ok(Target::Uid(user.uid.as_raw())),
            _ => Err(TargetError::UnknownUser(u.to_string())),
        }
    }
}
