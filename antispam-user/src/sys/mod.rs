//! What the agent reads and does in the operating system, outside BPF: the cgroup v2 tree and
//! its changes, sockets (sock_diag), users, /proc, who holds a port, signals, and the files it
//! keeps (durable writes, private modes, reads of whole files).

pub mod caps;
pub mod cgroup_watch;
pub mod cgroupfs;
pub mod files;
pub mod links;
pub mod local_addrs;
pub mod netns;
pub mod notify;
pub mod ports;
pub mod postfix_queue;
pub mod procfs;
pub mod programs;
pub mod rlimit;
pub mod signals;
pub mod sockdiag;
pub mod subuid;
pub mod users;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for fstype cgroup2 in /proc/self/mountinfo)"
    )]
    NoCgroup2,
    #[error("reading /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] std::io::Error),
}
