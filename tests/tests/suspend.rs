//! Operators' actions: suspensions that bite at once (new connects refused, open sessions
//! stopped), that expire by themselves, the kill switch, and who may use the control socket.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use antispam_tests::*;

fn policy(fx: &Fixture, extra: &str) -> std::path::PathBuf {
    fx.policy(&format!(
        "ports = [25]\n[default]\nrate = \"100/second\"\nburst = 100\n{extra}"
    ))
}

#[test]
fn suspending_a_uid_bites_at_once_and_is_audited() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("suspend");
    let agent = Agent::start(&policy(&fx, ""), &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let uid = unique_uid();
    assert!(tcp_probe_once(&fx.cg, uid, server).ok);

    let u = uid.to_string();
    let t = Instant::now();
    let (code, out) = ctl(
        &agent,
        &["suspend", "--uid", &u, "--reason", "spam outbreak"],
    );
    assert_eq!(code, Some(0), "{out}");
    let refused = tcp_probe_once(&fx.cg, uid, server);
    eprintln!("suspend command → refused connect: {:?}", t.elapsed());
    assert!(refused.is_eperm(), "suspended at once: {refused:?}");
    assert!(
        tcp_probe_once(&fx.cg, unique_uid(), server).ok,
        "other UIDs unaffected"
    );
    let ev = agent.wait_events(|e| ev_str(e, "reason") == "suspended", 1);
    assert_eq!(ev.len(), 1, "event with reason suspended");
    let st = agent.status_json();
    assert_eq!(
        st["suspensions"][0]["target"],
        format!("uid {uid}"),
        "{st:#}"
    );
    assert_eq!(st["suspensions"][0]["by"], "root");
    assert_eq!(
        metric_value(&agent.metrics(), "antispam_suspensions_active", &[]),
        Some(1.0)
    );
    // A UID with a name is shown with it (test UIDs have none): nobody, 65534 on Debian.
    let (code, out) = ctl(
        &agent,
        &[
            "suspend", "--uid", "nobody", "--reason", "named", "--for", "1m",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let st = agent.status_json();
    let targets: Vec<&str> = st["suspensions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["target"].as_str())
        .collect();
    assert!(targets.contains(&"uid 65534 (nobody)"), "{targets:?}");
    let (code, text) = ctl(&agent, &["status"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("uid 65534 (nobody)"), "{text}");
    let (code, out) = ctl(
        &agent,
        &["unsuspend", "--uid", "nobody", "--reason", "named"],
    );
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = ctl(
        &agent,
        &["unsuspend", "--uid", &u, "--reason", "cleaned up"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "allowed again after unsuspend"
    );
    let (code, out) = ctl(&agent, &["unsuspend", "--uid", &u, "--reason", "twice"]);
    assert_eq!(code, Some(1), "not suspended any more: {out}");

    // A timed suspension ends by itself.
    let (code, out) = ctl(
        &agent,
        &[
            "suspend",
            "--uid",
            &u,
            "--reason",
            "cool down",
            "--for",
            "1s",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(tcp_probe_once(&fx.cg, uid, server).is_eperm());
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        tcp_probe_once(&fx.cg, uid, server).ok,
        "suspension for 1s is over"
    );

    let deadline = Instant::now() + Duration::from_secs(3);
    let events = loop {
        let a = agent.audit_events();
        if a.iter().any(|r| r["event"] == "suspension_expired") || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let names: Vec<&str> = events
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agent_start",
            "suspend",
            // nobody's, shown with its name
            "suspend",
            "unsuspend",
            "unsuspend",
            "suspend",
            "suspension_expired"
        ],
        "{events:#?}"
    );
    assert_eq!(events[1]["details"]["by"]["user"], "root");
    assert_eq!(events[1]["details"]["reason"], "spam outbreak");
    assert_eq!(events[4]["details"]["suspension_reason"], "spam outbreak");
}

#[test]
fn suspending_a_cgroup_covers_its_descendants_and_stops_open_sessions() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("suspend");
    let ctr = fx.cg.child("ctr");
    let inner = ctr.child("inner");
    let other = fx.cg.child("other");
    let agent = Agent::start(&policy(&fx, ""), &fx.cg, &fx.dir);
    let server = fx.smtp_v4();
    let uid = unique_uid();

    // Two SMTP sessions open before the suspension: one in the container, one outside.
    let go = fx.dir.path().join("go");
    let session = |cg: &TestCgroup| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp_session"));
        cmd.arg(server.to_string())
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        antispam_tests::client::as_user_in_cgroup(&mut cmd, cg, uid);
        cmd.spawn().expect("smtp_session")
    };
    let s_in = session(&inner);
    let s_out = session(&other);
    std::thread::sleep(Duration::from_millis(500)); // both have read their banner

    let t = Instant::now();
    let (code, out) = ctl(
        &agent,
        &[
            "suspend",
            "--cgroup",
            &ctr.relative(),
            "--reason",
            "container spamming",
        ],
    );
    // The command returns once the sessions are destroyed.
    eprintln!("suspend command → open session ended: {:?}", t.elapsed());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("1 open SMTP session(s) ended"),
        "the container's session is ended: {out}"
    );
    assert!(
        tcp_probe_once(&inner, uid, server).is_eperm(),
        "a descendant is suspended too"
    );
    let late = ctr.child("late");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        tcp_probe_once(&late, unique_uid(), server).is_eperm(),
        "a cgroup created later is too"
    );
    assert!(
        tcp_probe_once(&other, uid, server).ok,
        "the same UID elsewhere is not"
    );

    std::fs::write(&go, "").unwrap();
    let result = |child: std::process::Child| {
        let out = child.wait_with_output().expect("smtp_session output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let last: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        (
            last["banner"].clone(),
            last["after"].as_str().unwrap_or("").to_string(),
            text,
        )
    };
    let (banner, after, text) = result(s_in);
    assert_eq!(banner, true, "{text}");
    assert_eq!(
        after, "error",
        "the open session in the suspended container is ended (not left hanging): {text}"
    );
    let (_, after, text) = result(s_out);
    assert_eq!(
        after, "reply",
        "the session outside the container is untouched: {text}"
    );
    let st = agent.status_json();
    assert!(
        st["packet_program"].is_null() && st["sessions_not_ended"].is_null(),
        "every session was ended: nothing runs per packet: {st:#}"
    );
}

#[test]
fn kill_switch_lets_only_allow_listed_uids_through() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("killswitch");
    let mta = unique_uid();
    let agent = Agent::start(
        &policy(&fx, &format!("[[allow]]\nusers = [{mta}]\n")),
        &fx.cg,
        &fx.dir,
    );
    let server = fx.smtp_v4();
    let user = unique_uid();
    // Sessions open before the kill switch: the user's ends, the MTA's goes on.
    let go = fx.dir.path().join("go");
    let session = |uid: u32| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp_session"));
        cmd.arg(server.to_string())
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        antispam_tests::client::as_user_in_cgroup(&mut cmd, &fx.cg, uid);
        cmd.spawn().expect("smtp_session")
    };
    let (s_user, s_mta) = (session(user), session(mta));
    std::thread::sleep(Duration::from_millis(500)); // both have read their banner
    let (code, out) = ctl(
        &agent,
        &["kill-switch", "on", "--reason", "outbreak at 03:00"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 open SMTP session(s) ended"), "{out}");
    std::fs::write(&go, "").unwrap();
    let after = |child: std::process::Child| {
        let out = child.wait_with_output().expect("smtp_session output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let last: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        last["after"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(after(s_user), "error", "the user's open session is ended");
    assert_eq!(
        after(s_mta),
        "reply",
        "the allow-listed MTA's session goes on"
    );
    assert!(
        tcp_probe_once(&fx.cg, user, server).is_eperm(),
        "kill switch refuses everyone"
    );
    assert!(
        tcp_probe_once(&fx.cg, mta, server).ok,
        "except allow-listed UIDs"
    );
    let ev = agent.wait_events(|e| ev_str(e, "reason") == "kill_switch", 1);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        metric_value(&agent.metrics(), "antispam_kill_switch", &[]),
        Some(1.0)
    );
    assert_eq!(agent.status_json()["kill_switch"]["on"], true);
    let (code, out) = ctl(&agent, &["kill-switch", "off", "--reason", "contained"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        tcp_probe_once(&fx.cg, user, server).ok,
        "back to the policy"
    );
    let events: Vec<String> = agent
        .audit_events()
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["agent_start", "kill_switch", "kill_switch"]);
}

#[test]
fn only_root_and_operators_may_use_the_control_socket() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("operators");
    // "nogroup" (gid 65534) stands in for the operators group: it exists on every Debian host.
    let agent = Agent::start_with(
        &policy(&fx, ""),
        &fx.cg,
        &fx.dir,
        &["--operators-group", "nogroup"],
    );
    let nogroup = 65534;
    let (stranger, operator) = (unique_uid(), unique_uid());
    let target = unique_uid().to_string();
    let args = ["suspend", "--uid", &target, "--reason", "test"];

    // The socket file keeps strangers out…
    let (code, out) = ctl_as(&agent, stranger, stranger, &[], &args);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("permission denied"), "{out}");
    // …an operator (by supplementary group) gets in, and is named in the audit log.
    let (code, out) = ctl_as(&agent, operator, operator, &[nogroup], &args);
    assert_eq!(code, Some(0), "operator: {out}");
    // If the file's permissions are loosened, the peer check still refuses, and is audited.
    std::fs::set_permissions(
        &agent.control_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let (code, out) = ctl_as(
        &agent,
        stranger,
        stranger,
        &[],
        &["unsuspend", "--uid", &target, "--reason", "x"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("neither root nor in the operators group"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let audit = agent.audit_events();
    let suspend = audit
        .iter()
        .find(|r| r["event"] == "suspend")
        .expect("suspend audited");
    assert_eq!(suspend["details"]["by"]["uid"], operator);
    let denied = audit
        .iter()
        .find(|r| r["event"] == "control_denied")
        .expect("refusal audited");
    assert_eq!(denied["details"]["by"]["uid"], stranger);
    assert_eq!(
        agent.status_json()["suspensions"][0]["target"],
        format!("uid {target}"),
        "still suspended"
    );
}
