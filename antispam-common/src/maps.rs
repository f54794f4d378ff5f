//! Map names and sizes, declared once for both sides.

// The policy is held in two rule sets ("slots" 0 and 1), each a full copy: the configuration,
// the ports, the UID, cgroup and destination rules. The agent writes a new policy into the slot
// not in force, then flips [`ACTIVE`] with one 4-byte store: every decision sees one whole
// policy, the old or the new, never a mix. Then it clears the old slot.

/// `Array<u32>`, one entry: the slot in force, 0 or 1.
pub const ACTIVE: &str = "AS_ACTIVE";
/// Number of rule sets.
pub const SLOTS: u32 = 2;
/// `Array<Config>`, one entry per slot: mode, flags, default rate, policy generation.
pub const CONFIG: &str = "AS_CONFIG";
/// `Array<u64>` bitmaps of SMTP destination ports, one per slot: bit `p % 64` of entry
/// `slot * PORTS_WORDS + p / 64`.
pub const PORTS: &str = "AS_PORTS";
/// Number of `u64` words in one slot's bitmap of [`PORTS`].
pub const PORTS_WORDS: u32 = 65536 / 64;
/// `HashMap<UidKey, Rule>`: per-UID allow and limit rules (ranges expanded by the agent).
pub const UID_RULES: &str = "AS_UID_RULES";
/// UIDs one policy may name (the map holds two policies during a reload).
pub const UID_RULES_MAX: u32 = 131_072;
/// `HashMap<CgroupKey, Rule>`: per-cgroup allow and limit rules.
pub const CGROUP_RULES: &str = "AS_CGROUP_RULES";
/// Cgroups one policy may cover.
pub const CGROUP_RULES_MAX: u32 = 65_536;
/// `LpmTrie<[u8; 5], DestRule>`: IPv4 destination allow/block prefixes (slot byte + address).
pub const DEST_V4: &str = "AS_DEST_V4";
/// `LpmTrie<[u8; 17], DestRule>`: IPv6 destination allow/block prefixes (slot byte + address).
pub const DEST_V6: &str = "AS_DEST_V6";
/// Prefixes one policy may name per family.
pub const DEST_MAX: u32 = 262_144;
/// `HashMap<KeyId, KeyState>` (preallocated): rate-limit bucket and counters of every UID and
/// cgroup seen. Nothing evicts an entry (an LRU map would hand a fresh budget to a key that
/// other keys' traffic pushed out): the agent removes entries that are idle with a full bucket,
/// and an attempt that finds the map full is refused (`state_error`).
pub const KEYS: &str = "AS_KEYS";
/// Capacity of [`KEYS`].
pub const KEYS_MAX: u32 = 262_144;
/// `HashMap<u64, Lease>` (preallocated): the fleet lease of each tenant of the policy, keyed
/// by [`crate::tenant::tenant_key`]; written by the agent only.
pub const LEASES: &str = "AS_LEASES";
/// `HashMap<u64, TenantUse>` (preallocated): what the kernel spent of each tenant's budget;
/// entries made by the agent, updated by the kernel only.
pub const TENANT_USE: &str = "AS_TENANT_USE";
/// Tenants one policy may name.
pub const TENANTS_MAX: u32 = 1024;
/// `HashMap<KeyId, Suspension>`: suspended UIDs and cgroups.
pub const SUSPENDED: &str = "AS_SUSPENDED";
/// Capacity of [`SUSPENDED`].
pub const SUSPENDED_MAX: u32 = 65_536;
/// `HashMap<KeyId, Override>`: UIDs and cgroups under an approved break-glass override.
pub const OVERRIDES: &str = "AS_OVERRIDES";
/// Capacity of [`OVERRIDES`].
pub const OVERRIDES_MAX: u32 = 4_096;
/// `HashMap<ProgramKey, Program>`: the MTA's submission programs (by inode), per rule set:
/// executing one is a submission on the `sendmail` path.
pub const PROGRAMS: &str = "AS_PROGRAMS";
/// Programs one policy may name.
pub const PROGRAMS_MAX: u32 = 64;
/// `Array<u64>`: a bitmap per rule set over the inode numbers of [`PROGRAMS`] (bit
/// [`crate::rule::program_filter_bit`]), so that the exec hook leaves most execs after one
/// array read instead of a hash lookup.
pub const PROGRAM_FILTER: &str = "AS_PROGRAM_FILTER";
/// `u64` words of one rule set's bitmap in [`PROGRAM_FILTER`].
pub const PROGRAM_FILTER_WORDS: u32 = 64;
/// `HashMap<[u8; 16], u32>`: the host's own addresses (IPv4 as `::ffff:a.b.c.d`), kept by the
/// agent: an SMTP connect to one (or to loopback) is a submission to the local MTA.
pub const LOCAL_ADDRS: &str = "AS_LOCAL_ADDRS";
/// Capacity of [`LOCAL_ADDRS`].
pub const LOCAL_ADDRS_MAX: u32 = 4096;
/// `LpmTrie<[u8; 4], u32>`: the subordinate UID ranges of `/etc/subuid` (a range as its
/// covering prefixes of the big-endian UID) → the owner's UID.
pub const SUBUIDS: &str = "AS_SUBUIDS";
/// Prefixes in [`SUBUIDS`] (a range needs at most 62).
pub const SUBUIDS_MAX: u32 = 65_536;
/// `HashMap<u32, Veth>`: the host-side veth devices the SYN check runs on (ifindex) → the
/// network namespace id (nsid, as the host numbers it) of their peer, kept by the agent.
pub const VETHS: &str = "AS_VETHS";
/// Capacity of [`VETHS`].
pub const VETHS_MAX: u32 = 4096;
/// `CgroupArray`, one entry: the attach point, for the exec fallback (a tracepoint runs for
/// every task of the host; it decides only for tasks under this cgroup).
pub const ATTACH_CGROUP: &str = "AS_ATTACH_CGROUP";
/// `PerCpuArray<u64>` of decision counters, indexed by [`crate::event::counter_index`].
pub const DECISIONS: &str = "AS_DECISIONS";
/// `PerCpuArray<u64>` of kernel-side error and health counters, indexed by [`crate::stats`].
pub const STATS: &str = "AS_STATS";
/// `RingBuf` of [`crate::event::Event`].
pub const EVENTS: &str = "AS_EVENTS";
/// Size of [`EVENTS`] in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Program names in the object file.
pub mod programs {
    pub const CONNECT4: &str = "antispam_connect4";
    pub const CONNECT6: &str = "antispam_connect6";
    /// `cgroup_skb/egress`, attached only while a feature needs it: SMTP packet accounting,
    /// and the packets of suspended keys' sessions dropped.
    pub const EGRESS: &str = "antispam_egress";
    /// `cgroup/sock_create`: raw IP sockets (but ICMP ones) refused.
    pub const SOCK_CREATE: &str = "antispam_sock_create";
    /// `lsm_cgroup/bprm_creds_for_exec`: decides every execution of a submission program.
    pub const EXEC: &str = "antispam_exec";
    /// `tp_btf/sched_process_exec`: the fallback where BPF LSM is not active (counts, and kills
    /// a submission program over budget before its first instruction).
    pub const EXEC_FALLBACK: &str = "antispam_exec_fallback";
    /// `classifier` (tc ingress of a container's host-side veth): a TCP SYN to an SMTP port
    /// that no socket of the container's namespace is connecting with (made by a packet
    /// socket, past `connect()`) is dropped.
    pub const SYN: &str = "antispam_syn";
}
