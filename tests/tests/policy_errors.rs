//! `antispam check` errors point at FILE:LINE:COLUMN; a bad reload keeps the old policy.

use std::path::Path;

use antispam_tests::*;

/// Lines of stderr of the form `FILE:LINE:COLUMN: reason` for `file`: (line, column, reason).
fn located(stderr: &str, file: &Path) -> Vec<(u32, u32, String)> {
    let prefix = format!("{}:", file.display());
    stderr
        .lines()
        .filter_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
        .filter_map(|rest| {
            let mut it = rest.splitn(3, ':');
            let line = it.next()?.trim().parse().ok()?;
            let col = it.next()?.trim().parse().ok()?;
            Some((line, col, it.next().unwrap_or("").trim().to_string()))
        })
        .collect()
}

fn expect_error(dir: &TestDir, name: &str, text: &str, want_line: u32, what: &str) {
    let file = dir.write(name, text);
    let r = antispam_check(&file);
    eprintln!(
        "check {name}: exit {:?}\n  stderr: {}",
        r.code,
        r.stderr.trim()
    );
    assert!(
        !r.success(),
        "{what}: `antispam check` must fail; stdout: {}",
        r.stdout
    );
    assert!(r.code.is_some(), "{what}: check was killed or crashed");
    let locs = located(&r.stderr, &file);
    assert!(
        locs.iter()
            .any(|(l, c, reason)| *l == want_line && *c >= 1 && !reason.is_empty()),
        "{what}: expected `{}:{want_line}:COLUMN: reason` on stderr, got:\n{}",
        file.display(),
        r.stderr
    );
}

#[test]
fn check_reports_file_line_column() {
    if !require_kernel() {
        return;
    }
    let dir = TestDir::new();
    expect_error(
        &dir,
        "bad-rate.toml",
        "mode = \"enforce\"\nports = [25]\n\n[default]\nrate = \"ten/minute\"\n",
        5,
        "malformed rate",
    );
    expect_error(
        &dir,
        "unknown-key.toml",
        "mode = \"enforce\"\nports = [25]\n\n[default]\nrate = \"10/minute\"\nburts = 3\n",
        6,
        "unknown key",
    );
    expect_error(
        &dir,
        "unknown-user.toml",
        "ports = [25]\n\n[[limit]]\nrate = \"1/hour\"\nusers = [\"no-such-user-antispam-test\"]\n",
        5,
        "unknown user name",
    );
    expect_error(
        &dir,
        "bad-cidr.toml",
        "ports = [25]\n\n[[block]]\ndestinations = [\"192.0.2.0/24\", \"10.0.0.0/33\"]\n",
        4,
        "bad CIDR",
    );
    expect_error(
        &dir,
        "empty-ports.toml",
        "mode = \"enforce\"\nports = []\n",
        2,
        "empty port list",
    );

    // Two problems: two located lines.
    let file = dir.write(
        "two.toml",
        "ports = [25]\n[default]\nrate = \"5/fortnight\"\n[[block]]\ndestinations = [\"300.1.2.3/8\"]\n",
    );
    let r = antispam_check(&file);
    let lines: Vec<u32> = located(&r.stderr, &file).iter().map(|x| x.0).collect();
    assert!(
        !r.success() && lines.contains(&3) && lines.contains(&5),
        "two problems on lines 3 and 5:\n{}",
        r.stderr
    );

    let good = dir.write(
        "good.toml",
        "mode = \"enforce\"\nports = [25, 587]\n\n[default]\nrate = \"30/minute\"\nburst = 30\n\n[[allow]]\ndestinations = [\"127.0.0.0/8\", \"::1/128\"]\n\n[[limit]]\nusers = [\"1000-1999\", 0]\nrate = \"10/hour\"\n",
    );
    let r = antispam_check(&good);
    eprintln!(
        "check good.toml: exit {:?} stdout: {}",
        r.code,
        r.stdout.trim()
    );
    assert!(
        r.success(),
        "a good policy must pass; stderr:\n{}",
        r.stderr
    );
    assert_eq!(
        r.stdout.trim().lines().count(),
        1,
        "one summary line on stdout: {:?}",
        r.stdout
    );
}

