//! Hostile local users against the agent itself: a squatted metrics port, suspension arithmetic
//! pushed past what the clocks hold, and files the agent keeps read by other users. The
//! attacker is an unprivileged UID (an operator, for the arithmetic).

use std::{
    io::BufRead as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    process::{Command, Stdio},
    time::Duration,
};

use antispam_tests::{client::as_user_in_cgroup, faults::*, *};

/// (8) A local user listening on the metrics port first: the agent used to attach, then exit,
/// leaving the user to serve fake metrics. Now it fails before touching the kernel and names
/// the process holding the port.
#[test]
fn a_squatted_metrics_port_stops_the_start_before_the_kernel_is_touched() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-port");
    let squatter = unique_uid();
    let port = free_loopback_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_listen"));
    cmd.args([&addr, "30"]).stdout(Stdio::piped());
    as_user_in_cgroup(&mut cmd, &fx.cg, squatter);
    let mut listener = cmd.spawn().expect("spawn the squatter");
    let mut ready = String::new();
    std::io::BufReader::new(listener.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("the squatter says it listens");
    assert_eq!(ready.trim(), "listening");

    let policy = fx.policy("ports = [25]\n[default]\nrate = \"10/minute\"\n");
    let launch = Launch {
        metrics_addr: Some(addr.parse().unwrap()),
        ..Launch::default()
    };
    let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    let st = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent refuses to start");
    let _ = listener.kill();
    let _ = listener.wait();
    let err = agent.stderr();
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("held by pid {}", listener.id()))
            && err.contains(&squatter.to_string()),
        "names the squatter (pid {}, uid {squatter}): {err}",
        listener.id()
    );
    let pinned = std::fs::read_dir(fx.dir.pins())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        pinned,
        0,
        "nothing was pinned in {}",
        fx.dir.pins().display()
    );
    let attached = run_ok(
        "bpftool",
        &["cgroup", "show", &fx.cg.path().display().to_string()],
    );
    assert!(
        !attached.contains("antispam"),
        "nothing was attached: {attached}"
    );
}

/// (10) Durations past what the clocks hold: `--for 18446744000s` wrapped the end into the
/// past, `for_secs = u64::MAX` panicked the agent. Every duration is bounded now: an
/// operator's is refused with the bound, a policy's is an error at its line and column.
#[test]
fn suspension_arithmetic_cannot_be_pushed_past_its_bounds() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-time");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"100/second\"\nburst = 100\n");
    let mut agent = Agent::start_with(&policy, &fx.cg, &fx.dir, &["--operators-group", "nogroup"]);
    let nogroup = 65534;
    let operator = unique_uid();
    let target = unique_uid();
    let t = target.to_string();
    let server = fx.smtp_v4();
    for huge in ["18446744000s", "18446744073709551615s", "367d"] {
        let (code, out) = ctl_as(
            &agent,
            operator,
            operator,
            &[nogroup],
            &[
                "suspend", "--uid", &t, "--reason", "overflow", "--for", huge,
            ],
        );
        assert_eq!(code, Some(1), "--for {huge} refused: {out}");
        assert!(out.contains("at most 366 days"), "--for {huge}: {out}");
        assert!(agent.alive(), "--for {huge}: the agent lives");
        assert!(tcp_probe_once(&fx.cg, target, server).ok, "--for {huge}");
    }
    let (code, out) = ctl_as(
        &agent,
        operator,
        operator,
        &[nogroup],
        &[
            "break-glass",
            "request",
            "--uid",
            &t,
            "--reason",
            "r",
            "--ttl",
            "18446744073709551615s",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(agent.alive());
    // The longest allowed suspension bites, and ends in the future.
    let (code, out) = ctl_as(
        &agent,
        operator,
        operator,
        &[nogroup],
        &[
            "suspend", "--uid", &t, "--reason", "a year", "--for", "366d",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, target, server).is_eperm());
    let until = agent.status_json()["suspensions"][0]["until"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let year: u32 = until[..4].parse().unwrap_or(0);
    assert!((2026..2200).contains(&year), "ends in a year: {until}");

    // The policy's durations are bounded too.
    let bad = fx.dir.write(
        "bad.toml",
        "[suspension]\nstrikes = 3\nwindow = \"10m\"\ndurations = [\"584942417y\"]\nforget_after = \"1000000d\"\n",
    );
    let check = antispam_check(&bad);
    assert!(!check.success(), "{check:?}");
    assert!(
        check.stderr.contains(&format!("{}:4:", bad.display()))
            && check.stderr.contains(&format!("{}:5:", bad.display())),
        "{}",
        check.stderr
    );
    agent.stop();
    assert_eq!(audit_verify(&agent.audit_path).0, Some(0));
}

/// A file's permission bits.
fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// Can `uid` read `path`?
fn readable_by(cg: &TestCgroup, uid: u32, path: &std::path::Path) -> bool {
    let mut cmd = Command::new("cat");
    cmd.arg(path).stdout(Stdio::null()).stderr(Stdio::null());
    as_user_in_cgroup(&mut cmd, cg, uid);
    cmd.status().expect("cat").success()
}

/// (13) The audit log, the event log and the offence book were created 0644: any local user
/// could read who was suspended and why, and every mail a user sent. They are 0600 now,
/// whatever the umask, and a looser existing file is tightened, on record.
#[test]
fn the_agents_files_are_private_whatever_the_umask() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-modes");
    let reader = unique_uid();
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"10/minute\"\n");
    let wrapper = ["sh", "-c", "umask 000; exec \"$@\"", "sh"];
    let launch = Launch {
        wrapper: &wrapper,
        ..Launch::default()
    };
    let mut agent = Agent::spawn(&policy, &fx.cg, &fx.dir, &launch);
    agent.wait_ready(bound(Duration::from_secs(10))).unwrap();
    connect_probe_as(
        &fx.cg,
        unique_uid(),
        fx.smtp_v4(),
        3,
        ProbeOptions::default(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let book = fx.dir.path().join("offences.json");
    let files = [
        agent.audit_path.clone(),
        agent.log_path.clone(),
        book.clone(),
    ];
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} under umask 000", f.display());
        assert!(
            !readable_by(&fx.cg, reader, f),
            "uid {reader} reads {}",
            f.display()
        );
    }
    agent.stop();

    // Loosened by someone: the next agent tightens them, and says so in the audit log.
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let again = Launch {
        audit_path: Some(agent.audit_path.clone()),
        log_path: Some(agent.log_path.clone()),
        ..Launch::default()
    };
    let mut next = Agent::spawn(&policy, &fx.cg, &fx.dir, &again);
    next.wait_ready(bound(Duration::from_secs(10))).unwrap();
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} tightened", f.display());
    }
    let tightened: Vec<String> = next
        .audit_events()
        .iter()
        .filter(|r| r["event"] == "file_mode_tightened")
        .map(|r| {
            format!(
                "{} {}",
                r["details"]["path"].as_str().unwrap(),
                r["details"]["was"]
            )
        })
        .collect();
    let want: Vec<String> = files
        .iter()
        .map(|f| format!("{} \"0644\"", f.display()))
        .collect();
    assert_eq!(tightened, want);
    next.stop();
    assert_eq!(audit_verify(&next.audit_path).0, Some(0));
}
