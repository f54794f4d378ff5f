use super::*;

fn errors(text: &str) -> Vec<String> {
    parse("p.toml", text, None)
        .expect_err("policy should be refused")
        .0
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn builtin_policy_is_valid() {
    let p = Policy::builtin();
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.ports.iter().copied().collect::<Vec<_>>(), DEFAULT_PORTS);
    assert_eq!(p.default_rate.count, 30);
    assert!(
        p.rules.iter().all(|r| r.destinations.is_empty()),
        "the local MTA is not an allow-listed destination: submissions to it are charged"
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.sendmail_programs.len(), DEFAULT_SENDMAIL_PROGRAMS.len());
}

#[test]
fn sendmail_programs_and_path_budgets() {
    let p = parse(
        "p.toml",
        r#"
[sendmail]
programs = ["/usr/sbin/postdrop"]

[default]
rate = "30/minute"
[default.path.local_smtp]
rate = "5/minute"

[[limit]]
users = [1000]
rate = "10/hour"
[limit.path.sendmail]
rate = "100/hour"
burst = 3
"#,
        None,
    )
    .unwrap();
    assert_eq!(
        p.sendmail_programs,
        vec![PathBuf::from("/usr/sbin/postdrop")]
    );
    let own: Vec<_> = p.default_paths.iter().map(|(n, r)| (n, r.count)).collect();
    assert_eq!(own, vec![("local_smtp", 5)]);
    let own: Vec<_> = p.rules[0].paths.iter().map(|(n, r)| (n, r.burst)).collect();
    assert_eq!(own, vec![("sendmail", 3)]);
}

#[test]
fn sendmail_and_path_mistakes_are_located() {
    let e = errors(
        r#"[sendmail]
programs = ["postdrop", "/usr/sbin/postdrop", "/usr/sbin/postdrop"]
"#,
    );
    assert!(
        e[0].starts_with("p.toml:2:13:") && e[0].contains("not an absolute path"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("p.toml:2:47:") && e[1].contains("listed twice"),
        "{e:?}"
    );
    let e = errors(
        r#"[[limit]]
users = [1000]
rate = "1/hour"
[limit.path.sendmial]
rate = "1/hour"
"#,
    );
    assert!(
        e[0].starts_with("p.toml:4:") && e[0].contains("sendmial"),
        "{e:?}"
    );
    let e = errors(
        r#"[default]
rate = "1/hour"
[default.path.direct]
rate = "many/hour"
"#,
    );
    assert!(
        e[0].starts_with("p.toml:4:8:") && e[0].contains("whole number"),
        "{e:?}"
    );
}

#[test]
fn an_allowed_loopback_destination_is_a_warning() {
    let p = parse(
        "p.toml",
        r#"[[allow]]
destinations = ["127.0.0.0/8", "::1/128"]
"#,
        None,
    )
    .unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0]
            .to_string()
            .contains("submission to the local MTA"),
        "{}",
        p.warnings[0]
    );
}

#[test]
fn full_policy() {
    let text = r#"
mode = "monitor"
ports = [25, 587]

[default]
rate = "10/minute"
burst = 5

[[allow]]
users = ["root", 65534]

[[limit]]
users = ["1000-1999"]
rate = "10/hour"

[[limit]]
cgroups = ["/system.slice/docker-*.scope"]
rate = "20/minute"

[[block]]
destinations = ["192.0.2.0/24", "2001:db8::/32"]
"#;
    let p = parse("p.toml", text, None).unwrap();
    assert_eq!(p.mode, Mode::Monitor);
    assert_eq!(p.default_rate.burst, 5);
    let names: Vec<_> = p.rules.iter().map(|r| (r.id, r.name(), r.line)).collect();
    assert_eq!(
        names,
        vec![
            (1, "allow[0]".into(), 9),
            (2, "limit[0]".into(), 12),
            (3, "limit[1]".into(), 16),
            (4, "block[0]".into(), 20)
        ]
    );
    assert_eq!(
        p.rules[0].uids,
        vec![
            UidRange { first: 0, last: 0 },
            UidRange {
                first: 65534,
                last: 65534
            }
        ]
    );
    assert_eq!(p.rule_name(3), "limit[1]");
    assert_eq!(p.rule_name(0), "default");
    assert!(p.to_string().contains("mode monitor, ports 25,587"));
}

