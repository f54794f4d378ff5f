//! The agent's error type. `anyhow` is used only at the edges (main, build script).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for fstype cgroup2 in /proc/self/mountinfo)"
    )]
    NoCgroup2,
    #[error("{path} is not a directory of the cgroup v2 hierarchy mounted at {mount}")]
    NotACgroup { path: PathBuf, mount: PathBuf },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("{0}")]
    Pins(String),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("invalid policy:\n{0}")]
    Policy(#[from] crate::policy::Problems),
}

impl Error {
    pub fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
        move |source| Error::Map { name, source }
    }
    pub fn program(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> Error {
        move |source| Error::Program { name, source }
    }
}
