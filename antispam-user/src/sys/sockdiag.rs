//! Ending open SMTP sessions: the kernel's sock_diag interface lists TCP sockets with their
//! owner UID and cgroup id, and destroys one on request (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY,
//! needs CAP_NET_ADMIN): the process sees ECONNABORTED at once instead of a session that hangs.
//!
//! A sock_diag socket sees the sockets of its own network namespace only: sessions opened
//! inside a container's namespace are found by joining it (one thread per namespace, setns).
//!
//! The netlink exchange is small and fixed (one dump request, one destroy request per socket),
//! written here against the uapi structs `inet_diag_req_v2` and `inet_diag_msg`.

use std::{collections::BTreeSet, io, os::fd::AsRawFd as _};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IPPROTO_TCP: u8 = 6;
/// `INET_DIAG_CGROUP_ID`: the socket's cgroup v2 id, always included when the kernel has it.
const INET_DIAG_CGROUP_ID: u16 = 21;
/// Every TCP state but LISTEN and CLOSE.
const STATES: u32 = 0xfff & !((1 << 10) | (1 << 7));
const HDR: usize = 16;
const REQ: usize = 56;
const MSG: usize = 72;

/// Which sockets to end: connected to one of `ports`, and picked by `pick(uid, cgroup id)` (the
/// cgroup id is `None` when the kernel did not report it).
pub struct Selector<'a> {
    pub ports: &'a BTreeSet<u16>,
    pub pick: &'a (dyn Fn(u32, Option<u64>) -> bool + Sync),
}

/// What [`sessions_in`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Sockets destroyed (or counted), in every namespace searched.
    pub sessions: usize,
    /// Network namespaces searched: the agent's own and the others reached.
    pub namespaces: usize,
    /// The namespaces that could not be searched, with why.
    pub failed: Vec<(super::netns::Namespace, String)>,
}

/// Ends (`end`) or counts the matching sockets in this process's network namespace (an error
/// there is the result) and in each of `others` (an error there is recorded in
/// [`Ended::failed`]).
pub fn sessions_in(
    sel: &Selector<'_>,
    others: &[super::netns::Namespace],
    end: bool,
) -> io::Result<Ended> {
    let one = |sel: &Selector<'_>| {
        if end {
            end_sessions(sel)
        } else {
            count_sessions(sel)
        }
    };
    let mut out = Ended {
        sessions: one(sel)?,
        namespaces: 1,
        failed: Vec::new(),
    };
    for ns in others {
        match super::netns::run_in(&ns.path, || one(sel)) {
            Ok(Ok(n)) => {
                out.sessions += n;
                out.namespaces += 1;
            }
            // The process left (or its namespace went) meanwhile: nothing to end there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) | Ok(Err(e)) => out.failed.push((ns.clone(), e.to_string())),
        }
    }
    Ok(out)
}

