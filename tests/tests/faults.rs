//! Faults lose nothing: reloads under a refused-connect storm, editors' saves, full disks,
//! signals and SIGKILL at any point never loosen the policy in force or lose an audit record.
//! Each test is one of the reproductions of the issue, or a fault injected at random points;
//! each checks that the policy in force is one of the files' complete versions (by what the
//! kernel does) and that the audit chain verifies afterwards.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use antispam_tests::{faults::*, *};

/// SHA-256 of the empty file.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn generation(agent: &Agent) -> Option<f64> {
    metric_value(&agent.metrics(), "antispam_policy_generation", &[])
}

/// Waits up to `limit` for the policy generation to reach `g`; how long it took.
fn wait_generation(agent: &Agent, g: f64, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    poll_until(limit, Duration::from_millis(20), || {
        (generation(agent) >= Some(g)).then(|| t.elapsed())
    })
}

/// Which of the agent's files go on the small disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Small {
    /// The offence book (the audit log stays on the big disk).
    Book,
    /// The audit log (the offence book stays on the big disk).
    Audit,
    Events,
}

/// A 256 KiB tmpfs holding some of the agent's files (the rest on the big disk), and an agent
/// started with them; the `Launch` starts the next agent with the same files.
fn on_small_disk(
    fx: &Fixture,
    policy: &std::path::Path,
    small: &[Small],
) -> (TestTmpfs, Agent, Launch<'static>) {
    let disk = TestTmpfs::new(&fx.dir, "small", 256 * 1024);
    // The offence book is beside the audit log: a symlink puts the two on different disks.
    let (big, tiny) = (
        fx.dir.path().join("audit.jsonl"),
        disk.path().join("audit.jsonl"),
    );
    let audit = if small.contains(&Small::Book) {
        std::os::unix::fs::symlink(&big, &tiny).unwrap();
        tiny
    } else {
        if small.contains(&Small::Audit) {
            std::os::unix::fs::symlink(&tiny, &big).unwrap();
        }
        big
    };
    let launch = Launch {
        audit_path: Some(audit),
        log_path: small
            .contains(&Small::Events)
            .then(|| disk.path().join("events.jsonl")),
        ..Launch::default()
    };
    let mut agent = Agent::spawn(policy, &fx.cg, &fx.dir, &launch);
    agent.wait_ready(bound(Duration::from_secs(10))).unwrap();
    (disk, agent, launch)
}

/// Repro 1: refusals at 10/s or more used to restart the file watch's quiet time for ever.
#[test]
fn refused_connects_do_not_starve_policy_reloads() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-starve");
    let mta = unique_uid();
    let policy = fx.policy(&version(1, mta, 0));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let (took, tried) = during_storm(
        &fx.cg,
        unique_uid(),
        server,
        Duration::from_secs(15),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let tmp = fx.dir.write("policy.toml.new", &version(3, mta, 0));
            std::fs::rename(&tmp, &policy).unwrap();
            wait_generation(&agent, 2.0, Duration::from_secs(4))
        },
    );
    eprintln!("storm: {tried} refused connects; reload took {took:?}");
    let took = took.unwrap_or_else(|| {
        panic!(
            "the changed policy was not applied within 4 s under the storm; stderr:\n{}",
            agent.stderr()
        )
    });
    assert!(took < Duration::from_secs(2), "reload took {took:?}");
    assert_eq!(burst_in_force(&fx.cg, server), 3, "the new policy enforces");
    assert_eq!(audit_verify(&agent.audit_path).0, Some(0));
}

