//! A checked policy turned into the contents of the kernel maps.

use std::collections::BTreeMap;

use antispam_common::{
    config::{Config, FLAG_EVENTS_ALLOWED, FLAG_MONITOR},
    maps::PORTS_WORDS,
    net::port_slot,
    rule::{Budgets, DestRule, Rule as MapRule, ACTION_ALLOW, ACTION_BLOCK, ACTION_LIMIT},
};
use ipnet::IpNet;

use crate::policy::{Mode, PathBudgets, Policy, RuleKind};

/// The kernel's form of a rule's budgets of their own.
pub fn budgets(paths: &PathBudgets) -> Budgets {
    let mut b = Budgets::default();
    for (path, rate) in paths.0.iter().enumerate() {
        if let Some(r) = rate {
            b.own_paths |= 1 << path;
            b.own[path] = r.gcra;
        }
    }
    b
}

/// What every map should hold for one policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    pub config: Config,
    pub ports: Vec<u64>,
    pub uid_rules: BTreeMap<u32, MapRule>,
    pub dest_v4: BTreeMap<(u32, [u8; 4]), DestRule>,
    pub dest_v6: BTreeMap<(u32, [u8; 16]), DestRule>,
}

/// Options that are not part of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Emit events for allowed connects too.
    pub events_allowed: bool,
}

/// Compiles everything of `policy` but its cgroup rules (see [`super::assign`]).
///
/// Precedence: `[[allow]]` wins over `[[limit]]`; among `[[limit]]` rules naming the same UID,
/// the later one in the file wins; among destinations the longest prefix wins, except that a
/// blocked prefix inside an allowed one is dropped (allow wins).
pub fn compile(policy: &Policy, generation: u32, opts: Options) -> Compiled {
    let mut c = Compiled::default();
    let mut flags = 0;
    if policy.mode == Mode::Monitor {
        flags |= FLAG_MONITOR;
    }
    if opts.events_allowed {
        flags |= FLAG_EVENTS_ALLOWED;
    }
    if super::assign::has_cgroup_rules(policy) {
        flags |= antispam_common::config::FLAG_CGROUP_RULES;
    }
    c.config = Config {
        flags,
        generation,
        default_rate: policy.default_rate.gcra,
        default_rule_id: 0,
        _pad: 0,
        default_budgets: budgets(&policy.default_paths),
        ..Config::default()
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

/// The map value of an `[[allow]]` or `[[limit]]` rule (bucket 0: the caller's key).
pub fn map_rule(rule: &crate::policy::Rule) -> MapRule {
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
            budgets: budgets(&rule.paths),
            tenant: rule
                .tenant
                .as_deref()
                .map_or(0, |n| antispam_common::tenant::tenant_key(n.as_bytes())),
        },
    }
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
        let c = compile(&p, 7, OPTS);
        assert_eq!(c.config.generation, 7);
        assert_eq!(c.config.flags, FLAG_EVENTS_ALLOWED);
        assert_eq!(c.ports[0], 1 << 25);
        assert_eq!(c.ports[9], 1 << (587 - 576));
        assert_eq!(c.uid_rules.len(), 3);
        assert_eq!(c.uid_rules[&1000].rule_id, 1);
        assert_eq!(c.uid_rules[&1000].rate.interval_ns, 360_000_000_000);
        assert_eq!(c.uid_rules[&1001].rule_id, 2, "the later limit wins");
        assert_eq!(c.uid_rules[&1002].action, ACTION_ALLOW, "allow wins");
        assert_eq!(
            c.uid_rules[&1000].budgets,
            Budgets::default(),
            "one budget for all paths"
        );
    }

    #[test]
    fn paths_with_budgets_of_their_own() {
        use antispam_common::event::{PATH_DIRECT, PATH_LOCAL_SMTP, PATH_SENDMAIL};
        let p = parse(
            "p.toml",
            r#"
[default]
rate = "30/minute"
[default.path.direct]
rate = "2/minute"
[[limit]]
users = [1000]
rate = "10/hour"
[limit.path.sendmail]
rate = "100/hour"
burst = 5
"#,
            None,
        )
        .unwrap();
        let c = compile(&p, 1, OPTS);
        let d = c.config.default_budgets;
        assert_eq!(d.own_paths, 1 << PATH_DIRECT);
        assert_eq!(d.own[PATH_DIRECT as usize].interval_ns, 30_000_000_000);
        let r = c.uid_rules[&1000];
        assert_eq!(r.budgets.own_paths, 1 << PATH_SENDMAIL);
        let (rate, own) = r.budgets.for_path(r.rate, PATH_SENDMAIL);
        assert!(own);
        assert_eq!((rate.interval_ns, rate.burst()), (36_000_000_000, 5));
        let (rate, own) = r.budgets.for_path(r.rate, PATH_LOCAL_SMTP);
        assert!(!own, "local SMTP spends the rule's own rate");
        assert_eq!(rate, r.rate);
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
        let c = compile(&p, 1, OPTS);
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
}
