//! The milter side: Postfix's `non_smtpd_milters` hands every message that arrives through
//! `sendmail`/pickup (which smtpd and its policy service never see) to a milter before it is
//! queued. The protocol is the `miltr-server` crate's; this file collects what one message
//! says and asks [`Decide`] once, at the end of the message.
//!
//! Who submitted a non-SMTP message: Postfix's pickup prepends
//! `Received: by HOST (Postfix, from userid UID)` to every message it takes from the maildrop
//! queue, with the UID that owns the queue file (postdrop writes it as the submitting user). It
//! is always the message's first header, so only the first header is believed: a header of the
//! same form that the submitter wrote comes after it.

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
    decide: &dyn Decide,
) -> Result<(), Error> {
    let mut m = MessageMilter {
        decide,
        client: None,
        macros: BTreeMap::new(),
        msg: Message::default(),
    };
    Server::default_postfix(&mut m).handle_connection(stream).await
}

/// What is known of the message under way.
#[derive(Default)]
struct Message {
    sender: String,
    recipients: Vec<String>,
    recipient_count: u64,
    headers: u64,
    /// The UID from pickup's `Received:` header, if it is the first header.
    uid: Option<u32>,
    size: u64,
}

struct MessageMilter<'a> {
    decide: &'a dyn Decide,
    /// The SMTP client of the connection (Postfix says `localhost [127.0.0.1]` for non-SMTP
    /// mail); believed only for messages without pickup's header.
    client: Option<SocketAddr>,
    /// Every macro seen on this connection, newest value last.
    macros: BTreeMap<String, String>,
    msg: Message,
}

/// The UID in pickup's `Received: by HOST (NAME, from userid UID)` header value.
pub fn pickup_uid(value: &str) -> Option<u32> {
    let v = value.trim_start();
    if !v.starts_with("by ") {
        return None;
    }
    let (_, rest) = v.split_once(", from userid ")?;
    let (digits, _) = rest.split_once(')')?;
    digits.trim().parse().ok()
}

impl MessageMilter<'_> {
    fn macro_value(&self, name: &str) -> Option<String> {
        self.macros.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn query(&self) -> Query {
        let local = self.msg.uid.is_some();
        Query {
            stage: Some(Stage::EndOfMessage),
            origin: Some(if local { Origin::Local } else { Origin::Smtp }),
            mta: "postfix".into(),
            queue_id: self.macro_value("i"),
            sender: self.msg.sender.clone(),
            recipients: self.msg.recipients.clone(),
            recipient_count: Some(self.msg.recipient_count),
            size: Some(self.msg.size),
            client: if local { None } else { self.client },
            server: None,
            sasl_username: self.macro_value("{auth_authen}"),
            uid: self.msg.uid,
            instance: None,
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
        if self.msg.headers == 1 && name.eq_ignore_ascii_case("Received") {
            self.msg.uid = pickup_uid(&value);
        }
        Ok(Continue.into())
    }

    async fn body(&mut self, b: Body) -> Result<Action, Self::Error> {
        self.msg.size += b.as_bytes().len() as u64;
        Ok(Continue.into())
    }

    async fn end_of_body(&mut self) -> Result<ModificationResponse, Self::Error> {
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
    fn pickups_received_header() {
        let v = "by postfix-test.example.test (Postfix, from userid 61042)\n\tid 4Xy; Tue, 1 Dec 2026";
        assert_eq!(pickup_uid(v), Some(61042));
        assert_eq!(pickup_uid("from x by y (Postfix) with ESMTP id Z"), None);
        assert_eq!(pickup_uid("by h (Postfix, from userid 0x1)"), None);
    }

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