/// Repro 2: an editor's save (truncate, pause, write) used to load the empty file, i.e. the
/// built-in policy without the operator's allow list (the allow-listed MTA limited to the
/// built-in 30/minute).
#[test]
fn an_editors_truncate_then_write_never_loads_an_empty_policy() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-empty");
    let mta = unique_uid();
    let policy = fx.policy(&version(1, mta, 0));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    // The save: the file is emptied, the editor pauses, then writes the new text. (The
    // storm of repro 1 is left out: it would keep the old code from reloading at all.)
    std::fs::File::create(&policy).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let during = connect_probe_as(&fx.cg, mta, server, 40, ProbeOptions::default());
    std::fs::write(&policy, version(2, mta, 0)).unwrap();
    assert!(
        during.iter().all(|a| a.ok),
        "the allow-listed MTA was limited while the file was empty: {during:?}"
    );
    let audit = agent.audit_events();
    let loaded_empty = audit
        .iter()
        .any(|r| r["event"] == "policy_reload" && r["details"]["policy_sha256"] == EMPTY_SHA256);
    assert!(!loaded_empty, "the empty file was loaded:\n{audit:#?}");
    let refused = audit
        .iter()
        .find(|r| r["event"] == "policy_reload_refused")
        .unwrap_or_else(|| panic!("the empty file's refusal is audited:\n{audit:#?}"));
    assert!(
        refused["details"]["problems"][0]
            .as_str()
            .unwrap_or_default()
            .contains("the policy file is empty"),
        "{refused:#}"
    );
    assert_eq!(
        wait_generation(&agent, 2.0, Duration::from_secs(3)).map(|_| ()),
        Some(()),
        "the written policy is loaded"
    );
    assert_eq!(burst_in_force(&fx.cg, server), 2);
    assert!(
        connect_probe_as(&fx.cg, mta, server, 40, ProbeOptions::default())
            .iter()
            .all(|a| a.ok)
    );
}

/// Repro 3: a suspension made while the offence book could not be written returned success,
/// and the next agent removed it from the kernel with no record. Now it is refused, with
/// nothing in force; and state the book does not hold is removed on record.
#[test]
fn a_suspension_that_cannot_be_kept_is_refused_and_nothing_vanishes_unrecorded() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-book");
    let policy = fx.policy(&version(5, 0, 0));
    let (disk, mut agent, launch) = on_small_disk(&fx, &policy, &[Small::Book]);
    let server = fx.smtp_v4();
    let uid = unique_uid();
    let u = uid.to_string();

    disk.fill();
    let (code, out) = ctl(&agent, &["suspend", "--uid", &u, "--reason", "disk full"]);
    assert_eq!(code, Some(1), "refused: {out}");
    assert!(
        out.contains("offence book") && out.contains("No space left"),
        "says why: {out}"
    );
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "nothing in force in the kernel"
    );
    assert!(agent.status_json()["suspensions"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!agent.audit_names().contains(&"suspend".to_string()));

    disk.free();
    let (code, out) = ctl(&agent, &["suspend", "--uid", &u, "--reason", "room again"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, uid, server).is_eperm());

    // A crash, and a book that lost the suspension (as an older version's failed save did):
    // the next agent removes it from the kernel, on record.
    agent.kill();
    let book = disk.path().join("offences.json");
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&book).unwrap()).unwrap();
    saved["suspensions"] = serde_json::json!([]);
    std::fs::write(&book, saved.to_string()).unwrap();
    let mut next = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    next.wait_ready(bound(Duration::from_secs(10))).unwrap();
    // Restored state is recorded just after the agent answers /healthz: wait for it.
    let cleared = poll_until(
        bound(Duration::from_secs(5)),
        Duration::from_millis(50),
        || {
            next.audit_events()
                .into_iter()
                .find(|r| r["event"] == "stale_state_cleared")
        },
    )
    .unwrap_or_else(|| panic!("the removal is on record:\n{:#?}", next.audit_events()));
    assert_eq!(
        cleared["details"]["suspensions"],
        serde_json::json!([format!("uid {uid}")])
    );
    assert!(tcp_probe_once(&fx.cg, uid, server).ok);
    next.stop();
    let (code, out) = audit_verify(&next.audit_path);
    assert_eq!(code, Some(0), "{out}");
}

