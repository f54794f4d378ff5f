//! What can go wrong loading, attaching and writing the kernel programs and maps.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A verifier's refusal is summed up in one line (its last words); the whole log is for
    /// `antispam run --kernel-debug` ([`Error::verifier_log`]).
    #[error("eBPF program {name}: {}", describe(source))]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    /// The running kernel lacks what the programs need (probed before anything is loaded).
    #[error(transparent)]
    Unsupported(#[from] super::features::Unsupported),
    #[error(transparent)]
    Probe(#[from] super::features::ProbeError),
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

/// A program error in one line: for a refusal by the verifier, the syscall's error and the
/// log's last meaningful line, not the whole log.
fn describe(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let last = log
                .lines()
                .map(str::trim)
                .rev()
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                        && !l.starts_with("-- END PROG LOAD LOG --")
                })
                .unwrap_or("(no log)");
            format!(
                "the kernel refused it (BPF_PROG_LOAD: {io_error}); the verifier's last words: {last:?}; the whole log: antispam run --kernel-debug"
            )
        }
        other => error_chain(other),
    }
}

/// An error with its sources, one after the other (aya's errors keep the syscall's errno and
/// the verifier's log in their sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        // Errors that print their source in their own message ("{what}: {source}") are not
        // repeated.
        let text = s.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(&format!(": {text}"));
        }
        src = s.source();
    }
    msg
}

impl Error {
    /// The program the verifier refused and its whole log, if that is what went wrong.
    pub fn verifier_log(&self) -> Option<(&'static str, String)> {
        match self {
            Error::Program {
                name,
                source: aya::programs::ProgramError::LoadError { verifier_log, .. },
            } => Some((name, verifier_log.to_string())),
            _ => None,
        }
    }

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