#[test]
fn typo_in_key_is_located() {
    let e = errors("ports = [25]\n[default]\nrte = \"1/second\"\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("p.toml:3:1: unknown field `rte`"), "{e:?}");
}

#[test]
fn every_problem_is_reported() {
    let text = r#"ports = [25, 70000]
[default]
rate = "10/fortnight"
[[allow]]
users = ["no-such-user-antispam"]
destinations = ["192.0.2.1/24", "example.com"]
[[limit]]
cgroups = ["docker"]
rate = "1/second"
burst = 0
"#;
    let e = errors(text);
    let locations: Vec<&str> = e
        .iter()
        .map(|s| s.splitn(4, ':').take(3).last().unwrap())
        .collect();
    assert_eq!(e.len(), 7, "{e:#?}");
    assert!(
        e[0].starts_with("p.toml:1:14: 70000 is not a TCP port"),
        "{e:#?}"
    );
    assert!(e[1].starts_with("p.toml:3:8: malformed rate"), "{e:#?}");
    assert!(
        e[2].starts_with("p.toml:5:10: unknown user \"no-such-user-antispam\""),
        "{e:#?}"
    );
    assert!(
        e[3].starts_with("p.toml:6:17:") && e[3].contains("did you mean \"192.0.2.0/24\""),
        "{e:#?}"
    );
    assert!(
        e[4].starts_with("p.toml:6:33:") && e[4].contains("not an IP address"),
        "{e:#?}"
    );
    assert!(
        e[5].starts_with("p.toml:8:12:") && e[5].contains("must start with '/'"),
        "{e:#?} {locations:?}"
    );
    assert!(
        e[6].starts_with("p.toml:10:9: burst must be at least 1"),
        "{e:#?}"
    );
}

#[test]
fn bad_burst_is_reported_at_the_burst() {
    let e = errors("[default]\nrate = \"1/second\"\nburst = 0\n");
    assert!(
        e[0].starts_with("p.toml:3:9: burst must be at least 1"),
        "{e:?}"
    );
}

#[test]
fn empty_ports_and_bad_mode() {
    let e = errors("mode = \"enforcing\"\nports = []\n");
    assert!(
        e[0].starts_with("p.toml:1:8: unknown mode \"enforcing\""),
        "{e:?}"
    );
    assert!(e[1].starts_with("p.toml:2:9: ports is empty"), "{e:?}");
}

#[test]
fn syntax_error_is_located() {
    let e = errors("ports = [25,\n[default]\n");
    assert!(e[0].starts_with("p.toml:2:"), "{e:?}");
}

#[test]
fn empty_rules_are_refused() {
    let e = errors("[[limit]]\nrate = \"1/second\"\n");
    assert!(
        e[0].starts_with("p.toml:1:1: [[limit]] names nothing")
            || e[0].starts_with("p.toml:2:1: [[limit]] names nothing"),
        "{e:?}"
    );
    let e = errors("[[limit]]\nusers = [1]\n");
    assert!(e[0].contains("names users or cgroups but no rate"), "{e:?}");
}

#[test]
fn unknown_users_can_be_skipped() {
    let p = parse(
        "p.toml",
        "[[allow]]\nusers = [\"no-such-user-antispam\", 7]\nskip_unknown_users = true\n",
        None,
    )
    .unwrap();
    assert_eq!(p.rules[0].uids, vec![UidRange { first: 7, last: 7 }]);
}

#[test]
fn huge_ranges_are_refused() {
    let e = errors("[[limit]]\nusers = [\"0-4000000\"]\nrate = \"1/second\"\n");
    assert!(e[0].contains("at most 131072"), "{e:?}");
}

#[test]
fn block_files_are_read_and_located() {
    let dir = std::env::temp_dir().join(format!("antispam-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bl.txt"),
        "# spam sources\n192.0.2.0/24 ; TEST-NET-1\n\n  198.51.100.7\nnot-an-address\n",
    )
    .unwrap();
    let ok = parse("p.toml", "[[block]]\nfiles = [\"bl.txt\"]\n", Some(&dir));
    let e = ok.expect_err("bad line in the block file");
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].file, dir.join("bl.txt").display().to_string());
    assert_eq!((e.0[0].line, e.0[0].column), (5, 1));
    // The file's content is not copied into the message (the agent's log, the audit log).
    assert!(!e.0[0].message.contains("not-an-address"), "{}", e.0[0]);
    std::fs::write(
        dir.join("bl.txt"),
        "192.0.2.0/24\n  198.51.100.7 # one host\n",
    )
    .unwrap();
    let p = parse("p.toml", "[[block]]\nfiles = [\"bl.txt\"]\n", Some(&dir)).unwrap();
    let d: Vec<String> = p.rules[0]
        .destinations
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(d, ["192.0.2.0/24", "198.51.100.7/32"]);
    let e = errors("[[block]]\nfiles = [\"/nonexistent/antispam.txt\"]\n");
    assert!(
        e[0].starts_with("p.toml:2:10: cannot read block list"),
        "{e:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shadowed_blocks_warn() {
    let p = parse(
        "p.toml",
        "[[allow]]\ndestinations = [\"192.0.0.0/16\"]\n[[block]]\ndestinations = [\"192.0.2.0/24\"]\n",
        None,
    )
    .unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0]
        .to_string()
        .starts_with("p.toml:3:1: block[0] blocks 192.0.2.0/24"));
}

