//! The MTA policy service: the local MTA asks it about every message and recipient (Postfix's
//! policy delegation and milter protocols, Exim's `${readsocket}`: `crate::mta`), and it
//! answers from the message and recipient budgets of the policy in force, the suspensions and
//! the kill switch, and writes one record per message into the event log.
//!
//! The socket: `--mta-socket` (default `/run/antispam/mta/mta.sock`), `0660 root:<--mta-group>`
//! in a `0750 root:<--mta-group>` directory of its own, so that the MTA's processes reach it
//! and no other user can; every peer is checked again with SO_PEERCRED (root, or the group
//! among its groups).

mod decide;
mod ledger;
pub mod record;

use std::{
    collections::HashMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, watch},
};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

pub use self::record::Counters;
use self::{
    decide::{Judgement, Subject},
    ledger::Ledger,
    record::{MailPath, MessageRecord, Verdict},
};
use super::state::Shared;
use crate::{
    clock,
    mta::{self, Answer, Decide, Origin, Protocol, Query, Stage},
    sys::{self, procfs, sockdiag},
};

/// Connections served at once; more are closed at once (the MTA applies its default action).
const MAX_CONNECTIONS: u64 = 1024;
/// Messages whose recipients are remembered between RCPT and the end of the message.
const MAX_PENDING: usize = 65_536;
/// How often changed buckets are written to disk.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The socket file and its directory: the file is removed when the agent exits.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("MTA socket {path}: give it a directory of its own (it is made 0750 root:{group}), not {dir}, which holds the control socket")]
    SharedDirectory {
        path: PathBuf,
        dir: PathBuf,
        group: String,
    },
    #[error("MTA socket directory {dir} is owned by uid {uid}, not root: refusing to use it")]
    NotRootsDirectory { dir: PathBuf, uid: u32 },
    #[error("MTA socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket: directory `0750 root:GID`, socket `0660 root:GID` (0700 / 0600 root-only
