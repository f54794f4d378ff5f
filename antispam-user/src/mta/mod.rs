//! The local MTA's side of the policy service: the protocols Postfix and Exim use to ask about
//! a message, turned into one [`Query`] type and answered with one [`Answer`] type. Nothing
//! here knows budgets or the kernel: the agent (`agent::policy_service`) decides.
//!
//! - [`policy`]: Postfix's policy delegation protocol (`check_policy_service`), also spoken by
//!   Exim's `${readsocket}` ACL lookups (docs/mta-policy-service.md).
//! - [`milter`]: the milter protocol (Postfix `non_smtpd_milters`: mail from `sendmail` and
//!   pickup, which smtpd never sees), on the `miltr-server` crate.
//!
//! Both arrive on one Unix socket: a milter client's first byte is the high byte of a 4-byte
//! big-endian packet length (0 for any packet under 16 MiB), a policy client's first byte is a
//! letter (`request=`...). [`Protocol::sniff`] tells them apart.

pub mod milter;
pub mod policy;

use std::net::SocketAddr;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Milter,
    Policy,
}

impl Protocol {
    /// From the first byte a client sent.
    pub fn sniff(first: u8) -> Protocol {
        if first < 0x20 {
            Protocol::Milter
        } else {
            Protocol::Policy
        }
    }
}

/// Where in a message's transaction the MTA asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// One recipient (Postfix `RCPT`, Exim `acl_smtp_rcpt`, milter `envrcpt`): is there room
    /// for one more? Nothing is charged yet.
    Rcpt,
    /// The whole message (Postfix `END-OF-MESSAGE`, Exim `acl_smtp_data`/`acl_not_smtp`,
    /// milter end of body): charged here, one message and every recipient.
    EndOfMessage,
}

/// How the message reached the MTA, as the MTA tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An SMTP session (from this host or another one: the agent finds out which).
    Smtp,
    /// The MTA's non-SMTP submission (`sendmail`, Postfix pickup, Exim `acl_not_smtp`).
    Local,
}

/// One question from the MTA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub stage: Option<Stage>,
    pub origin: Option<Origin>,
    /// `postfix` or `exim` (or what a client says it is).
    pub mta: String,
    /// The MTA's queue id, when it has one yet.
    pub queue_id: Option<String>,
    /// Envelope sender (empty: the null sender of bounces).
    pub sender: String,
    /// `Rcpt`: the recipient asked about. `EndOfMessage`: every recipient, when the protocol
    /// tells them (milter does; Postfix tells only their count).
    pub recipients: Vec<String>,
    /// `EndOfMessage`: how many recipients the MTA accepted.
    pub recipient_count: Option<u64>,
    /// Message size in bytes, when known.
    pub size: Option<u64>,
    /// The SMTP client's address and port, and the address and port it connected to.
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// The SASL login of an authenticated client.
    pub sasl_username: Option<String>,
    /// The UID the MTA says submitted a non-SMTP message (Exim `$originator_uid`, Postfix's
    /// `Received: ... (Postfix, from userid N)`).
    pub uid: Option<u32>,
    /// A string the same for every question about one message (Postfix `instance`).
    pub instance: Option<String>,
    /// The MTA process that asked (SO_PEERCRED of a milter connection: Postfix's cleanup),
    /// whose queue file says who submitted a non-SMTP message.
    pub mta_pid: Option<i32>,
}

/// The answer to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No objection (Postfix `DUNNO`, milter continue).
    Dunno,
    /// Refused for now (4xx): the MTA keeps the message, or the client tries again later.
    Defer(String),
    /// Refused for good (5xx): the message is returned to its sender.
    Reject(String),
}

impl Answer {
    /// The SMTP reply code and enhanced status code of a refusal.
    pub fn codes(&self) -> Option<(u16, &'static str)> {
        match self {
            Answer::Dunno => None,
            Answer::Defer(_) => Some((451, "4.7.1")),
            Answer::Reject(_) => Some((550, "5.7.1")),
        }
    }

    /// The word recorded for the answer: `dunno`, `defer`, `reject`.
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Dunno => "dunno",
            Answer::Defer(_) => "defer",
            Answer::Reject(_) => "reject",
        }
    }

    fn text(&self) -> &str {
        match self {
            Answer::Dunno => "",
            Answer::Defer(t) | Answer::Reject(t) => t,
        }
    }
}

/// Who answers the queries: the agent.
pub trait Decide: Send + Sync {
    fn decide(&self, query: &Query) -> Answer;
}

/// The domain of an address (`user@Example.COM` → `example.com`); `None` without one.
pub fn domain(address: &str) -> Option<String> {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (_, d) = a.rsplit_once('@')?;
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

/// Text safe to put in an SMTP reply: printable ASCII, one line, bounded.
fn reply_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(400)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_told_apart_by_their_first_byte() {
        assert_eq!(Protocol::sniff(0), Protocol::Milter);
        assert_eq!(Protocol::sniff(b'r'), Protocol::Policy);
        assert_eq!(
            domain("<Alice@Example.COM>").as_deref(),
            Some("example.com")
        );
        assert_eq!(domain("postmaster"), None);
        assert_eq!(domain("a@"), None);
        assert_eq!(reply_text("x\r\ny\u{e9}"), "x??y?");
    }
}
