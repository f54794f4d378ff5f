//! Metrics, the JSON event log and what the client saw agree exactly; /metrics passes promtool.

use antispam_tests::*;

#[test]
fn metrics_and_log_agree_with_the_client() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("obs");
    let uid = unique_uid();
    let policy = fx.policy(
        r#"mode = "enforce"
ports = [25]

[default]
rate = "1/minute"
burst = 3
"#,
    );
    // With SMTP bytes and packets counted: the packet program always runs.
    let agent = Agent::start_with(&policy, &fx.cg, &fx.dir, &["--packet-accounting"]);
    let status = agent.status_json();
    assert!(
        status.is_object(),
        "the status must be a JSON object: {status}"
    );
    assert_eq!(
        status["packet_program"], "--packet-accounting",
        "the packet program runs for packet accounting: {status}"
    );

    let r = connect_probe_as(
        &fx.cg,
        uid,
        fx.smtp_v4(),
        7,
        ProbeOptions {
            smtp: true,
            ..Default::default()
        },
    );
    let k = r.iter().filter(|x| x.ok).count();
    let m_denied = r.iter().filter(|x| x.is_eperm()).count();
    eprintln!("client saw {k} allowed, {m_denied} EPERM: {r:?}");
    assert_eq!((k, m_denied), (3, 4), "{r:?}");

    // Event log.
    let ev = agent.wait_events(by_uid(uid), 7);
    assert_eq!(ev.len(), 7, "{}", show(&ev));
    let log_allowed = ev
        .iter()
        .filter(|e| ev_str(e, "verdict") == "allowed")
        .count();
    let log_denied = ev
        .iter()
        .filter(|e| ev_str(e, "verdict") == "denied")
        .count();
    assert_eq!((log_allowed, log_denied), (k, m_denied), "{}", show(&ev));
    for e in &ev {
        let ts = ev_str(e, "ts");
        assert!(
            ts.len() >= 20 && ts.as_bytes()[10] == b'T',
            "ts must be RFC3339: {e}"
        );
        assert_eq!(ev_u64(e, "gid"), Some(uid as u64), "{e}");
        assert!(ev_u64(e, "pid").unwrap_or(0) > 1, "{e}");
        assert_eq!(ev_str(e, "comm"), "connect_probe", "{e}");
        assert_eq!(ev_str(e, "cgroup"), fx.cg.relative(), "{e}");
        assert_eq!(ev_u64(e, "cgroup_id"), Some(fx.cg.id()), "{e}");
        assert_eq!(ev_str(e, "dst"), fx.ns.addr_v4().to_string(), "{e}");
        assert_eq!(ev_u64(e, "dport"), Some(25), "{e}");
        assert_eq!(ev_str(e, "family"), "ipv4", "{e}");
        assert_eq!(e["would_deny"].as_bool(), Some(false), "{e}");
        assert!(e["rule"].is_string(), "{e}");
        assert!(e["generation"].is_u64(), "{e}");
        let expect_reason = if ev_str(e, "verdict") == "allowed" {
            "within_limit"
        } else {
            "rate_limit_uid"
        };
        assert_eq!(ev_str(e, "reason"), expect_reason, "{e}");
    }
    // The pids in the log are all the one probe process.
    let pids: std::collections::BTreeSet<_> = ev.iter().filter_map(|e| ev_u64(e, "pid")).collect();
    assert_eq!(
        pids.len(),
        1,
        "one probe process made all connects: {pids:?}"
    );

    // Metrics.
    let uid_s = uid.to_string();
    let cg_rel = fx.cg.relative();
    let m = wait_metrics(&agent, |m| {
        metric_sum(m, "antispam_smtp_connections_total", &[]) >= 7.0
            && metric_sum(m, "antispam_uid_smtp_bytes_total", &[("uid", &uid_s)]) > 0.0
    });
    eprintln!("metrics:\n{m}");
    let total = |labels: &[(&str, &str)]| metric_sum(&m, "antispam_smtp_connections_total", labels);
    assert_eq!(total(&[("verdict", "allowed")]), k as f64, "allowed total");
    assert_eq!(
        total(&[("verdict", "denied")]),
        m_denied as f64,
        "denied total"
    );
    assert_eq!(
        total(&[("verdict", "allowed"), ("reason", "within_limit")]),
        k as f64
    );
    assert_eq!(
        total(&[("verdict", "denied"), ("reason", "rate_limit_uid")]),
        m_denied as f64
    );
    let per_uid = |v: &str| {
        metric_sum(
            &m,
            "antispam_uid_smtp_connections_total",
            &[("uid", &uid_s), ("verdict", v)],
        )
    };
    assert_eq!(per_uid("allowed"), k as f64, "per-uid allowed");
    assert_eq!(per_uid("denied"), m_denied as f64, "per-uid denied");
    let per_cg = |v: &str| {
        metric_sum(
            &m,
            "antispam_cgroup_smtp_connections_total",
            &[("cgroup", &cg_rel), ("verdict", v)],
        )
    };
    assert_eq!(per_cg("allowed"), k as f64, "per-cgroup allowed");
    assert_eq!(per_cg("denied"), m_denied as f64, "per-cgroup denied");
    assert!(
        metric_sum(&m, "antispam_uid_smtp_bytes_total", &[("uid", &uid_s)]) > 0.0,
        "per-uid bytes"
    );
    assert!(
        metric_sum(
            &m,
            "antispam_cgroup_smtp_bytes_total",
            &[("cgroup", &cg_rel)]
        ) > 0.0,
        "per-cgroup bytes"
    );
    assert_eq!(
        metric_value(&m, "antispam_events_lost_total", &[]),
        Some(0.0),
        "events lost"
    );
    assert!(
        metric_value(&m, "antispam_programs_attached", &[]).unwrap_or(0.0) >= 2.0,
        "programs attached"
    );
    assert!(
        metric_value(&m, "antispam_policy_generation", &[]).is_some(),
        "policy generation"
    );
    assert!(
        metric_value(&m, "antispam_build_info", &[]).is_some(),
        "build info"
    );
    let generation = metric_value(&m, "antispam_policy_generation", &[]).unwrap();
    assert!(
        ev.iter()
            .all(|e| ev_u64(e, "generation") == Some(generation as u64)),
        "event generation == metric"
    );

    metrics::promtool_check(&m);
}