/// Repro 4: a full disk left half an audit record, which bricked the next start or was joined
/// to the next record; the event log got half lines too. Now neither log ever ends in part of a
/// line, and a half line left by a crash is removed on open, on record.
#[test]
fn a_full_disk_never_leaves_a_partial_record_in_the_audit_or_event_log() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-partial");
    let policy = fx.policy(&version(1, 0, 0));
    let (disk, mut agent, launch) = on_small_disk(&fx, &policy, &[Small::Audit, Small::Events]);
    let audit = agent.audit_path.clone();
    let server = fx.smtp_v4();

    disk.fill();
    // A record longer than the room left in the audit log's last page.
    let long = "x".repeat(6000);
    let uid = unique_uid().to_string();
    let (code, out) = ctl(&agent, &["suspend", "--uid", &uid, "--reason", &long]);
    // Events that cannot be written.
    let spammer = unique_uid();
    connect_probe_as(&fx.cg, spammer, server, 200, ProbeOptions::default());
    std::thread::sleep(Duration::from_millis(300));
    for path in [&audit, &agent.log_path] {
        let text = std::fs::read(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with(b"\n"),
            "{} ends in part of a line: {:?}",
            path.display(),
            String::from_utf8_lossy(&text[text.len().saturating_sub(200)..])
        );
    }
    let (verified, verify_out) = audit_verify(&audit);
    assert_eq!(verified, Some(0), "{verify_out}");
    assert_eq!(code, Some(1), "the suspension was refused: {out}");

    // Room again: the next record and events are whole lines of their own.
    disk.free();
    let (code, out) = ctl(&agent, &["suspend", "--uid", &uid, "--reason", &long]);
    assert_eq!(code, Some(0), "{out}");
    connect_probe_as(&fx.cg, unique_uid(), server, 20, ProbeOptions::default());
    std::thread::sleep(Duration::from_millis(300));
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, Some(0), "{out}");
    let events = agent.events();
    assert!(!events.is_empty(), "events are logged again");
    let lost = metric_value(&agent.metrics(), "antispam_event_log_lost_total", &[]);
    assert!(lost > Some(0.0), "the lost events are counted: {lost:?}");

    // A crash in the middle of a write: the next agent removes the half line, on record.
    agent.kill();
    let half = r#"{"details":{"reason":"half","generation":1},"event":"agent_st"#;
    for path in [&audit, &agent.log_path] {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        std::io::Write::write_all(&mut f, half.as_bytes()).unwrap();
    }
    let mut next = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    next.wait_ready(bound(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("the next agent starts on a log with a half record: {e}"));
    next.stop();
    let repairs: Vec<serde_json::Value> = audit_records(&audit)
        .into_iter()
        .filter(|r| r["event"] == "log_repaired")
        .collect();
    let logs: Vec<&str> = repairs
        .iter()
        .map(|r| r["details"]["log"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["audit", "events"], "{repairs:#?}");
    assert!(repairs.iter().all(|r| r["details"]["removed"] == half));
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, Some(0), "{out}");
}

/// Repro 5: with the audit log unwritable, `suspend` and `kill-switch` still ran, unaudited.
#[test]
fn commands_that_cannot_be_audited_are_refused_and_change_nothing() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-unaudited");
    let policy = fx.policy(&version(5, 0, 0));
    let (disk, mut agent, _) = on_small_disk(&fx, &policy, &[Small::Audit]);
    let audit = agent.audit_path.clone();
    let server = fx.smtp_v4();
    let uid = unique_uid();
    let u = uid.to_string();
    disk.fill();
    let long = "y".repeat(6000);

    let (code, out) = ctl(&agent, &["suspend", "--uid", &u, "--reason", &long]);
    assert_eq!(code, Some(1), "suspend refused: {out}");
    assert!(out.contains("audit record could not be written"), "{out}");
    let (code, out) = ctl(&agent, &["kill-switch", "on", "--reason", &long]);
    assert_eq!(code, Some(1), "kill switch refused: {out}");
    assert!(out.contains("audit record could not be written"), "{out}");
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "neither is in force"
    );
    let st = agent.status_json();
    assert_eq!(st["kill_switch"]["on"], false, "{st:#}");
    assert!(st["suspensions"].as_array().unwrap().is_empty(), "{st:#}");
    let book = std::fs::read_to_string(fx.dir.path().join("offences.json")).unwrap();
    assert!(!book.contains(&long), "the book holds neither: {book}");
    assert!(
        metric_value(&agent.metrics(), "antispam_audit_write_failures_total", &[]) >= Some(2.0)
    );

    disk.free();
    let (code, out) = ctl(&agent, &["kill-switch", "on", "--reason", "room again"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, uid, server).is_eperm());
    let (code, out) = ctl(&agent, &["kill-switch", "off", "--reason", "done"]);
    assert_eq!(code, Some(0), "{out}");
    agent.stop();
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, Some(0), "{out}");
}

