//! Which cgroup rule covers which cgroup, for a whole tree or one new cgroup at a time.
//!
//! A cgroup takes the rule that matches its own path (among `[[limit]]` then `[[allow]]` rules
//! in file order, the last match wins, so `[[allow]]` wins and a later `[[limit]]` wins over an
//! earlier one); otherwise the rule of its nearest ancestor, drawing on that ancestor's bucket.
//! The cgroups of a `shared = true` rule all draw on the rule's one bucket.

use std::collections::BTreeMap;

use antispam_common::{
    key::BUCKET_SHARED,
    rule::{Rule as MapRule, ACTION_LIMIT},
};

use crate::policy::{Policy, RuleKind};

/// `*` and `?` stay within one path component; `**` spans any number of them.
const PATH_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The rule covering one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Path relative to the cgroup2 mount.
    pub path: String,
    pub rule: MapRule,
}

/// Cgroup id → assignment, for every covered cgroup under the attach point.
pub type Assignments = BTreeMap<u64, Assignment>;

/// Does the policy have any cgroup rule?
pub fn has_cgroup_rules(policy: &Policy) -> bool {
    policy.rules.iter().any(|r| !r.cgroups.is_empty())
}

/// The rule that matches `path` itself, with the bucket it draws on.
pub fn own_rule(policy: &Policy, path: &str, id: u64) -> Option<MapRule> {
    let mut ordered = policy
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Limit)
        .chain(policy.rules.iter().filter(|r| r.kind == RuleKind::Allow));
    let rule = ordered.rfind(|r| r.cgroups.iter().any(|p| p.matches_with(path, PATH_MATCH)))?;
    let mut value = super::compile::map_rule(rule);
    if value.action == ACTION_LIMIT {
        value.bucket = if rule.shared {
            BUCKET_SHARED | u64::from(rule.id)
        } else {
            id
        };
    }
    Some(value)
}

/// The rule of a cgroup whose nearest covered ancestor has `inherited`. A cgroup matched by the
/// same rule as its ancestor draws on the ancestor's budget (budgets are anchored at the
/// topmost cgroup a rule matches: a user with a delegated subtree cannot make budgets by making
/// cgroups), unless the rule asks for `nested_budgets`.
pub fn assign(policy: &Policy, path: &str, id: u64, inherited: Option<MapRule>) -> Option<MapRule> {
    let own = own_rule(policy, path, id);
    match (own, inherited) {
        (Some(o), Some(i)) if o.rule_id == i.rule_id && !nested(policy, o.rule_id) => Some(i),
        (own, inherited) => own.or(inherited),
    }
}

/// Does rule `id` give nested matches budgets of their own?
fn nested(policy: &Policy, id: u32) -> bool {
    policy
        .rules
        .iter()
        .find(|r| r.id == id)
        .is_some_and(|r| r.nested_budgets)
}

/// Assigns a whole tree, `(path, id)` in any order.
pub fn assign_tree(policy: &Policy, tree: &[(String, u64)]) -> Assignments {
    let mut out = Assignments::new();
    if !has_cgroup_rules(policy) {
        return out;
    }
    let mut sorted: Vec<&(String, u64)> = tree.iter().collect();
    sorted.sort();
    let mut by_path: BTreeMap<&str, MapRule> = BTreeMap::new();
    for (path, id) in sorted {
        let inherited = ancestors(path).find_map(|a| by_path.get(a).copied());
        if let Some(rule) = assign(policy, path, *id, inherited) {
            by_path.insert(path, rule);
            out.insert(
                *id,
                Assignment {
                    path: path.clone(),
                    rule,
                },
            );
        }
    }
    out
}

/// "/a/b/c" → "/a/b", "/a", "/".
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
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
    use antispam_common::rule::ACTION_ALLOW;

    use super::*;
    use crate::policy::parse;

    fn tree() -> Vec<(String, u64)> {
        [
            ("/", 1),
            ("/kubepods.slice", 2),
            ("/kubepods.slice/other", 3),
            ("/kubepods.slice/pod-a", 4),
            ("/kubepods.slice/pod-a/c1", 5),
            ("/system.slice", 6),
            ("/system.slice/docker-1.scope", 7),
            ("/system.slice/docker-2.scope", 8),
        ]
        .into_iter()
        .map(|(p, i)| (p.to_string(), i))
        .collect()
    }

    #[test]
    fn nearest_match_wins_and_descendants_share_the_bucket() {
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
        let a = assign_tree(&p, &tree());
        let got = |id: u64| a.get(&id).map(|x| (x.rule.rule_id, x.rule.bucket));
        assert_eq!(got(1), None);
        assert_eq!(got(6), None);
        assert_eq!(got(2), Some((1, 2)));
        assert_eq!(
            got(3),
            Some((1, 2)),
            "a child draws on its matched parent's bucket"
        );
        assert_eq!(got(4), Some((2, 4)), "a more specific rule wins");
        assert_eq!(got(5), Some((2, 4)));
    }

    #[test]
    fn shared_rules_pool_one_bucket_and_allow_wins() {
        let p = parse(
            "p.toml",
            r#"
[[limit]]
cgroups = ["/system.slice/docker-*.scope"]
rate = "10/minute"
shared = true
[[allow]]
cgroups = ["/system.slice/docker-2.scope"]
"#,
            None,
        )
        .unwrap();
        let a = assign_tree(&p, &tree());
        assert_eq!(a[&7].rule.bucket, BUCKET_SHARED | 1);
        assert_eq!(a[&7].rule.action, ACTION_LIMIT);
        assert_eq!(a[&8].rule.action, ACTION_ALLOW, "allow wins");
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn globs_stay_within_a_component_unless_double_star() {
        let p = parse(
            "p.toml",
            "[[limit]]\ncgroups = [\"/kubepods.slice/*\"]\nrate = \"1/second\"\n",
            None,
        )
        .unwrap();
        assert!(own_rule(&p, "/kubepods.slice/pod-a", 4).is_some());
        assert!(own_rule(&p, "/kubepods.slice/pod-a/c1", 5).is_none());
        let p = parse(
            "p.toml",
            "[[limit]]\ncgroups = [\"/kubepods.slice/**\"]\nrate = \"1/second\"\n",
            None,
        )
        .unwrap();
        assert!(own_rule(&p, "/kubepods.slice/pod-a/c1", 5).is_some());
    }

    #[test]
    fn nested_matches_draw_on_the_topmost_budget_unless_asked() {
        let tree = vec![
            ("/user.slice".to_string(), 10),
            ("/user.slice/u1".to_string(), 11),
            ("/user.slice/u1/a".to_string(), 12),
            ("/user.slice/u1/a/b".to_string(), 13),
        ];
        let text = "[[limit]]\ncgroups = [\"/user.slice/**\"]\nrate = \"1/second\"\n";
        let p = parse("p.toml", text, None).unwrap();
        let a = assign_tree(&p, &tree);
        let buckets: Vec<u64> = [11, 12, 13].iter().map(|id| a[id].rule.bucket).collect();
        assert_eq!(buckets, [11, 11, 11], "anchored at the topmost match");
        let p = parse("p.toml", &format!("{text}nested_budgets = true\n"), None).unwrap();
        let a = assign_tree(&p, &tree);
        let buckets: Vec<u64> = [11, 12, 13].iter().map(|id| a[id].rule.bucket).collect();
        assert_eq!(buckets, [11, 12, 13], "each its own");
    }

    #[test]
    fn ancestors_walk_up() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").count(), 0);
    }
}
