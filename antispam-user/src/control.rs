//! The control channel: a Unix socket on which operators' CLI commands reach the running agent.
//!
//! Who may use it is decided by the OS, never by a flag anyone can type: the socket file is
//! `0660 root:<operators group>` (0600 root-only when the group does not exist), and every
//! connection's peer is checked again with SO_PEERCRED: root, or a process whose primary or
//! supplementary groups include the operators group. Refused peers are audited.
//!
//! Protocol: one JSON request line, one JSON response line.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::UnixListener,
    sync::{mpsc, oneshot, watch},
};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/antispam/control.sock";
/// Default operators group.
pub const DEFAULT_GROUP: &str = "antispam";

/// What a suspension or an override applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Uid(u32),
    /// A cgroup path relative to the cgroup2 mount.
    Cgroup(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Uid(u) => write!(f, "uid {u}"),
            Target::Cgroup(p) => write!(f, "cgroup {p}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Suspend {
        target: Target,
        reason: String,
        for_secs: Option<u64>,
    },
    Unsuspend {
        target: Target,
        reason: String,
    },
    KillSwitch {
        on: bool,
        reason: String,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Suspend { .. } => "suspend",
            Request::Unsuspend { .. } => "unsuspend",
            Request::KillSwitch { .. } => "kill_switch",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
}

/// The process at the other end of a connection, as the kernel reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub user: String,
}

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

/// The groups of a process: primary and supplementary, from /proc (what the kernel checks).
fn process_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut groups: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if let Some(gid) = status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|g| g.split_whitespace().nth(1)?.parse().ok())
    {
        groups.push(gid);
    }
    groups
}

/// Is this peer allowed to operate the agent?
fn authorize(peer: &Peer, operators_gid: Option<u32>) -> Result<(), String> {
    if peer.uid == 0 {
        return Ok(());
    }
    let Some(gid) = operators_gid else {
        return Err(format!(
            "{} (uid {}) is not root and no operators group exists",
            peer.user, peer.uid
        ));
    };
    let groups = peer.pid.map(process_groups).unwrap_or_default();
    if peer.gid == gid || groups.contains(&gid) {
        Ok(())
    } else {
        Err(format!(
            "{} (uid {}) is neither root nor in the operators group (gid {gid})",
            peer.user, peer.uid
        ))
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
            std::os::unix::fs::chown(path, Some(0), Some(gid))?;
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
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(cred) = stream.peer_cred() else { return };
            let uid = cred.uid();
            let user = nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            let peer = Peer {
                uid,
                gid: cred.gid(),
                pid: cred.pid(),
                user,
            };
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // One request line, at most 64 KiB.
            let mut reader = AsyncBufReader::new(read.take(64 * 1024));
            let answer =
                match tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => match authorize(&peer, operators_gid) {
                        Err(why) => {
                            log::warn!("control socket: refused {why}");
                            let _ = tx
                                .send(Message::Denied {
                                    peer,
                                    why: why.clone(),
                                })
                                .await;
                            Response {
                                ok: false,
                                message: format!("refused: {why}"),
                            }
                        }
                        Ok(()) => match serde_json::from_str::<Request>(&line) {
                            Err(e) => Response {
                                ok: false,
                                message: format!("malformed request: {e}"),
                            },
                            Ok(req) => {
                                let (reply, rx) = oneshot::channel();
                                if tx
                                    .send(Message::Request { req, peer, reply })
                                    .await
                                    .is_err()
                                {
                                    Response {
                                        ok: false,
                                        message: "the agent is stopping".into(),
                                    }
                                } else {
                                    rx.await.unwrap_or(Response {
                                        ok: false,
                                        message: "no answer".into(),
                                    })
                                }
                            }
                        },
                    },
                    _ => return,
                };
            let mut out = serde_json::to_string(&answer).unwrap_or_default();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}

/// The client side, for the CLI: sends one request and returns the agent's answer.
pub fn call(socket: &Path, req: &Request) -> Result<Response, String> {
    let mut s = StdUnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied on {}: run as root or as a member of the agent's operators group",
            socket.display()
        ),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            format!(
                "no agent listening on {} (is `antispam run` running? see --socket)",
                socket.display()
            )
        }
        _ => format!("{}: {e}", socket.display()),
    })?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    serde_json::from_str(&answer).map_err(|e| format!("malformed answer from the agent: {e}"))
}

/// Common CLI arguments of the control commands.
#[derive(clap::Args, Debug)]
pub struct SocketArg {
    /// The running agent's control socket (its --control-socket).
    #[arg(long = "socket", default_value = DEFAULT_SOCKET, env = "ANTISPAM_SOCKET")]
    pub path: PathBuf,
}

/// Runs a request from the CLI: prints the answer, exit status 0 if it was done.
pub fn cli(socket: &SocketArg, req: Request) -> std::process::ExitCode {
    match call(&socket.path, &req) {
        Ok(r) if r.ok => {
            println!("{}", r.message);
            std::process::ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("antispam {}: {}", req.name(), r.message);
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("antispam {}: {e}", req.name());
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let r = Request::Suspend {
            target: Target::Cgroup("/a/b".into()),
            reason: "spam".into(),
            for_secs: Some(60),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"suspend","target":{"cgroup":"/a/b"},"reason":"spam","for_secs":60}"#
        );
        let back: Request = serde_json::from_str(&s).unwrap();
        assert!(matches!(back, Request::Suspend { target: Target::Cgroup(p), .. } if p == "/a/b"));
    }

    #[test]
    fn root_always_and_members_only() {
        let me = std::process::id() as i32;
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
            user: "root".into(),
        };
        assert!(authorize(&root, None).is_ok());
        let other = Peer {
            uid: 4242,
            gid: 4242,
            pid: None,
            user: "mallory".into(),
        };
        assert!(authorize(&other, None).is_err());
        assert!(authorize(&other, Some(777)).is_err());
        let member = Peer {
            uid: 4242,
            gid: 777,
            pid: None,
            user: "oncall".into(),
        };
        assert!(authorize(&member, Some(777)).is_ok());
        // Supplementary groups come from /proc/PID/status.
        let groups = process_groups(me);
        assert!(!groups.is_empty());
        let via_proc = Peer {
            uid: 4242,
            gid: 1,
            pid: Some(me),
            user: "x".into(),
        };
        assert!(authorize(&via_proc, Some(groups[0])).is_ok());
    }
}
