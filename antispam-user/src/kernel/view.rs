//! Maps the agent only reads, for metrics and status.

use antispam_common::{
    key::{KeyId, KeyState},
    rule::{CgroupKey, Rule},
};
use aya::maps::{HashMap, MapData, PerCpuArray};

/// Maps the agent only reads. aya map handles are plain file descriptors: reading them from
/// several tasks needs no lock.
pub struct KernelView {
    pub keys: HashMap<MapData, KeyId, KeyState>,
    pub cgroup_rules: HashMap<MapData, CgroupKey, Rule>,
    pub decisions: PerCpuArray<MapData, u64>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl KernelView {
    /// The sum over CPUs of entry `i` of a per-CPU counter array.
    pub fn sum(map: &PerCpuArray<MapData, u64>, i: u32) -> u64 {
        map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Every key's state (bounded by the map's capacity).
    pub fn keys(&self) -> Vec<(KeyId, KeyState)> {
        self.keys.iter().filter_map(Result::ok).collect()
    }
}
