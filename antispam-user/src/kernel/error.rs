//! What can go wrong loading, attaching and writing the kernel programs and maps.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not on a BPF filesystem (mount one: mount -t bpf bpf /sys/fs/bpf -o mode=0700), so the programs could not outlive the agent",
        .0.display()
    )]
    NotBpffs(PathBuf),
    #[error(
        "{} is not safe for the pinned programs (owner uid {owner}, mode {mode:04o}{}): whoever can write it can detach them. It must be a directory owned by root and writable by nobody else; remove it (or fix its owner and mode) and start again",
        path.display(),
        if *dir { "" } else { ", not a directory" }
    )]
    UnsafePinDir {
        path: PathBuf,
        owner: u32,
        mode: u32,
        dir: bool,
    },
    #[error("the exec hook (mail through sendmail): {0}")]
    ExecHook(String),
}

/// An error with its sources, one after the other (aya's errors keep the syscall's errno and
/// the verifier's log in their sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

impl Error {
    pub fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
        move |source| Error::Map { name, source }
    }

    pub fn program(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> Error {
        move |source| Error::Program { name, source }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
