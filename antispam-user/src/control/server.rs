//! The agent's end of the control socket.
//!
//! Who may use it is decided by the OS, never by a flag anyone can type: the socket file is
//! `0660 root:<operators group>` (0600 root-only when the group does not exist), and every
//! connection's peer is checked again with SO_PEERCRED: root, or a process whose primary or
//! supplementary groups include the operators group. Refused peers are handed to the agent to
//! be audited.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, watch},
};

use super::protocol::{Peer, Request, Response};
use crate::sys::{procfs, users};

/// Longest request line read.
const MAX_REQUEST: u64 = 64 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server hands the agent's main loop.
pub enum Message {
    /// An authorized request; answer on `reply`.
    Request {
        req: Request,
        peer: Peer,
        reply: oneshot::Sender<Response>,
    },
    /// A refused peer, to be audited.
    Denied { peer: Peer, why: String },
}

/// Why a peer may not operate the agent.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{user} (uid {uid}) is not root and no operators group exists")]
    NoOperatorsGroup { user: String, uid: u32 },
    #[error("{user} (uid {uid}) is neither root nor in the operators group (gid {gid})")]
    NotAnOperator { user: String, uid: u32, gid: u32 },
}

/// Is this peer allowed to operate the agent?
fn authorize(peer: &Peer, operators_gid: Option<u32>) -> Result<(), Refusal> {
    if peer.uid == 0 {
        return Ok(());
    }
    let Some(gid) = operators_gid else {
        return Err(Refusal::NoOperatorsGroup {
            user: peer.user.clone(),
            uid: peer.uid,
        });
    };
    let groups = peer.pid.map(procfs::groups).unwrap_or_default();
    if peer.gid == gid || groups.contains(&gid) {
        Ok(())
    } else {
        Err(Refusal::NotAnOperator {
            user: peer.user.clone(),
            uid: peer.uid,
            gid,
        })
    }
}

/// The socket file, removed when the agent exits, whichever way.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the socket with the permissions above. A stale socket file is replaced.
pub fn bind(
    path: &Path,
    operators_gid: Option<u32>,
) -> std::io::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    let file = SocketFile(path.to_path_buf());
    match operators_gid {
        Some(gid) => {
            // Handing the socket to the operators' group needs CAP_CHOWN (the agent is not a
            // member of it); the systemd unit grants it.
            if std::fs::metadata(path)?.gid() != gid {
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
                    let lacks = crate::sys::caps::effective()
                        .map(|caps| caps & (1 << crate::sys::caps::CAP_CHOWN) == 0)
                        .unwrap_or(false);
                    if lacks {
                        std::io::Error::new(
                            e.kind(),
                            format!(
                                "{e}: giving it to the operators' group (gid {gid}) needs CAP_CHOWN, \
                                 and it lacks CAP_CHOWN"
                            ),
                        )
                    } else {
                        e
                    }
                })?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        }
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?,
    }
    Ok((listener, file))
}

/// Serves connections until `stop` changes.
pub async fn serve(
    listener: UnixListener,
    operators_gid: Option<u32>,
    tx: mpsc::Sender<Message>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { log::warn!("control socket accept: {e}"); continue; }
            },
            _ = stop.changed() => return,
        };
        tokio::spawn(connection(stream, operators_gid, tx.clone()));
    }
}

/// One connection: one request line, one response line.
async fn connection(stream: UnixStream, operators_gid: Option<u32>, tx: mpsc::Sender<Message>) {
    let Ok(cred) = stream.peer_cred() else { return };
    let uid = cred.uid();
    let peer = Peer {
        uid,
        gid: cred.gid(),
        pid: cred.pid(),
        user: users::name_or_number(uid),
        login_uid: cred.pid().and_then(procfs::login_uid),
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let answer = match authorize(&peer, operators_gid) {
        Err(refusal) => {
            let why = refusal.to_string();
            log::warn!("control socket: refused {why}");
            let _ = tx
                .send(Message::Denied {
                    peer,
                    why: why.clone(),
                })
                .await;
            Response::refused(format!("refused: {why}"))
        }
        Ok(()) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::refused(format!("malformed request: {e}")),
            Ok(req) => {
                let (reply, rx) = oneshot::channel();
                if tx
                    .send(Message::Request { req, peer, reply })
                    .await
                    .is_err()
                {
                    Response::refused("the agent is stopping")
                } else {
                    rx.await.unwrap_or_else(|_| Response::refused("no answer"))
                }
            }
        },
    };
    let mut out = serde_json::to_string(&answer).unwrap_or_default();
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_and_members_only() {
        let me = std::process::id() as i32;
        let peer = |uid, gid, pid, user: &str| Peer {
            uid,
            gid,
            pid,
            user: user.into(),
            login_uid: None,
        };
        assert!(authorize(&peer(0, 0, None, "root"), None).is_ok());
        let other = peer(4242, 4242, None, "mallory");
        assert!(matches!(
            authorize(&other, None),
            Err(Refusal::NoOperatorsGroup { .. })
        ));
        assert!(matches!(
            authorize(&other, Some(777)),
            Err(Refusal::NotAnOperator { gid: 777, .. })
        ));
        assert!(authorize(&peer(4242, 777, None, "oncall"), Some(777)).is_ok());
        // Supplementary groups come from /proc/PID/status.
        let groups = procfs::groups(me);
        assert!(!groups.is_empty());
        assert!(authorize(&peer(4242, 1, Some(me), "x"), Some(groups[0])).is_ok());
    }
}
