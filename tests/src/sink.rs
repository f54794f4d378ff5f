//! smtp-sink (postfix) running inside a test netns.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestDir, TestNetns};

/// `ip netns exec <ns> smtp-sink -u nobody -c <addr>:<port> 100`, killed on drop.
/// Also usable as a plain TCP listener on non-SMTP ports (e.g. 8080).
///
/// A counting sink (`start_counting`) also dumps every completed mail transaction (one file
/// per DATA that ended with "." and got its 250, not per connection: a session that quits after
/// RCPT leaves nothing) into a directory of the test, for `messages()` / `wait_messages()`.
pub struct SmtpSink {
    child: Option<Child>,
    addr: SocketAddr,
    dump_dir: Option<PathBuf>,
}

impl SmtpSink {
    pub fn start(ns: &TestNetns, ip: IpAddr, port: u16) -> SmtpSink {
        SmtpSink::spawn(Some(ns), ip, port, None)
    }

    /// Like `start`, in the host's own network namespace, on an address of the test's (such
    /// as the host end of its netns's veth pair: never a port the host uses).
    pub fn start_on_host(ns: &TestNetns, port: u16) -> SmtpSink {
        SmtpSink::spawn(None, IpAddr::V4(ns.host_v4()), port, None)
    }

    /// Like `start`, and every delivered message is kept as one file under
    /// `<dir>/sink-<n>/` (smtp-sink `-d`), so the test can count and read them.
    pub fn start_counting(ns: &TestNetns, ip: IpAddr, port: u16, dir: &TestDir) -> SmtpSink {
        let dump = dir.path().join(format!("sink-{}", crate::next_seq()));
        fs::create_dir_all(&dump).unwrap_or_else(|e| panic!("mkdir {}: {e}", dump.display()));
        // smtp-sink writes as `nobody`.
        fs::set_permissions(&dump, fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dump.display()));
        SmtpSink::spawn(Some(ns), ip, port, Some(dump))
    }

    fn spawn(ns: Option<&TestNetns>, ip: IpAddr, port: u16, dump_dir: Option<PathBuf>) -> SmtpSink {
        let listen = match ip {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name(), "smtp-sink"]);
                c
            }
            None => Command::new("smtp-sink"),
        };
        let where_ = ns.map_or("the host", |n| n.name()).to_string();
        cmd.args(["-u", "nobody"]);
        if let Some(d) = &dump_dir {
            // A dump template: smtp-sink appends a random hex number to "<dir>/m.".
            cmd.arg("-d").arg(d.join("m."));
        }
        cmd.args(["-c", &listen, "100"]);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn smtp-sink in {where_}: {e}"));
        let mut sink = SmtpSink {
            child: Some(child),
            addr: SocketAddr::new(ip, port),
            dump_dir,
        };
        // Wait (bounded) until it accepts a connection from the host (or, on the namespace's
        // loopback, from inside it).
        let deadline = Instant::now() + Duration::from_secs(5);
        let reachable = |addr: SocketAddr| {
            let try_once = || TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok();
            if let (true, Some(ns)) = (addr.ip().is_loopback(), ns) {
                ns.run_in(try_once)
            } else {
                try_once()
            }
        };
        loop {
            if reachable(sink.addr) {
                break;
            }
            if let Some(c) = sink.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("smtp-sink on {listen} in {where_} exited early: {st}");
                }
            }
            if Instant::now() >= deadline {
                panic!("smtp-sink on {listen} in {where_} not reachable within 5 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory the messages are dumped into (counting sinks only).
    pub fn dump_dir(&self) -> Option<&Path> {
        self.dump_dir.as_deref()
    }

    fn dump_files(&self) -> Vec<PathBuf> {
        let dir = self
            .dump_dir
            .as_ref()
            .expect("messages() needs a sink made by SmtpSink::start_counting");
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten()
            // A file being written may still be empty: count it on the next look.
            .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    }

    /// How many messages (completed DATA transactions) this sink has received so far.
    pub fn messages(&self) -> usize {
        self.dump_files().len()
    }

    /// The dumped messages (smtp-sink's X-Client-Addr/X-Mail-Args/X-Rcpt-Args lines, then the
    /// message), in no particular order.
    pub fn message_texts(&self) -> Vec<String> {
        self.dump_files()
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Waits (polling, bounded by `timeout`) until at least `n` messages arrived; returns the
    /// count seen last (which may be more than `n`, or less on timeout).
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> usize {
        let mut seen = 0;
        crate::poll_until(timeout, Duration::from_millis(20), || {
            seen = self.messages();
            (seen >= n).then_some(())
        });
        seen
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