#[test]
fn shared_needs_cgroups() {
    let e = errors("[[limit]]\nusers = [1]\nrate = \"1/second\"\nshared = true\n");
    assert!(
        e[0].starts_with("p.toml:4:10: shared = true pools"),
        "{e:?}"
    );
    let p = parse(
        "p.toml",
        "[[limit]]\ncgroups = [\"/a/*\"]\nrate = \"1/second\"\nshared = true\n",
        None,
    )
    .unwrap();
    assert!(p.rules[0].shared);
}

#[test]
fn rules_can_have_their_own_suspension_settings() {
    let text = r#"
[suspension]
strikes = 5
window = "10m"
durations = ["15m"]

[[limit]]
users = [5000]
rate = "10/hour"

[limit.suspension]
strikes = 2
window = "1h"
durations = ["1d", "7d"]
forget_after = "30d"

[[block]]
destinations = ["192.0.2.0/24"]
suspension = { strikes = 1, window = "1m", durations = ["1h"] }
"#;
    let p = parse("p.toml", text, None).expect("valid");
    let limit = p.rules.iter().find(|r| r.kind == RuleKind::Limit).unwrap();
    let block = p.rules.iter().find(|r| r.kind == RuleKind::Block).unwrap();
    assert_eq!(p.suspension_for(limit.id).unwrap().strikes, 2);
    assert_eq!(p.suspension_for(block.id).unwrap().strikes, 1);
    assert_eq!(p.suspension_for(0).unwrap().strikes, 5, "the default rate");
    let (window, forget) = p.longest_memory().unwrap();
    assert_eq!(window.as_secs(), 3600);
    assert_eq!(forget.as_secs(), 30 * 86_400);

    // Without a top-level section, only the rules that have one make strikes.
    let p = parse(
        "p.toml",
        "[[limit]]\nusers = [5000]\nrate = \"1/hour\"\n[limit.suspension]\nstrikes = 3\nwindow = \"1m\"\ndurations = [\"5m\"]\n",
        None,
    )
    .expect("valid");
    assert!(p.suspension_for(0).is_none());
    assert!(p.suspension_for(1).is_some());

    // Problems inside a rule's section are located there.
    let e = errors(
        "[[limit]]\nusers = [5000]\nrate = \"1/hour\"\n[limit.suspension]\nstrikes = 0\nwindow = \"1m\"\ndurations = [\"5m\"]\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("p.toml:5:"), "{e:?}");
}

#[test]
fn suspension_durations_are_bounded() {
    let e = parse(
        "p.toml",
        "[suspension]\nstrikes = 3\nwindow = \"367d\"\ndurations = [\"15m\", \"100000y\"]\nforget_after = \"400d\"\n",
        None,
    )
    .unwrap_err()
    .0;
    let where_: Vec<(usize, usize)> = e.iter().map(|p| (p.line, p.column)).collect();
    assert_eq!(where_, [(3, 10), (4, 21), (5, 16)], "{e:?}");
    assert!(e[0].message.contains("longest allowed, 366 days"), "{e:?}");
    assert!(parse(
        "p.toml",
        "[suspension]\nstrikes = 3\nwindow = \"366d\"\ndurations = [\"366d\"]\n",
        None
    )
    .is_ok());
}

#[test]
fn an_empty_policy_file_is_refused() {
    let p = std::path::Path::new("/etc/antispam/policy.toml");
    for text in ["", "\n  \n", "# nothing yet\n"] {
        let e = Policy::from_file(p, text.as_bytes()).unwrap_err().0;
        assert_eq!((e[0].line, e[0].column), (1, 1));
        assert!(e[0].message.contains("the policy file is empty"), "{e:?}");
    }
    assert!(Policy::from_file(p, b"mode = \"enforce\"\n").is_ok());
}

#[test]
fn signed_requests_are_configured_under_break_glass() {
    let p = parse(
        "p.toml",
        "[break_glass]\nrequire_signatures = true\nallowed_signers = \"/etc/antispam/allowed_signers\"\n",
        None,
    )
    .unwrap();
    assert_eq!(
        p.signatures,
        Signatures {
            required: true,
            allowed_signers: Some(PathBuf::from("/etc/antispam/allowed_signers")),
        }
    );
    assert_eq!(Policy::builtin().signatures, Signatures::default());
    let e = errors("[break_glass]\nrequire_signatures = true\n");
    assert!(
        e.iter()
            .any(|e| e.starts_with("p.toml:1:1:") && e.contains("needs allowed_signers")),
        "{e:?}"
    );
    let e = errors("[break_glass]\nallowed_signers = \"signers\"\n");
    assert!(
        e.iter()
            .any(|e| e.starts_with("p.toml:2:19:") && e.contains("absolute path")),
        "{e:?}"
    );
    let e = errors("[break_glass]\nrequire_signature = true\n");
    assert!(e.iter().any(|e| e.contains("unknown field")), "{e:?}");
}

/// Vouches for files whose content starts with "ok".
struct StartsOk;

impl FileCheck for StartsOk {
    fn check(&self, path: &Path, data: &[u8]) -> Result<String, Box<dyn std::error::Error>> {
        if data.starts_with(b"ok") || data.starts_with(b"# ok") {
            Ok("tester".into())
        } else {
            Err(format!("{} not vouched for", path.display()).into())
        }
    }
}

#[test]
fn every_file_read_passes_the_check() {
    let dir = std::env::temp_dir().join(format!("antispam-policy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("p.toml");
    let check: Option<&dyn FileCheck> = Some(&StartsOk);
    // The policy itself: refused at its first line.
    let e = Policy::from_file_checked(&policy, b"ports = [25]\n", check).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (1, 1));
    assert!(e.0[0].message.starts_with("refused: "), "{}", e.0[0]);
    // A block list it names: refused at the entry.
    std::fs::write(dir.join("bl.txt"), "192.0.2.0/24\n").unwrap();
    let text = b"# ok\n[[block]]\nfiles = [\"bl.txt\"]\n";
    let e = Policy::from_file_checked(&policy, text, check).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (3, 10), "{}", e.0[0]);
    assert!(e.0[0].message.contains("block list"), "{}", e.0[0]);
    std::fs::write(dir.join("bl.txt"), "# ok\n192.0.2.0/24\n").unwrap();
    let p = Policy::from_file_checked(&policy, text, check).unwrap();
    assert_eq!(p.signed_by.as_deref(), Some("tester"));
    // Without a check nothing is vouched for.
    assert_eq!(Policy::from_file(&policy, text).unwrap().signed_by, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tenants_are_checked_and_named_by_limits() {
    let p = parse(
        "p.toml",
        r#"
[tenant.acme]
rate = "500/hour"
burst = 50
local_rate = "20/hour"

[tenant.idle]
rate = "10/hour"
local_rate = "1/hour"

[[limit]]
users = [1000]
tenant = "acme"

[[limit]]
cgroups = ["/acme.slice/**"]
rate = "100/hour"
tenant = "acme"
"#,
        None,
    )
    .expect("valid");
    let acme = &p.tenants["acme"];
    assert_eq!((acme.rate.count, acme.rate.burst), (500, 50));
    assert_eq!(acme.local.count, 20);
    assert_eq!(acme.key, antispam_common::tenant::tenant_key(b"acme"));
    assert_eq!(p.rules[0].tenant.as_deref(), Some("acme"));
    assert!(p.rules[0].rate.is_none(), "a tenant alone may limit a rule");
    let compiled = super::compile::map_rule(&p.rules[1]);
    assert_eq!(compiled.tenant, acme.key);
    assert!(
        p.warnings.iter().any(|w| w.message.contains("\"idle\"")),
        "{:?}",
        p.warnings
    );

    let e = errors("[[limit]]\nusers = [1000]\ntenant = \"acme\"\n");
    assert!(
        e[0].contains("p.toml:3:10") && e[0].contains("no [tenant.acme] table; tenants: none"),
        "{e:?}"
    );
    let e = errors("[tenant.\"a b\"]\nrate = \"1/hour\"\nlocal_rate = \"1/hour\"\n");
    assert!(e[0].contains("tenant name \"a b\""), "{e:?}");
    let e = errors("[tenant.x]\nrate = \"1/hour\"\nlocal_rate = \"2/hour\"\n");
    assert!(
        e[0].contains("p.toml:3:14") && e[0].contains("more than the whole fleet"),
        "{e:?}"
    );
    let e = errors("[tenant.x]\nrate = \"1/hour\"\n");
    assert!(e[0].contains("local_rate"), "{e:?}");
    let e = errors("[tenant.x]\nrate = \"1/hour\"\nlocal_rate = \"1/hour\"\n[[limit]]\nsasl_users = [\"a\"]\nmessages = \"1/hour\"\ntenant = \"x\"\n");
    assert!(
        e.iter()
            .any(|e| e.contains("tenant budgets are spent by users and cgroups")),
        "{e:?}"
    );
}
