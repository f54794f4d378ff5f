//! A checked policy turned into the contents of the kernel maps.

use std::collections::BTreeMap;

use antispam_common::{
    config::{Config, FLAG_EVENTS_ALLOWED, FLAG_MONITOR},
    maps::PORTS_WORDS,
    net::port_slot,
    rule::{DestRule, Rule as MapRule, ACTION_ALLOW, ACTION_BLOCK, ACTION_LIMIT},
};
use ipnet::IpNet;

use crate::policy::{Mode, Policy, RuleKind};

/// `*` and `?` stay within one path component; `**` spans any number of them.
const PATH_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// What every map should hold for one policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    pub config: Config,
    pub ports: Vec<u64>,
    pub uid_rules: BTreeMap<u32, MapRule>,
    pub cgroup_rules: BTreeMap<u64, MapRule>,
    pub dest_v4: BTreeMap<(u32, [u8; 4]), DestRule>,
    pub dest_v6: BTreeMap<(u32, [u8; 16]), DestRule>,
    /// Which cgroups a rule covers: (path relative to the mount, id, rule id, bucket id).
    pub cgroup_matches: Vec<(String, u64, u32, u64)>,
}

/// Options that are not part of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Emit events for allowed connects too.
    pub events_allowed: bool,
}

/// Compiles `policy` for the cgroups under the attach point, `cgroups` being (path relative to
/// the mount, id) with parents before children.
///
/// Precedence: `[[allow]]` wins over `[[limit]]`; among `[[limit]]` rules naming the same UID or
/// cgroup, the later one in the file wins. A cgroup rule covers the cgroups it matches and their
/// descendants, which draw on the matched cgroup's bucket; a descendant matched by a rule of its
/// own uses that rule and its own bucket.
pub fn compile(
    policy: &Policy,
    generation: u32,
    opts: Options,
    cgroups: &[(String, u64)],
) -> Compiled {
    let mut c = Compiled::default();
    let mut flags = 0;
    if policy.mode == Mode::Monitor {
        flags |= FLAG_MONITOR;
    }
    if opts.events_allowed {
        flags |= FLAG_EVENTS_ALLOWED;
    }
    c.config = Config {
        flags,
        generation,
        default_rate: policy.default_rate.gcra,
        default_rule_id: 0,
        _pad: 0,
    };

    c.ports = vec![0u64; PORTS_WORDS as usize];
    for &p in &policy.ports {
        let (word, bit) = port_slot(p);
        c.ports[word as usize] |= bit;
    }

    // Limits first, in file order (later wins), then allows on top (allow wins).
    let ordered = policy
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Limit)
        .chain(policy.rules.iter().filter(|r| r.kind == RuleKind::Allow));
    for rule in ordered.clone() {
        let value = map_rule(rule);
        for range in &rule.uids {
            for uid in range.first..=range.last {
                c.uid_rules.insert(uid, value);
            }
        }
    }

    // Cgroups: each one takes the rule of the nearest matched ancestor (or itself).
    let mut own: BTreeMap<&str, (MapRule, u64)> = BTreeMap::new();
    for (path, id) in cgroups {
        for rule in ordered.clone() {
            if rule
                .cgroups
                .iter()
                .any(|p| p.matches_with(path, PATH_MATCH))
            {
                let mut v = map_rule(rule);
                v.bucket = *id;
                own.insert(path.as_str(), (v, *id));
            }
        }
    }
    if !own.is_empty() {
        for (path, id) in cgroups {
            let found = own
                .get(path.as_str())
                .copied()
                .or_else(|| ancestors(path).find_map(|a| own.get(a).copied()));
            if let Some((v, bucket)) = found {
                c.cgroup_rules.insert(*id, v);
                c.cgroup_matches
                    .push((path.clone(), *id, v.rule_id, bucket));
            }
        }
    }

    // Destinations: allow entries override block entries for the same prefix.
    for kind in [RuleKind::Block, RuleKind::Allow] {
        for rule in policy.rules.iter().filter(|r| r.kind == kind) {
            let action = if kind == RuleKind::Allow {
                ACTION_ALLOW
            } else {
                ACTION_BLOCK
            };
            let v = DestRule {
                action,
                rule_id: rule.id,
            };
            for net in &rule.destinations {
                match net {
                    IpNet::V4(n) => {
                        c.dest_v4
                            .insert((u32::from(n.prefix_len()), n.network().octets()), v);
                    }
                    IpNet::V6(n) => {
                        c.dest_v6
                            .insert((u32::from(n.prefix_len()), n.network().octets()), v);
                    }
                }
            }
        }
    }
    // A block prefix inside an allowed prefix would win the longest-prefix match: drop it so
    // allow wins, as documented (`check` warns about these).
    let allowed4: Vec<ipnet::Ipv4Net> = c
        .dest_v4
        .iter()
        .filter(|(_, v)| v.action == ACTION_ALLOW)
        .filter_map(|((len, a), _)| ipnet::Ipv4Net::new((*a).into(), *len as u8).ok())
        .collect();
    c.dest_v4.retain(|(len, a), v| {
        v.action != ACTION_BLOCK
            || !ipnet::Ipv4Net::new((*a).into(), *len as u8)
                .is_ok_and(|n| allowed4.iter().any(|al| al.contains(&n)))
    });
    let allowed6: Vec<ipnet::Ipv6Net> = c
        .dest_v6
        .iter()
        .filter(|(_, v)| v.action == ACTION_ALLOW)
        .filter_map(|((len, a), _)| ipnet::Ipv6Net::new((*a).into(), *len as u8).ok())
        .collect();
    c.dest_v6.retain(|(len, a), v| {
        v.action != ACTION_BLOCK
            || !ipnet::Ipv6Net::new((*a).into(), *len as u8)
                .is_ok_and(|n| allowed6.iter().any(|al| al.contains(&n)))
    });
    c
}

