//! The event log on disk (`--log`): JSON lines, appended in whole lines only, private (0600),
//! bounded in size.
//!
//! - A batch of lines is appended in one write; if the write fails (a full disk), what was
//!   written of it is truncated away, so the log never ends in half a line and the next line
//!   is never joined to one. A half line left by a crash is removed when the log is opened
//!   (and the removal audited by the caller, from [`Opened::repaired`]).
//! - When the file would grow past `max_bytes`, it is renamed to `<log>.1` (replacing an older
//!   one) and a new file is started: the log takes at most twice `max_bytes` on disk.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::{audit::LogRepaired, sys::files};

/// `--log-max-bytes` when not given.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

enum Sink {
    File { path: PathBuf, file: File, len: u64 },
    Stdout(io::Stdout),
}

pub struct EventLog {
    sink: Sink,
    max_bytes: u64,
    /// Files rotated to `<log>.1` since the start.
    pub rotations: u64,
}

/// What opening the log found.
#[derive(Default)]
pub struct Opened {
    /// The mode the file had when it was tightened to 0600.
    pub tightened: Option<u32>,
    /// A half line a crash left at the end, removed.
    pub repaired: Option<LogRepaired>,
}

impl EventLog {
    /// The log at `path` (its directory created), or standard output.
    pub fn open(path: Option<&Path>, max_bytes: u64) -> io::Result<(EventLog, Opened)> {
        let mut opened = Opened::default();
        let Some(path) = path else {
            let sink = Sink::Stdout(io::stdout());
            return Ok((EventLog::new(sink, max_bytes), opened));
        };
        let (file, tightened) = files::open_private_append(path)?;
        opened.tightened = tightened;
        let text = std::fs::read(path)?;
        let good = files::complete_len(&text);
        if good < text.len() {
            files::cut_at(&file, good as u64)?;
            opened.repaired = Some(LogRepaired::new("events", path, good as u64, &text[good..]));
        }
        let sink = Sink::File {
            path: path.to_path_buf(),
            file,
            len: good as u64,
        };
        Ok((EventLog::new(sink, max_bytes), opened))
    }

    /// Opens the log's path anew (created 0600 if a rotation moved the file away), so that
    /// what follows goes there; the file open until now is closed. Standard output: nothing to
    /// do (`None`). On an error the old file stays in use.
    pub fn reopen(&mut self) -> io::Result<Option<PathBuf>> {
        let Sink::File { path, file, len } = &mut self.sink else {
            return Ok(None);
        };
        let (new, _) = files::open_private_append(path)?;
        let text_len = new.metadata()?.len();
        *file = new;
        *len = text_len;
        Ok(Some(path.clone()))
    }

    fn new(sink: Sink, max_bytes: u64) -> EventLog {
        EventLog {
            sink,
            max_bytes: max_bytes.max(1),
            rotations: 0,
        }
    }

    /// Appends complete lines. Each part that goes into one file is all or none; a file is
    /// rotated before a line would take it past `max_bytes` (a longer line gets a file alone).
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        let max = self.max_bytes;
        let (path, file, len) = match &mut self.sink {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(lines)?;
                return out.flush();
            }
            Sink::File { path, file, len } => (path, file, len),
        };
        let mut rest = lines;
        // Bounded: every round writes at least one line of `lines`.
        while !rest.is_empty() {
            let room = max.saturating_sub(*len) as usize;
            let fits = rest[..room.min(rest.len())]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1);
            let part = match fits {
                Some(n) => n,
                None if *len > 0 => {
                    *file = rotate(path)?;
                    *len = 0;
                    self.rotations += 1;
                    continue;
                }
                // A line longer than the bound: alone in its file.
                None => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1),
            };
            files::append_whole(file, &rest[..part], false)?;
            *len += part as u64;
            rest = &rest[part..];
        }
        Ok(())
    }
}

/// Renames the log to `<log>.1` and starts a new one.
fn rotate(path: &Path) -> io::Result<File> {
    let mut old = path.as_os_str().to_os_string();
    old.push(".1");
    std::fs::rename(path, PathBuf::from(old))?;
    let (file, _) = files::open_private_append(path)?;
    log::info!(
        "event log {} reached its size bound: the previous file is {}.1",
        path.display(),
        path.display()
    );
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_lines_are_removed_and_the_size_is_bounded() {
        let dir = std::env::temp_dir().join(format!("antispam-evlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("events.jsonl");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "{\"a\":1}\n{\"a\":").unwrap();
        let (mut log, opened) = EventLog::open(Some(&path), 20).unwrap();
        let r = opened.repaired.expect("the half line is reported");
        assert_eq!(
            (r.offset, r.removed_bytes, r.removed.as_str()),
            (8, 5, "{\"a\":")
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        log.append(b"{\"b\":2}\n{\"c\":3}\n").unwrap();
        assert_eq!(log.rotations, 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"c\":3}\n");
        let rotated = dir.join("events.jsonl.1");
        assert_eq!(
            std::fs::read_to_string(rotated).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
