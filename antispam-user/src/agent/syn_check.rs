//! Which devices the SYN check runs on: the host-side veth devices of the network namespaces
//! that processes under the attach point are in (when the attach point is the whole cgroup
//! tree, every veth device whose peer is in another namespace), followed every second.

use std::collections::{BTreeMap, BTreeSet};

use super::core::Core;
use crate::{
    control::status::SynDevice,
    kernel::syn::Target,
    sys::{links, netns},
};

/// At most this many network namespaces are looked at per second.
const MAX_NAMESPACES: usize = 4096;

/// The SYN check as the agent follows it.
#[derive(Debug, Default)]
pub struct SynFollow {
    /// nsid of each namespace seen (by nsfs inode): it does not change while the namespace
    /// lives, so it is asked for once.
    nsids: BTreeMap<u64, Option<u32>>,
    /// The last sync's devices and problems, to log changes once.
    devices: Vec<(String, u32)>,
    errors: Vec<String>,
}

impl Core {
    pub fn sync_syn_check(&mut self) {
        if self.kernel.syn.unavailable.is_some() {
            return;
        }
        let veths = match links::veths() {
            Ok(v) => v,
            Err(e) => {
                self.syn_problems(vec![format!("listing network devices: {e}")]);
                return;
            }
        };
        let whole_tree = self.shared.attach_cgroup == "/";
        let mut problems = Vec::new();
        let ours: Option<BTreeSet<u32>> = (!whole_tree).then(|| {
            let dirs = self.watcher.as_ref().map(|w| w.dirs()).unwrap_or_default();
            let found = netns::of_cgroups(dirs.iter().map(|d| d.as_path()), MAX_NAMESPACES);
            if found.unreadable > 0 {
                problems.push(format!(
                    "the network namespaces of {} process(es) could not be looked at (CAP_SYS_PTRACE is needed)",
                    found.unreadable
                ));
            }
            let spaces = found.namespaces;
            let live: BTreeSet<u64> = spaces.iter().map(|s| s.inode).collect();
            self.syn.nsids.retain(|inode, _| live.contains(inode));
            spaces
                .iter()
                .filter_map(|s| {
                    *self
                        .syn
                        .nsids
                        .entry(s.inode)
                        .or_insert_with(|| links::nsid_of(&s.path).ok().flatten())
                })
                .collect()
        });
        let targets: Vec<Target> = veths
            .into_iter()
            .filter(|v| ours.as_ref().is_none_or(|o| o.contains(&v.peer_nsid)))
            .map(|v| Target {
                ifindex: v.ifindex,
                name: v.name,
                nsid: v.peer_nsid,
            })
            .collect();
        let synced = self.kernel.sync_syn_check(&targets);
        if synced.devices != self.syn.devices {
            log::info!(
                "SYN check on {} container device(s): {}",
                synced.devices.len(),
                synced
                    .devices
                    .iter()
                    .map(|(d, nsid)| format!("{d} (nsid {nsid})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.syn.devices = synced.devices;
        }
        problems.extend(synced.errors);
        self.syn_problems(problems);
        let mut view = self
            .shared
            .syn_check
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        view.devices = self
            .syn
            .devices
            .iter()
            .map(|(device, nsid)| SynDevice {
                device: device.clone(),
                nsid: *nsid,
            })
            .collect();
        view.errors = self.syn.errors.clone();
    }

    /// Logs problems when they change (not every second).
    fn syn_problems(&mut self, errors: Vec<String>) {
        if errors != self.syn.errors {
            for e in &errors {
                log::warn!("SYN check: {e}");
            }
            self.syn.errors = errors;
        }
    }
}