struct Netlink(std::os::fd::OwnedFd);

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new, valid descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Netlink(fd))
    }

    fn send(&self, kind: u16, flags: u16, seq: u32, req: &[u8; REQ]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(HDR + REQ);
        msg.extend_from_slice(&((HDR + REQ) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(req);
        // SAFETY: sending a buffer we own; the kernel is the default destination of netlink.
        let n = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn dump_request(family: u8) -> [u8; REQ] {
    let mut r = [0u8; REQ];
    r[0] = family;
    r[1] = IPPROTO_TCP;
    r[4..8].copy_from_slice(&STATES.to_ne_bytes());
    r
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// How many sockets match, without touching them (what a suspension will end, for its record
/// written before it takes effect).
pub fn count_sessions(sel: &Selector<'_>) -> io::Result<usize> {
    let nl = Netlink::open()?;
    let mut buf = vec![0u8; 64 * 1024];
    Ok(matching(&nl, sel, &mut buf)?.len())
}

/// Ends the matching sockets; returns how many were destroyed.
pub fn end_sessions(sel: &Selector<'_>) -> io::Result<usize> {
    let nl = Netlink::open()?;
    let mut buf = vec![0u8; 64 * 1024];
    let victims = matching(&nl, sel, &mut buf)?;
    let mut ended = 0;
    for (i, req) in victims.iter().enumerate() {
        nl.send(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 100 + i as u32, req)?;
        let n = nl.recv(&mut buf)?;
        if n >= HDR + 4 && u16_at(&buf, 4) == NLMSG_ERROR {
            let errno = i32::from_ne_bytes(buf[HDR..HDR + 4].try_into().unwrap_or_default());
            match -errno {
                0 => ended += 1,
                libc::ENOENT => {} // closed meanwhile
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
    Ok(ended)
}

/// The destroy requests of the sockets `sel` picks, from one dump of each family.
fn matching(nl: &Netlink, sel: &Selector<'_>, buf: &mut [u8]) -> io::Result<Vec<[u8; REQ]>> {
    let mut victims: Vec<[u8; REQ]> = Vec::new();
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        nl.send(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            &dump_request(family),
        )?;
        'dump: loop {
            let n = nl.recv(buf)?;
            let mut off = 0;
            while off + HDR <= n {
                let len = u32_at(buf, off) as usize;
                let kind = u16_at(buf, off + 4);
                if len < HDR || off + len > n {
                    break;
                }
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(
                            buf[off + HDR..off + HDR + 4].try_into().unwrap_or_default(),
                        );
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    SOCK_DIAG_BY_FAMILY if len >= HDR + MSG => {
                        let m = &buf[off + HDR..off + len];
                        // inet_diag_msg: family, state, timer, retrans, then the 48-byte id
                        // (sport, dport big-endian at 4..6 and 6..8), expires, rqueue, wqueue, uid.
                        let dport = u16::from_be_bytes([m[6], m[7]]);
                        let uid = u32_at(m, 4 + 48 + 12);
                        let mut cgroup = None;
                        let mut a = MSG;
                        while a + 4 <= m.len() {
                            let alen = u16_at(m, a) as usize;
                            let atype = u16_at(m, a + 2);
                            if alen < 4 || a + alen > m.len() {
                                break;
                            }
                            if atype == INET_DIAG_CGROUP_ID && alen >= 12 {
                                cgroup = Some(u64::from_ne_bytes(
                                    m[a + 4..a + 12].try_into().unwrap_or_default(),
                                ));
                            }
                            a += (alen + 3) & !3;
                        }
                        let chosen = sel.ports.contains(&dport) && (sel.pick)(uid, cgroup);
                        if chosen {
                            let mut req = [0u8; REQ];
                            req[0] = m[0];
                            req[1] = IPPROTO_TCP;
                            req[4..8].copy_from_slice(&STATES.to_ne_bytes());
                            req[8..56].copy_from_slice(&m[4..52]);
                            victims.push(req);
                        }
                    }
                    _ => {}
                }
                off += (len + 3) & !3;
            }
        }
    }
    Ok(victims)
}

/// The owner of one TCP socket: what the kernel charges it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    /// None when the kernel did not report it.
    pub cgroup_id: Option<u64>,
    /// The socket's inode (0 for a socket no process holds any more).
    pub inode: u32,
}

/// `INET_DIAG_NOCOOKIE`: match the socket whatever its cookie.
const NO_COOKIE: u32 = u32::MAX;

/// The owner of the TCP socket of this network namespace whose local end is `local` and whose
/// remote end is `remote` (an SMTP client's socket: local = the client's address and port as the
/// MTA reports them, remote = the address the MTA accepted the connection on). One netlink
/// request answered from the kernel's socket hash (no dump); `None` if there is no such socket
/// here (a client on another host, or gone meanwhile).
pub fn owner(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> io::Result<Option<Owner>> {
    use std::net::{IpAddr, Ipv6Addr};
    // An IPv4 client of a dual-stack listener may have an IPv4 or an IPv4-mapped IPv6 socket.
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let mut tries: Vec<(u8, [u8; 16], [u8; 16])> = Vec::new();
    if let (IpAddr::V4(l), IpAddr::V4(r)) = (local.ip(), remote.ip()) {
        let mut lb = [0u8; 16];
        let mut rb = [0u8; 16];
        lb[..4].copy_from_slice(&l.octets());
        rb[..4].copy_from_slice(&r.octets());
        tries.push((libc::AF_INET as u8, lb, rb));
    }
    let (l6, r6): (Ipv6Addr, Ipv6Addr) = (v6(local.ip()), v6(remote.ip()));
    tries.push((libc::AF_INET6 as u8, l6.octets(), r6.octets()));
    let nl = Netlink::open()?;
    let mut buf = vec![0u8; 8192];
    for (seq, (family, src, dst)) in (1u32..).zip(tries) {
        let mut req = [0u8; REQ];
        req[0] = family;
        req[1] = IPPROTO_TCP;
        req[4..8].copy_from_slice(&STATES.to_ne_bytes());
        req[8..10].copy_from_slice(&local.port().to_be_bytes());
        req[10..12].copy_from_slice(&remote.port().to_be_bytes());
        req[12..28].copy_from_slice(&src);
        req[28..44].copy_from_slice(&dst);
        req[48..52].copy_from_slice(&NO_COOKIE.to_ne_bytes());
        req[52..56].copy_from_slice(&NO_COOKIE.to_ne_bytes());
        nl.send(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, &req)?;
        let n = nl.recv(&mut buf)?;
        if n < HDR {
            continue;
        }
        let len = (u32_at(&buf, 0) as usize).min(n);
        match u16_at(&buf, 4) {
            NLMSG_ERROR if len >= HDR + 4 => {
                let errno = -i32::from_ne_bytes(buf[HDR..HDR + 4].try_into().unwrap_or_default());
                match errno {
                    0 | libc::ENOENT => continue,
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
            }
            SOCK_DIAG_BY_FAMILY if len >= HDR + MSG => {
                let m = &buf[HDR..len];
                return Ok(Some(Owner {
                    uid: u32_at(m, 4 + 48 + 12),
                    cgroup_id: cgroup_attr(m),
                    inode: u32_at(m, 4 + 48 + 16),
                }));
            }
            _ => continue,
        }
    }
    Ok(None)
}

/// `INET_DIAG_CGROUP_ID` among the attributes after an `inet_diag_msg`.
fn cgroup_attr(m: &[u8]) -> Option<u64> {
    let mut a = MSG;
    while a + 4 <= m.len() {
        let alen = u16_at(m, a) as usize;
        let atype = u16_at(m, a + 2);
        if alen < 4 || a + alen > m.len() {
            break;
        }
        if atype == INET_DIAG_CGROUP_ID && alen >= 12 {
            return Some(u64::from_ne_bytes(m[a + 4..a + 12].try_into().ok()?));
        }
        a += (alen + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, os::unix::fs::MetadataExt as _};

    use super::*;

    /// A connection of this process to itself: the client's socket is found by its 4-tuple,
    /// owned by this process's UID, in its cgroup; the reversed tuple finds the server's end.
    #[test]
    fn a_socket_is_found_by_its_four_tuple() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(server).unwrap();
        let client = c.local_addr().unwrap();
        let (accepted, _) = l.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let o = match owner(client, server) {
            Ok(o) => o.expect("the client's socket"),
            // Unit tests may run where sock_diag is not allowed (no netlink): nothing to test.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(o.uid, me);
        let ino = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&c)
        ));
        // /proc/self/fd/N of a socket stats as the socket inode.
        if let Ok(m) = ino {
            assert_eq!(u64::from(o.inode), m.ino());
        }
        let back = owner(server, client).unwrap().expect("the server's end");
        assert_ne!(back.inode, o.inode);
        drop(accepted);
        let gone = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(owner(gone, server).unwrap(), None);
    }
}