/// without the group).
pub fn bind(
    path: &Path,
    gid: Option<u32>,
    group: &str,
    control_socket: &Path,
) -> Result<(UnixListener, SocketFile), ServiceError> {
    let io = |source| ServiceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    if control_socket.parent() == Some(dir) {
        return Err(ServiceError::SharedDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            group: group.to_string(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let owner = std::fs::metadata(dir).map_err(io)?.uid();
    if owner != 0 && nix::unistd::geteuid().is_root() {
        return Err(ServiceError::NotRootsDirectory {
            dir: dir.to_path_buf(),
            uid: owner,
        });
    }
    let (dir_mode, sock_mode) = if gid.is_some() {
        (0o750, 0o660)
    } else {
        (0o700, 0o600)
    };
    std::os::unix::fs::chown(dir, None, gid).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).map_err(io)?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let file = SocketFile(path.to_path_buf());
    std::os::unix::fs::chown(path, None, gid).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(sock_mode)).map_err(io)?;
    Ok((listener, file))
}

/// Recipients accepted at RCPT for a message under way (Postfix `instance`).
struct Pending {
    recipients: u64,
    domains: Vec<String>,
    since: Instant,
}

/// The service's state, shared by its connections.
pub struct Service {
    shared: Arc<Shared>,
    ledger: Mutex<Ledger>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Lines for the event log (written by the event task, with the kernel's events).
    lines: mpsc::Sender<Vec<u8>>,
    budgets_path: PathBuf,
    gid: Option<u32>,
}

impl Service {
    pub fn new(
        shared: Arc<Shared>,
        lines: mpsc::Sender<Vec<u8>>,
        budgets_path: PathBuf,
        gid: Option<u32>,
    ) -> Service {
        let ledger = match Ledger::load(&budgets_path) {
            Ok(l) => {
                log::info!(
                    "MTA policy service: {} message and recipient buckets restored from {}",
                    l.len(),
                    budgets_path.display()
                );
                l
            }
            Err(e) => {
                log::error!(
                    "MTA policy service: cannot read {} ({e}): message and recipient budgets start full",
                    budgets_path.display()
                );
                Ledger::default()
            }
        };
        Service {
            shared,
            ledger: Mutex::new(ledger),
            pending: Mutex::default(),
            lines,
            budgets_path,
            gid,
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self) {
        let mut l = self.ledger();
        if !l.dirty {
            return;
        }
        if let Err(e) = l.save(&self.budgets_path) {
            self.shared.mta.save_errors.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "MTA policy service: saving the buckets to {}: {e}",
                self.budgets_path.display()
            );
        }
    }

    /// Who is charged: the UID the MTA reports for non-SMTP mail; for SMTP the owner of the
    /// client's socket on this host; else the SASL user; else nobody (mail from other hosts,
    /// such as inbound mail, is not the service's business).
    fn attribute(&self, q: &Query) -> Option<Subject> {
        let sasl = q.sasl_username.clone();
        if q.origin == Some(Origin::Local) {
            let from_queue = || {
                let (pid, id) = (q.mta_pid?, q.queue_id.as_deref()?);
                match sys::postfix_queue::submitter(pid, id) {
                    Ok(uid) => uid,
                    Err(e) => {
                        log::warn!("MTA policy service: reading the queue file {id} of Postfix process {pid}: {e}: the message is not charged to anyone");
                        None
                    }
                }
            };
            if let Some(uid) = q.uid.or_else(from_queue) {
                return Some(Subject {
                    uid: Some(uid),
                    cgroup_id: None,
                    sasl,
                    path: MailPath::Sendmail,
                });
            }
        }
        let owner = match (q.client, q.server) {
            (Some(c), Some(s)) => sockdiag::owner(c, s).unwrap_or_else(|e| {
                log::warn!("MTA policy service: sock_diag lookup of {c} -> {s}: {e}");
                None
            }),
            _ => None,
        };
        match owner {
            Some(o) => Some(Subject {
                uid: Some(o.uid),
                cgroup_id: o.cgroup_id,
                sasl,
                path: MailPath::LocalSmtp,
            }),
            None => sasl.map(|name| Subject {
                uid: None,
                cgroup_id: None,
                sasl: Some(name),
                path: MailPath::RemoteSmtp,
            }),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, rec: &MessageRecord) {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(e) => {
                log::error!("MTA policy service: encoding a record: {e}");
                return;
            }
        };
        line.push(b'\n');
        if self.lines.try_send(line).is_err() {
            self.shared
                .counters
                .log_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn answer(&self, j: &Judgement, monitor: bool) -> Answer {
        match (&j.text, j.refused && !monitor) {
            (Some(text), true) if self.shared.enforced().policy.mta.permanent => {
                Answer::Reject(text.clone())
            }
            (Some(text), true) => Answer::Defer(text.clone()),
            _ => Answer::Dunno,
        }
    }
}

impl Decide for Service {
    fn decide(&self, q: &Query) -> Answer {
        let t0 = Instant::now();
        let Some(stage) = q.stage else {
            return Answer::Dunno;
        };
        let Some(subject) = self.attribute(q) else {
            return Answer::Dunno;
        };
        let e = self.shared.enforced();
        let instance = q.instance.clone();
        let (so_far, mut domains) = match (&instance, stage) {
            (Some(i), Stage::EndOfMessage) => self
                .pending()
                .remove(i)
                .map_or((0, Vec::new()), |p| (p.recipients, p.domains)),
            (Some(i), Stage::Rcpt) => self
                .pending()
                .get(i)
                .map_or((0, Vec::new()), |p| (p.recipients, Vec::new())),
            (None, _) => (0, Vec::new()),
        };
        let n_recipients = match stage {
            // Recipients before this one: those the service saw (Postfix's `instance`), or
            // those the MTA says it accepted (Exim's `$recipients_count`; Postfix sends 0).
            Stage::Rcpt => so_far.max(q.recipient_count.unwrap_or(0)) + 1,
            Stage::EndOfMessage => q
                .recipient_count
                .unwrap_or(0)
                .max(q.recipients.len() as u64)
                .max(so_far),
        };
        let now = ledger::now_ns();
        let j = {
            let mut l = self.ledger();
            decide::judge(&e, &self.shared, &mut l, &subject, stage, n_recipients, now)
        };
        let monitor = e.policy.mode == crate::policy::Mode::Monitor;
        let answer = self.answer(&j, monitor);
        let verdict = match (j.refused, monitor) {
            (false, _) => Verdict::Allowed,
            (true, false) => Verdict::Denied,
            (true, true) => Verdict::WouldDeny,
        };
        domains.extend(q.recipients.iter().filter_map(|r| mta::domain(r)));
        domains.sort();
        domains.dedup();
        if stage == Stage::Rcpt && answer == Answer::Dunno {
            if let Some(i) = instance {
                let mut p = self.pending();
                if p.len() >= MAX_PENDING {
                    p.retain(|_, v| v.since.elapsed() < Duration::from_secs(3600));
                }
                if p.len() < MAX_PENDING {
                    let entry = p.entry(i).or_insert_with(|| Pending {
                        recipients: 0,
                        domains: Vec::new(),
                        since: Instant::now(),
                    });
                    entry.recipients += 1;
                    for d in domains.iter() {
                        if !entry.domains.contains(d) && entry.domains.len() < 100 {
                            entry.domains.push(d.clone());
                        }
                    }
                }
            }
        }
        let took = t0.elapsed();
        let c = &self.shared.mta;
        c.queries.fetch_add(1, Ordering::Relaxed);
        c.decision_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let record = match stage {
            Stage::EndOfMessage => {
                c.message(subject.path, verdict, n_recipients);
                Some("message")
            }
            Stage::Rcpt if j.refused => {
                // In monitor mode the recipient stays in its message and is counted with it
                // at the end; counting it here too would count it twice.
                if !monitor {
                    c.recipients(verdict, 1);
                }
                Some("recipient")
            }
            Stage::Rcpt => None,
        };
        if let Some(event) = record {
            let full = e.policy.mta.record_addresses;
            let rec = MessageRecord {
                event,
                ts: clock::rfc3339_micros(SystemTime::now()),
                mta: q.mta.clone(),
                queue_id: q.queue_id.clone(),
                uid: subject.uid,
                user: subject.uid.and_then(|u| self.shared.users.name(u)),
                cgroup: subject.cgroup_id.map(|id| self.shared.cgroups.label(id)),
                cgroup_id: subject.cgroup_id,
                sasl_username: subject.sasl.clone(),
                path: subject.path,
                sender_domain: mta::domain(&q.sender).unwrap_or_default(),
                sender: full.then(|| q.sender.clone()),
                recipients: if event == "recipient" {
                    1
                } else {
                    n_recipients
                },
                recipient_domains: domains,
                recipient_addresses: full.then(|| q.recipients.clone()),
                size: q.size,
                client: q.client.map(|a| a.to_string()),
                verdict,
                reason: j.reason,
                would_deny: verdict == Verdict::WouldDeny,
                rule: j.rule.clone(),
                limit: j.limit.clone(),
                action: answer.name(),
                text: j.text.clone(),
                decision_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                generation: self.shared.generation.load(Ordering::Relaxed),
            };
            self.write(&rec);
        }
        answer
    }
}

/// Accepts connections until `stop` changes, saving the buckets every second and at the end.
pub async fn serve(listener: UnixListener, service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let open = &service.shared.mta.connections;
                    if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        log::warn!("MTA policy service: {MAX_CONNECTIONS} connections open; refusing another");
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    let s = service.clone();
                    tokio::spawn(async move {
                        connection(stream, &s).await;
                        s.shared.mta.connections.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => log::warn!("MTA policy service: accept: {e}"),
            },
            _ = tick.tick() => service.save(),
            _ = stop.changed() => {
                service.save();
                return;
            }
        }
    }
}

/// Why a peer may not use the MTA policy socket.
#[derive(Debug, thiserror::Error)]
enum Unauthorized {
    #[error("a peer whose credentials cannot be read (SO_PEERCRED: {0})")]
    NoCredentials(#[source] std::io::Error),
    #[error("uid {uid}: not root, and no MTA group exists")]
    NoGroup { uid: u32 },
    #[error("uid {uid}: neither root nor in the MTA group (gid {gid})")]
    NotMember { uid: u32, gid: u32 },
}

/// Is this peer the MTA (root, or a member of its group)?
fn authorized(stream: &UnixStream, gid: Option<u32>) -> Result<(), Unauthorized> {
    let cred = stream.peer_cred().map_err(Unauthorized::NoCredentials)?;
    let uid = cred.uid();
    if uid == 0 {
        return Ok(());
    }
    let Some(gid) = gid else {
        return Err(Unauthorized::NoGroup { uid });
    };
    let groups = cred.pid().map(procfs::groups).unwrap_or_default();
    if cred.gid() == gid || groups.contains(&gid) {
        Ok(())
    } else {
        Err(Unauthorized::NotMember { uid, gid })
    }
}

/// The first byte the client sent, without taking it.
async fn first_byte(stream: &UnixStream) -> Option<u8> {
    loop {
        stream.readable().await.ok()?;
        let mut b = [0u8; 1];
        let r = stream.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                &mut b,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            )
            .map_err(std::io::Error::from)
        });
        match r {
            Ok(0) => return None,
            Ok(_) => return Some(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

async fn connection(stream: UnixStream, service: &Service) {
    if let Err(why) = authorized(&stream, service.gid) {
        log::warn!("MTA policy service: refused {why}");
        service
            .shared
            .mta
            .peers_refused
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(first) = first_byte(&stream).await else {
        return;
    };
    match Protocol::sniff(first) {
        Protocol::Policy => {
            if let Err(e) = mta::policy::serve(stream, service).await {
                service
                    .shared
                    .mta
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!("MTA policy service (policy protocol): {e}");
            }
        }
        Protocol::Milter => {
            let pid = stream.peer_cred().ok().and_then(|c| c.pid());
            if let Err(e) = mta::milter::serve(stream.compat(), pid, service).await {
                service
                    .shared
                    .mta
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!("MTA policy service (milter): {e}");
            }
        }
    }
}
