//! The operators' CLI (`antispam suspend`, `break-glass`…) against a test's agent, as root or as
//! another user, and the agent's audit log.

use std::{io, os::unix::process::CommandExt as _, process::Command};

use crate::{antispam_bin, Agent};

/// Exit status and stdout+stderr of one CLI run.
pub type CtlOutput = (Option<i32>, String);

fn finish(cmd: &mut Command) -> CtlOutput {
    let out = cmd.output().expect("antispam CLI");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Runs `antispam ARGS --control-socket <agent's>` as root.
pub fn ctl(agent: &Agent, args: &[&str]) -> CtlOutput {
    finish(
        Command::new(antispam_bin())
            .args(args)
            .arg("--control-socket")
            .arg(&agent.control_path),
    )
}

/// The same as a non-root user with primary group `gid` and supplementary `groups`.
pub fn ctl_as(agent: &Agent, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> CtlOutput {
    let groups = groups.to_vec();
    let mut cmd = Command::new(antispam_bin());
    cmd.args(args)
        .arg("--control-socket")
        .arg(&agent.control_path)
        .env("HOME", "/tmp");
    // SAFETY: raw syscalls only, on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    finish(&mut cmd)
}

impl Agent {
    /// Every record of the agent's audit log so far.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit record"))
            .collect()
    }

    /// The names of the audit records so far.
    pub fn audit_names(&self) -> Vec<String> {
        self.audit_events()
            .iter()
            .map(|r| r["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}
