//! Indices of [`crate::maps::STATS`]: what only the kernel side can see go wrong.

/// An event could not be reserved in the ring buffer (the agent is behind): the event is lost.
pub const RINGBUF_FULL: u32 = 0;
/// A map insert failed (e.g. a full map); the connect was decided without that state.
pub const MAP_UPDATE_FAILED: u32 = 1;
/// The configuration entry was missing: the program allowed the connect.
pub const CONFIG_MISSING: u32 = 2;
/// A compare-and-swap on a bucket lost the race too many times; the connect was refused.
pub const CAS_CONTENDED: u32 = 3;
/// A field of the exec's kernel structures could not be read: the exec was allowed.
pub const EXEC_READ_FAILED: u32 = 4;
/// The fallback exec hook killed a submission program over budget.
pub const EXEC_KILLED: u32 = 5;
/// An SMTP packet of a suspended UID or cgroup was dropped (a session open before the
/// suspension).
pub const SUSPENDED_DROPS: u32 = 6;
/// A raw IPv4 or IPv6 socket (of any protocol but ICMP) was refused when made: an SMTP client
/// could make its own TCP on it, past `connect()`.
pub const RAW_SOCKETS_REFUSED: u32 = 7;
/// A TCP SYN to an SMTP port leaving a container that no socket there is connecting with (a
/// packet socket's) was dropped.
pub const PACKET_SYN_DROPS: u32 = 8;
/// Number of entries.
pub const COUNT: u32 = 9;

/// Metric-friendly names, index-aligned with the constants above.
pub const NAMES: [&str; COUNT as usize] = [
    "ringbuf_full",
    "map_update_failed",
    "config_missing",
    "cas_contended",
    "exec_read_failed",
    "exec_killed",
    "suspended_packets_dropped",
    "raw_sockets_refused",
    "packet_smtp_syns_dropped",
];
