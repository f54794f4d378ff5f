//! Files the agent keeps, written the way a database writes them, and files it reads only
//! whole.
//!
//! - State files (the offence book) are replaced, never edited: the new content goes to a
//!   temporary file beside it, is fsync'd, renamed over the old one, and the directory is
//!   fsync'd, so after a crash or a full disk the file is the old version or the new one.
//! - Logs (audit, events) are private: created 0600 whatever the umask, and an existing file
//!   whose mode gives anything to group or others is tightened to 0600 (the caller records it).
//! - A file another process still has open for writing (an editor mid-save) is not read: see
//!   [`read_settled`].

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

/// The mode of every file the agent creates: read and write for root only.
pub const PRIVATE: u32 = 0o600;

/// The directory of `path` ("." for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, so that a rename or a new entry in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The temporary file a durable write of `path` goes through.
pub fn temporary_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `data`: temporary file (0600), write, fsync, rename, fsync of the
/// directory. On any error the old file is untouched and the temporary file is removed.
pub fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temporary_of(path);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE)
            .open(&tmp)?;
        tighten(&f)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir_of(path))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Opens `path` for appending, creating it 0600 (and its directory); an existing file open to
/// group or others is tightened to 0600. Returns the file and the mode it had if it was
/// tightened.
pub fn open_private_append(path: &Path) -> io::Result<(File, Option<u32>)> {
    let dir = dir_of(path);
    std::fs::create_dir_all(dir)?;
    let existed = path.exists();
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE)
        .open(path)?;
    let was = tighten(&f)?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok((f, was))
}

/// Sets the mode of `f` to 0600 if it gives anything to group or others; returns the old mode
/// (permission bits) if it changed.
pub fn tighten(f: &File) -> io::Result<Option<u32>> {
    let mode = f.metadata()?.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE))?;
    Ok(Some(mode))
}

/// Appends `data` to `f` (opened for appending), fsync'd if `sync`, or leaves the file as it
/// was: a write cut short (a full disk) is truncated away, so the file never ends in part of
/// `data`. If even the truncation fails, the error says so; the caller's next open repairs it.
pub fn append_whole(f: &mut File, data: &[u8], sync: bool) -> io::Result<()> {
    let start = f.metadata()?.len();
    let r = f
        .write_all(data)
        .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
    if let Err(e) = r {
        return match cut_at(f, start) {
            Ok(()) => Err(e),
            Err(t) => Err(io::Error::new(
                e.kind(),
                format!("{e}; and removing the part written failed too ({t})"),
            )),
        };
    }
    Ok(())
}

/// Truncates `f` to `len` bytes and fsyncs it.
pub fn cut_at(f: &File, len: u64) -> io::Result<()> {
    f.set_len(len)?;
    f.sync_data()
}

/// The length of the complete lines at the start of `text`: up to and with its last newline.
pub fn complete_len(text: &[u8]) -> usize {
    text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The last non-blank line of `text` (complete lines), without its newline.
pub fn last_line(text: &[u8]) -> Option<&[u8]> {
    text.split(|&b| b == b'\n')
        .rev()
        .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is open for writing by another process (a save in progress)", path.display())]
    BeingWritten { path: PathBuf },
    #[error("{} changed while it was read (a save in progress)", path.display())]
    Changed { path: PathBuf },
}

/// The signal a lease break would send: one whose default action is to ignore it, so that a
/// writer opening the file in the instant the lease is held cannot kill the agent (SIGIO,
/// the default, would).
const LEASE_SIGNAL: libc::c_int = libc::SIGURG;
/// `F_SETSIG` (linux/fcntl.h; the libc crate does not name it).
const F_SETSIG: libc::c_int = 10;

/// Reads `path` whole, only once no process has it open for writing, and only if it did not
/// change while it was read.
///
/// "Open for writing" is asked of the kernel with a read lease (`F_SETLEASE F_RDLCK` fails
/// with EAGAIN while any process holds a writable descriptor of the file), taken and dropped at
/// once. Where leases are not supported (some network filesystems), the size, mtime and ctime
/// before and after the read are what tells.
pub fn read_settled(path: &Path) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let before = f.metadata().map_err(io)?;
    if being_written(&f) {
        return Err(ReadError::BeingWritten {
            path: path.to_path_buf(),
        });
    }
    let mut data = Vec::with_capacity(before.len() as usize);
    f.read_to_end(&mut data).map_err(io)?;
    let after = f.metadata().map_err(io)?;
    let same = |m: &std::fs::Metadata| (m.len(), m.mtime(), m.mtime_nsec(), m.ctime_nsec());
    if same(&before) != same(&after) || data.len() as u64 != after.len() {
        return Err(ReadError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(data)
}

/// Does some process hold `f`'s file open for writing? False when leases cannot tell.
fn being_written(f: &File) -> bool {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        if libc::fcntl(fd, F_SETSIG, LEASE_SIGNAL) != 0 {
            return false;
        }
        if libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) != 0 {
            return io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        }
        libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("antispam-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn durable_writes_replace_whole_files_privately() {
        let d = scratch("durable");
        let p = d.join("state.json");
        write_durably(&p, b"one").unwrap();
        write_durably(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, PRIVATE);
        assert!(!temporary_of(&p).exists());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn lines_cut_short_are_found() {
        assert_eq!(complete_len(b"a\nb\nhal"), 4);
        assert_eq!(complete_len(b"a\n"), 2);
        assert_eq!(complete_len(b"half"), 0);
        assert_eq!(last_line(b"a\nb\n\n"), Some(&b"b"[..]));
        assert_eq!(last_line(b""), None);
    }

    #[test]
    fn appended_files_are_private_and_loose_ones_are_tightened() {
        let d = scratch("append");
        let p = d.join("log.jsonl");
        let (_, was) = open_private_append(&p).unwrap();
        assert_eq!(was, None);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, PRIVATE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, was) = open_private_append(&p).unwrap();
        assert_eq!(was, Some(0o644));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, PRIVATE);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_file_open_for_writing_is_not_read() {
        let d = scratch("settled");
        let p = d.join("policy.toml");
        std::fs::write(&p, "mode = \"enforce\"\n").unwrap();
        assert_eq!(read_settled(&p).unwrap(), b"mode = \"enforce\"\n");
        let writer = OpenOptions::new().append(true).open(&p).unwrap();
        assert!(matches!(
            read_settled(&p),
            Err(ReadError::BeingWritten { .. })
        ));
        drop(writer);
        assert!(read_settled(&p).is_ok());
        std::fs::remove_dir_all(d).unwrap();
    }
}
