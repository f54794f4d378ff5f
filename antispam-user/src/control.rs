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
    /// Asks for a break-glass override of `target` for `ttl_secs`, once a second operator
    /// approves it.
    BreakGlassAsk {
        target: Target,
        reason: String,
        ttl_secs: u64,
    },
    BreakGlassApprove {
        id: String,
    },
    /// Withdraws a pending request or ends a granted override at once.
    BreakGlassRevoke {
        id: String,
        reason: String,
    },
    BreakGlassList,
    /// Unpins the programs and maps (which detaches them) and stops the agent.
    Uninstall {
        reason: String,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Suspend { .. } => "suspend",
            Request::Unsuspend { .. } => "unsuspend",
            Request::KillSwitch { .. } => "kill_switch",
            Request::BreakGlassAsk { .. } => "break-glass request",
            Request::BreakGlassApprove { .. } => "break-glass approve",
            Request::BreakGlassRevoke { .. } => "break-glass revoke",
            Request::BreakGlassList => "break-glass list",
            Request::Uninstall { .. } => "uninstall",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    /// Structured answer, for requests that list things.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn refused(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
            data: None,
        }
    }
}

/// The process at the other end of a connection, as the kernel reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub user: String,
    /// The kernel's audit login UID of the process (`/proc/PID/loginuid`): who logged in, kept
    /// across `sudo` and `su`, and changeable only with CAP_AUDIT_CONTROL.
    pub login_uid: Option<u32>,
}

/// The person behind a peer, for the two-person rule. A non-root operator is their own UID. A
/// root peer is whoever logged in (the login UID), so two people who each `sudo` are still
/// two people; a root process with no login session (a script, a service) is "root".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub uid: u32,
    pub name: String,
}

impl Peer {
    pub fn person(&self) -> Person {
        let uid = match (self.uid, self.login_uid) {
            (0, Some(l)) => l,
            (u, _) => u,
        };
        let name = if uid == self.uid {
            self.user.clone()
        } else {
            format!("{} (as {})", user_name(uid), self.user)
        };
        Person { uid, name }
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// `/proc/PID/loginuid`; unset (4294967295) is None.
fn login_uid(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|u| *u != u32::MAX)
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
            let peer = Peer {
                uid,
                gid: cred.gid(),
                pid: cred.pid(),
                user: user_name(uid),
                login_uid: cred.pid().and_then(login_uid),
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
                                    rx.await.unwrap_or(Response::refused("no answer"))
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
    fn the_person_behind_root_is_who_logged_in() {
        let peer = |uid, login_uid| Peer {
            uid,
            gid: 0,
            pid: None,
            user: if uid == 0 {
                "root".into()
            } else {
                "alice".into()
            },
            login_uid,
        };
        // Two people who each sudo are two people; a root script with no login is "root".
        assert_eq!(peer(0, Some(61001)).person().uid, 61001);
        assert_ne!(peer(0, Some(61001)).person(), peer(0, Some(61002)).person());
        assert_eq!(peer(0, None).person().uid, 0);
        // A non-root operator is their own UID, whoever logged in.
        assert_eq!(peer(61003, Some(61001)).person().uid, 61003);
        assert!(peer(0, Some(61001)).person().name.contains("as root"));
    }

    #[test]
    fn root_always_and_members_only() {
        let me = std::process::id() as i32;
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
            user: "root".into(),
            login_uid: None,
        };
        assert!(authorize(&root, None).is_ok());
        let other = Peer {
            uid: 4242,
            gid: 4242,
            pid: None,
            user: "mallory".into(),
            login_uid: None,
        };
        assert!(authorize(&other, None).is_err());
        assert!(authorize(&other, Some(777)).is_err());
        let member = Peer {
            uid: 4242,
            gid: 777,
            pid: None,
            user: "oncall".into(),
            login_uid: None,
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
            login_uid: None,
        };
        assert!(authorize(&via_proc, Some(groups[0])).is_ok());
    }
}
