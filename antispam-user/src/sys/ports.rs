//! Who holds a TCP port: the listening sockets in /proc/net/tcp{,6} and the processes whose
//! descriptors point at them (/proc/PID/fd, which root can read for every process).

use std::fmt;

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The socket owner's UID (from /proc/net/tcp, known even when no process is found).
    pub uid: u32,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.comm) {
            (Some(pid), Some(comm)) => write!(f, "pid {pid} ({comm}), uid {}", self.uid),
            (Some(pid), None) => write!(f, "pid {pid}, uid {}", self.uid),
            _ => write!(f, "a socket of uid {} (no process found)", self.uid),
        }
    }
}

/// Descriptors looked at, at most, to find the process of a socket (bounded on a huge host).
const MAX_FDS: usize = 1_000_000;

/// The listeners on TCP `port` (any local address, IPv4 and IPv6).
pub fn listeners(port: u16) -> Vec<Holder> {
    let sockets: Vec<(u64, u32)> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| listening_on(&text, port))
        .collect();
    if sockets.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<(u64, u32, String)> = Vec::new();
    let mut looked = 0usize;
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in procs {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let fds = std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten();
        for fd in fds.flatten() {
            looked += 1;
            if looked > MAX_FDS {
                break;
            }
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| sockets.iter().any(|(s, _)| s == i)) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                found.push((inode, pid, comm.trim().to_string()));
            }
        }
    }
    sockets
        .iter()
        .map(|(inode, uid)| {
            let p = found.iter().find(|(i, _, _)| i == inode);
            Holder {
                uid: *uid,
                pid: p.map(|(_, pid, _)| *pid),
                comm: p.map(|(_, _, c)| c.clone()).filter(|c| !c.is_empty()),
            }
        })
        .collect()
}

/// (inode, uid) of the sockets listening on `port` in one /proc/net/tcp table.
fn listening_on(table: &str, port: u16) -> Vec<(u64, u32)> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            let p = u16::from_str_radix(local_port, 16).ok()?;
            (p == port && *f.get(3)? == LISTEN).then_some(())?;
            Some((f.get(9)?.parse().ok()?, f.get(7)?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_found_in_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:2691 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 4242 1 0000000000000000 100 0 0 10 0\n   \
            1: 0100007F:2691 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_on(table, 0x2691), vec![(4242, 1001)]);
        assert!(listening_on(table, 25).is_empty());
    }

    #[test]
    fn a_port_of_this_process_is_found_with_its_pid() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = listeners(port);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].pid, Some(std::process::id()));
    }
}
