//! The maps the agent writes: the policy (two rule sets, switched atomically) and the runtime
//! state (suspensions, break-glass overrides, the kill switch).

use std::collections::HashSet;

/// The flags set at run time rather than by the policy.
pub use antispam_common::config::FLAG_SUBUIDS as SUBUIDS_FLAG;
use antispam_common::{
    config::{Config, FLAG_KILL_SWITCH, FLAG_OVERRIDES, FLAG_SUBUIDS, FLAG_SUSPENSIONS},
    key::{KeyId, Override, Suspension},
    maps as m,
    rule::{
        dest_v4_key, dest_v6_key, CgroupKey, DestRule, Program, ProgramKey, Rule, UidKey, SLOT_BITS,
    },
};
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};

use super::Error;
use crate::{
    policy::{assign::Assignments, compile::Compiled},
    sys::programs::Resolved,
};

pub(super) const RUNTIME_FLAGS: u32 =
    FLAG_KILL_SWITCH | FLAG_SUSPENSIONS | FLAG_OVERRIDES | FLAG_SUBUIDS;

/// What `prune_runtime` removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub suspensions: Vec<KeyId>,
    pub overrides: Vec<KeyId>,
    /// The kill switch was on in the kernel and is off now.
    pub kill_switch: bool,
}

/// A policy written into the rule set not in force, waiting to be switched to.
#[must_use = "a staged rule set is committed or discarded"]
pub struct Staged {
    slot: u32,
    config: Config,
}

pub struct RuleMaps {
    /// The rule set in force (see `antispam_common::maps::ACTIVE`).
    pub(super) active: Array<MapData, u32>,
    pub(super) slot: u32,
    pub(super) config: Array<MapData, Config>,
    pub(super) ports: Array<MapData, u64>,
    pub(super) uid_rules: HashMap<MapData, UidKey, Rule>,
    pub(super) cgroup_rules: HashMap<MapData, CgroupKey, Rule>,
    pub(super) dest_v4: LpmTrie<MapData, [u8; 5], DestRule>,
    pub(super) dest_v6: LpmTrie<MapData, [u8; 17], DestRule>,
    pub(super) programs: HashMap<MapData, ProgramKey, Program>,
    pub(super) program_filter: Array<MapData, u64>,
    pub(super) suspended: HashMap<MapData, KeyId, Suspension>,
    pub(super) overrides: HashMap<MapData, KeyId, Override>,
    /// The configuration of the policy in force, before the runtime flags are added.
    pub(super) policy_config: Config,
    /// Flags set at run time, not by the policy: FLAG_KILL_SWITCH, FLAG_SUSPENSIONS.
    pub(super) runtime_flags: u32,
    /// What the agent knows of the host, not of the policy.
    pub(super) host: Host,
}

/// What the configuration says of the host rather than of the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Host {
    /// The agent's network namespace cookie (`SO_NETNS_COOKIE`; 0 unknown).
    pub netns: u64,
    /// The cgroup level of the attach point.
    pub attach_level: u32,
    /// The lowest subordinate UID (`u32::MAX`: none).
    pub subuid_min: u32,
}

impl RuleMaps {
    /// The configuration of `policy` as written: with the runtime flags and the host's facts.
    fn effective(&self, policy: Config) -> Config {
        let mut c = policy;
        c.flags |= self.runtime_flags;
        c.host_netns = self.host.netns;
        c.attach_level = self.host.attach_level;
        c.subuid_min = self.host.subuid_min;
        c
    }

    /// Writes the configuration: the policy's, with the runtime flags.
    fn write_config(&mut self) -> Result<(), Error> {
        let c = self.effective(self.policy_config);
        self.config
            .set(self.slot, c, 0)
            .map_err(Error::map(m::CONFIG))
    }

    /// What the agent last told the programs of the host.
    pub fn host(&self) -> Host {
        self.host
    }

    /// Records what the agent knows of the host (written with the next configuration; now, if
    /// a policy is in force).
    pub fn set_host(&mut self, host: Host) -> Result<(), Error> {
        if self.host == host {
            return Ok(());
        }
        self.host = host;
        if self.policy_config == Config::default() {
            return Ok(());
        }
        self.write_config()
    }

