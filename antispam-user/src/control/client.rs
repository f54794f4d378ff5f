//! The operator commands' end of the control socket.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Request, Response};

/// How long a command waits for the agent's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "permission denied on {}: run as root or as a member of the agent's operators group",
        .0.display()
    )]
    PermissionDenied(PathBuf),
    #[error(
        "no agent listening on {} (is `antispam run` running? see --control-socket)",
        .0.display()
    )]
    NoAgent(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed answer from the agent: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Sends one request and returns the agent's answer.
pub fn call(socket: &Path, req: &Request) -> Result<Response, Error> {
    let io = |source| Error::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied(socket.to_path_buf()),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Error::NoAgent(socket.to_path_buf())
        }
        _ => io(e),
    })?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(Error::Malformed)?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(Error::Malformed)
}
