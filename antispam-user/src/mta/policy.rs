//! Postfix's policy delegation protocol (SMTPD_POLICY_README): the MTA sends `name=value`
//! lines ended by an empty line, the server answers `action=...` and an empty line, and the
//! connection stays open for the next request. Exim's ACLs speak it too, through
//! `${readsocket}` (which shuts its end down after one request: the server answers, reads end
//! of file and closes).
//!
//! Attributes read: `request`, `protocol_state`, `queue_id`, `sender`, `recipient`,
//! `recipient_count`, `size`, `client_address`, `client_port`, `server_address`, `server_port`,
//! `sasl_username`, `instance`; and three that Postfix never sends, for Exim's ACLs: `mta`
//! (`exim`), `origin` (`local` for `acl_not_smtp`), `uid` (`$originator_uid`, believed only with
//! `origin=local`) and `recipients` (`$recipients`, comma-separated). Others are ignored, as the
//! protocol asks.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt, BufReader,
};

use super::{Answer, Decide, Origin, Query, Stage};

/// Longest attribute line, and most attributes in one request (Postfix sends about 30).
const MAX_LINE: usize = 8 * 1024;
const MAX_ATTRIBUTES: usize = 256;

/// What is wrong with a request; the connection is closed (the MTA then applies its
/// `default_action`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("line {line} is not name=value")]
    NotAnAttribute { line: usize },
    #[error("line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("the request is not UTF-8")]
    NotUtf8,
    #[error("request {0:?} is not smtpd_access_policy")]
    UnknownRequest(String),
}

/// One request's attributes, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request(pub Vec<(String, String)>);

impl Request {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The query this request asks. `Ok(None)`: a state the service has no opinion on.
    pub fn query(&self) -> Result<Query, ProtocolError> {
        match self.get("request") {
            Some("smtpd_access_policy") | None => {}
            Some(other) => return Err(ProtocolError::UnknownRequest(other.to_string())),
        }
        let stage = match self
            .get("protocol_state")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("RCPT") => Some(Stage::Rcpt),
            Some("END-OF-MESSAGE") => Some(Stage::EndOfMessage),
            _ => None,
        };
        let origin = match self.get("origin") {
            Some("local") => Origin::Local,
            _ => Origin::Smtp,
        };
        let num = |n: &str| self.get(n).and_then(|v| v.trim().parse::<u64>().ok());
        let addr = |a: &str, p: &str| {
            let ip: IpAddr = self.get(a)?.trim().parse().ok()?;
            let port = u16::try_from(num(p)?).ok()?;
            Some(SocketAddr::new(ip, port))
        };
        let mut recipients: Vec<String> = Vec::new();
        match stage {
            Some(Stage::Rcpt) => recipients.extend(self.get("recipient").map(str::to_string)),
            _ => recipients.extend(
                self.get("recipients")
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string),
            ),
        }
        Ok(Query {
            stage,
            origin: Some(origin),
            mta: self.get("mta").unwrap_or("postfix").to_string(),
            queue_id: self.get("queue_id").map(str::to_string),
            sender: self.get("sender").unwrap_or("").to_string(),
            recipients,
            recipient_count: num("recipient_count"),
            size: num("size"),
            client: addr("client_address", "client_port"),
            server: addr("server_address", "server_port"),
            sasl_username: self.get("sasl_username").map(str::to_string),
            uid: (origin == Origin::Local)
                .then(|| num("uid"))
                .flatten()
                .and_then(|u| u32::try_from(u).ok()),
            instance: self.get("instance").map(str::to_string),
            mta_pid: None,
        })
    }
}

/// Splits one attribute line (without its newline).
fn attribute(line: &str, n: usize) -> Result<(String, String), ProtocolError> {
    let (name, value) = line
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or(ProtocolError::NotAnAttribute { line: n })?;
    Ok((name.trim().to_string(), value.to_string()))
}

/// Parses a whole request text (lines up to the empty one).
#[cfg(test)]
pub fn parse(text: &str) -> Result<Request, ProtocolError> {
    let mut r = Request::default();
    for (n, line) in (1..).zip(text.lines()) {
        if line.is_empty() {
            break;
        }
        if r.0.len() == MAX_ATTRIBUTES {
            return Err(ProtocolError::TooManyAttributes);
        }
        r.0.push(attribute(line.trim_end_matches('\r'), n)?);
    }
    Ok(r)
}

/// The answer as the protocol sends it: `action=...`, then an empty line.
pub fn format(answer: &Answer) -> String {
    match answer.codes() {
        None => "action=DUNNO\n\n".to_string(),
        Some((code, status)) => {
            format!(
                "action={code} {status} {}\n\n",
                super::reply_text(answer.text())
            )
        }
    }
}

/// Serves one connection until the client closes it or breaks the protocol.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    decide: &dyn Decide,
) -> Result<u64, ProtocolError> {
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let mut answered = 0;
    let mut req = Request::default();
    let mut lineno = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(_) => return Ok(answered),
        };
        if n == 0 {
            return Ok(answered);
        }
        lineno += 1;
        if buf.len() > MAX_LINE {
            return Err(ProtocolError::LineTooLong { line: lineno });
        }
        let line = std::str::from_utf8(&buf).map_err(|_| ProtocolError::NotUtf8)?;
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.is_empty() {
            if req.0.len() == MAX_ATTRIBUTES {
                return Err(ProtocolError::TooManyAttributes);
            }
            req.0.push(attribute(line, lineno)?);
            continue;
        }
        if req.0.is_empty() {
            continue;
        }
        let answer = match req.query() {
            Ok(q) => decide.decide(&q),
            Err(e) => return Err(e),
        };
        if write.write_all(format(&answer).as_bytes()).await.is_err() {
            return Ok(answered);
        }
        let _ = write.flush().await;
        answered += 1;
        req = Request::default();
        lineno = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const RCPT: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
