//! Self-tests of the harness guards (no agent needed): cgroups are made and removed, the netns
//! is reachable, smtp-sink answers, and clients really run as the UID inside the cgroup.

use std::net::{IpAddr, SocketAddr};

use antispam_tests::*;

#[test]
fn cgroup_guard_creates_and_removes() {
    if !require_kernel() {
        return;
    }
    let (parent, child_path, run_dir);
    {
        let cg = TestCgroup::new("h");
        let child = cg.child("c");
        let grandchild = child.child("g");
        parent = cg.path().to_path_buf();
        child_path = child.path().to_path_buf();
        run_dir = parent.parent().unwrap().to_path_buf();
        assert!(parent.join("cgroup.procs").exists());
        assert!(
            cg.relative().starts_with("/antispam-test-"),
            "{}",
            cg.relative()
        );
        assert!(child.relative().ends_with("/h/c"));
        assert!(cg.id() > 1);
        assert!(grandchild.path().exists());
        // A process left behind in the grandchild must be killed on drop.
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        antispam_tests::client::as_user_in_cgroup(&mut cmd, &grandchild, unique_uid());
        let mut sleeper = cmd.spawn().expect("spawn sleep");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(grandchild.pids(), vec![sleeper.id() as i32]);
        // Drop the parent guard before the children on purpose.
        drop(cg);
        assert!(!child_path.exists());
        let _ = sleeper.wait();
        drop(grandchild);
        drop(child);
    }
    assert!(!parent.exists());
    assert!(
        !run_dir.exists(),
        "run dir {} left behind",
        run_dir.display()
    );
}

#[test]
fn netns_sink_and_clients_work_without_agent() {
    if !require_kernel() {
        return;
    }
    let name;
    let host_if;
    {
        let ns = TestNetns::new();
        name = ns.name().to_string();
        host_if = ns.host_if().to_string();
        let s4 = SmtpSink::start(&ns, IpAddr::V4(ns.addr_v4()), 25);
        let s6 = SmtpSink::start(&ns, IpAddr::V6(ns.addr_v6()), 25);
        let _s8080 = SmtpSink::start(&ns, IpAddr::V4(ns.addr_v4()), 8080);
        let cg = TestCgroup::new("clients");
        let uid = unique_uid();

        let r = swaks(&cg, uid, s4.addr().ip(), 25);
        eprintln!("swaks v4 as uid {uid}: ok={} in {:?}", r.ok, r.elapsed);
        assert!(r.ok, "swaks v4 failed:\n{}", r.output);
        assert!(!r.eperm);
        let r = swaks(&cg, uid, s6.addr().ip(), 25);
        eprintln!("swaks v6 as uid {uid}: ok={} in {:?}", r.ok, r.elapsed);
        assert!(r.ok, "swaks v6 failed:\n{}", r.output);

        let d = tcp_connect_as(&cg, uid, s4.addr()).expect("tcp connect v4");
        eprintln!("connect_probe v4: {d:?}");
        tcp_connect_as(&cg, uid, s6.addr()).expect("tcp connect v6");
        let mapped = SocketAddr::new(IpAddr::V6(ns.addr_v4_mapped()), 25);
        tcp_connect_as(&cg, uid, mapped).expect("tcp connect v4-mapped");
        tcp_connect_as(&cg, uid, SocketAddr::new(IpAddr::V4(ns.addr_v4()), 8080))
            .expect("tcp connect 8080");
        udp_send_as(&cg, uid, SocketAddr::new(IpAddr::V4(ns.addr_v4()), 25)).expect("udp send");
        let many = connect_probe_as(
            &cg,
            uid,
            s4.addr(),
            5,
            ProbeOptions {
                smtp: true,
                ..Default::default()
            },
        );
        assert!(many.iter().all(|a| a.ok), "{many:?}");
        // Nothing listens on port 26: the errno must come through (ECONNREFUSED, not EPERM).
        let e =
            tcp_connect_as(&cg, uid, SocketAddr::new(IpAddr::V4(ns.addr_v4()), 26)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");

        // The client really ran as the uid inside the cgroup.
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "id -u; id -g; id -G; cat /proc/self/cgroup | grep '^0::'",
        ]);
        antispam_tests::client::as_user_in_cgroup(&mut cmd, &cg, uid);
        let (st, out, _) =
            antispam_tests::client::run_bounded(&mut cmd, std::time::Duration::from_secs(5));
        assert!(st.unwrap().success(), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], uid.to_string(), "{out}");
        assert_eq!(lines[1], uid.to_string(), "{out}");
        assert_eq!(lines[2], uid.to_string(), "supplementary groups: {out}");
        assert_eq!(lines[3], format!("0::{}", cg.relative()), "{out}");
    }
    let list = run_ok("ip", &["netns", "list"]);
    assert!(!list.contains(&name), "netns {name} left behind: {list}");
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&host_if)
            .exists(),
        "veth {host_if} left behind"
    );
}

