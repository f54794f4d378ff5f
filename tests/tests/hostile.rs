//! Hostile local users: what an unprivileged user (or a root inside a container) can reach must
//! not weaken enforcement. Each test plays the attacker for real where the attack is open to an
//! unprivileged user (the BPF filesystem, cgroups the user was delegated, network namespaces)
//! and stands in for it with the UIDs the kernel would see where it needs setup only root can do
//! (subordinate UIDs of a user namespace).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use antispam_tests::*;

/// `n` connects as `uid` in `cg`: "o" for each success, "E" for each EPERM.
fn pattern(cg: &TestCgroup, uid: u32, server: SocketAddr, n: u32) -> String {
    connect_probe_as(cg, uid, server, n, ProbeOptions::default())
        .iter()
        .map(|a| match (a.ok, a.is_eperm()) {
            (true, _) => 'o',
            (false, true) => 'E',
            _ => panic!("connect failed with errno {} (not EPERM)", a.errno),
        })
        .collect()
}

/// Runs `program args` as `uid` (gid = uid, no supplementary groups); (success, output).
fn as_user(uid: u32, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_pin_directory_made_by_another_user_is_refused_and_ours_cannot_be_touched() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-pins");
    let attacker = unique_uid();
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let pins = fx.dir.pins().display().to_string();

    // bpffs mounted by hand is 1777: the attacker makes the agent's directory first. Where it
    // is not (0700), nobody but root can, and root hands it over to stand in for that.
    let (made, out) = as_user(attacker, "mkdir", &[&pins]);
    if made {
        eprintln!("the attacker (uid {attacker}) made {pins}");
    } else {
        eprintln!(
            "the attacker cannot make {pins} ({}); root makes it theirs",
            out.trim()
        );
        run_ok("mkdir", &[&pins]);
        run_ok("chown", &[&format!("{attacker}:{attacker}"), &pins]);
    }
    let (code, err) = run_refused(&[], &policy, fx.cg.path(), &fx.dir, None);
    assert_eq!(code, Some(2), "refused: exit 2; stderr:\n{err}");
    assert!(
        err.contains("is not safe for the pinned programs")
            && err.contains(&format!("owner uid {attacker}")),
        "stderr names the directory and its owner:\n{err}"
    );
    let attached = run_ok(
        "bpftool",
        &["cgroup", "show", &fx.cg.path().display().to_string()],
    );
    assert!(
        attached.lines().nth(1).is_none(),
        "nothing attached after the refusal:\n{attached}"
    );
    fx.dir.remove_pins();

    // Root's own directory: the attacker can neither read it nor remove, rename or replace
    // what is in it, and the programs go on enforcing.
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let victim = unique_uid();
    assert_eq!(pattern(&fx.cg, victim, server, 2), "oE");
    let mode = run_ok("stat", &["-c", "%a %u", &pins]);
    assert_eq!(mode.trim(), "700 0", "the pin root is root's, 0700");
    for (what, program, args) in [
        ("list", "ls", vec![pins.as_str()]),
        ("remove", "rm", vec!["-rf", pins.as_str()]),
        (
            "rename",
            "mv",
            vec![pins.as_str(), "/sys/fs/bpf/moved-by-attacker"],
        ),
    ] {
        let (ok, out) = as_user(attacker, program, &args);
        assert!(!ok, "the attacker could {what} {pins}: {out}");
        eprintln!("attacker {what}: {}", out.trim());
    }
    assert!(fx.dir.pins().exists(), "the pins are still there");
    assert_eq!(
        pattern(&fx.cg, victim, server, 1),
        "E",
        "and still enforcing"
    );
    drop(agent);
}

