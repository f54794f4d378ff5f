//! The milter side: Postfix's `non_smtpd_milters` hands every message that arrives through
//! `sendmail`/pickup (which smtpd and its policy service never see) to a milter before it is
//! queued. The protocol is the `miltr-server` crate's; this file collects what one message
//! says and asks [`Decide`] once, at the end of the message.
//!
//! Who submitted a non-SMTP message is not in anything the milter is sent (headers are the
//! submitter's to write, and Postfix does not show a milter its own `Received:` header): the
//! query carries the queue id and the MTA process's pid, and the agent reads pickup's header
//! from the queue file (`sys::postfix_queue`). Nothing of the headers is believed.

use std::{collections::BTreeMap, net::SocketAddr};

use async_trait::async_trait;
use futures_util::{AsyncRead, AsyncWrite};
use miltr_common::{
    actions::{Action, Continue, Replycode},
    commands::{Body, Connect, Header, Macro, Mail, Recipient},
    modifications::ModificationResponse,
};
use miltr_server::{Milter, Server};

use super::{Answer, Decide, Origin, Query, Stage};

/// Most recipients remembered for one message (the count goes on past it).
const MAX_RECIPIENTS: usize = 10_000;

/// Why a milter connection ended badly.
pub type Error = miltr_server::Error<std::convert::Infallible>;

/// Serves one milter connection (many messages) until the MTA closes it.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    peer_pid: Option<i32>,
    decide: &dyn Decide,
) -> Result<(), Error> {
    let mut m = MessageMilter {
        decide,
        peer_pid,
        client: None,
        macros: BTreeMap::new(),
        msg: Message::default(),
    };
    Server::default_postfix(&mut m)
        .handle_connection(stream)
        .await
}

/// What is known of the message under way.
#[derive(Default)]
struct Message {
    sender: String,
    recipients: Vec<String>,
    recipient_count: u64,
    headers: u64,
    size: u64,
}

struct MessageMilter<'a> {
    decide: &'a dyn Decide,
    /// The MTA process on the other end (Postfix's cleanup).
    peer_pid: Option<i32>,
    /// The SMTP client of the connection (Postfix says `localhost [127.0.0.1]` for non-SMTP
    /// mail); believed only for messages without pickup's header.
    client: Option<SocketAddr>,
    /// Every macro seen on this connection, newest value last.
    macros: BTreeMap<String, String>,
    msg: Message,
}

impl MessageMilter<'_> {
    fn macro_value(&self, name: &str) -> Option<String> {
        self.macros.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// The question at the end of a message. `non_smtpd_milters` sees only non-SMTP mail: the
    /// origin is local, and the submitter is found from the queue file.
    fn query(&self) -> Query {
        Query {
            stage: Some(Stage::EndOfMessage),
            origin: Some(Origin::Local),
            mta: "postfix".into(),
            queue_id: self.macro_value("i"),
            sender: self.msg.sender.clone(),
            recipients: self.msg.recipients.clone(),
            recipient_count: Some(self.msg.recipient_count),
            size: Some(self.msg.size),
            client: self.client,
            server: None,
            sasl_username: self.macro_value("{auth_authen}"),
            uid: None,
            instance: None,
            mta_pid: self.peer_pid,
        }
    }
}

/// The milter reply for an answer.
fn action(answer: &Answer) -> Action {
    match answer.codes() {
        None => Continue.into(),
        Some((code, status)) => {
            let digits = |n: u16| [(n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8];
            let x: Vec<u16> = status.split('.').filter_map(|p| p.parse().ok()).collect();
            let xcode = [
                x.first().copied().unwrap_or(4),
                x.get(1).copied().unwrap_or(7),
                x.get(2).copied().unwrap_or(1),
            ];
            let text = match answer {
                Answer::Defer(t) | Answer::Reject(t) => super::reply_text(t),
                Answer::Dunno => String::new(),
            };
            Replycode::new(digits(code), xcode, &text).into()
        }
    }
}

#[async_trait]
impl Milter for MessageMilter<'_> {
    type Error = std::convert::Infallible;

    async fn macro_(&mut self, m: Macro) -> Result<(), Self::Error> {
        for (k, v) in m.macros() {
            if self.macros.len() < 256 || self.macros.contains_key(&*String::from_utf8_lossy(k)) {
                self.macros.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
        }
        Ok(())
    }

    async fn connect(&mut self, c: Connect) -> Result<Action, Self::Error> {
        self.client = c
            .address()
            .trim_matches(['[', ']'])
            .parse()
            .ok()
            .zip(c.port)
            .map(|(ip, port)| SocketAddr::new(ip, port));
        Ok(Continue.into())
    }

    async fn mail(&mut self, mail: Mail) -> Result<Action, Self::Error> {
        self.msg = Message {
            sender: mail.sender().trim_matches(['<', '>']).to_string(),
            ..Message::default()
        };
        Ok(Continue.into())
    }

    async fn rcpt(&mut self, r: Recipient) -> Result<Action, Self::Error> {
        self.msg.recipient_count += 1;
        if self.msg.recipients.len() < MAX_RECIPIENTS {
            self.msg
                .recipients
                .push(r.recipient().trim_matches(['<', '>']).to_string());
        }
        Ok(Continue.into())
    }

    async fn header(&mut self, h: Header) -> Result<Action, Self::Error> {
        self.msg.headers += 1;
        let (name, value) = (h.name(), h.value());
        self.msg.size += (name.len() + value.len() + 4) as u64;
        Ok(Continue.into())
    }

    async fn body(&mut self, b: Body) -> Result<Action, Self::Error> {
        self.msg.size += b.as_bytes().len() as u64;
        Ok(Continue.into())
    }

    async fn end_of_body(&mut self) -> Result<ModificationResponse, Self::Error> {
        log::debug!(
            "milter: end of message, {} headers, macros {:?}",
            self.msg.headers,
            self.macros
        );
        let answer = self.decide.decide(&self.query());
        self.msg = Message::default();
        Ok(ModificationResponse::builder().build(action(&answer)))
    }

    async fn abort(&mut self) -> Result<(), Self::Error> {
        self.msg = Message::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_reply_codes() {
        assert!(matches!(action(&Answer::Dunno), Action::Continue(_)));
        match action(&Answer::Defer("antispam: full".into())) {
            Action::Replycode(r) => {
                assert_eq!(r.xcode().as_ref().map(|x| x.code()), Some([4, 7, 1]));
                assert_eq!(r.message(), "antispam: full");
            }
            other => panic!("{other:?}"),
        }
    }
}
