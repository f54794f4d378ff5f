//! Maps the agent only reads, for metrics and status.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use antispam_common::{
    key::{KeyId, KeyState},
    rule::{CgroupKey, Rule},
};
use aya::{
    maps::{HashMap, IterableMap as _, MapData, PerCpuArray},
    Pod,
};

/// Maps the agent only reads. aya map handles are plain file descriptors: reading them from
/// several tasks needs no lock.
pub struct KernelView {
    pub keys: HashMap<MapData, KeyId, KeyState>,
    /// The capacity of the per-key state map (`antispam run --max-keys`).
    pub keys_max: usize,
    pub cgroup_rules: HashMap<MapData, CgroupKey, Rule>,
    pub decisions: PerCpuArray<MapData, u64>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl KernelView {
    /// The sum over CPUs of entry `i` of a per-CPU counter array.
    pub fn sum(map: &PerCpuArray<MapData, u64>, i: u32) -> u64 {
        map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Every key's state (bounded by the map's capacity): by batches of 4,096 entries per
    /// syscall (262,144 keys: 1.0 s one key at a time, two syscalls each), else one at a time.
    pub fn keys(&self) -> Vec<(KeyId, KeyState)> {
        let fd = self.keys.map().fd().as_fd();
        match lookup_batch::<KeyId, KeyState>(fd, self.keys_max) {
            Ok(all) => all,
            Err(e) => {
                log::debug!("BPF_MAP_LOOKUP_BATCH on the key map: {e}; one key at a time");
                self.keys.iter().filter_map(Result::ok).collect()
            }
        }
    }
}

/// Entries per BPF_MAP_LOOKUP_BATCH call.
const BATCH: u32 = 4096;

/// BPF_MAP_LOOKUP_BATCH (Linux 5.6) over a whole hash map: every (key, value), at most `max`.
fn lookup_batch<K: Pod, V: Pod>(map: BorrowedFd<'_>, max: usize) -> io::Result<Vec<(K, V)>> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    /// `union bpf_attr`'s `batch` member.
    #[repr(C)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    // The hash map's batch token is a bucket index (a u32); room for more does no harm.
    let (mut token_in, mut token_out) = ([0u64; 2], [0u64; 2]);
    let mut out = Vec::new();
    // SAFETY: K and V are Pod: every bit pattern, zeroes included, is a value.
    let (mut keys, mut values): (Vec<K>, Vec<V>) = unsafe {
        (
            vec![std::mem::zeroed(); BATCH as usize],
            vec![std::mem::zeroed(); BATCH as usize],
        )
    };
    let mut first = true;
    while out.len() < max {
        let mut attr = Batch {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: bpf(2) with a correctly sized attribute whose buffers hold `count` keys and
        // values of the map's sizes (K and V are the map's key and value types) and outlive
        // the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                std::mem::size_of::<Batch>(),
            )
        };
        let err = (r < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(BATCH as usize);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
            }
            _ => return Err(err.expect("an error")),
        }
        if err.is_some() {
            break; // ENOENT: the last batch
        }
        token_in = token_out;
        first = false;
    }
    out.truncate(max);
    Ok(out)
}