/// Structural problems (unknown keys and tables, wrong types) and semantic ones, all in one run.
#[test]
fn check_reports_every_problem_in_one_run() {
    let dir = TestDir::new();
    let file = dir.write(
        "many.toml",
        "mode = \"enforce\"\nportz = [25]\n[default]\nrate = 5\nburts = 3\n[[limit]]\nusers = [\"no-such-user-x\"]\nrat = \"1/hour\"\n[[limit]]\nusers = [\"1001\"]\nrate = \"2/minit\"\nburst = \"x\"\n[sendmail]\nprogramz = []\n",
    );
    let r = antispam_check(&file);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let locs: Vec<(u32, u32)> = located(&r.stderr, &file)
        .into_iter()
        .map(|(l, c, _)| (l, c))
        .collect();
    assert_eq!(
        locs,
        // 6:1: the [[limit]] whose `rate` is misspelt has no rate, which the check of values
        // says too (a rule may give only `messages` or `recipients`).
        [
            (2, 1),
            (4, 8),
            (5, 1),
            (6, 1),
            (7, 10),
            (8, 1),
            (11, 8),
            (12, 9),
            (14, 1)
        ],
        "{}",
        r.stderr
    );
    for word in [
        "portz",
        "invalid type",
        "burts",
        "no-such-user-x",
        "rat",
        "minit",
        "programz",
    ] {
        assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
    }
    assert!(r.stderr.contains("9 problem(s)"), "{}", r.stderr);
}

#[test]
fn bad_reload_keeps_old_policy_good_reload_applies() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("reload");
    let (u1, u2) = (unique_uid(), unique_uid());
    let v1 = "mode = \"enforce\"\nports = [25]\n\n[default]\nrate = \"1/minute\"\nburst = 2\n";
    let policy = fx.policy(v1);
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let m = agent.metrics();
    let gen0 =
        metric_value(&m, "antispam_policy_generation", &[]).expect("antispam_policy_generation");

    let r = connect_probe_as(&fx.cg, u1, fx.smtp_v4(), 3, ProbeOptions::default());
    assert_eq!(
        r.iter().map(|x| x.ok).collect::<Vec<_>>(),
        [true, true, false],
        "v1 burst 2: {r:?}"
    );

    // Bad policy: the old one must stay.
    fx.dir.write(
        "policy.toml",
        "mode = \"enforce\"\nports = [25]\n\n[default]\nrate = \"fast\"\nburst = 50\n",
    );
    agent.reload();
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_reloads_total", &[("result", "error")]).unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        metric_value(&m, "antispam_policy_reloads_total", &[("result", "error")]),
        Some(1.0),
        "reload error counter; metrics:\n{m}"
    );
    assert_eq!(
        metric_value(&m, "antispam_policy_generation", &[]),
        Some(gen0),
        "generation unchanged"
    );
    let err = agent.stderr();
    assert!(
        err.contains(&format!("{}:5:", policy.display())),
        "the reload error must name {}:5:COLUMN on stderr; stderr:\n{err}",
        policy.display()
    );
    let r = connect_probe_as(&fx.cg, u1, fx.smtp_v4(), 1, ProbeOptions::default());
    assert!(
        r[0].is_eperm(),
        "old policy (burst 2) must still enforce after a bad reload: {r:?}"
    );
    let r = connect_probe_as(&fx.cg, u2, fx.smtp_v4(), 3, ProbeOptions::default());
    assert_eq!(
        r.iter().map(|x| x.ok).collect::<Vec<_>>(),
        [true, true, false],
        "a fresh uid is limited by the old policy (burst 2), not the bad one (burst 50): {r:?}"
    );

    // Good policy with a new limit.
    let u3 = unique_uid();
    fx.dir.write(
        "policy.toml",
        "mode = \"enforce\"\nports = [25]\n\n[default]\nrate = \"1/minute\"\nburst = 4\n",
    );
    agent.reload();
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_reloads_total", &[("result", "ok")]).unwrap_or(0.0) >= 1.0
    });
    assert_eq!(
        metric_value(&m, "antispam_policy_reloads_total", &[("result", "ok")]),
        Some(1.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric_value(&m, "antispam_policy_reloads_total", &[("result", "error")]),
        Some(1.0),
        "metrics:\n{m}"
    );
    let gen1 = metric_value(&m, "antispam_policy_generation", &[]).unwrap();
    assert_eq!(gen1, gen0 + 1.0, "generation +1 after a good reload");
    let r = connect_probe_as(&fx.cg, u3, fx.smtp_v4(), 5, ProbeOptions::default());
    assert_eq!(
        r.iter().map(|x| x.ok).collect::<Vec<_>>(),
        [true, true, true, true, false],
        "new policy (burst 4) applies: {r:?}"
    );
    let ev = agent.wait_events(by_uid(u3), 5);
    assert_eq!(ev.len(), 5, "{}", show(&ev));
    assert!(
        ev.iter()
            .all(|e| ev_u64(e, "generation") == Some(gen1 as u64)),
        "events carry the new generation:\n{}",
        show(&ev)
    );
}

