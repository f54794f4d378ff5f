//! The kernel side as the agent sees it: load the object, fill the maps, attach the programs.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use antispam_common::{
    config::Config,
    key::{KeyId, KeyState, Override, Suspension},
    maps as m,
    rule::{dest_v4_key, dest_v6_key, CgroupKey, DestRule, Rule, UidKey, SLOT_BITS},
};
use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap, IterableMap as _, LpmTrie, MapData, PerCpuArray, RingBuf,
    },
    programs::{links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
    Ebpf, EbpfLoader,
};

use std::os::fd::AsFd as _;

use crate::{
    assign::Assignments,
    compile::Compiled,
    error::Error,
    pins::{self, Pins},
};

/// The flags set at run time rather than by the policy.
const RUNTIME_FLAGS: u32 = antispam_common::config::FLAG_KILL_SWITCH
    | antispam_common::config::FLAG_SUSPENSIONS
    | antispam_common::config::FLAG_OVERRIDES;

/// The eBPF object built by build.rs from the antispam-ebpf crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/antispam"));

/// The loaded programs (attached while this lives) and the maps the agent writes.
pub struct Kernel {
    ebpf: Ebpf,
    /// Policy maps, written on load and reload.
    pub rules: RuleMaps,
    /// Read-only views for metrics and status; taken by the agent's shared state.
    pub view: Option<KernelView>,
    /// The ring buffer of decisions; taken by the event reader.
    pub events: Option<RingBuf<MapData>>,
    /// A second, writable handle on the per-key state map, to drop the state of cgroups that
    /// are gone.
    pub keys_writer: HashMap<MapData, KeyId, KeyState>,
    pub attached: Vec<&'static str>,
    /// Links taken over from a previous agent (0 on a fresh start).
    pub adopted: usize,
    pub cgroup: PathBuf,
    /// The configuration a previous agent left in the pinned map, if any.
    pub previous: Option<Config>,
}

pub struct RuleMaps {
    /// The rule set in force (see `antispam_common::maps::ACTIVE`).
    active: Array<MapData, u32>,
    slot: u32,
    config: Array<MapData, Config>,
    ports: Array<MapData, u64>,
    uid_rules: HashMap<MapData, UidKey, Rule>,
    cgroup_rules: HashMap<MapData, CgroupKey, Rule>,
    dest_v4: LpmTrie<MapData, [u8; 5], DestRule>,
    dest_v6: LpmTrie<MapData, [u8; 17], DestRule>,
    suspended: HashMap<MapData, KeyId, Suspension>,
    overrides: HashMap<MapData, KeyId, Override>,
    /// The configuration of the policy in force, before the runtime flags are added.
    policy_config: Config,
    /// Flags set at run time, not by the policy: FLAG_KILL_SWITCH, FLAG_SUSPENSIONS.
    runtime_flags: u32,
}

/// Maps the agent only reads. aya map handles are plain file descriptors: reading them from
/// several tasks needs no lock.
pub struct KernelView {
    pub keys: HashMap<MapData, KeyId, KeyState>,
    pub cgroup_rules: HashMap<MapData, CgroupKey, Rule>,
    pub decisions: PerCpuArray<MapData, u64>,
    pub stats: PerCpuArray<MapData, u64>,
}

/// A second handle on a map, from a duplicate of its fd (re-opening it by id instead would need
/// CAP_SYS_ADMIN for BPF_MAP_GET_FD_BY_ID).
fn dup(map: &MapData, name: &'static str) -> Result<MapData, Error> {
    use std::os::fd::AsFd as _;
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Io {
            what: format!("duplicating the {name} map fd"),
            source,
        })?;
    MapData::from_fd(fd).map_err(Error::map(name))
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(Error::Missing { kind: "map", name })?;
    T::try_from(map).map_err(Error::map(name))
}