/// Repro 6: SIGHUP (or SIGTERM) in the first ~100 ms killed the agent with the default action.
#[test]
fn signals_during_start_up_are_handled() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-signals");
    let policy = fx.policy(&version(2, 0, 0));
    for (i, delay_ms) in [3u64, 10, 20, 40, 70, 100, 150].into_iter().enumerate() {
        let signal = if i % 2 == 0 {
            libc::SIGHUP
        } else {
            libc::SIGTERM
        };
        let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &Launch::default());
        std::thread::sleep(Duration::from_millis(delay_ms));
        agent.signal(signal);
        if signal == libc::SIGHUP {
            agent
                .wait_ready(bound(Duration::from_secs(10)))
                .unwrap_or_else(|e| panic!("SIGHUP after {delay_ms} ms: {e}"));
            let st = agent.stop().expect("exits on SIGTERM");
            assert!(
                st.success(),
                "SIGHUP after {delay_ms} ms, then SIGTERM: {st}"
            );
        } else {
            let st = agent
                .wait_exit(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("SIGTERM after {delay_ms} ms did not stop the agent"));
            assert!(
                st.success(),
                "SIGTERM after {delay_ms} ms: {st}; stderr:\n{}",
                agent.stderr()
            );
        }
        let names = agent.audit_names();
        assert_eq!(
            names.last().map(String::as_str),
            Some("agent_stop"),
            "signal {signal} after {delay_ms} ms: {names:?}"
        );
        assert_eq!(audit_verify(&agent.audit_path).0, Some(0));
    }
}

/// A policy with `burst` and 100,000 UIDs in a limit rule: its reload takes hundreds of ms.
fn big_version(burst: u32) -> String {
    format!(
        "ports = [25]\n[[limit]]\nusers = [\"100000-199999\"]\nrate = \"10/minute\"\n[default]\nrate = \"1/hour\"\nburst = {burst}\n"
    )
}

/// Repro 7: killed 60–160 ms after SIGHUP, the agent left the new policy in force without its
/// `policy_reload` record. Now the record is written (fsync'd) before the switch.
#[test]
fn a_reload_is_audited_before_it_is_in_force() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-order");
    let (old, new) = (big_version(1), big_version(3));
    let policy = fx.policy(&old);
    let new_sha = sha256_text(&new);
    let server = fx.smtp_v4();
    let launch = Launch {
        extra: &["--no-reload-on-change"],
        ..Launch::default()
    };
    // How long a reload takes here, to kill the agent at points across it.
    let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    agent.wait_ready(bound(Duration::from_secs(20))).unwrap();
    std::fs::write(&policy, &new).unwrap();
    agent.reload();
    let reload = wait_generation(&agent, 2.0, Duration::from_secs(10)).expect("reloads");
    agent.stop();
    eprintln!("a reload of 100,000 UIDs takes {reload:?} (SIGHUP to generation)");

    let trials = 12;
    let mut in_force_new = 0;
    for i in 0..trials {
        std::fs::write(&policy, &old).unwrap();
        let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
        agent.wait_ready(bound(Duration::from_secs(20))).unwrap();
        assert_eq!(
            burst_in_force(&fx.cg, server),
            1,
            "trial {i}: the old policy"
        );
        std::fs::write(&policy, &new).unwrap();
        // Somewhere in 20 %..120 % of a reload (60–160 ms on the machine of the issue).
        let span = reload.as_millis() as u64;
        let at = Duration::from_millis(span / 5 + random_below(span.max(1)));
        agent.reload();
        std::thread::sleep(at);
        agent.kill();
        let burst = burst_in_force(&fx.cg, server);
        let recorded = agent.audit_events().iter().any(|r| {
            r["event"] == "policy_reload" && r["details"]["policy_sha256"] == new_sha.as_str()
        });
        eprintln!("trial {i}: killed {at:?} after SIGHUP: burst {burst}, recorded {recorded}");
        assert!(
            burst == 1 || burst == 3,
            "trial {i}: a policy that is neither version is in force (burst {burst})"
        );
        if burst == 3 {
            in_force_new += 1;
            assert!(
                recorded,
                "trial {i}: killed {at:?} after SIGHUP, the new policy is in force without its record"
            );
        }
    }
    eprintln!("{in_force_new} of {trials} trials left the new policy in force");
}

