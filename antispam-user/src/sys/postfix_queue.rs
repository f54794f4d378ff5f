//! Who submitted a message to Postfix through `sendmail`: Postfix's pickup copies a message
//! from the maildrop queue (where `postdrop` wrote it as the submitting user) into a new queue
//! file, and writes `Received: by HOST (Postfix, from userid UID)` first into its content, with
//! the UID that owns the maildrop file. A milter is not shown that header (Postfix keeps its
//! own Received: header from milters), so the agent reads it from the queue file that cleanup
//! is writing: `incoming/QUEUE_ID` under the queue directory, which is cleanup's working
//! directory (`/proc/PID/cwd`, PID from the milter connection's SO_PEERCRED).
//!
//! The queue file is a sequence of records: a type byte, the length as base-128 digits (low
//! digit first, high bit set on all but the last), the data. Envelope records come first, then
//! `M` (the content starts), then the content's lines (`N`, `L` for a line continued). The
//! first content line is pickup's header: nothing the submitter wrote comes before it.

use std::{io, path::Path};

/// Record types (Postfix `rec_type.h`).
const REC_TYPE_MESG: u8 = b'M';
const REC_TYPE_NORM: u8 = b'N';
const REC_TYPE_CONT: u8 = b'L';
/// The most read of a queue file: the envelope and the first line are near its start.
const MAX_READ: u64 = 256 * 1024;

/// The UID of pickup's header in the queue file `QUEUE_ID` of the Postfix process `pid`.
/// `Ok(None)`: the file has no such header (not a pickup message).
pub fn submitter(pid: i32, queue_id: &str) -> io::Result<Option<u32>> {
    if queue_id.is_empty() || !queue_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    let cwd = format!("/proc/{pid}/cwd");
    let first = &queue_id[..1];
    let mut last = None;
    // `incoming` is not hashed by default (hash_queue_names = deferred, defer); if it is, the
    // default depth is one directory named by the id's first character.
    for rel in [
        format!("incoming/{queue_id}"),
        format!("incoming/{first}/{queue_id}"),
    ] {
        match read(&Path::new(&cwd).join(rel)) {
            Ok(bytes) => return Ok(first_line(&bytes).as_deref().and_then(pickup_uid)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_READ)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The first content line of a queue file (records joined across `L` continuations).
pub fn first_line(file: &[u8]) -> Option<String> {
    let mut at = 0;
    let mut in_content = false;
    let mut line = Vec::new();
    while at < file.len() {
        let kind = file[at];
        at += 1;
        let mut len: usize = 0;
        let mut shift = 0;
        loop {
            let b = *file.get(at)?;
            at += 1;
            len |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
        let data = file.get(at..at.checked_add(len)?)?;
        at += len;
        match kind {
            REC_TYPE_MESG => in_content = true,
            REC_TYPE_CONT if in_content => line.extend_from_slice(data),
            REC_TYPE_NORM if in_content => {
                line.extend_from_slice(data);
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            _ if in_content => return None,
            _ => {}
        }
    }
    None
}

/// The UID of `Received: by HOST (NAME, from userid UID)`.
pub fn pickup_uid(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("Received: by ")?;
    let (_, rest) = rest.split_once(", from userid ")?;
    let (digits, _) = rest.split_once(')')?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let mut len = data.len();
        loop {
            let mut b = (len & 0x7f) as u8;
            len >>= 7;
            if len > 0 {
                b |= 0x80;
            }
            out.push(b);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn pickups_header_is_the_first_content_line() {
        let forged = "Received: by h (Postfix, from userid 0)";
        let long_sender = "x".repeat(300);
        let file: Vec<u8> = [
            rec(
                b'C',
                b"             123             80              1               0",
            ),
            rec(b'T', b"1764583000 0"),
            // The envelope sender is the submitter's to choose: never read as the header.
            rec(b'S', forged.as_bytes()),
            rec(b'S', long_sender.as_bytes()),
            rec(b'M', b""),
            rec(b'L', b"Received: by postfix-test.example.test (Postfix, "),
            rec(b'N', b"from userid 61042)"),
            rec(b'N', b"\tid 4Xy; Tue,  1 Dec 2026 10:38:55 +0000 (UTC)"),
            rec(b'N', forged.as_bytes()),
        ]
        .concat();
        let line = first_line(&file).unwrap();
        assert_eq!(pickup_uid(&line), Some(61042), "{line}");
        // A message whose first line is not pickup's header (SMTP mail) has no submitter.
        let smtp = [
            rec(b'M', b""),
            rec(b'N', b"Received: from x (localhost [127.0.0.1])"),
        ]
        .concat();
        assert_eq!(first_line(&smtp).as_deref().and_then(pickup_uid), None);
        assert_eq!(first_line(&file[..file.len() / 3]), None, "cut short");
        assert_eq!(
            pickup_uid("Received: by h (Postfix, from userid 12x)"),
            None
        );
        assert!(submitter(std::process::id() as i32, "../../etc")
            .unwrap()
            .is_none());
    }
}