#[test]
fn private_postfix_relays_sendmail_and_local_smtp_without_agent() {
    use std::time::{Duration, Instant};
    if !require_kernel() {
        return;
    }
    let host_before = HostPostfixState::capture();
    let uid = unique_uid();
    let (mount_ns, pids);
    {
        let dir = TestDir::new();
        let ns = TestNetns::new();
        let sink = SmtpSink::start_counting(&ns, IpAddr::V4(ns.addr_v4()), 25, &dir);
        let cg = TestCgroup::new("postfix");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
        let pf = PrivatePostfix::start(&dir, sink.addr(), Some(listen));
        eprintln!(
            "private Postfix ready in {:?} (pid {}, smtpd on {listen})",
            pf.started_in(),
            pf.pid()
        );
        assert_eq!(pf.smtp_addr(), Some(listen));
        mount_ns = pf.mount_ns();
        pids = pf.processes();
        assert!(
            pids.contains(&(pf.pid() as i32)),
            "pid {} not in the instance's namespace: {pids:?}",
            pf.pid()
        );
        // The bind mount over /etc/postfix stays inside the instance's namespace.
        assert_eq!(HostPostfixState::capture(), host_before, "while running");

        // 3 messages by sendmail, each waited for: measures one delivery.
        for i in 0..3 {
            let t0 = Instant::now();
            let r = pf.sendmail_as(&cg, uid, "x@example.test", &format!("sendmail message {i}"));
            assert!(
                r.ok && !r.eperm,
                "sendmail #{i} as uid {uid} failed ({:?}):\n{}\n{}",
                r.status,
                r.output,
                pf.diagnostics()
            );
            let got = sink.wait_messages(i + 1, Duration::from_secs(20));
            assert_eq!(
                got,
                i + 1,
                "sendmail #{i} not delivered within 20 s\n{}",
                pf.diagnostics()
            );
            eprintln!(
                "sendmail #{i}: sendmail took {:?}, delivered to the sink after {:?}",
                r.elapsed,
                t0.elapsed()
            );
        }
        // 2 messages by SMTP to the loopback smtpd.
        for i in 0..2 {
            let t0 = Instant::now();
            let r = pf.submit_smtp_as(&cg, uid, "x@example.test", &format!("smtp message {i}"));
            assert!(
                r.ok && !r.eperm,
                "swaks #{i} to {listen} as uid {uid} failed:\n{}\n{}",
                r.output,
                pf.diagnostics()
            );
            let got = sink.wait_messages(4 + i, Duration::from_secs(20));
            assert_eq!(
                got,
                4 + i,
                "SMTP #{i} not delivered within 20 s\n{}",
                pf.diagnostics()
            );
            eprintln!(
                "SMTP #{i}: swaks took {:?}, delivered to the sink after {:?}",
                r.elapsed,
                t0.elapsed()
            );
        }
        // Exactly 5: nothing more arrives.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(sink.messages(), 5, "{}", pf.diagnostics());
        assert!(
            pf.wait_queue_empty(Duration::from_secs(10)),
            "{} files left in the private queue\n{}",
            pf.queue_files(),
            pf.diagnostics()
        );

        let pickup_uid = format!(" uid={uid} ");
        let relay = format!("relay={0}[{0}]:25", ns.addr_v4());
        let count = |log: &str, a: &str, b: &str| {
            log.lines()
                .filter(|l| l.contains(a) && l.contains(b))
                .count()
        };
        let log = pf.wait_log(Duration::from_secs(5), |log| {
            count(log, "postfix/pickup[", &pickup_uid) >= 3
                && count(log, &relay, "status=sent") >= 5
        });
        assert_eq!(
            count(&log, "postfix/pickup[", &pickup_uid),
            3,
            "pickup uid={uid} lines in the maillog:\n{log}"
        );
        assert_eq!(
            count(&log, &relay, "status=sent"),
            5,
            "status=sent via {relay} in the maillog:\n{log}"
        );
        let texts = sink.message_texts();
        let from_uid = format!("X-Mail-Args: <uid{uid}@example.test>");
        assert_eq!(
            texts.iter().filter(|t| t.contains(&from_uid)).count(),
            5,
            "{texts:#?}"
        );
        assert_eq!(
            texts
                .iter()
                .filter(|t| t.contains(&format!("from userid {uid}")))
                .count(),
            3,
            "sendmail messages carry the submitting uid: {texts:#?}"
        );
        assert_eq!(
            system_maildrop_files_of(uid),
            0,
            "a submission of uid {uid} went to the system's queue"
        );
        let t0 = Instant::now();
        drop(pf);
        eprintln!("private Postfix stopped in {:?}", t0.elapsed());
    }
    // Nothing of the instance is left running.
    let left = antispam_tests::postfix::processes_in_mount_ns(mount_ns);
    assert!(
        left.is_empty(),
        "processes of the private Postfix left: {left:?}"
    );
    for pid in pids {
        let same = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == mount_ns);
        assert!(!same, "pid {pid} of the private Postfix still runs");
    }
    assert_eq!(HostPostfixState::capture(), host_before, "after the test");
}

#[test]
fn private_postfix_runs_inside_a_given_cgroup() {
    use std::time::Duration;
    if !require_kernel() {
        return;
    }
    let dir = TestDir::new();
    let ns = TestNetns::new();
    let sink = SmtpSink::start_counting(&ns, IpAddr::V4(ns.addr_v4()), 25, &dir);
    let clients = TestCgroup::new("clients");
    let mta = TestCgroup::new("mta");
    // Declared after the cgroups: dropped (stopped) before them.
    let pf = PrivatePostfix::start_with(&dir, sink.addr(), None, Some(&mta));
    assert_eq!(pf.smtp_addr(), None);
    let uid = unique_uid();
    let r = pf.sendmail_as(&clients, uid, "a@example.test b@example.test", "two rcpts");
    assert!(r.ok, "sendmail failed:\n{}\n{}", r.output, pf.diagnostics());
    // Two recipients of one domain: one message, one DATA.
    assert_eq!(
        sink.wait_messages(1, Duration::from_secs(20)),
        1,
        "{}",
        pf.diagnostics()
    );
    assert!(
        pf.wait_queue_empty(Duration::from_secs(10)),
        "{}",
        pf.diagnostics()
    );
    let procs = pf.processes();
    assert!(procs.len() >= 3, "master, pickup, qmgr...: {procs:?}");
    for pid in procs {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(
            cg.lines().any(|l| l == format!("0::{}", mta.relative())),
            "pid {pid} of the instance is not in {}: {cg}",
            mta.relative()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages(), 1);
}
