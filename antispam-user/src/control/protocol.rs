//! The control protocol: one JSON request line from an operator's command, one JSON response
//! line from the agent. The types are shared by the server (the agent) and the client (the CLI).

use serde::{Deserialize, Serialize};

use super::{
    signed::Signature,
    status::{BreakGlassView, Status},
};

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

impl Target {
    /// Does this target cover the cgroup at `path` (itself or a descendant)?
    pub fn covers_cgroup(&self, path: &str) -> bool {
        match self {
            Target::Cgroup(p) => {
                path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
            }
            Target::Uid(_) => false,
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
        /// Required when the policy says `[break_glass] require_signatures = true`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<Signature>,
    },
    /// Asks for a break-glass override of `target` for `ttl_secs`, once a second operator
    /// approves it.
    BreakGlassAsk {
        target: Target,
        reason: String,
        ttl_secs: u64,
        /// What the operator cites (alerts, metrics), shown to the approver.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        evidence: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<Signature>,
    },
    BreakGlassApprove {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<Signature>,
    },
    /// Withdraws a pending request or ends a granted override at once.
    BreakGlassRevoke {
        id: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<Signature>,
    },
    BreakGlassList,
    /// Unpins the programs and maps (which detaches them) and stops the agent.
    Uninstall {
        reason: String,
    },
    /// What is enforced now (the same as `GET /status`).
    Status,
    /// Open the event log's path anew (after logrotate moved the file).
    ReopenLogs,
}

impl Request {
    /// The command's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Suspend { .. } => "suspend",
            Request::Unsuspend { .. } => "unsuspend",
            Request::KillSwitch { .. } => "kill-switch",
            Request::BreakGlassAsk { .. } => "break-glass request",
            Request::BreakGlassApprove { .. } => "break-glass approve",
            Request::BreakGlassRevoke { .. } => "break-glass revoke",
            Request::BreakGlassList => "break-glass list",
            Request::Uninstall { .. } => "uninstall",
            Request::Status => "status",
            Request::ReopenLogs => "reopen-logs",
        }
    }
}

/// Structured answers, for requests that show things.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Data {
    BreakGlass(BreakGlassView),
    Status(Box<Status>),
}

/// What the agent did for a request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub message: String,
    pub data: Option<Data>,
}

impl Reply {
    pub fn said(message: impl Into<String>) -> Reply {
        Reply {
            message: message.into(),
            data: None,
        }
    }

    pub fn data(data: Data) -> Reply {
        Reply {
            message: String::new(),
            data: Some(data),
        }
    }
}

/// The response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
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

impl From<Reply> for Response {
    fn from(r: Reply) -> Response {
        Response {
            ok: true,
            message: r.message,
            data: r.data,
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
            format!(
                "{} (as {})",
                crate::sys::users::name_or_number(uid),
                self.user
            )
        };
        Person { uid, name }
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
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
    }

    #[test]
    fn cgroup_targets_cover_their_descendants_only() {
        let t = Target::Cgroup("/a/b".into());
        assert!(t.covers_cgroup("/a/b") && t.covers_cgroup("/a/b/c"));
        assert!(!t.covers_cgroup("/a/bc") && !t.covers_cgroup("/a"));
        assert!(Target::Cgroup("/".into()).covers_cgroup("/x"));
        assert!(!Target::Uid(1).covers_cgroup("/a"));
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
}
