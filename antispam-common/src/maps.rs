//! Map names and sizes, declared once for both sides.

/// `Array<Config>`, one entry: mode, flags, default rate, policy generation.
pub const CONFIG: &str = "AS_CONFIG";
/// `Array<u64>` bitmap of SMTP destination ports: bit `p % 64` of entry `p / 64`.
pub const PORTS: &str = "AS_PORTS";
/// Number of `u64` words in [`PORTS`].
pub const PORTS_WORDS: u32 = 65536 / 64;
/// `HashMap<u32 uid, Rule>`: per-UID allow and limit rules (ranges expanded by the agent).
pub const UID_RULES: &str = "AS_UID_RULES";
/// Capacity of [`UID_RULES`].
pub const UID_RULES_MAX: u32 = 131_072;
/// `HashMap<u64 cgroup id, Rule>`: per-cgroup allow and limit rules.
pub const CGROUP_RULES: &str = "AS_CGROUP_RULES";
/// Capacity of [`CGROUP_RULES`].
pub const CGROUP_RULES_MAX: u32 = 65_536;
/// `LpmTrie<[u8; 4], DestRule>`: IPv4 destination allow/block prefixes.
pub const DEST_V4: &str = "AS_DEST_V4";
/// `LpmTrie<[u8; 16], DestRule>`: IPv6 destination allow/block prefixes.
pub const DEST_V6: &str = "AS_DEST_V6";
/// Capacity of each destination trie.
pub const DEST_MAX: u32 = 262_144;
/// `LruHashMap<KeyId, KeyState>`: rate-limit bucket and counters of every UID and cgroup seen.
pub const KEYS: &str = "AS_KEYS";
/// Capacity of [`KEYS`]; least recently used keys are evicted past it.
pub const KEYS_MAX: u32 = 262_144;
/// `HashMap<KeyId, Suspension>`: suspended UIDs and cgroups.
pub const SUSPENDED: &str = "AS_SUSPENDED";
/// Capacity of [`SUSPENDED`].
pub const SUSPENDED_MAX: u32 = 65_536;
/// `HashMap<KeyId, Override>`: UIDs and cgroups under an approved break-glass override.
pub const OVERRIDES: &str = "AS_OVERRIDES";
/// Capacity of [`OVERRIDES`].
pub const OVERRIDES_MAX: u32 = 4_096;
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
    pub const EGRESS: &str = "antispam_egress";
}