    /// Is the kill switch on, or a suspension in force?
    pub fn stopping(&self) -> bool {
        self.runtime_flags & (FLAG_KILL_SWITCH | FLAG_SUSPENSIONS) != 0
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
        self.set_flag(FLAG_SUSPENSIONS, true)
    }

    /// Lifts the suspension of `key`; when none are left, the programs stop looking.
    pub fn unsuspend(&mut self, key: KeyId) -> Result<(), Error> {
        remove(&mut self.suspended, &key, m::SUSPENDED)?;
        let any = self.suspended.keys().next().is_some();
        self.set_flag(FLAG_SUSPENSIONS, any)
    }

    /// Puts `key` under a break-glass override (the entry before the flag, as for suspensions).
    pub fn grant(&mut self, key: KeyId, o: Override) -> Result<(), Error> {
        self.overrides
            .insert(key, o, 0)
            .map_err(Error::map(m::OVERRIDES))?;
        self.set_flag(FLAG_OVERRIDES, true)
    }

    /// Ends the override of `key`; when none are left, the programs stop looking.
    pub fn ungrant(&mut self, key: KeyId) -> Result<(), Error> {
        remove(&mut self.overrides, &key, m::OVERRIDES)?;
        let any = self.overrides.keys().next().is_some();
        self.set_flag(FLAG_OVERRIDES, any)
    }

