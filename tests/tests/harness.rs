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