impl Kernel {
    /// Loads the programs, and creates the maps or opens those pinned in `pins.dir`; nothing is
    /// attached yet.
    pub fn load(kernel_debug: bool, pins: &Pins) -> Result<Kernel, Error> {
        // aya-log records are off unless asked for: level 0 disables every log statement.
        let level: u8 = if kernel_debug { 5 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &level, true)
            .default_map_pin_directory(&pins.dir)
            .load(OBJECT)?;
        if kernel_debug {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(logger) => spawn_kernel_logger(logger),
                Err(e) => log::warn!("kernel debug log unavailable: {e}"),
            }
        }
        let active: Array<MapData, u32> = take(&mut ebpf, m::ACTIVE)?;
        let slot = active.get(&0, 0).unwrap_or(0) & 1;
        let config: Array<MapData, Config> = take(&mut ebpf, m::CONFIG)?;
        let previous = config
            .get(&slot, 0)
            .ok()
            .filter(|c| pins.adopting && *c != Config::default());
        let rules = RuleMaps {
            active,
            slot,
            config,
            ports: take(&mut ebpf, m::PORTS)?,
            uid_rules: take(&mut ebpf, m::UID_RULES)?,
            cgroup_rules: take(&mut ebpf, m::CGROUP_RULES)?,
            dest_v4: take(&mut ebpf, m::DEST_V4)?,
            dest_v6: take(&mut ebpf, m::DEST_V6)?,
            suspended: take(&mut ebpf, m::SUSPENDED)?,
            overrides: take(&mut ebpf, m::OVERRIDES)?,
            policy_config: Config::default(),
            // Kept as the previous agent left them (kill switch, suspensions, overrides) until
            // this agent has restored its own state: no gap in between.
            runtime_flags: previous.map_or(0, |c| c.flags & RUNTIME_FLAGS),
        };
        let keys: HashMap<MapData, KeyId, KeyState> = take(&mut ebpf, m::KEYS)?;
        let keys_writer = HashMap::try_from(aya::maps::Map::LruHashMap(dup(keys.map(), m::KEYS)?))
            .map_err(Error::map(m::KEYS))?;
        let cgroup_rules_reader = HashMap::try_from(aya::maps::Map::HashMap(dup(
            rules.cgroup_rules.map(),
            m::CGROUP_RULES,
        )?))
        .map_err(Error::map(m::CGROUP_RULES))?;
        let view = KernelView {
            keys,
            cgroup_rules: cgroup_rules_reader,
            decisions: take(&mut ebpf, m::DECISIONS)?,
            stats: take(&mut ebpf, m::STATS)?,
        };
        let events = Some(take(&mut ebpf, m::EVENTS)?);
        for name in [m::programs::CONNECT4, m::programs::CONNECT6] {
            let p: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(Error::Missing {
                    kind: "program",
                    name,
                })?
                .try_into()
                .map_err(Error::program(name))?;
            p.load().map_err(Error::program(name))?;
        }
        let name = m::programs::EGRESS;
        let p: &mut CgroupSkb = ebpf
            .program_mut(name)
            .ok_or(Error::Missing {
                kind: "program",
                name,
            })?
            .try_into()
            .map_err(Error::program(name))?;
        p.load().map_err(Error::program(name))?;
        Ok(Kernel {
            ebpf,
            rules,
            view: Some(view),
            events,
            keys_writer,
            attached: Vec::new(),
            adopted: 0,
            cgroup: PathBuf::new(),
            previous,
        })
    }

    /// Makes the three programs run on the cgroup directory `dir`, through links pinned in
    /// `pins.dir`. Links a previous agent pinned there (or in an older layout's directory) are
    /// taken over with BPF_LINK_UPDATE: the new program replaces the old one atomically. Otherwise
    /// new links are made and pinned. Links always run alongside other programs attached there
    /// (the kernel refuses BPF_F_ALLOW_MULTI in `link_create` with EINVAL: flags must be 0, which
    /// aya's `Single` mode passes). The links stay when the agent exits; `antispam uninstall`
    /// removes them.
    pub fn attach(&mut self, dir: &Path, pins: &Pins) -> Result<(), Error> {
        let file = File::open(dir).map_err(|source| Error::Io {
            what: format!("opening cgroup {}", dir.display()),
            source,
        })?;
        let io = |what: String| move |source| Error::Io { what, source };
        for name in [
            m::programs::CONNECT4,
            m::programs::CONNECT6,
            m::programs::EGRESS,
        ] {
            let pin = pins::link_path(&pins.dir, name);
            // A link of an older layout moves here first (rename within the BPF filesystem).
            for older in &pins.older {
                let old = pins::link_path(older, name);
                if old.exists() && !pin.exists() {
                    std::fs::rename(&old, &pin).map_err(io(format!(
                        "moving {} to {}",
                        old.display(),
                        pin.display()
                    )))?;
                }
            }
            let program = self.ebpf.program_mut(name).ok_or(Error::Missing {
                kind: "program",
                name,
            })?;
            if pin.exists() {
                let link = pins::obj_get(&pin).map_err(io(format!("opening {}", pin.display())))?;
                let prog = program.fd().map_err(Error::program(name))?;
                pins::link_update(link.as_fd(), prog.as_fd())
                    .map_err(io(format!("BPF_LINK_UPDATE of {}", pin.display())))?;
                self.adopted += 1;
            } else {
                let link: FdLink = if name == m::programs::EGRESS {
                    let p: &mut CgroupSkb = program.try_into().map_err(Error::program(name))?;
                    let id = p
                        .attach(&file, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
                        .map_err(Error::program(name))?;
                    p.take_link(id).map_err(Error::program(name))?.try_into()
                } else {
                    let p: &mut CgroupSockAddr =
                        program.try_into().map_err(Error::program(name))?;
                    let id = p
                        .attach(&file, CgroupAttachMode::Single)
                        .map_err(Error::program(name))?;
                    p.take_link(id).map_err(Error::program(name))?.try_into()
                }
                .map_err(|e| Error::Io {
                    what: format!("link of {name}"),
                    source: std::io::Error::other(e),
                })?;
                // The pinned file keeps the link (and the program) alive; the fd closes here.
                link.pin(&pin).map_err(|e| Error::Io {
                    what: format!("pinning {}", pin.display()),
                    source: std::io::Error::other(e),
                })?;
            }
            self.attached.push(name);
        }
        for older in &pins.older {
            match pins::remove(older) {
                Ok(n) => log::info!(
                    "took over the links of {} and removed its {n} pinned objects",
                    older.display()
                ),
                Err(e) => log::warn!("removing {}: {e}", older.display()),
            }
        }
        self.cgroup = dir.to_path_buf();
        Ok(())
    }
}

