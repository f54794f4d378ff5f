//! Every map the kernel programs declare, described once: name, key and value sizes, capacity.
//! The fingerprint of this table names the pin directory (two agents with the same one can share
//! maps), and a unit test checks it against the embedded eBPF object, so that a drift between
//! `antispam-common` and the kernel crate fails on the host, not in the kernel.

use std::mem::size_of;

use antispam_common::{config, event, key, maps as m, net, rule, stats};

/// One map as both sides must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn spec(name: &'static str, key: usize, value: usize, max_entries: u32) -> MapSpec {
    MapSpec {
        name,
        key_size: key as u32,
        value_size: value as u32,
        max_entries,
    }
}

/// Bytes of an LPM trie key: the prefix length (u32) and the data.
const fn lpm(data: usize) -> usize {
    4 + data
}

/// The maps, in a fixed order (the fingerprint depends on it). The ring buffer has no key or
/// value in the kernel's sense: its "value" here is the event it carries.
pub const MAPS: &[MapSpec] = &[
    spec(m::ACTIVE, 4, 4, 1),
    spec(m::CONFIG, 4, size_of::<config::Config>(), m::SLOTS),
    spec(m::PORTS, 4, 8, m::SLOTS * m::PORTS_WORDS),
    spec(
        m::UID_RULES,
        size_of::<rule::UidKey>(),
        size_of::<rule::Rule>(),
        m::SLOTS * m::UID_RULES_MAX,
    ),
    spec(
        m::CGROUP_RULES,
        size_of::<rule::CgroupKey>(),
        size_of::<rule::Rule>(),
        m::SLOTS * m::CGROUP_RULES_MAX,
    ),
    spec(
        m::DEST_V4,
        lpm(5),
        size_of::<rule::DestRule>(),
        m::SLOTS * m::DEST_MAX,
    ),
    spec(
        m::DEST_V6,
        lpm(17),
        size_of::<rule::DestRule>(),
        m::SLOTS * m::DEST_MAX,
    ),
    spec(
        m::KEYS,
        size_of::<key::KeyId>(),
        size_of::<key::KeyState>(),
        m::KEYS_MAX,
    ),
    spec(
        m::LEASES,
        8,
        size_of::<antispam_common::tenant::Lease>(),
        m::TENANTS_MAX,
    ),
    spec(
        m::TENANT_USE,
        8,
        size_of::<antispam_common::tenant::TenantUse>(),
        m::TENANTS_MAX,
    ),
    spec(
        m::SUSPENDED,
        size_of::<key::KeyId>(),
        size_of::<key::Suspension>(),
        m::SUSPENDED_MAX,
    ),
    spec(
        m::OVERRIDES,
        size_of::<key::KeyId>(),
        size_of::<key::Override>(),
        m::OVERRIDES_MAX,
    ),
    spec(
        m::PROGRAMS,
        size_of::<rule::ProgramKey>(),
        size_of::<rule::Program>(),
        m::SLOTS * m::PROGRAMS_MAX,
    ),
    spec(m::PROGRAM_FILTER, 4, 8, m::SLOTS * m::PROGRAM_FILTER_WORDS),
    spec(m::LOCAL_ADDRS, 16, 4, m::LOCAL_ADDRS_MAX),
    spec(m::ATTACH_CGROUP, 4, 4, 1),
    spec(m::VETHS, 4, size_of::<net::Veth>(), m::VETHS_MAX),
    spec(m::SUBUIDS, lpm(4), 4, m::SUBUIDS_MAX),
    spec(m::DECISIONS, 4, 8, event::DECISIONS_LEN),
    spec(m::STATS, 4, 8, stats::COUNT),
    spec(m::EVENTS, 0, size_of::<event::Event>(), m::EVENTS_BYTES),
];

/// A fingerprint of [`MAPS`]: stable across builds and Rust versions (FNV-1a).
#[cfg(test)]
pub fn layout() -> u32 {
    layout_for(m::KEYS_MAX)
}

/// The fingerprint of [`MAPS`] with the per-key state map sized for `max_keys` (`antispam run
/// --max-keys`): the default size gives [`layout`].
pub fn layout_for(max_keys: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for s in MAPS {
        eat(s.name.as_bytes());
        eat(&s.key_size.to_le_bytes());
        eat(&s.value_size.to_le_bytes());
        let max_entries = if s.name == m::KEYS {
            max_keys
        } else {
            s.max_entries
        };
        eat(&max_entries.to_le_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_capacity_names_the_layout() {
        use super::layout_for;
        assert_eq!(
            layout_for(m::KEYS_MAX),
            layout(),
            "the default keeps the pins"
        );
        assert_ne!(layout_for(1 << 20), layout(), "another size, other maps");
    }

    use super::*;

    /// The embedded object declares exactly these maps, with these sizes.
    #[test]
    fn the_object_declares_the_maps_of_antispam_common() {
        let obj = aya_obj::Object::parse(super::super::OBJECT).expect("the embedded eBPF object");
        let mut declared: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("AS_"))
            .collect();
        declared.sort_unstable();
        let mut expected: Vec<&str> = MAPS.iter().map(|s| s.name).collect();
        expected.sort_unstable();
        assert_eq!(
            declared, expected,
            "maps in the object vs kernel::layout::MAPS"
        );
        for s in MAPS {
            let map = &obj.maps[s.name];
            let value_size = if s.name == m::EVENTS {
                0 // a ring buffer's record size is not part of the map
            } else {
                s.value_size
            };
            assert_eq!(
                (map.key_size(), map.value_size(), map.max_entries()),
                (s.key_size, value_size, s.max_entries),
                "{}: (key, value, max_entries) in the object vs antispam-common",
                s.name
            );
        }
    }

    #[test]
    fn the_fingerprint_is_stable() {
        assert_eq!(layout(), layout());
        assert_ne!(layout(), 0);
    }
}