#[test]
fn editing_the_policy_file_reloads_it_and_a_bad_edit_changes_nothing() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("reload-on-change");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/minute\"\nburst = 1\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);

    // An editor's save: a new file renamed over the old one. No SIGHUP.
    let tmp = fx.dir.write(
        "policy.toml.tmp",
        "ports = [25]\n[default]\nrate = \"1/minute\"\nburst = 3\n",
    );
    std::fs::rename(&tmp, &policy).unwrap();
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_generation", &[]) == Some(2.0)
    });
    assert_eq!(
        metric_value(&m, "antispam_policy_generation", &[]),
        Some(2.0),
        "reloaded on the rename: {m}"
    );
    let u = unique_uid();
    let r = connect_probe_as(&fx.cg, u, fx.smtp_v4(), 4, ProbeOptions::default());
    assert_eq!(
        r.iter().map(|x| x.ok).collect::<Vec<_>>(),
        [true, true, true, false],
        "burst 3 in force: {r:?}"
    );

    // A typo written in place: refused once, with file:line:column, nothing changes.
    fx.dir.write(
        "policy.toml",
        "ports = [25]\n[default]\nrate = \"1/minute\"\nburst = \"many\"\n",
    );
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_reloads_total", &[("result", "error")]) == Some(1.0)
    });
    assert_eq!(
        metric_value(&m, "antispam_policy_generation", &[]),
        Some(2.0),
        "{m}"
    );
    assert!(
        agent.stderr().contains(&format!("{}:4:", policy.display())),
        "{}",
        agent.stderr()
    );
    let r = connect_probe_as(
        &fx.cg,
        unique_uid(),
        fx.smtp_v4(),
        4,
        ProbeOptions::default(),
    );
    assert_eq!(
        r.iter().map(|x| x.ok).collect::<Vec<_>>(),
        [true, true, true, false],
        "the previous policy (burst 3) still enforces: {r:?}"
    );
    // Touching the file without changing it refuses nothing new and reloads nothing.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&policy)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let triggers: Vec<String> = agent
        .audit_events()
        .iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with("policy_reload"))
        .map(|r| format!("{} {}", r["event"], r["details"]["trigger"]))
        .collect();
    assert_eq!(
        triggers,
        [
            "\"policy_reload\" \"file change\"",
            "\"policy_reload_refused\" \"file change\""
        ]
    );
}

#[test]
fn reload_replacing_100k_uids_fits() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("bigreload");
    let policy =
        fx.policy("ports = [25]\n[[limit]]\nusers = [\"100000-199999\"]\nrate = \"1/hour\"\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    // 100,000 other UIDs: more than the map holds together with the old ones.
    std::fs::write(
        &policy,
        "ports = [25]\n[[limit]]\nusers = [\"300000-399999\"]\nrate = \"1/hour\"\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    agent.reload();
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_policy_generation", &[]) == Some(2.0)
    });
    eprintln!("reload of 100,000 UIDs applied in {:?}", t.elapsed());
    assert_eq!(
        metric_value(&m, "antispam_policy_generation", &[]),
        Some(2.0),
        "{}",
        agent.stderr()
    );
    assert_eq!(
        metric_value(&m, "antispam_policy_reloads_total", &[("result", "error")]),
        Some(0.0)
    );
    let server = fx.smtp_v4();
    assert!(tcp_probe_once(&fx.cg, 300_000, server).ok);
    assert!(
        tcp_probe_once(&fx.cg, 300_000, server).is_eperm(),
        "the new rule applies"
    );
    assert!(
        tcp_probe_once(&fx.cg, 100_000, server).ok && tcp_probe_once(&fx.cg, 100_000, server).ok,
        "the old one is gone"
    );
}
