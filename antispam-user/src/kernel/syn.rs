//! The SYN check (`antispam_syn`) on containers' host-side veth devices: a tc ingress filter
//! per device (netlink; it stays when the agent exits, like the pinned links), and the device's
//! peer namespace id in `AS_VETHS`. A restarted agent replaces its predecessor's filters' program
//! in place (same priority and handle: no instant without one); `antispam uninstall` removes
//! them with the pins.

use std::{collections::BTreeSet, path::Path};

use antispam_common::{maps as m, net::Veth};
use aya::{
    maps::{HashMap, MapData},
    programs::{
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType},
        SchedClassifier,
    },
};

use super::{error_chain, Kernel};

/// A device the SYN check should run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ifindex: u32,
    pub name: String,
    /// The id the host gives the namespace of the device's peer.
    pub nsid: u32,
}

/// The SYN check's part of the kernel side.
pub struct SynCheck {
    /// `AS_VETHS`, the devices with a filter (pinned: a restarted agent finds them).
    pub veths: HashMap<MapData, u32, Veth>,
    /// Why the program could not be loaded, if it could not (then nothing is attached).
    pub unavailable: Option<String>,
    /// Devices whose filter runs this agent's program.
    owned: BTreeSet<u32>,
}

impl SynCheck {
    pub fn new(veths: HashMap<MapData, u32, Veth>, unavailable: Option<String>) -> SynCheck {
        SynCheck {
            veths,
            unavailable,
            owned: BTreeSet::new(),
        }
    }
}

/// What a sync did and could not do.
#[derive(Debug, Default)]
pub struct Synced {
    /// (device, its peer's nsid), with the filter in place.
    pub devices: Vec<(String, u32)>,
    pub errors: Vec<String>,
}

fn ifname(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .and_then(|c| c.into_string().ok())
}

impl Kernel {
    /// Puts the SYN check on exactly the devices `targets` (and takes it off the others it was
    /// on). A device that fails is reported and tried again at the next sync.
    pub fn sync_syn_check(&mut self, targets: &[Target]) -> Synced {
        let mut out = Synced::default();
        if self.syn.unavailable.is_some() {
            return out;
        }
        let current: Vec<(u32, Veth)> = self.syn.veths.iter().filter_map(Result::ok).collect();
        let wanted: BTreeSet<u32> = targets.iter().map(|t| t.ifindex).collect();
        for (ifindex, v) in &current {
            if wanted.contains(ifindex) {
                continue;
            }
            // Gone (its filter went with it), or no longer a container of ours.
            if let Some(name) = ifname(*ifindex) {
                let link = SchedClassifierLink::attached(
                    &name,
                    TcAttachType::Ingress,
                    v.priority,
                    v.handle.into(),
                    None,
                );
                if let Ok(link) = link {
                    use aya::programs::links::Link as _;
                    let _ = link.detach();
                }
            }
            let _ = self.syn.veths.remove(ifindex);
            self.syn.owned.remove(ifindex);
        }
        for t in targets {
            let known = current
                .iter()
                .find(|(i, _)| *i == t.ifindex)
                .map(|(_, v)| *v);
            match self.put_filter(t, known) {
                Ok(()) => out.devices.push((t.name.clone(), t.nsid)),
                Err(e) => out.errors.push(format!("{}: {e}", t.name)),
            }
        }
        out
    }

    /// The filter on `t`: kept if this agent made it, its program replaced if a previous agent
    /// made it (`known`), else a new one.
    fn put_filter(&mut self, t: &Target, known: Option<Veth>) -> Result<(), FilterError> {
        let owned = self.syn.owned.contains(&t.ifindex);
        if let (true, Some(v)) = (owned, known) {
            if v.nsid != t.nsid {
                let v = Veth { nsid: t.nsid, ..v };
                self.syn
                    .veths
                    .insert(t.ifindex, v, 0)
                    .map_err(FilterError::Map)?;
            }
            return Ok(());
        }
        let name = m::programs::SYN;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(FilterError::NoProgram)?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FilterError::Attach(error_chain(&e)))?;
        let replaced = known.and_then(|v| {
            let link = SchedClassifierLink::attached(
                &t.name,
                TcAttachType::Ingress,
                v.priority,
                v.handle.into(),
                None,
            )
            .ok()?;
            prog.attach_to_link(link).ok()
        });
        let id = match replaced {
            Some(id) => id,
            None => {
                // EEXIST: the device has the qdisc already. Another error is said with the
                // filter's, which fails without it ("Parent Qdisc doesn't exists").
                let qdisc = match tc::qdisc_add_clsact(&t.name) {
                    Err(tc::TcError::NetlinkError(n)) if n.raw_os_error() == Some(libc::EEXIST) => {
                        None
                    }
                    Err(e) => Some(error_chain(&e)),
                    Ok(()) => None,
                };
                prog.attach_with_options(
                    &t.name,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions::default()),
                )
                .map_err(|e| match qdisc {
                    Some(qdisc) => FilterError::NoQdisc {
                        qdisc,
                        filter: error_chain(&e),
                    },
                    None => FilterError::Attach(error_chain(&e)),
                })?
            }
        };
        let link = prog
            .take_link(id)
            .map_err(|e| FilterError::Attach(error_chain(&e)))?;
        let v = Veth {
            nsid: t.nsid,
            handle: link.handle().map(u32::from).unwrap_or(0),
            priority: link.priority().unwrap_or(0),
            _pad: [0; 6],
        };
        // The filter stays when this handle goes (and when the agent exits): dropping the link
        // would detach it.
        std::mem::forget(link);
        self.syn
            .veths
            .insert(t.ifindex, v, 0)
            .map_err(FilterError::Map)?;
        self.syn.owned.insert(t.ifindex);
        Ok(())
    }
}

/// Why the SYN check could not be put on a device (tried again at the next sync).
#[derive(Debug, thiserror::Error)]
enum FilterError {
    #[error("the eBPF object has no SYN check program")]
    NoProgram,
    /// The kernel's answer, as aya's error chain says it.
    #[error("{0}")]
    Attach(String),
    #[error(
        "adding the clsact qdisc: {qdisc} (is the sch_ingress module available?); then {filter}"
    )]
    NoQdisc { qdisc: String, filter: String },
    #[error("recording the device in AS_VETHS: {0}")]
    Map(#[source] aya::maps::MapError),
}

/// Removes the SYN check's filters an instance left (its `AS_VETHS` in `dir`), before its pins
/// go: returns how many were removed.
pub fn remove_filters(dir: &Path) -> usize {
    let Ok(data) = MapData::from_pin(dir.join(m::VETHS)) else {
        return 0;
    };
    let Ok(map) = HashMap::<_, u32, Veth>::try_from(aya::maps::Map::HashMap(data)) else {
        return 0;
    };
    let mut n = 0;
    for (ifindex, v) in map.iter().filter_map(Result::ok) {
        let Some(name) = ifname(ifindex) else {
            continue;
        };
        if let Ok(link) = SchedClassifierLink::attached(
            &name,
            TcAttachType::Ingress,
            v.priority,
            v.handle.into(),
            None,
        ) {
            use aya::programs::links::Link as _;
            if link.detach().is_ok() {
                n += 1;
            }
        }
    }
    n
}
