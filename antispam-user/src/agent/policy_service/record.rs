//! What the policy service writes and counts: one JSON line per message (and per refused
//! recipient) in the event log, and the `antispam_messages_total` / `antispam_recipients_total`
//! counters, with bounded labels (paths and verdicts are fixed lists).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

/// How a message reached the MTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailPath {
    /// SMTP from a process of this host (found by sock_diag).
    LocalSmtp,
    /// `sendmail`/pickup (Postfix milter, Exim `acl_not_smtp`).
    Sendmail,
    /// SMTP from another host, authenticated (SASL).
    RemoteSmtp,
}

impl MailPath {
    pub const ALL: [MailPath; 3] = [
        MailPath::LocalSmtp,
        MailPath::Sendmail,
        MailPath::RemoteSmtp,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            MailPath::LocalSmtp => "local_smtp",
            MailPath::Sendmail => "sendmail",
            MailPath::RemoteSmtp => "remote_smtp",
        }
    }
}

/// `allowed`, `denied` or (monitor mode) `would_deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    Denied,
    WouldDeny,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Allowed, Verdict::Denied, Verdict::WouldDeny];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// One line of the event log: `"event": "message"` (a whole message, at its end) or
/// `"event": "recipient"` (a recipient refused before the message was complete).
#[derive(Debug, Serialize)]
pub struct MessageRecord {
    pub event: &'static str,
    pub ts: String,
    /// `postfix` or `exim`.
    pub mta: String,
    pub queue_id: Option<String>,
    /// Who is charged; null for a message of nobody on this host (an authenticated remote
    /// client is charged as its SASL user).
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    pub path: MailPath,
    /// The sender's domain (empty for the null sender); the whole address only with
    /// `[mta] record_addresses = true`.
    pub sender_domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub recipients: u64,
    pub recipient_domains: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_addresses: Option<Vec<String>>,
    pub size: Option<u64>,
    /// The SMTP client (address:port) when there is one.
    pub client: Option<String>,
    pub verdict: Verdict,
    /// `within_limit`, `no_limit`, `allowlist_user`, `allowlist_cgroup`, `break_glass`,
    /// `message_limit`, `recipient_limit`, `suspended`, `kill_switch`.
    pub reason: &'static str,
    pub would_deny: bool,
    /// The rule that decided (`limit[i]`, `allow[i]`, `default`), and for a refusal the limit
    /// and whose it is.
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// What the MTA was told: `dunno`, `defer` (4xx) or `reject` (5xx), and the text.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Time taken to decide, in microseconds.
    pub decision_us: u64,
    pub generation: u32,
}

/// The service's counters (read at scrape time).
#[derive(Default)]
pub struct Counters {
    /// Messages by path and verdict.
    messages: [[AtomicU64; 3]; 3],
    /// Recipients by verdict.
    recipients: [AtomicU64; 3],
    /// Questions answered, and the time spent deciding them (nanoseconds).
    pub queries: AtomicU64,
    pub decision_ns: AtomicU64,
    /// Connections refused (peer not allowed) and connections ended on a protocol error.
    pub peers_refused: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Failures to save the buckets.
    pub save_errors: AtomicU64,
    /// 1 while the service serves its socket.
    pub up: AtomicU64,
}

impl Counters {
    pub fn message(&self, path: MailPath, verdict: Verdict, recipients: u64) {
        self.messages[path as usize][verdict as usize].fetch_add(1, Ordering::Relaxed);
        self.recipients(verdict, recipients);
    }

    pub fn recipients(&self, verdict: Verdict, n: u64) {
        self.recipients[verdict as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// Adds the service's metrics to `reg`.
pub fn metrics(reg: &Registry, c: &Counters) {
    let messages = IntCounterVec::new(
        Opts::new(
            "antispam_messages_total",
            "Messages the local MTA asked the policy service about, by mail path and verdict",
        ),
        &["path", "verdict"],
    )
    .expect("valid metric");
    let recipients = IntCounterVec::new(
        Opts::new(
            "antispam_recipients_total",
            "Recipients of those messages (and recipients refused on their own), by verdict",
        ),
        &["verdict"],
    )
    .expect("valid metric");
    for p in MailPath::ALL {
        for v in Verdict::ALL {
            messages
                .with_label_values(&[p.name(), v.name()])
                .inc_by(c.messages[p as usize][v as usize].load(Ordering::Relaxed));
        }
    }
    for v in Verdict::ALL {
        recipients
            .with_label_values(&[v.name()])
            .inc_by(c.recipients[v as usize].load(Ordering::Relaxed));
    }
    reg.register(Box::new(messages)).expect("unique metric");
    reg.register(Box::new(recipients)).expect("unique metric");
    for (name, help, v) in [
        (
            "antispam_mta_queries_total",
            "Questions of the MTA answered by the policy service",
            &c.queries,
        ),
        (
            "antispam_mta_protocol_errors_total",
            "Policy service connections ended because the client broke the protocol",
            &c.protocol_errors,
        ),
        (
            "antispam_mta_peers_refused_total",
            "Policy service connections refused: the peer is neither root nor in the MTA group",
            &c.peers_refused,
        ),
        (
            "antispam_mta_budget_save_errors_total",
            "Failures to save the message and recipient buckets",
            &c.save_errors,
        ),
    ] {
        let m = IntCounter::new(name, help).expect("valid metric");
        m.inc_by(v.load(Ordering::Relaxed));
        reg.register(Box::new(m)).expect("unique metric");
    }
    let secs = prometheus::Counter::new(
        "antispam_mta_decision_seconds_total",
        "Time the policy service spent deciding (with antispam_mta_queries_total: the mean)",
    )
    .expect("valid metric");
    secs.inc_by(c.decision_ns.load(Ordering::Relaxed) as f64 / 1e9);
    reg.register(Box::new(secs)).expect("unique metric");
    let up = IntGauge::new(
        "antispam_mta_service_up",
        "1 while the MTA policy service serves its socket",
    )
    .expect("valid metric");
    up.set(i64::try_from(c.up.load(Ordering::Relaxed)).unwrap_or(0));
    reg.register(Box::new(up)).expect("unique metric");
    let open = IntGauge::new(
        "antispam_mta_connections",
        "Connections of the MTA to the policy service open now",
    )
    .expect("valid metric");
    open.set(i64::try_from(c.connections.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    reg.register(Box::new(open)).expect("unique metric");
}