fn map_rule(rule: &crate::policy::Rule) -> MapRule {
    match rule.kind {
        RuleKind::Allow => MapRule {
            action: ACTION_ALLOW,
            rule_id: rule.id,
            ..Default::default()
        },
        _ => MapRule {
            action: ACTION_LIMIT,
            rule_id: rule.id,
            rate: rule.rate.map(|r| r.gcra).unwrap_or_default(),
            bucket: 0,
        },
    }
}

/// "/a/b/c" → "/a/b", "/a", "/".
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = path;
    std::iter::from_fn(move || {
        if cur == "/" || cur.is_empty() {
            return None;
        }
        cur = match cur.rfind('/') {
            Some(0) => "/",
            Some(i) => &cur[..i],
            None => "",
        };
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    const OPTS: Options = Options {
        events_allowed: true,
    };

    #[test]
    fn ports_rates_and_precedence() {
        let p = parse(
            "p.toml",
            r#"
ports = [25, 587]
[[limit]]
users = ["1000-1002"]
rate = "10/hour"
[[limit]]
users = [1001]
rate = "1/second"
[[allow]]
users = [1002]
"#,
            None,
        )
        .unwrap();
        let c = compile(&p, 7, OPTS, &[]);
        assert_eq!(c.config.generation, 7);
        assert_eq!(c.config.flags, FLAG_EVENTS_ALLOWED);
        assert_eq!(c.ports[0], 1 << 25);
        assert_eq!(c.ports[9], 1 << (587 - 576));
        assert_eq!(c.uid_rules.len(), 3);
        assert_eq!(c.uid_rules[&1000].rule_id, 1);
        assert_eq!(c.uid_rules[&1000].rate.interval_ns, 360_000_000_000);
        assert_eq!(c.uid_rules[&1001].rule_id, 2, "the later limit wins");
        assert_eq!(c.uid_rules[&1002].action, ACTION_ALLOW, "allow wins");
    }

    #[test]
    fn cgroups_inherit_from_the_nearest_match() {
        let p = parse(
            "p.toml",
            r#"
[[limit]]
cgroups = ["/kubepods.slice"]
rate = "10/minute"
[[limit]]
cgroups = ["/kubepods.slice/pod-*"]
rate = "1/minute"
"#,
            None,
        )
        .unwrap();
        let tree = vec![
            ("/".to_string(), 1),
            ("/kubepods.slice".to_string(), 2),
            ("/kubepods.slice/other".to_string(), 3),
            ("/kubepods.slice/pod-a".to_string(), 4),
            ("/kubepods.slice/pod-a/c1".to_string(), 5),
            ("/system.slice".to_string(), 6),
        ];
        let c = compile(&p, 1, OPTS, &tree);
        assert!(!c.cgroup_rules.contains_key(&1));
        assert!(!c.cgroup_rules.contains_key(&6));
        assert_eq!(
            (c.cgroup_rules[&2].rule_id, c.cgroup_rules[&2].bucket),
            (1, 2)
        );
        assert_eq!(
            (c.cgroup_rules[&3].rule_id, c.cgroup_rules[&3].bucket),
            (1, 2)
        );
        assert_eq!(
            (c.cgroup_rules[&4].rule_id, c.cgroup_rules[&4].bucket),
            (2, 4)
        );
        assert_eq!(
            (c.cgroup_rules[&5].rule_id, c.cgroup_rules[&5].bucket),
            (2, 4)
        );
    }

    #[test]
    fn allow_wins_over_block_for_destinations() {
        let p = parse(
            "p.toml",
            r#"
[[block]]
destinations = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32", "::ffff:203.0.113.0/120"]
[[allow]]
destinations = ["192.0.0.0/16", "2001:db8::/32"]
"#,
            None,
        )
        .unwrap();
        let c = compile(&p, 1, OPTS, &[]);
        let v4: Vec<_> = c
            .dest_v4
            .iter()
            .map(|((l, a), v)| (*l, *a, v.action))
            .collect();
        assert_eq!(
            v4,
            vec![
                (16, [192, 0, 0, 0], ACTION_ALLOW),
                (24, [198, 51, 100, 0], ACTION_BLOCK),
                (24, [203, 0, 113, 0], ACTION_BLOCK),
            ]
        );
        assert_eq!(c.dest_v6.len(), 1);
        assert_eq!(c.dest_v6.values().next().unwrap().action, ACTION_ALLOW);
    }

    #[test]
    fn ancestors_walk_up() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").count(), 0);
    }
}