/// Repro 8: one ERROR line per event when the event log could not be written, and an event
/// log without bound under one UID's refused connects.
#[test]
fn log_floods_are_bounded_and_counted() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-flood");
    let policy = fx.policy(&version(1, 0, 0));
    let (disk, agent, _) = on_small_disk(&fx, &policy, &[Small::Events]);
    let server = fx.smtp_v4();

    // The flood, with room on the disk: a few lines, every refusal counted in them.
    let spammer = unique_uid();
    let mut tried = 0;
    let t = Instant::now();
    for _ in 0..4 {
        tried += connect_probe_as(&fx.cg, spammer, server, 1000, ProbeOptions::default()).len();
    }
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1300));
    let mine: Vec<serde_json::Value> = agent
        .events()
        .into_iter()
        .filter(|e| ev_u64(e, "uid") == Some(u64::from(spammer)))
        .collect();
    let counted: u64 = mine.iter().map(|e| ev_u64(e, "count").unwrap_or(1)).sum();
    let size = std::fs::metadata(&agent.log_path).unwrap().len();
    eprintln!(
        "{tried} connects in {secs:.1} s: {} lines ({size} bytes) standing for {counted}",
        mine.len()
    );
    assert_eq!(counted, tried as u64, "every connect is in the log");
    assert!(
        mine.len() <= 10 * (secs.ceil() as usize + 2) * 2,
        "{} lines for one UID's {tried} refusals",
        mine.len()
    );
    let m = agent.metrics();
    assert!(metric_value(&m, "antispam_event_log_folded_total", &[]) > Some(0.0));
    let denied = metric_sum(
        &m,
        "antispam_smtp_connections_total",
        &[("verdict", "denied")],
    );
    assert!(
        denied >= (tried - 1) as f64,
        "the kernel counts them all: {denied}"
    );

    // The same with a full disk: the errors are summarised, not one line per event.
    disk.fill();
    let before = agent.stderr().matches("ERROR").count();
    for _ in 0..3 {
        connect_probe_as(&fx.cg, spammer, server, 1000, ProbeOptions::default());
        std::thread::sleep(Duration::from_millis(500));
    }
    let errors = agent.stderr().matches("ERROR").count() - before;
    eprintln!("with the disk full: {errors} ERROR lines");
    assert!(errors <= 3, "{errors} ERROR lines:\n{}", agent.stderr());
    assert!(metric_value(&agent.metrics(), "antispam_event_log_lost_total", &[]) > Some(0.0));
    disk.free();
}

/// The event log's size bound: it is rotated to `<log>.1`, counted.
#[test]
fn the_event_log_is_rotated_at_its_size_bound() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-rotate");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"100000/second\"\nburst = 100000\n");
    let agent = Agent::start_with(&policy, &fx.cg, &fx.dir, &["--log-max-bytes", "20000"]);
    connect_probe_as(
        &fx.cg,
        unique_uid(),
        fx.smtp_v4(),
        300,
        ProbeOptions::default(),
    );
    let m = wait_metrics(&agent, |m| {
        metric_value(m, "antispam_event_log_rotations_total", &[]) >= Some(1.0)
    });
    assert!(
        metric_value(&m, "antispam_event_log_rotations_total", &[]) >= Some(1.0),
        "{m}"
    );
    let size = std::fs::metadata(&agent.log_path).unwrap().len();
    let mut rotated = agent.log_path.clone().into_os_string();
    rotated.push(".1");
    let rotated = std::fs::metadata(rotated).expect("<log>.1").len();
    assert!(size <= 20000 && rotated <= 20000, "{size} and {rotated}");
}

/// The policies the agent reports in force, every 20 ms until `done` (at most a minute).
fn policies_seen(agent: &Agent, done: &AtomicBool) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    while !done.load(Ordering::Relaxed) && Instant::now() < end {
        let st = agent.status_json();
        seen.insert(format!(
            "{} allow={}",
            st["default_rate"].as_str().unwrap_or("?"),
            st["rule_counts"]["allow"]
        ));
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

/// Save `i` of `text` over `policy`, the way step `i` picks: in place in two halves with a
/// pause (a SIGHUP in it, every other time), emptied then written, or renamed over.
fn save(i: usize, policy: &std::path::Path, text: &str, agent: &Agent, dir: &TestDir) {
    match i % 4 {
        0 | 1 => {
            use std::io::Write as _;
            let mut f = std::fs::File::create(policy).unwrap();
            let (a, b) = text.split_at(text.len() / 2);
            f.write_all(a.as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30 + random_below(150)));
            if i % 4 == 1 {
                agent.reload();
                std::thread::sleep(Duration::from_millis(50));
            }
            f.write_all(b.as_bytes()).unwrap();
        }
        2 => {
            std::fs::File::create(policy).unwrap();
            std::thread::sleep(Duration::from_millis(250 + random_below(100)));
            std::fs::write(policy, text).unwrap();
        }
        _ => {
            let tmp = dir.write("policy.toml.new", text);
            std::fs::rename(&tmp, policy).unwrap();
        }
    }
}

