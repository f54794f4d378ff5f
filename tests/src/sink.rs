//! smtp-sink (postfix) running inside a test netns.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestNetns;

/// `ip netns exec <ns> smtp-sink -u nobody -c <addr>:<port> 100`, killed on drop.
/// Also usable as a plain TCP listener on non-SMTP ports (e.g. 8080).
pub struct SmtpSink {
    child: Option<Child>,
    addr: SocketAddr,
}

impl SmtpSink {
    pub fn start(ns: &TestNetns, ip: IpAddr, port: u16) -> SmtpSink {
        let listen = match ip {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "smtp-sink",
                "-u",
                "nobody",
                "-c",
                &listen,
                "100",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn smtp-sink in {}: {e}", ns.name()));
        let mut sink = SmtpSink {
            child: Some(child),
            addr: SocketAddr::new(ip, port),
        };
        // Wait (bounded) until it accepts a connection from the host.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect_timeout(&sink.addr, Duration::from_millis(300)).is_ok() {
                break;
            }
            if let Some(c) = sink.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("smtp-sink on {listen} in {} exited early: {st}", ns.name());
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "smtp-sink on {listen} in {} not reachable within 5 s",
                    ns.name()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
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
