//! Why the agent could not start (or had to stop).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid policy:\n{0}")]
    Policy(#[from] crate::policy::Problems),
    #[error(transparent)]
    Kernel(#[from] crate::kernel::Error),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::Error),
    #[error("not starting: the start could not be recorded in the audit log ({0}); nothing of this agent is in force (a previous agent's pinned programs, if any, go on enforcing)")]
    StartNotRecorded(#[source] crate::audit::Error),
    #[error("cannot serve metrics on {addr}: {source}{}; nothing was started (the kernel was not touched)", holders_text(holders))]
    MetricsPort {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
        holders: Vec<crate::sys::ports::Holder>,
    },
    #[error(transparent)]
    Book(#[from] super::book::BookError),
    #[error("{0}; nothing was started")]
    Fleet(#[source] crate::fleet::Error),
    #[error(transparent)]
    Sys(#[from] crate::sys::Error),
    #[error("{path} is not a directory of the cgroup v2 hierarchy mounted at {mount}")]
    NotACgroup { path: PathBuf, mount: PathBuf },
    #[error(
        "the agent needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root); it lacks {}",
        missing.join(", ")
    )]
    Capabilities {
        missing: Vec<&'static str>,
        #[source]
        source: Box<crate::kernel::Error>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// "; held by pid 4242 (nc), uid 1000" for the processes listening on a port.
fn holders_text(holders: &[crate::sys::ports::Holder]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
    format!("; held by {}", list.join(", "))
}

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