    /// Drops the suspensions and overrides a previous agent left in the pinned maps that this
    /// agent did not restore (they ended while no agent ran), and sets the flags to match.
    /// Returns what it removed, for the audit log.
    pub fn prune_runtime(
        &mut self,
        suspended: &HashSet<KeyId>,
        overridden: &HashSet<KeyId>,
        kill_switch: bool,
    ) -> Result<Pruned, Error> {
        let mut pruned = Pruned {
            kill_switch: self.runtime_flags & FLAG_KILL_SWITCH != 0 && !kill_switch,
            ..Pruned::default()
        };
        let stale: Vec<KeyId> = self
            .suspended
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !suspended.contains(k))
            .collect();
        for k in stale {
            self.unsuspend(k)?;
            pruned.suspensions.push(k);
        }
        let stale: Vec<KeyId> = self
            .overrides
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !overridden.contains(k))
            .collect();
        for k in stale {
            self.ungrant(k)?;
            pruned.overrides.push(k);
        }
        self.set_flag(FLAG_KILL_SWITCH, kill_switch)?;
        self.set_flag(FLAG_SUSPENSIONS, self.suspended.keys().next().is_some())?;
        self.set_flag(FLAG_OVERRIDES, self.overrides.keys().next().is_some())?;
        Ok(pruned)
    }

    /// Marks the cgroups no rule covers as known, so that the programs do not look for a rule
    /// among their ancestors. Best effort: a cgroup the map cannot take is merely looked up
    /// further (the decision is the same).
    fn mark_known(&mut self, slot: u32, a: &Assignments, known: &[u64]) {
        let mut skipped = 0usize;
        for id in known.iter().filter(|id| !a.contains_key(id)) {
            if self
                .cgroup_rules
                .insert(CgroupKey::new(*id, slot), Rule::known(), 0)
                .is_err()
            {
                skipped += 1;
            }
        }
        if skipped > 0 {
            log::warn!("{skipped} cgroups could not be marked as known (the cgroup rule map is full): their connects look up their ancestors' rules");
        }
    }

    /// Marks a new cgroup that no rule covers as known (see `mark_known`).
    pub fn set_known(&mut self, id: u64) {
        let _ = self
            .cgroup_rules
            .insert(CgroupKey::new(id, self.slot), Rule::known(), 0);
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
        remove(
            &mut self.cgroup_rules,
            &CgroupKey::new(id, self.slot),
            m::CGROUP_RULES,
        )
    }

    /// Writes the policy `c`, with the cgroup assignment `a`, whole into the rule set not in
    /// force (its configuration last), without switching to it: the caller records the change,
    /// then [`RuleMaps::commit`]s it, which flips `AS_ACTIVE` to it (a single 4-byte store: each
    /// decision reads it once and sees either policy entire, never a mix), or
    /// [`RuleMaps::discard`]s it. If writing fails (a full map), nothing has changed: the policy
    /// in force stays, and what was written of the new one is removed.
    pub fn stage(
        &mut self,
        c: &Compiled,
        a: &Assignments,
        programs: &[Resolved],
        known: &[u64],
    ) -> Result<Staged, Error> {
        let next = self.slot ^ 1;
        // Leftovers of a write that failed, or of a previous agent's.
        self.clear_slot(next)?;
        let written = self.fill_slot(next, c, a, programs).and_then(|()| {
            if c.config.flags & antispam_common::config::FLAG_CGROUP_RULES != 0 {
                self.mark_known(next, a, known);
            }
            let cfg = self.effective(c.config);
            self.config.set(next, cfg, 0).map_err(Error::map(m::CONFIG))
        });
        if let Err(e) = written {
            if let Err(e2) = self.clear_slot(next) {
                log::warn!("clearing the half-written rule set: {e2}");
            }
            return Err(e);
        }
        Ok(Staged {
            slot: next,
            config: c.config,
        })
    }

    /// Puts a staged rule set in force (one 4-byte store to `AS_ACTIVE`), then removes the
    /// previous set. The runtime flags (and host facts) set since staging are written into it
    /// first.
    pub fn commit(&mut self, staged: Staged) -> Result<(), Error> {
        let next = staged.slot;
        let cfg = self.effective(staged.config);
        self.config
            .set(next, cfg, 0)
            .map_err(Error::map(m::CONFIG))?;
        self.active.set(0, next, 0).map_err(Error::map(m::ACTIVE))?;
        let old = self.slot;
        self.slot = next;
        self.policy_config = staged.config;
        if let Err(e) = self.clear_slot(old) {
            // Harmless: no decision reads the old set; the next apply clears it first.
            log::warn!("clearing the previous rule set: {e}");
        }
        Ok(())
    }

    /// Drops a staged rule set: the policy in force stays, untouched.
    pub fn discard(&mut self, staged: Staged) {
        if let Err(e) = self.clear_slot(staged.slot) {
            // Harmless: no decision reads it; the next stage clears it first.
            log::warn!("clearing the staged rule set: {e}");
        }
    }

    /// The submission programs of the rule set in force are now `programs` (they were
    /// replaced on disk, or appeared).
    pub fn set_programs(&mut self, programs: &[Resolved]) -> Result<(), Error> {
        let slot = self.slot;
        let stale: Vec<ProgramKey> = self
            .programs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                k.slot == slot && !programs.iter().any(|p| p.ino == k.ino && p.dev == k.dev)
            })
            .collect();
        self.insert_programs(slot, programs)?;
        self.write_filter(slot, programs)?;
        for k in stale {
            remove(&mut self.programs, &k, m::PROGRAMS)?;
        }
        Ok(())
    }

    /// Writes rule set `slot`'s part of the program filter: exactly the bits of `programs`
    /// (entries are written before their bits, so a bit never leads to a missing entry).
    fn write_filter(&mut self, slot: u32, programs: &[Resolved]) -> Result<(), Error> {
        let mut words = [0u64; m::PROGRAM_FILTER_WORDS as usize];
        for p in programs {
            let (w, bit) = antispam_common::rule::program_filter_bit(p.ino);
            words[w as usize] |= bit;
        }
        for (i, w) in words.iter().enumerate() {
            self.program_filter
                .set(slot * m::PROGRAM_FILTER_WORDS + i as u32, w, 0)
                .map_err(Error::map(m::PROGRAM_FILTER))?;
        }
        Ok(())
    }

    fn insert_programs(&mut self, slot: u32, programs: &[Resolved]) -> Result<(), Error> {
        for p in programs {
            let key = ProgramKey {
                ino: p.ino,
                dev: p.dev,
                slot,
            };
            let value = Program {
                index: p.index,
                _pad: 0,
            };
            self.programs
                .insert(key, value, 0)
                .map_err(Error::map(m::PROGRAMS))?;
        }
        Ok(())
    }

    fn fill_slot(
        &mut self,
        slot: u32,
        c: &Compiled,
        a: &Assignments,
        programs: &[Resolved],
    ) -> Result<(), Error> {
        self.insert_programs(slot, programs)?;
        self.write_filter(slot, programs)?;
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
        let programs: Vec<ProgramKey> = self
            .programs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for k in programs {
            remove(&mut self.programs, &k, m::PROGRAMS)?;
        }
        let uids: Vec<UidKey> = self
            .uid_rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for k in uids {
            remove(&mut self.uid_rules, &k, m::UID_RULES)?;
        }
        let cgroups: Vec<CgroupKey> = self
            .cgroup_rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for k in cgroups {
            remove(&mut self.cgroup_rules, &k, m::CGROUP_RULES)?;
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

/// Removes `key` from a hash map; a key that is not there is not an error.
pub(super) fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), Error> {
    match map.remove(key) {
        Err(e) if !missing(&e) => Err(Error::map(name)(e)),
        _ => Ok(()),
    }
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

/// The host's own addresses as the kernel programs see them (`AS_LOCAL_ADDRS`).
pub struct LocalAddrs {
    pub(super) map: HashMap<MapData, [u8; 16], u32>,
    /// What the map holds, as last written.
    written: std::collections::BTreeSet<std::net::IpAddr>,
}

impl LocalAddrs {
    pub(super) fn new(map: HashMap<MapData, [u8; 16], u32>) -> LocalAddrs {
        LocalAddrs {
            map,
            written: Default::default(),
        }
    }

    /// Makes the map hold exactly `now` (entries a previous agent left included); returns
    /// whether anything changed.
    pub fn sync(
        &mut self,
        now: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> Result<bool, Error> {
        use crate::sys::local_addrs::key;
        if *now == self.written && !self.written.is_empty() {
            return Ok(false);
        }
        let wanted: HashSet<[u8; 16]> = now.iter().map(|ip| key(*ip)).collect();
        let present: Vec<[u8; 16]> = self.map.keys().filter_map(Result::ok).collect();
        for k in &present {
            if !wanted.contains(k) {
                remove(&mut self.map, k, m::LOCAL_ADDRS)?;
            }
        }
        for k in &wanted {
            if !present.contains(k) {
                self.map
                    .insert(k, 1, 0)
                    .map_err(Error::map(m::LOCAL_ADDRS))?;
            }
        }
        let changed = *now != self.written;
        self.written = now.clone();
        Ok(changed)
    }
}

/// The subordinate UID ranges as the kernel programs see them (`AS_SUBUIDS`): prefix → owner.
pub struct SubUids {
    pub(super) map: LpmTrie<MapData, [u8; 4], u32>,
    /// What the map holds, as last written.
    written: std::collections::BTreeMap<(u32, u32), u32>,
}

impl SubUids {
    pub(super) fn new(map: LpmTrie<MapData, [u8; 4], u32>) -> SubUids {
        SubUids {
            map,
            written: Default::default(),
        }
    }

    /// Makes the map hold exactly `table` ((first UID, prefix length) → owner), entries a
    /// previous agent left included. New entries go in before stale ones go out.
    pub fn sync(
        &mut self,
        table: &std::collections::BTreeMap<(u32, u32), u32>,
    ) -> Result<(), Error> {
        let key = |(first, len): (u32, u32)| Key::new(len, first.to_be_bytes());
        for (p, owner) in table {
            if self.written.get(p) != Some(owner) {
                self.map
                    .insert(&key(*p), owner, 0)
                    .map_err(Error::map(m::SUBUIDS))?;
            }
        }
        let present: Vec<Key<[u8; 4]>> = self.map.keys().filter_map(Result::ok).collect();
        for k in present {
            let p = (u32::from_be_bytes(k.data()), k.prefix_len());
            if !table.contains_key(&p) {
                match self.map.remove(&k) {
                    Err(e) if !missing(&e) => return Err(Error::map(m::SUBUIDS)(e)),
                    _ => {}
                }
            }
        }
        self.written = table.clone();
        Ok(())
    }
}
