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
    #[error(transparent)]
    Book(#[from] super::book::BookError),
    #[error(transparent)]
    Sys(#[from] crate::sys::Error),
    #[error("{path} is not a directory of the cgroup v2 hierarchy mounted at {mount}")]
    NotACgroup { path: PathBuf, mount: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