#[test]
fn subordinate_uids_are_charged_to_their_owner() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-subuid");
    let owner = unique_uid();
    // A range far from the UIDs the other tests use, 65,536 as Debian gives every user.
    let start = 300_000_000 + (owner % 1000) * 65_536;
    let subuid = fx.dir.write("subuid", &format!("{owner}:{start}:65536\n"));
    let text = "ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 3\n";
    let policy = fx.policy(text);
    // The agent sees a subuid file of the test's own: bound over /etc/subuid in a mount
    // namespace of its own (the host's file is untouched).
    let wrapper = format!(
        "mount --bind {} /etc/subuid && exec \"$0\" \"$@\"",
        subuid.display()
    );
    let agent = Agent::start_via(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &wrapper,
        ],
        &policy,
        &fx.cg,
        &fx.dir,
        &[],
    );
    let server = fx.smtp_v4();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !agent.stderr().contains("charged to their owners") {
        assert!(
            Instant::now() < deadline,
            "subordinate UIDs not loaded; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Inside a user namespace each mapped UID is a UID of its own to the kernel: a container
    // of the owner's running 65,536 "users" would have 65,536 budgets. They share the owner's.
    assert_eq!(pattern(&fx.cg, owner, server, 1), "o", "the owner");
    assert_eq!(
        pattern(&fx.cg, start + 1000, server, 1),
        "o",
        "a subordinate UID"
    );
    assert_eq!(
        pattern(&fx.cg, start + 65_535, server, 1),
        "o",
        "the last one"
    );
    assert_eq!(
        pattern(&fx.cg, start + 7, server, 1),
        "E",
        "a fourth UID of the range: the owner's budget of 3 is spent"
    );
    assert_eq!(pattern(&fx.cg, owner, server, 1), "E", "the owner too");
    assert_eq!(
        pattern(&fx.cg, start + 65_536, server, 1),
        "o",
        "the first UID past the range is its own"
    );
    let refused = agent.wait_events(
        |e| ev_u64(e, "uid") == Some(u64::from(start + 7)) && ev_str(e, "verdict") == "denied",
        1,
    );
    assert_eq!(
        ev_u64(&refused[0], "charged_uid"),
        Some(u64::from(owner)),
        "the event says who was charged: {}",
        refused[0]
    );

    // `subordinate_uids = "separate"`: each is its own again.
    std::fs::write(&policy, format!("subordinate_uids = \"separate\"\n{text}")).unwrap();
    agent.reload();
    let deadline = Instant::now() + Duration::from_secs(3);
    while pattern(&fx.cg, start + 20_000, server, 1) != "o" {
        assert!(Instant::now() < deadline, "\"separate\" not applied");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `uid_storm`: one connect from each of `count` UIDs from `first`, as root in the fixture's
/// cgroup, to port 2525 of its namespace (no listener: a SYN and an RST each), within `limit`.
/// Its summary, and how long it took.
fn uid_storm(
    fx: &Fixture,
    first: u32,
    count: u32,
    limit: Duration,
) -> (serde_json::Value, Duration) {
    let target = SocketAddr::new(IpAddr::V4(fx.ns.addr_v4()), 2525);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uid_storm"));
    cmd.args([target.to_string(), first.to_string(), count.to_string()]);
    antispam_tests::client::as_root_in_cgroup(&mut cmd, &fx.cg);
    let (status, out, took) = antispam_tests::client::run_bounded(&mut cmd, limit);
    assert!(status.is_some_and(|s| s.success()), "uid_storm: {out}");
    let line = out.lines().last().unwrap_or("{}");
    (serde_json::from_str(line).expect(line), took)
}

#[test]
fn the_key_map_holds_what_max_keys_asks_and_refuses_past_it() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-maxkeys");
    let policy = fx.policy("ports = [25, 2525]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let agent = Agent::start_with(
        &policy,
        &fx.cg,
        &fx.dir,
        &["--events", "denied", "--max-keys", "2048"],
    );
    let server = fx.smtp_v4();
    let victim = unique_uid();
    assert_eq!(
        pattern(&fx.cg, victim, server, 2),
        "oE",
        "the victim spends its budget"
    );
    // 2,100 more UIDs than fit: the cgroup's key and the victim's are in the map already.
    let count = 2_100u32;
    let first = 600_000_000 + (victim % 1000) * 10_000;
    let (r, _) = uid_storm(&fx, first, count, bound(Duration::from_secs(30)));
    let eperm = r["eperm"].as_u64().unwrap();
    assert_eq!(
        eperm,
        u64::from(count) - (2048 - 2),
        "each UID that found room got its budget; every one past the 2,048 keys is refused: {r}"
    );
    assert_eq!(
        pattern(&fx.cg, victim, server, 1),
        "E",
        "the victim's bucket is still empty"
    );
    let m = agent.metrics();
    assert_eq!(metric_sum(&m, "antispam_tracked_keys", &[]), 2048.0);
}

#[test]
fn a_storm_of_uids_neither_refills_a_victim_nor_gets_unlimited_budgets() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-storm");
    // Port 2525 of the namespace has no listener: each connect is one SYN and one RST.
    let policy = fx.policy("ports = [25, 2525]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let agent = Agent::start_with(&policy, &fx.cg, &fx.dir, &["--events", "denied"]);
    let server = fx.smtp_v4();
    let victim = unique_uid();
    assert_eq!(
        pattern(&fx.cg, victim, server, 2),
        "oE",
        "the victim spends its budget"
    );

    // More UIDs than the kernel keeps buckets for (262,144): with an LRU map the victim's
    // empty bucket would be evicted and come back full. A root in a user namespace with a
    // full subuid range can bring 65,536 UIDs per range; this stands in for several.
    let count = 270_000u32;
    let first = 500_000_000 + (victim % 1000) * 1_000_000;
    let (r, took) = uid_storm(&fx, first, count, Duration::from_secs(120));
    eprintln!("{count} UIDs, one connect each, in {took:?}: {r}");
    let eperm = r["eperm"].as_u64().unwrap();
    assert_eq!(r["other"], 0, "{r}");
    assert!(
        eperm >= u64::from(count) - 262_144,
        "past the map's size each new UID is refused (fail closed): {r}"
    );
    assert!(
        eperm < u64::from(count) - 250_000,
        "until then each UID got its budget: {r}"
    );
    assert_eq!(
        pattern(&fx.cg, victim, server, 1),
        "E",
        "the victim's empty bucket survived the storm"
    );
    // The agent has 270,000 decisions to take in first (minutes in an emulated VM).
    let caught_up = poll_until(
        bound(Duration::from_secs(5)),
        Duration::from_millis(200),
        || http_get(agent.metrics_addr, "/metrics").ok(),
    );
    assert!(
        caught_up.is_some(),
        "the agent does not answer after the storm"
    );
    let t = Instant::now();
    let st = agent.status_json();
    eprintln!("status with {} keys in {:?}", count, t.elapsed());
    let t = Instant::now();
    let m = agent.metrics();
    eprintln!("metrics ({} bytes) in {:?}", m.len(), t.elapsed());
    // Every entry is read back (the map is full: 262,144 keys, the cgroup's among them).
    assert_eq!(
        metric_sum(&m, "antispam_tracked_keys", &[]),
        262_144.0,
        "{}",
        m.lines()
            .filter(|l| l.starts_with("antispam_tracked_keys"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("kernel errors after the storm: {:#}", st["kernel_errors"]);
    let refused = poll_until(
        bound(Duration::from_secs(5)),
        Duration::from_millis(100),
        || {
            let m = agent.metrics();
            let n = metric_sum(
                &m,
                "antispam_mail_attempts_total",
                &[("reason", "state_error")],
            );
            (n >= eperm as f64).then_some(n)
        },
    );
    assert!(
        refused.is_some(),
        "refusals for a full map counted as state_error: {}",
        agent
            .metrics()
            .lines()
            .filter(|l| l.contains("state_error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let pid = agent.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    eprintln!(
        "agent {}",
        status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap_or("")
    );
}

#[test]
fn cgroups_made_while_the_agent_is_down_take_their_ancestors_rules() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-walk");
    let base = fx.cg.relative();
    let policy = fx.policy(&format!(
        "ports = [25]\n[default]\nrate = \"100/second\"\nburst = 100\n\n\
         [[limit]]\ncgroups = [\"{base}/tenant\"]\nrate = \"1/hour\"\nburst = 2\n"
    ));
    let tenant = fx.cg.child("tenant");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let uid = unique_uid();
    assert_eq!(
        pattern(&tenant, uid, server, 1),
        "o",
        "one of the tenant's 2"
    );
    // The agent dies (OOM, SIGKILL). A tenant with a delegated cgroup makes a child of its
    // own and moves into it: with no agent to file the new cgroup, the kernel finds the
    // tenant's rule on the way up.
    agent.kill();
    let escape = tenant.child("escape");
    let deeper = escape.child("deeper");
    assert_eq!(
        pattern(&deeper, unique_uid(), server, 2),
        "oE",
        "the new cgroup shares the tenant's budget (1 left)"
    );
    assert_eq!(
        pattern(&tenant, uid, server, 1),
        "E",
        "the tenant's is spent"
    );
    let other = fx.cg.child("other");
    assert_eq!(
        pattern(&other, unique_uid(), server, 3),
        "ooo",
        "a cgroup outside the tenant has the default"
    );
}

#[test]
fn a_containers_own_loopback_is_not_the_hosts_mta() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-netns");
    // Submissions to the host's MTA have room; mail sent out directly has one.
    let policy = fx.policy(
        "ports = [25]\n[default]\nrate = \"100/hour\"\nburst = 100\n\
         [default.path.direct]\nrate = \"1/hour\"\nburst = 1\n",
    );
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    // In the container's network namespace, 127.0.0.1:25 is whatever the container put there
    // (a relay, a DNAT rule to anywhere): it is not a submission to the host's MTA.
    let relay = SmtpSink::start(&fx.ns, IpAddr::V4(Ipv4Addr::LOCALHOST), 25);
    let uid = unique_uid();
    let got: String = connect_probe_in_netns(&fx.ns, &fx.cg, uid, relay.addr(), 2)
        .iter()
        .map(|a| {
            if a.ok {
                'o'
            } else if a.is_eperm() {
                'E'
            } else {
                '?'
            }
        })
        .collect();
    assert_eq!(got, "oE", "charged as direct: a budget of 1");
    let events = agent.wait_events(by_uid(uid), 2);
    assert!(
        events.iter().all(|e| ev_str(e, "path") == "direct"),
        "{}",
        show(&events)
    );
}

#[test]
fn the_kill_switch_ends_sessions_in_other_network_namespaces() {
    // (Where the agent cannot join a namespace, the packet program is attached to drop the
    // session's packets: what_the_kill_switch_cannot_end_is_said_and_still_stopped.)
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-ks");
    let policy = fx.policy("ports = [25]\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let relay = SmtpSink::start(&fx.ns, IpAddr::V4(Ipv4Addr::LOCALHOST), 25);
    let go = fx.dir.path().join("go");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp_session"));
    cmd.arg(relay.addr().to_string())
        .arg(&go)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    antispam_tests::client::as_user_in_cgroup_and_netns(&mut cmd, &fx.cg, unique_uid(), &fx.ns);
    let session = cmd.spawn().expect("smtp_session");
    std::thread::sleep(Duration::from_millis(500)); // it has read its banner
    let (code, out) = ctl(
        &agent,
        &["kill-switch", "on", "--reason", "outbreak in a container"],
    );
    assert_eq!(code, Some(0), "{out}");
    eprintln!("kill-switch: {}", out.trim());
    // sock_diag sees one namespace at a time: the agent joins the container's to end it.
    assert!(
        out.contains("1 open SMTP session(s) ended in 2 network namespaces"),
        "{out}"
    );
    std::fs::write(&go, "").unwrap();
    let out = session.wait_with_output().expect("smtp_session output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(last["banner"], true, "{text}");
    assert_eq!(
        last["after"], "error",
        "the session in the container's namespace is ended, not left hanging: {text}"
    );
}

#[test]
fn what_the_kill_switch_cannot_end_is_said_and_still_stopped() {
    if !require_kernel() {
        return;
    }
    // An agent with only the capabilities it needs to enforce (those of the systemd unit):
    // joining a container's network namespace needs CAP_SYS_ADMIN, which it lacks.
    let fx = Fixture::new("hostile-ks-caps");
    let policy = fx.policy("ports = [25]\n");
    let wrapper = [
        "setpriv",
        "--bounding-set=-all,+bpf,+net_admin,+perfmon",
        "--inh-caps=-all",
        "--no-new-privs",
    ];
    let agent = Agent::start_via(&wrapper, &policy, &fx.cg, &fx.dir, &[]);
    let relay = SmtpSink::start(&fx.ns, IpAddr::V4(Ipv4Addr::LOCALHOST), 25);
    let go = fx.dir.path().join("go");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp_session"));
    cmd.arg(relay.addr().to_string())
        .arg(&go)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    antispam_tests::client::as_user_in_cgroup_and_netns(&mut cmd, &fx.cg, unique_uid(), &fx.ns);
    let session = cmd.spawn().expect("smtp_session");
    std::thread::sleep(Duration::from_millis(500));
    let (code, out) = ctl(&agent, &["kill-switch", "on", "--reason", "outbreak"]);
    assert_eq!(code, Some(0), "{out}");
    eprintln!("kill-switch: {}", out.trim());
    assert!(out.contains("their sessions' packets are dropped"), "{out}");
    let st = agent.status_json();
    let said = st["sessions_not_ended"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(said.starts_with("kill switch: "), "status: {:#}", st);
    assert!(
        st["packet_program"]
            .as_str()
            .is_some_and(|w| w.contains("could not be ended")),
        "the packet program runs to drop what could not be ended: {:#}",
        st["packet_program"]
    );
    std::fs::write(&go, "").unwrap();
    let out = session.wait_with_output().expect("smtp_session output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
    assert_ne!(
        last["after"], "reply",
        "the session goes no further: {text}"
    );
    assert!(
        agent.status_json()["kernel_errors"]["suspended_packets_dropped"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    // Once nothing refuses those sessions any more, nothing runs per packet again.
    let (code, out) = ctl(&agent, &["kill-switch", "off", "--reason", "contained"]);
    assert_eq!(code, Some(0), "{out}");
    let st = agent.status_json();
    assert!(
        st["packet_program"].is_null() && st["sessions_not_ended"].is_null(),
        "detached with the kill switch off: {:#}",
        st
    );
}

#[test]
fn block_list_lines_never_reach_the_logs() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-blockfile");
    let list = fx.dir.write("blocked.txt", "192.0.2.0/24\n");
    let policy = fx.policy(&format!(
        "ports = [25]\n[[block]]\nfiles = [\"{}\"]\n",
        list.display()
    ));
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    // Someone points the list at a secret (or a symlink swap does): the reload fails, and
    // says where, without the line.
    let secret = "root:hunter2-not-an-address:0:0";
    std::fs::write(&list, format!("192.0.2.0/24\n{secret}\n")).unwrap();
    agent.reload();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !agent.stderr().contains("blocked.txt:2:1") {
        assert!(
            Instant::now() < deadline,
            "the failed reload is not reported; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let audit = std::fs::read_to_string(&agent.audit_path).unwrap();
    let events = std::fs::read_to_string(&agent.log_path).unwrap_or_default();
    for (what, text) in [
        ("stderr", agent.stderr()),
        ("audit log", audit),
        ("event log", events),
    ] {
        assert!(
            !text.contains("hunter2"),
            "the line is in the {what}:\n{text}"
        );
    }
}

/// Can root in `cg` make a raw socket of IPv`family` and `protocol`? (made, errno)
fn raw_socket(cg: &TestCgroup, family: u8, protocol: i32) -> (bool, i64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raw_syn"));
    cmd.args(["--socket", &family.to_string(), &protocol.to_string()]);
    antispam_tests::client::as_root_in_cgroup(&mut cmd, cg);
    let (status, out, _) = antispam_tests::client::run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "raw_syn --socket: {out}"
    );
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).expect(&out);
    (r["made"].as_bool().unwrap(), r["errno"].as_i64().unwrap())
}

/// What raw_syn saw: (socket made, sent, errno, reply).
fn raw_syn(cg: &TestCgroup, to: SocketAddr) -> (bool, bool, i64, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raw_syn"));
    cmd.arg(to.to_string());
    antispam_tests::client::as_root_in_cgroup(&mut cmd, cg);
    let (status, out, _) = antispam_tests::client::run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "raw_syn: {out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).expect(&out);
    (
        r["made"].as_bool().unwrap(),
        r["sent"].as_bool().unwrap(),
        r["errno"].as_i64().unwrap(),
        r["reply"].as_str().unwrap().to_string(),
    )
}

#[test]
fn raw_sockets_cannot_speak_smtp() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-raw");
    let smtp = fx.smtp_v4();
    // A container's root keeps CAP_NET_RAW (Docker's default): without the agent, its own
    // TCP reaches the server.
    assert_eq!(raw_syn(&fx.cg, smtp).3, "synack", "the control run");
    let policy = fx.policy("ports = [25]\n[[allow]]\nusers = [0]\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    // Even allow-listed (root here), no raw TCP socket is made: connect() would never be
    // called, so nothing could decide what it sends. Refused when made, nothing runs per
    // packet.
    let (made, sent, errno, reply) = raw_syn(&fx.cg, smtp);
    eprintln!("raw SYN to {smtp}: socket made {made}, sent {sent}, errno {errno}, reply {reply}");
    assert_eq!(
        (made, sent, errno, reply.as_str()),
        (false, false, i64::from(libc::EPERM), "none"),
        "socket(AF_INET, SOCK_RAW, IPPROTO_TCP) fails with EPERM"
    );
    // Any other raw IP socket could write whole IP packets (IP_HDRINCL), TCP included; ICMP
    // ones are made as before (mtr, ping without ICMP datagram sockets).
    let eperm = (false, i64::from(libc::EPERM));
    for (family, protocol, want) in [
        (4, libc::IPPROTO_RAW, eperm),
        (4, libc::IPPROTO_UDP, eperm),
        (6, libc::IPPROTO_TCP, eperm),
        (6, libc::IPPROTO_UDP, eperm),
        (4, libc::IPPROTO_ICMP, (true, 0)),
        (6, libc::IPPROTO_ICMPV6, (true, 0)),
    ] {
        assert_eq!(
            raw_socket(&fx.cg, family, protocol),
            want,
            "raw IPv{family} socket of protocol {protocol}"
        );
    }
    let st = agent.status_json();
    assert!(
        st["packet_program"].is_null(),
        "nothing runs per packet: {:#}",
        st["packet_program"]
    );
    assert!(
        st["kernel_errors"]["raw_sockets_refused"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{:#}",
        st["kernel_errors"]
    );
}

/// What packet_syn saw: (sent, reply), run as root in `cg` inside `ns`, to `to`.
fn packet_syn(fx: &Fixture, to: SocketAddr) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_packet_syn"));
    cmd.args([
        fx.ns.peer_if().to_string(),
        fx.ns.host_mac(),
        fx.ns.addr_v4().to_string(),
        to.to_string(),
    ]);
    let file = std::fs::File::open(fx.ns.path()).unwrap();
    // SAFETY: setns(2) on a descriptor opened before fork.
    unsafe {
        use std::os::fd::AsRawFd as _;
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    antispam_tests::client::as_root_in_cgroup(&mut cmd, &fx.cg);
    let (status, out, _) = antispam_tests::client::run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "packet_syn: {out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).expect(&out);
    (
        r["sent"].as_bool().unwrap(),
        r["reply"].as_str().unwrap().to_string(),
    )
}

fn filters(dev: &str) -> String {
    run_ok("tc", &["filter", "show", "dev", dev, "ingress"])
}

#[test]
fn packet_sockets_in_a_container_cannot_open_smtp() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-packet");
    // The server is on the host's end of the container's veth pair (an address of the test's).
    let host = SmtpSink::start_on_host(&fx.ns, 25);
    let closed = SocketAddr::new(host.addr().ip(), 2626);
    // A container's root writes frames on a packet socket (past connect(), past the IP stack,
    // past the device's qdisc): without the agent the server answers.
    assert_eq!(
        packet_syn(&fx, host.addr()),
        (true, "synack".into()),
        "the control run"
    );

    // A process of the container's, under the attach point: the agent finds its namespace
    // and puts the SYN check on the host's end of its veth pair.
    let mut resident = Command::new("sleep");
    resident.arg("60");
    antispam_tests::client::as_user_in_cgroup_and_netns(
        &mut resident,
        &fx.cg,
        unique_uid(),
        &fx.ns,
    );
    let mut resident = resident.spawn().expect("sleep");
    let policy = fx.policy("ports = [25]\n");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let dev = fx.ns.host_if().to_string();
    let on = poll_until(
        bound(Duration::from_secs(3)),
        Duration::from_millis(100),
        || {
            let st = agent.status_json();
            let devices = st["syn_check"]["devices"].as_array()?.clone();
            devices
                .iter()
                .any(|d| d["device"] == dev.as_str())
                .then_some(st)
        },
    );
    assert!(
        on.is_some(),
        "the SYN check is not on {dev}: {:#}",
        agent.status_json()["syn_check"]
    );
    eprintln!("{}", filters(&dev).trim());

    assert_eq!(
        packet_syn(&fx, host.addr()),
        (true, "none".into()),
        "a SYN no socket made goes nowhere"
    );
    assert_eq!(
        packet_syn(&fx, closed).1,
        "rst",
        "to a port that is not SMTP it goes on (a closed port answers RST)"
    );
    let uid = unique_uid();
    let got = connect_probe_in_netns(&fx.ns, &fx.cg, uid, host.addr(), 1);
    assert!(
        got[0].ok,
        "connect() from the container is decided and goes on: {got:?}"
    );
    let st = agent.status_json();
    assert!(
        st["kernel_errors"]["packet_smtp_syns_dropped"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{:#}",
        st["kernel_errors"]
    );

    // The agent dies: the check stays. The next agent takes the filter over in place (one
    // filter, its program). Uninstall takes it off.
    agent.kill();
    assert_eq!(packet_syn(&fx, host.addr()).1, "none", "with no agent");
    let mut agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let taken = poll_until(
        bound(Duration::from_secs(3)),
        Duration::from_millis(100),
        || {
            let st = agent.status_json();
            let devices = st["syn_check"]["devices"].as_array()?.clone();
            devices
                .iter()
                .any(|d| d["device"] == dev.as_str())
                .then_some(())
        },
    );
    assert!(taken.is_some(), "{:#}", agent.status_json()["syn_check"]);
    let shown = filters(&dev);
    assert_eq!(
        shown.matches("name antispam_syn").count(),
        1,
        "one filter after the takeover:\n{shown}"
    );
    assert_eq!(packet_syn(&fx, host.addr()).1, "none", "after the takeover");
    agent.kill();
    let out = Command::new(antispam_bin())
        .args(["uninstall", "--reason", "test over", "--pin-dir"])
        .arg(fx.dir.pins())
        .arg("--audit-log")
        .arg(&agent.audit_path)
        .output()
        .expect("antispam uninstall");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("removed the SYN check from 1"), "{text}");
    assert!(!filters(&dev).contains("antispam_syn"), "{}", filters(&dev));
    assert_eq!(packet_syn(&fx, host.addr()).1, "synack", "uninstalled");
    let _ = resident.kill();
    let _ = resident.wait();
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn half_open_http_requests_do_not_stop_the_agent() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-http");
    let text = "ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 5\n";
    let policy = fx.policy(text);
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let pid = agent.pid().unwrap();
    let fds_before = open_fds(pid);
    // An unprivileged user opens a thousand connections to the metrics port and sends none
    // of them a whole request.
    let attacker = unique_uid();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slowloris"));
    cmd.args([agent.metrics_addr.to_string(), "1100".into(), "8000".into()])
        .uid(attacker)
        .gid(attacker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut storm = cmd.spawn().expect("slowloris");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(storm.stdout.take().unwrap()));
    let first = lines.next().expect("slowloris reports").unwrap();
    eprintln!("attacker: {first}");
    let opened: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(opened["opened"].as_u64().unwrap() >= 500, "{first}");

    // Meanwhile: operators act, reloads apply, the agent's descriptors stay bounded.
    let fds = open_fds(pid);
    eprintln!("agent fds: {fds_before} before, {fds} under the storm");
    assert!(
        fds < fds_before + 2 * antispam_http_max() + 16,
        "descriptors grew from {fds_before} to {fds}"
    );
    let t = Instant::now();
    let victim = unique_uid();
    let (code, out) = ctl(
        &agent,
        &[
            "suspend",
            "--uid",
            &victim.to_string(),
            "--reason",
            "during a storm",
        ],
    );
    eprintln!("suspend under the storm took {:?}", t.elapsed());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        t.elapsed() < bound(Duration::from_secs(2)),
        "{:?}",
        t.elapsed()
    );
    std::fs::write(&policy, text.replace("burst = 5", "burst = 6")).unwrap();
    agent.reload();
    let reloaded = poll_until(
        bound(Duration::from_secs(5)),
        Duration::from_millis(100),
        || (agent.status_json()["generation"] == 2).then_some(()),
    );
    assert!(
        reloaded.is_some(),
        "the reload was not applied under the storm"
    );
    assert_eq!(
        pattern(&fx.cg, unique_uid(), fx.smtp_v4(), 1),
        "o",
        "enforcing as before"
    );

    // Slots free up as the headers time out; the storm ends; metrics are served again.
    let _ = lines.next();
    let _ = storm.wait();
    let back = poll_until(
        bound(Duration::from_secs(10)),
        Duration::from_millis(200),
        || {
            http_get(agent.metrics_addr, "/metrics")
                .ok()
                .filter(|(c, _)| *c == 200)
        },
    );
    let (_, m) = back.expect("metrics served again after the storm");
    let refused = metric_value(&m, "antispam_http_connections_refused_total", &[]).unwrap_or(0.0);
    eprintln!("connections closed at once: {refused}");
    assert!(refused > 0.0);
    let accept_lines = agent.stderr().matches("metrics accept").count();
    assert!(accept_lines < 10, "{accept_lines} accept-error lines");
}

/// The agent's cap on concurrent HTTP connections (`agent::http::MAX_CONNECTIONS`).
fn antispam_http_max() -> usize {
    32
}

/// An nftables table of the test's, deleted on drop.
struct NftTable(String);

impl Drop for NftTable {
    fn drop(&mut self) {
        run_quiet("nft", &["delete", "table", "inet", &self.0]);
    }
}

#[test]
fn the_documented_nftables_rule_keeps_the_metrics_port_for_prometheus() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("hostile-nft");
    let agent = Agent::start(&fx.policy("ports = [25]\n"), &fx.cg, &fx.dir);
    // The rule exactly as docs/operations.md has it, for this agent's port, a table name of
    // the test's, and a UID of the test's in place of the `prometheus` user.
    let doc = std::fs::read_to_string(workspace_root().join("docs/operations.md")).unwrap();
    let rule = doc
        .split("```nft\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("an nft block in docs/operations.md");
    let (prometheus, stranger) = (unique_uid(), unique_uid());
    let table = format!("antispam_test_{}", std::process::id());
    let text = rule
        .replace("antispam_metrics", &table)
        .replace("9897", &agent.metrics_addr.port().to_string())
        .replace("prometheus", &prometheus.to_string());
    let file = fx.dir.write("metrics.nft", &text);
    let _table = NftTable(table.clone());
    run_ok("nft", &["-f", &file.display().to_string()]);
    let reach = |uid: u32| tcp_connect_as(&fx.cg, uid, agent.metrics_addr);
    assert!(reach(prometheus).is_ok(), "prometheus is let through");
    let e = reach(stranger).expect_err("another user is not");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    assert_eq!(agent.get("/healthz").0, 200, "root is let through");
}
