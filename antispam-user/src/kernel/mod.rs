//! The kernel side as the agent sees it: load the object, fill the maps, attach the programs.
//!
//! `maps` writes the policy and the runtime state (suspensions, overrides, the kill switch),
//! `view` reads counters for metrics and status, `pins` keeps programs and maps alive in the BPF
//! filesystem across agent restarts, `layout` describes every map once.

pub mod btf;
mod error;
mod exec;
pub mod features;
pub mod layout;
pub mod maps;
pub mod pins;
pub mod syn;
pub mod tenants;
mod view;

use std::{
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use antispam_common::{
    config::Config,
    key::{KeyId, KeyState},
    maps as m,
};
use aya::{
    maps::{Array, HashMap, IterableMap as _, MapData, RingBuf},
    programs::{
        links::FdLink, BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, LsmCgroup,
    },
    Ebpf, EbpfLoader,
};
pub use error::{error_chain, Error};
pub use exec::{ExecHookChoice, Offsets};
use maps::RUNTIME_FLAGS;
pub use maps::{missing, Host, LocalAddrs, RuleMaps, SubUids};
use pins::Pins;
pub use view::KernelView;

use crate::control::status::ExecHook;

/// The eBPF object built by build.rs from the antispam-ebpf crate.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/antispam"));

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
    /// A third handle on it, for the task that removes idle entries; taken by it.
    pub keys_sweeper: Option<HashMap<MapData, KeyId, KeyState>>,
    /// The host's own addresses (connects to them are submissions to the local MTA).
    pub local_addrs: LocalAddrs,
    /// Subordinate UID ranges, charged to their owners.
    pub subuids: SubUids,
    /// The SYN check on containers' veth devices.
    pub syn: syn::SynCheck,
    /// The tenants' fleet leases; taken by the agent's shared state.
    pub tenants: Option<tenants::TenantMaps>,
    /// The attach point, for the exec fallback (a tracepoint is not attached to a cgroup).
    attach_cgroup: aya::maps::CgroupArray<MapData>,
    /// Which exec program decides mail through sendmail, and why it is not BPF LSM.
    pub exec_hook: crate::control::status::ExecHook,
    pub exec_hook_why: Option<String>,
    pub attached: Vec<&'static str>,
    /// Why the packet program (`antispam_egress`) runs, if it does: see [`Kernel::packets`].
    pub packets: Option<&'static str>,
    /// Links taken over from a previous agent (0 on a fresh start).
    pub adopted: usize,
    pub cgroup: PathBuf,
    /// The configuration a previous agent left in the pinned map, if any.
    pub previous: Option<Config>,
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

/// The program `name` of the object, as its type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(Error::program(name))
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

/// Refuses a kernel that lacks what the programs need, before anything is loaded: one line
/// naming what is missing and the Linux version that has it (see `features`).
pub fn check_features() -> Result<(), Error> {
    features::check()?.map_err(Error::Unsupported)
}

impl Kernel {
    /// Loads the programs, and creates the maps or opens those pinned in `pins.dir`; nothing is
    /// attached yet.
    pub fn load(pins: &Pins, exec_hook: ExecHookChoice, max_keys: u32) -> Result<Kernel, Error> {
        let offsets = Offsets::of_running_kernel();
        let zeros = Offsets::default();
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&pins.dir);
        loader.map_max_entries(m::KEYS, max_keys);
        offsets.as_ref().unwrap_or(&zeros).set(&mut loader);
        let mut ebpf = loader.load(OBJECT)?;
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
            programs: take(&mut ebpf, m::PROGRAMS)?,
            program_filter: take(&mut ebpf, m::PROGRAM_FILTER)?,
            suspended: take(&mut ebpf, m::SUSPENDED)?,
            overrides: take(&mut ebpf, m::OVERRIDES)?,
            policy_config: Config::default(),
            // Kept as the previous agent left them (kill switch, suspensions, overrides) until
            // this agent has restored its own state: no gap in between.
            runtime_flags: previous.map_or(0, |c| c.flags & RUNTIME_FLAGS),
            host: previous.map_or_else(Host::default, |c| Host {
                netns: c.host_netns,
                attach_level: c.attach_level,
                subuid_min: c.subuid_min,
            }),
        };
        let keys: HashMap<MapData, KeyId, KeyState> = take(&mut ebpf, m::KEYS)?;
        let keys_sweeper = HashMap::try_from(aya::maps::Map::HashMap(dup(keys.map(), m::KEYS)?))
            .map_err(Error::map(m::KEYS))?;
        let keys_writer = HashMap::try_from(aya::maps::Map::HashMap(dup(keys.map(), m::KEYS)?))
            .map_err(Error::map(m::KEYS))?;
        let cgroup_rules_reader = HashMap::try_from(aya::maps::Map::HashMap(dup(
            rules.cgroup_rules.map(),
            m::CGROUP_RULES,
        )?))
        .map_err(Error::map(m::CGROUP_RULES))?;
        let view = KernelView {
            keys,
            keys_max: max_keys as usize,
            cgroup_rules: cgroup_rules_reader,
            decisions: take(&mut ebpf, m::DECISIONS)?,
            stats: take(&mut ebpf, m::STATS)?,
        };
        let events = Some(take(&mut ebpf, m::EVENTS)?);
        for name in [m::programs::CONNECT4, m::programs::CONNECT6] {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            p.load().map_err(Error::program(name))?;
        }
        let name = m::programs::EGRESS;
        let p: &mut CgroupSkb = program(&mut ebpf, name)?;
        p.load().map_err(Error::program(name))?;
        let name = m::programs::SOCK_CREATE;
        let p: &mut CgroupSock = program(&mut ebpf, name)?;
        p.load().map_err(Error::program(name))?;
        let local_addrs = LocalAddrs::new(take(&mut ebpf, m::LOCAL_ADDRS)?);
        let subuids = SubUids::new(take(&mut ebpf, m::SUBUIDS)?);
        let attach_cgroup = take(&mut ebpf, m::ATTACH_CGROUP)?;
        let (exec_hook, exec_hook_why) =
            exec::load(&mut ebpf, exec_hook, offsets.as_ref().map(|_| ()))?;
        let name = m::programs::SYN;
        let p: &mut aya::programs::SchedClassifier = program(&mut ebpf, name)?;
        let syn_unavailable = p.load().err().map(|e| {
            let why = error_chain(&e);
            log::warn!("the SYN check on containers' devices is off: loading {name}: {why}");
            why
        });
        let syn = syn::SynCheck::new(take(&mut ebpf, m::VETHS)?, syn_unavailable);
        let tenants = tenants::TenantMaps {
            leases: take(&mut ebpf, m::LEASES)?,
            used: take(&mut ebpf, m::TENANT_USE)?,
        };
        Ok(Kernel {
            ebpf,
            rules,
            view: Some(view),
            events,
            keys_writer,
            keys_sweeper: Some(keys_sweeper),
            local_addrs,
            subuids,
            syn,
            tenants: Some(tenants),
            attach_cgroup,
            exec_hook,
            exec_hook_why,
            attached: Vec::new(),
            packets: None,
            adopted: 0,
            cgroup: PathBuf::new(),
            previous,
        })
    }

    /// Makes the programs run on the cgroup directory `dir` (the packet program only if
    /// `packets` says why), through links pinned in
    /// `pins.dir`. Links a previous agent pinned there (or in an older layout's directory) are
    /// taken over with BPF_LINK_UPDATE: the new program replaces the old one atomically. Otherwise
    /// new links are made and pinned. Links always run alongside other programs attached there
    /// (the kernel refuses BPF_F_ALLOW_MULTI in `link_create` with EINVAL: flags must be 0, which
    /// aya's `Single` mode passes). The links stay when the agent exits; `antispam uninstall`
    /// removes them.
    pub fn attach(
        &mut self,
        dir: &Path,
        pins: &Pins,
        packets: Option<&'static str>,
    ) -> Result<(), Error> {
        let file =
            File::open(dir).map_err(Error::io(format!("opening cgroup {}", dir.display())))?;
        let mut names = vec![
            m::programs::CONNECT4,
            m::programs::CONNECT6,
            m::programs::SOCK_CREATE,
        ];
        if packets.is_some() {
            names.push(m::programs::EGRESS);
        } else {
            unpin_link(pins, m::programs::EGRESS);
        }
        self.packets = packets;
        if self.exec_hook == ExecHook::Lsm {
            names.push(m::programs::EXEC);
        }
        for name in names {
            self.attach_to_cgroup(name, &file, pins)?;
            self.attached.push(name);
        }
        match self.exec_hook {
            ExecHook::Tracepoint => {
                self.attach_fallback(&file, pins)?;
                self.attached.push(m::programs::EXEC_FALLBACK);
                unpin_link(pins, m::programs::EXEC);
            }
            ExecHook::Lsm => unpin_link(pins, m::programs::EXEC_FALLBACK),
            ExecHook::None => {
                unpin_link(pins, m::programs::EXEC);
                unpin_link(pins, m::programs::EXEC_FALLBACK);
            }
        }
        for older in &pins.older {
            syn::remove_filters(older);
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

    /// Runs the packet program (`antispam_egress`) on the attach point while `why` says a
    /// feature needs it, and detaches it when none does: every packet of the attach point's
    /// tasks pays for a program there (see antispam-ebpf/src/egress.rs).
    pub fn packets(&mut self, why: Option<&'static str>, pins: &Pins) -> Result<(), Error> {
        let name = m::programs::EGRESS;
        match (self.packets, why) {
            (None, Some(why)) => {
                let file = File::open(&self.cgroup).map_err(Error::io(format!(
                    "opening cgroup {}",
                    self.cgroup.display()
                )))?;
                self.attach_to_cgroup(name, &file, pins)?;
                self.attached.push(name);
                log::info!("attached {name}: {why}");
            }
            (Some(_), None) => {
                unpin_link(pins, name);
                self.attached.retain(|n| *n != name);
            }
            _ => {}
        }
        self.packets = why;
        Ok(())
    }

    /// Runs program `name` on the cgroup through the link pinned in `pins.dir`: a previous
    /// agent's link (or an older layout's, moved here) gets this program with BPF_LINK_UPDATE,
    /// else a new link is made and pinned.
    fn attach_to_cgroup(
        &mut self,
        name: &'static str,
        cgroup: &File,
        pins: &Pins,
    ) -> Result<(), Error> {
        let pin = pins::link_path(&pins.dir, name);
        take_over_older(pins, name, &pin)?;
        let program = self.ebpf.program_mut(name).ok_or(Error::Missing {
            kind: "program",
            name,
        })?;
        if pin.exists() {
            let link =
                pins::obj_get(&pin).map_err(Error::io(format!("opening {}", pin.display())))?;
            let prog = program.fd().map_err(Error::program(name))?;
            pins::link_update(link.as_fd(), prog.as_fd())
                .map_err(Error::io(format!("BPF_LINK_UPDATE of {}", pin.display())))?;
            self.adopted += 1;
            return Ok(());
        }
        let link: Result<FdLink, _> = match name {
            m::programs::EGRESS => {
                let p: &mut CgroupSkb = program.try_into().map_err(Error::program(name))?;
                let id = p
                    .attach(
                        cgroup,
                        CgroupSkbAttachType::Egress,
                        CgroupAttachMode::Single,
                    )
                    .map_err(Error::program(name))?;
                p.take_link(id).map_err(Error::program(name))?.try_into()
            }
            m::programs::SOCK_CREATE => {
                let p: &mut CgroupSock = program.try_into().map_err(Error::program(name))?;
                let id = p
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(Error::program(name))?;
                p.take_link(id).map_err(Error::program(name))?.try_into()
            }
            m::programs::EXEC => {
                let p: &mut LsmCgroup = program.try_into().map_err(Error::program(name))?;
                let id = p.attach(cgroup).map_err(Error::program(name))?;
                Ok(p.take_link(id).map_err(Error::program(name))?.into())
            }
            _ => {
                let p: &mut CgroupSockAddr = program.try_into().map_err(Error::program(name))?;
                let id = p
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(Error::program(name))?;
                p.take_link(id).map_err(Error::program(name))?.try_into()
            }
        };
        let link = link.map_err(|e| Error::Io {
            what: format!("link of {name}"),
            source: std::io::Error::other(e),
        })?;
        pin_link(link, &pin)
    }

    /// The exec fallback: a tracepoint runs for every task of the host, so the program is told
    /// the attach point (`AS_ATTACH_CGROUP`). A tracing link cannot take another program: a
    /// previous agent's link is replaced by a new one, attached first (no instant without it;
    /// an exec in the microseconds both run is counted twice).
    fn attach_fallback(&mut self, cgroup: &File, pins: &Pins) -> Result<(), Error> {
        let name = m::programs::EXEC_FALLBACK;
        self.attach_cgroup
            .set(0, cgroup.as_fd(), 0)
            .map_err(Error::map(m::ATTACH_CGROUP))?;
        let pin = pins::link_path(&pins.dir, name);
        let p: &mut BtfTracePoint = program(&mut self.ebpf, name)?;
        let id = p.attach().map_err(Error::program(name))?;
        let link: FdLink = p.take_link(id).map_err(Error::program(name))?.into();
        // bpffs refuses names with a dot.
        let fresh = pins::link_path(&pins.dir, &format!("{name}_new"));
        let _ = std::fs::remove_file(&fresh);
        pin_link(link, &fresh)?;
        std::fs::rename(&fresh, &pin).map_err(Error::io(format!(
            "moving {} to {}",
            fresh.display(),
            pin.display()
        )))?;
        for older in &pins.older {
            let _ = std::fs::remove_file(pins::link_path(older, name));
        }
        Ok(())
    }
}

/// A link of an older layout's directory moves into this one (rename within the BPF
/// filesystem), to be taken over.
fn take_over_older(pins: &Pins, name: &str, pin: &Path) -> Result<(), Error> {
    for older in &pins.older {
        let old = pins::link_path(older, name);
        if old.exists() && !pin.exists() {
            std::fs::rename(&old, pin).map_err(Error::io(format!(
                "moving {} to {}",
                old.display(),
                pin.display()
            )))?;
        }
    }
    Ok(())
}

/// Pins a link: the pinned file keeps the link (and its program) alive; the fd closes here.
fn pin_link(link: FdLink, pin: &Path) -> Result<(), Error> {
    link.pin(pin).map(drop).map_err(|e| Error::Io {
        what: format!("pinning {}", pin.display()),
        source: std::io::Error::other(e),
    })
}

/// Removes the link of a program this agent does not run (another exec hook of a previous
/// agent): unpinning detaches it.
fn unpin_link(pins: &Pins, name: &str) {
    for dir in std::iter::once(&pins.dir).chain(&pins.older) {
        let pin = pins::link_path(dir, name);
        if pin.exists() {
            match std::fs::remove_file(&pin) {
                Ok(()) => log::info!("detached {name} ({} removed)", pin.display()),
                Err(e) => log::warn!("removing {}: {e}", pin.display()),
            }
        }
    }
}
