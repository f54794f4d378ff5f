//! Fleet budgets: a tenant's share of a budget shared by many hosts, leased from the fleet store
//! by the agent and spent by the kernel programs.
//!
//! Two maps, each written by one side only, so no side overwrites the other's atomics:
//! [`Lease`] (the agent's: how many tokens the fleet granted this host, until when, and the rate
//! to fall back to) and [`TenantUse`] (the kernel's: tokens taken, and the fallback bucket). A
//! lease's tokens left are `granted - taken`; the agent renews a lease by writing `granted =
//! taken + grant`, so what the old lease left over is dropped, never carried into the next.

use crate::rate::Rate;

/// Value of [`crate::maps::LEASES`], keyed by [`tenant_key`] of the tenant's name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Tokens granted to this host since the entry was made (cumulative): the lease holds
    /// `granted - TenantUse::taken` of them.
    pub granted: u64,
    /// End of the lease, `bpf_ktime_get_ns` clock. From then on (and while it is 0) the host
    /// spends `local` instead: the kernel falls back by itself, whether or not the agent runs.
    pub until_ns: u64,
    /// The tenant's `local_rate`: its budget on this host while it holds no lease.
    pub local: Rate,
}
const _: () = assert!(core::mem::size_of::<Lease>() == 32);

impl Lease {
    /// Is the lease in force at `now`?
    #[inline(always)]
    pub const fn active(&self, now: u64) -> bool {
        now < self.until_ns
    }
}

/// Value of [`crate::maps::TENANT_USE`]: what the kernel spent of a tenant's budget. Every field
/// is a `u64` updated with atomic instructions; the agent makes the entry, zeroed, before any
/// rule names the tenant, and only reads it afterwards.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantUse {
    /// Tokens taken from leases (cumulative).
    pub taken: u64,
    /// GCRA theoretical arrival time of the `local_rate` bucket.
    pub tat: u64,
    /// Attempts allowed on `local_rate` (no lease in force).
    pub fallback: u64,
    /// Attempts refused by the tenant's budget (lease spent, or `local_rate` bucket empty).
    pub refused: u64,
}
const _: () = assert!(core::mem::size_of::<TenantUse>() == 32);

/// The map key of a tenant: FNV-1a (64 bits) of its name, never 0 (0 in a rule is "no
/// tenant"). The policy check refuses two names with one key.
pub const fn tenant_key(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < name.len() {
        h ^= name[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    if h == 0 {
        1
    } else {
        h
    }
}

crate::user_pod!(Lease, TenantUse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_never_zero() {
        assert_eq!(tenant_key(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(tenant_key(b"acme"), tenant_key(b"acme2"));
        assert_ne!(tenant_key(b"acme"), 0);
        let lease = Lease {
            until_ns: 10,
            ..Default::default()
        };
        assert!(lease.active(9));
        assert!(!lease.active(10));
        assert!(!Lease::default().active(0), "no lease yet: local_rate");
    }
}