client_address=127.0.0.1\nclient_port=40312\nserver_address=127.0.0.1\nserver_port=2525\n\
helo_name=x\nqueue_id=\nsender=a@example.test\nrecipient=B@Example.Test\nrecipient_count=0\n\
instance=1c2d.6761e2a1.7b0f3.0\nsasl_username=\nsize=0\nunknown_future_attribute=x=y\n\n";

    #[test]
    fn a_postfix_rcpt_request() {
        let q = parse(RCPT).unwrap().query().unwrap();
        assert_eq!(q.stage, Some(Stage::Rcpt));
        assert_eq!(q.origin, Some(Origin::Smtp));
        assert_eq!(q.client, Some("127.0.0.1:40312".parse().unwrap()));
        assert_eq!(q.server, Some("127.0.0.1:2525".parse().unwrap()));
        assert_eq!(q.recipients, ["B@Example.Test"]);
        assert_eq!((q.queue_id, q.sasl_username, q.uid), (None, None, None));
        assert_eq!(q.instance.as_deref(), Some("1c2d.6761e2a1.7b0f3.0"));
    }

    #[test]
    fn an_exim_not_smtp_request() {
        let text = "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nmta=exim\n\
origin=local\nuid=61001\nqueue_id=1tXyZa-000ABC-1x\nsender=u@h\nrecipients=a@x.test, b@y.test\n\
recipient_count=2\nsize=1234\n\n";
        let q = parse(text).unwrap().query().unwrap();
        assert_eq!(
            (q.stage, q.origin),
            (Some(Stage::EndOfMessage), Some(Origin::Local))
        );
        assert_eq!(
            (q.uid, q.recipient_count, q.size),
            (Some(61001), Some(2), Some(1234))
        );
        assert_eq!(q.recipients, ["a@x.test", "b@y.test"]);
        // A UID is believed only for local (non-SMTP) submissions.
        let smtp = text.replace("origin=local\n", "");
        assert_eq!(parse(&smtp).unwrap().query().unwrap().uid, None);
    }

    #[test]
    fn bad_requests_are_errors() {
        assert_eq!(
            parse("request=smtpd_access_policy\nnonsense\n\n"),
            Err(ProtocolError::NotAnAttribute { line: 2 })
        );
        assert_eq!(
            parse("=x\n\n"),
            Err(ProtocolError::NotAnAttribute { line: 1 })
        );
        assert!(matches!(
            parse("request=other\n\n").unwrap().query(),
            Err(ProtocolError::UnknownRequest(_))
        ));
        let many: String = (0..300).map(|i| format!("a{i}=b\n")).collect();
        assert_eq!(parse(&many), Err(ProtocolError::TooManyAttributes));
    }

    #[test]
    fn answers() {
        assert_eq!(format(&Answer::Dunno), "action=DUNNO\n\n");
        assert_eq!(
            format(&Answer::Defer("antispam: over\nlimit".into())),
            "action=451 4.7.1 antispam: over?limit\n\n"
        );
        assert_eq!(
            format(&Answer::Reject("no".into())),
            "action=550 5.7.1 no\n\n"
        );
    }

    struct Counting(Mutex<Vec<Query>>);
    impl Decide for Counting {
        fn decide(&self, q: &Query) -> Answer {
            self.0.lock().unwrap().push(q.clone());
            if q.stage == Some(Stage::EndOfMessage) {
                Answer::Defer("full".into())
            } else {
                Answer::Dunno
            }
        }
    }

    #[tokio::test]
    async fn a_connection_carries_many_requests() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let d = Counting(Mutex::new(Vec::new()));
        let eom = RCPT.replace("protocol_state=RCPT", "protocol_state=END-OF-MESSAGE");
        let (mut cr, mut cw) = tokio::io::split(client);
        let input = format!("{RCPT}{RCPT}\n{eom}");
        let talk = async move {
            cw.write_all(input.as_bytes()).await.unwrap();
            cw.shutdown().await.unwrap();
            let mut out = String::new();
            cr.read_to_string(&mut out).await.unwrap();
            out
        };
        let (served, out) = tokio::join!(serve(server, &d), talk);
        assert_eq!(served, Ok(3));
        assert_eq!(
            out,
            "action=DUNNO\n\naction=DUNNO\n\naction=451 4.7.1 full\n\n"
        );
        assert_eq!(d.0.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn an_overlong_line_ends_the_connection() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let d = Counting(Mutex::new(Vec::new()));
        let (_cr, mut cw) = tokio::io::split(client);
        let long = format!("sender={}\n\n", "a".repeat(MAX_LINE + 10));
        let talk = async move {
            let _ = cw.write_all(long.as_bytes()).await;
        };
        let (served, ()) = tokio::join!(serve(server, &d), talk);
        assert_eq!(served, Err(ProtocolError::LineTooLong { line: 1 }));
    }
}