impl RuleMaps {
    /// Writes the configuration: the policy's, with the runtime flags.
    fn write_config(&mut self) -> Result<(), Error> {
        let mut c = self.policy_config;
        c.flags |= self.runtime_flags;
        self.config
            .set(self.slot, c, 0)
            .map_err(Error::map(m::CONFIG))
    }

    /// Sets or clears a runtime flag (kill switch, suspensions present).
    pub fn set_flag(&mut self, flag: u32, on: bool) -> Result<(), Error> {
        let before = self.runtime_flags;
        if on {
            self.runtime_flags |= flag;
        } else {
            self.runtime_flags &= !flag;
        }
        if before == self.runtime_flags {
            return Ok(());
        }
        self.write_config()
    }

    /// Suspends `key` (the entry is written before the flag that makes the programs look).
    pub fn suspend(&mut self, key: KeyId, s: Suspension) -> Result<(), Error> {
        self.suspended
            .insert(key, s, 0)
            .map_err(Error::map(m::SUSPENDED))?;
        self.set_flag(antispam_common::config::FLAG_SUSPENSIONS, true)
    }

    /// Lifts the suspension of `key`; when none are left, the programs stop looking.
    pub fn unsuspend(&mut self, key: KeyId) -> Result<(), Error> {
        match self.suspended.remove(&key) {
            Err(e) if !missing(&e) => {
                return Err(Error::Map {
                    name: m::SUSPENDED,
                    source: e,
                })
            }
            _ => {}
        }
        let any = self.suspended.keys().next().is_some();
        self.set_flag(antispam_common::config::FLAG_SUSPENSIONS, any)
    }

    /// Puts `key` under a break-glass override (the entry before the flag, as for suspensions).
    pub fn grant(&mut self, key: KeyId, o: Override) -> Result<(), Error> {
        self.overrides
            .insert(key, o, 0)
            .map_err(Error::map(m::OVERRIDES))?;
        self.set_flag(antispam_common::config::FLAG_OVERRIDES, true)
    }

    /// Ends the override of `key`; when none are left, the programs stop looking.
    pub fn ungrant(&mut self, key: KeyId) -> Result<(), Error> {
        match self.overrides.remove(&key) {
            Err(e) if !missing(&e) => {
                return Err(Error::Map {
                    name: m::OVERRIDES,
                    source: e,
                })
            }
            _ => {}
        }
        let any = self.overrides.keys().next().is_some();
        self.set_flag(antispam_common::config::FLAG_OVERRIDES, any)
    }

