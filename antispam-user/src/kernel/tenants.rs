//! The tenants' fleet budgets as the kernel programs see them: the leases this agent writes
//! (`AS_LEASES`) and what the programs spent (`AS_TENANT_USE`), both keyed by
//! `antispam_common::tenant::tenant_key` (see there for who writes what).

use antispam_common::{
    maps as m,
    rate::Rate,
    tenant::{Lease, TenantUse},
};
use aya::maps::{HashMap, MapData};

use super::{maps::remove, Error};

pub struct TenantMaps {
    pub(super) leases: HashMap<MapData, u64, Lease>,
    pub(super) used: HashMap<MapData, u64, TenantUse>,
}

impl TenantMaps {
    /// Makes the maps hold an entry for exactly the tenants `wanted` (key, `local_rate`): new
    /// tenants start with no lease (on `local_rate`) and nothing spent; a tenant already there
    /// (a reload, or a previous agent's) keeps its lease and its use, with the new local rate.
    /// Call before a policy naming them is in force; stale ones go with [`Self::retain`].
    pub fn add(&mut self, wanted: &[(u64, Rate)]) -> Result<(), Error> {
        for (key, local) in wanted {
            if self.used.get(key, 0).is_err() {
                self.used
                    .insert(key, TenantUse::default(), 0)
                    .map_err(Error::map(m::TENANT_USE))?;
            }
            let lease = match self.leases.get(key, 0) {
                Ok(l) if l.local == *local => continue,
                Ok(l) => Lease { local: *local, ..l },
                Err(_) => Lease {
                    local: *local,
                    ..Lease::default()
                },
            };
            self.leases
                .insert(key, lease, 0)
                .map_err(Error::map(m::LEASES))?;
        }
        Ok(())
    }

    /// Removes the entries of tenants not in `keep` (after a policy without them is in force).
    pub fn retain(&mut self, keep: &[u64]) -> Result<(), Error> {
        let present: Vec<u64> = self.leases.keys().filter_map(Result::ok).collect();
        for k in present.iter().filter(|k| !keep.contains(k)) {
            remove(&mut self.leases, k, m::LEASES)?;
            remove(&mut self.used, k, m::TENANT_USE)?;
        }
        Ok(())
    }

    /// The tenant's lease and use, None if it has no entries.
    pub fn read(&self, key: u64) -> Option<(Lease, TenantUse)> {
        Some((self.leases.get(&key, 0).ok()?, self.used.get(&key, 0).ok()?))
    }

    /// Writes a new lease of `tokens` until `until_ns` (CLOCK_MONOTONIC): the tokens the old one
    /// left are dropped (the kernel spends `granted - taken`, and `taken` is read just before).
    pub fn renew(&mut self, key: u64, tokens: u64, until_ns: u64) -> Result<(), Error> {
        let (old, used) = self.read(key).ok_or(Error::Missing {
            kind: "tenant entry",
            name: m::LEASES,
        })?;
        let lease = Lease {
            granted: used.taken.saturating_add(tokens),
            until_ns,
            local: old.local,
        };
        self.leases
            .insert(key, lease, 0)
            .map_err(Error::map(m::LEASES))
    }
}
