//! A network namespace with a veth pair to the host, private addresses only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{run_ok, run_quiet};

/// Netns `as-<short>` joined to the host by a veth pair (`asv<short>` on the host side).
/// Host side: 10.201.X.1/24 and fd00:201:X::1/64; namespace side: .2 / ::2.
pub struct TestNetns {
    name: String,
    host_if: String,
    peer_if: String,
    x: u8,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        let short = format!(
            "{:x}{:x}",
            std::process::id() % 0xfffff,
            crate::next_seq() % 0xff
        );
        let name = format!("as-{short}");
        let host_if = format!("asv{short}");
        let peer_if = format!("asp{short}");
        assert!(host_if.len() <= 15 && peer_if.len() <= 15);
        let x = pick_subnet();

        // Build the guard first so that Drop cleans up whatever part got made.
        let ns = TestNetns {
            name: name.clone(),
            host_if: host_if.clone(),
            peer_if: peer_if.clone(),
            x,
        };
        run_ok("ip", &["netns", "add", &name]);
        run_ok(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ],
        );
        run_ok("ip", &["link", "set", &peer_if, "netns", &name]);
        let h4 = format!("10.201.{x}.1/24");
        let n4 = format!("10.201.{x}.2/24");
        let h6 = format!("fd00:201:{x}::1/64");
        let n6 = format!("fd00:201:{x}::2/64");
        run_ok("ip", &["addr", "add", &h4, "dev", &host_if]);
        run_ok("ip", &["-6", "addr", "add", &h6, "dev", &host_if, "nodad"]);
        run_ok("ip", &["link", "set", &host_if, "up"]);
        run_ok("ip", &["-n", &name, "addr", "add", &n4, "dev", &peer_if]);
        run_ok(
            "ip",
            &[
                "-n", &name, "-6", "addr", "add", &n6, "dev", &peer_if, "nodad",
            ],
        );
        run_ok("ip", &["-n", &name, "link", "set", &peer_if, "up"]);
        run_ok("ip", &["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The namespace's end of the veth pair.
    pub fn peer_if(&self) -> &str {
        &self.peer_if
    }

    /// The MAC address of the host's end.
    pub fn host_mac(&self) -> String {
        let p = format!("/sys/class/net/{}/address", self.host_if);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .to_string()
    }

    /// The namespace-side IPv4 address (where the servers listen).
    pub fn addr_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.x, 2)
    }

    /// The namespace-side IPv6 address.
    pub fn addr_v6(&self) -> Ipv6Addr {
        format!("fd00:201:{}::2", self.x).parse().expect("valid v6")
    }

    /// The namespace-side IPv4 address as an IPv4-mapped IPv6 address (::ffff:10.201.X.2).
    pub fn addr_v4_mapped(&self) -> Ipv6Addr {
        self.addr_v4().to_ipv6_mapped()
    }

    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.x, 1)
    }

    /// The namespace's handle (`ip netns` keeps it open under /run/netns).
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread of its own that has joined this namespace (setns), e.g. to reach an
    /// address only the namespace has, such as its loopback.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd as _;
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                // SAFETY: setns on an open namespace file; it changes this thread only.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    r,
                    0,
                    "setns {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .expect("the thread in the namespace panicked")
        })
    }

    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.addr_v6())
        } else {
            IpAddr::V4(self.addr_v4())
        }
    }
}

impl Default for TestNetns {
    fn default() -> Self {
        Self::new()
    }
}

/// A third octet X in 20..=219 such that no interface on the host has a 10.201.X. address.
fn pick_subnet() -> u8 {
    let addrs = std::process::Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = (std::process::id() as usize * 7 + crate::next_seq() as usize * 13) % 200;
    for i in 0..200 {
        let x = 20 + ((start + i) % 200) as u8;
        if !addrs.contains(&format!("10.201.{x}.")) && !addrs.contains(&format!("fd00:201:{x}::")) {
            return x;
        }
    }
    panic!("no free 10.201.X.0/24 subnet for a test netns");
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the peer end, which takes the host end with it.
        run_quiet("ip", &["netns", "del", &self.name]);
        if std::path::Path::new("/sys/class/net")
            .join(&self.host_if)
            .exists()
        {
            run_quiet("ip", &["link", "del", &self.host_if]);
        }
    }
}