    /// Drops the suspensions and overrides a previous agent left in the pinned maps that this
    /// agent did not restore (they ended while no agent ran), and sets the flags to match.
    pub fn prune_runtime(
        &mut self,
        suspended: &std::collections::HashSet<KeyId>,
        overridden: &std::collections::HashSet<KeyId>,
        kill_switch: bool,
    ) -> Result<(), Error> {
        use antispam_common::config::{FLAG_KILL_SWITCH, FLAG_OVERRIDES, FLAG_SUSPENSIONS};
        let stale: Vec<KeyId> = self
            .suspended
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !suspended.contains(k))
            .collect();
        for k in stale {
            self.unsuspend(k)?;
        }
        let stale: Vec<KeyId> = self
            .overrides
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !overridden.contains(k))
            .collect();
        for k in stale {
            self.ungrant(k)?;
        }
        self.set_flag(FLAG_KILL_SWITCH, kill_switch)?;
        self.set_flag(FLAG_SUSPENSIONS, self.suspended.keys().next().is_some())?;
        self.set_flag(FLAG_OVERRIDES, self.overrides.keys().next().is_some())
    }

    /// Writes a cgroup's rule into the rule set in force (a cgroup that appeared).
    pub fn set_cgroup(&mut self, id: u64, rule: &Rule) -> Result<(), Error> {
        self.cgroup_rules
            .insert(CgroupKey::new(id, self.slot), rule, 0)
            .map_err(Error::map(m::CGROUP_RULES))
    }

    /// Removes a cgroup's rule from the rule set in force; a cgroup that had none is not an
    /// error.
    pub fn remove_cgroup(&mut self, id: u64) -> Result<(), Error> {
        match self.cgroup_rules.remove(&CgroupKey::new(id, self.slot)) {
            Err(e) if !missing(&e) => Err(Error::Map {
                name: m::CGROUP_RULES,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Puts the policy `c`, with the cgroup assignment `a`, in force in one step: it is written
    /// whole into the rule set not in force, then `AS_ACTIVE` is flipped to it (a single
    /// 4-byte store: each decision reads it once and sees either policy entire, never a mix),
    /// then the old rule set is cleared. If writing fails (a full map), nothing has changed:
    /// the policy in force stays, and what was written of the new one is removed.
    pub fn apply(&mut self, c: &Compiled, a: &Assignments) -> Result<(), Error> {
        let next = self.slot ^ 1;
        // Leftovers of a write that failed, or of a previous agent's.
        self.clear_slot(next)?;
        if let Err(e) = self.fill_slot(next, c, a) {
            if let Err(e2) = self.clear_slot(next) {
                log::warn!("clearing the half-written rule set: {e2}");
            }
            return Err(e);
        }
        let mut cfg = c.config;
        cfg.flags |= self.runtime_flags;
        self.config
            .set(next, cfg, 0)
            .map_err(Error::map(m::CONFIG))?;
        self.active.set(0, next, 0).map_err(Error::map(m::ACTIVE))?;
        let old = self.slot;
        self.slot = next;
        self.policy_config = c.config;
        if let Err(e) = self.clear_slot(old) {
            // Harmless: no decision reads the old set; the next apply clears it first.
            log::warn!("clearing the previous rule set: {e}");
        }
        Ok(())
    }

    fn fill_slot(&mut self, slot: u32, c: &Compiled, a: &Assignments) -> Result<(), Error> {
        for (i, word) in c.ports.iter().enumerate() {
            self.ports
                .set(slot * m::PORTS_WORDS + i as u32, word, 0)
                .map_err(Error::map(m::PORTS))?;
        }
        for (uid, rule) in &c.uid_rules {
            self.uid_rules
                .insert(UidKey { uid: *uid, slot }, rule, 0)
                .map_err(Error::map(m::UID_RULES))?;
        }
        for (id, x) in a {
            self.cgroup_rules
                .insert(CgroupKey::new(*id, slot), x.rule, 0)
                .map_err(Error::map(m::CGROUP_RULES))?;
        }
        for ((len, addr), v) in &c.dest_v4 {
            self.dest_v4
                .insert(&Key::new(SLOT_BITS + len, dest_v4_key(slot, *addr)), v, 0)
                .map_err(Error::map(m::DEST_V4))?;
        }
        for ((len, addr), v) in &c.dest_v6 {
            self.dest_v6
                .insert(&Key::new(SLOT_BITS + len, dest_v6_key(slot, addr)), v, 0)
                .map_err(Error::map(m::DEST_V6))?;
        }
        Ok(())
    }

    /// Removes every entry of rule set `slot` (the ports bitmap is overwritten whole when the
    /// set is next written).
    fn clear_slot(&mut self, slot: u32) -> Result<(), Error> {
        let uids: Vec<UidKey> = self
            .uid_rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for k in uids {
            match self.uid_rules.remove(&k) {
                Err(e) if !missing(&e) => return Err(Error::map(m::UID_RULES)(e)),
                _ => {}
            }
        }
        let cgroups: Vec<CgroupKey> = self
            .cgroup_rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for k in cgroups {
            match self.cgroup_rules.remove(&k) {
                Err(e) if !missing(&e) => return Err(Error::map(m::CGROUP_RULES)(e)),
                _ => {}
            }
        }
        clear_trie(&mut self.dest_v4, slot, m::DEST_V4)?;
        clear_trie(&mut self.dest_v6, slot, m::DEST_V6)
    }
}

fn clear_trie<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], DestRule>,
    slot: u32,
    name: &'static str,
) -> Result<(), Error>
where
    [u8; N]: aya::Pod,
{
    let keys: Vec<Key<[u8; N]>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.data()[0] == slot as u8)
        .collect();
    for k in keys {
        match trie.remove(&k) {
            Err(e) if !missing(&e) => return Err(Error::map(name)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Is this the error of deleting or reading a key that is not there?
pub fn missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
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

fn spawn_kernel_logger(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring-buffer fd for its whole life.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