/// Reload storms: the file written in place in two halves with a pause (SIGHUPs meanwhile),
/// emptied then written, replaced by renames, under a refused-connect storm. The policy in
/// force is always one of the complete versions, and the last one wins.
#[test]
fn reload_storms_with_partial_writes_never_load_a_partial_policy() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-storm");
    let mta = unique_uid();
    let versions: Vec<String> = (2..=5).map(|b| version(b, mta, 40)).collect();
    let policy = fx.policy(&versions[0]);
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let mut last = 0;
    let (seen, _) = during_storm(
        &fx.cg,
        unique_uid(),
        server,
        Duration::from_secs(60),
        || {
            let done = AtomicBool::new(false);
            std::thread::scope(|s| {
                let watcher = s.spawn(|| policies_seen(&agent, &done));
                let _done = StopOnDrop(&done);
                for i in 0..16 {
                    last = 1 + (i % 3);
                    save(i, &policy, &versions[last], &agent, &fx.dir);
                    std::thread::sleep(Duration::from_millis(random_below(300)));
                    let b = burst_in_force(&fx.cg, server);
                    assert!((2..=5).contains(&b), "step {i}: burst {b} in force");
                }
                std::thread::sleep(Duration::from_millis(800));
                done.store(true, Ordering::Relaxed);
                watcher.join().expect("watcher")
            })
        },
    );
    eprintln!("policies seen in force: {seen:?}");
    let complete: Vec<String> = (2..=5)
        .map(|b| format!("1/hour (burst {b}) allow=1"))
        .collect();
    assert!(
        seen.iter().all(|s| complete.contains(s)),
        "only complete versions: {seen:?}"
    );
    assert_eq!(
        burst_in_force(&fx.cg, server),
        last + 2,
        "the last save wins"
    );
    let audit = agent.audit_events();
    assert!(!audit.iter().any(|r| {
        r["event"] == "policy_reload" && r["details"]["policy_sha256"] == EMPTY_SHA256
    }));
    assert_eq!(audit_verify(&agent.audit_path).0, Some(0));
}

/// SIGKILL at random points of start-up, agents one after the other on one audit log: the
/// kernel enforces one of the files' complete versions, each recorded, and the chain verifies.
/// The policies hold 100,000 UIDs, so that a start takes long enough to be cut anywhere.
#[test]
fn sigkill_at_random_points_of_start_up_loses_nothing() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("faults-kill-start");
    let policy = fx.policy(&big_version(2));
    let audit = fx.dir.path().join("audit.jsonl");
    let launch = Launch {
        audit_path: Some(audit.clone()),
        extra: &["--no-reload-on-change"],
        ..Launch::default()
    };
    let server = fx.smtp_v4();
    let mut first = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    let start = first.wait_ready(bound(Duration::from_secs(20))).unwrap();
    first.kill();
    eprintln!("a start with 100,000 UIDs takes {start:?}");
    // Somewhere in 40 %..120 % of a start: most of it is writing the rule set, the switch to
    // it comes last.
    let span = (start.as_millis() as u64 * 4 / 5).max(50);
    let mut killed_in_force = 0;
    let mut before = 2;
    for i in 0..10u32 {
        let burst = 3 + i % 2;
        std::fs::write(&policy, big_version(burst)).unwrap();
        let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
        let at = Duration::from_millis(span / 2 + random_below(span));
        std::thread::sleep(at);
        agent.kill();
        let b = burst_in_force(&fx.cg, server) as u32;
        assert!((2..=4).contains(&b), "trial {i}: burst {b} in force");
        let in_force = sha256_text(&big_version(b));
        let recorded = audit_records(&audit).iter().any(|r| {
            r["event"] == "agent_start" && r["details"]["policy_sha256"] == in_force.as_str()
        });
        eprintln!("trial {i}: killed {at:?} into the start of burst {burst}: burst {b} in force, recorded {recorded}");
        assert!(
            b == burst || b == before,
            "trial {i}: burst {b}, neither this start's {burst} nor the one before, {before}"
        );
        if b == burst && burst != before {
            killed_in_force += 1;
        }
        before = b;
        assert!(
            recorded,
            "trial {i}: burst {b} is in force without its agent_start"
        );
    }
    eprintln!("{killed_in_force} of 10 starts had switched to their policy when killed");
    let mut last = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    last.wait_ready(bound(Duration::from_secs(20))).unwrap();
    last.stop();
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, Some(0), "{out}");
}