/// `antispam status` finds the agent on its control socket, whatever its --metrics-addr (the
/// test agents listen on a random port), and is refused to a user who is not an operator; the
/// HTTP port, which every local user reaches, serves no status and no free text (an operator's
/// name and reason stay off it).
#[test]
fn status_command_uses_the_control_socket() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("statuscli");
    let policy = fx.policy(
        r#"ports = [25]
[default]
rate = "7/minute"
[[limit]]
users = ["61000-61999"]
rate = "3/hour"
"#,
    );
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    assert_ne!(agent.metrics_addr.port(), 9897, "not the default address");

    let (code, text) = ctl(&agent, &["status"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("mode enforce"), "{text}");
    assert!(text.contains("default rate 7/minute"), "{text}");
    assert!(text.contains("limit[0]"), "{text}");

    let (code, json) = ctl(&agent, &["status", "--json"]);
    assert_eq!(code, Some(0), "{json}");
    let via_socket: serde_json::Value = serde_json::from_str(&json).expect("status --json");
    assert_eq!(via_socket["default_rate"], "7/minute (burst 7)");

    // What a local user gets over HTTP: no status, a health line, metrics without free text.
    let victim = unique_uid();
    let (code, out) = ctl(
        &agent,
        &[
            "suspend",
            "--uid",
            &victim.to_string(),
            "--reason",
            "ticket-4711 spam from wp-login",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, body) = agent.get("/status");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("control socket"), "{body}");
    let (code, body) = agent.get("/healthz");
    assert_eq!(
        (code, body.trim()),
        (200, "enforcing (policy generation 1)")
    );
    let metrics = agent.metrics();
    assert!(!metrics.contains("ticket-4711"), "a reason in the metrics");
    assert!(
        metric_value(&metrics, "antispam_suspensions_active", &[]).is_some(),
        "{metrics}"
    );
    let (code, old) = ctl(
        &agent,
        &["status", "--addr", &agent.metrics_addr.to_string()],
    );
    assert_eq!(code, Some(2), "{old}");
    assert!(old.contains("control socket"), "{old}");

    let stranger = unique_uid();
    let (code, text) = ctl_as(&agent, stranger, stranger, &[], &["status"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("permission denied") || text.contains("refused"),
        "{text}"
    );
}

#[test]
fn sighup_reopens_the_event_log_after_logrotate_moved_it() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("reopen");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let first = unique_uid();
    assert!(tcp_probe_once(&fx.cg, first, fx.smtp_v4()).ok);
    let ev = agent.wait_events(by_uid(first), 1);
    assert_eq!(ev.len(), 1, "{}", show(&ev));

    // What logrotate does: rename, then the postrotate command (systemctl reload: SIGHUP).
    let moved = fx.dir.path().join("events.jsonl.1");
    std::fs::rename(&agent.log_path, &moved).unwrap();
    agent.reload();
    let reopened = poll_until(
        bound(std::time::Duration::from_secs(5)),
        std::time::Duration::from_millis(50),
        || agent.log_path.exists().then_some(()),
    );
    assert!(
        reopened.is_some(),
        "no new {} after SIGHUP:\n{}",
        agent.log_path.display(),
        agent.stderr()
    );
    let second = unique_uid();
    assert!(tcp_probe_once(&fx.cg, second, fx.smtp_v4()).ok);
    let ev = agent.wait_events(by_uid(second), 1);
    assert_eq!(ev.len(), 1, "the new file has the new event: {}", show(&ev));
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(old.contains(&format!("\"uid\":{first}")), "{old}");
    assert!(
        !old.contains(&format!("\"uid\":{second}")),
        "the moved file got a new event: {old}"
    );
    let new = std::fs::read_to_string(&agent.log_path).unwrap();
    assert!(!new.contains(&format!("\"uid\":{first}")), "{new}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&agent.log_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the new log is private");
    assert!(agent.stderr().contains("event log") && agent.stderr().contains("reopened"));
}
