//! One budget across a fleet: three agents on this machine, each attached to a cgroup of its
//! own with its own pin directory, control socket and metrics port (three "hosts"), share the
//! fleet budget of one tenant through a real Redis (Debian's redis-server on loopback, with a
//! password). Each host reaches Redis through a TCP proxy the test can cut (a partition).
//! Clients in all three make real TCP connects to an SMTP sink in a network namespace.
//!
//! The bound checked is the one docs/fleet.md states: over a window of W seconds, the fleet's
//! allowed attempts for a tenant are at most `burst + rate * (W + L)` (L the lease length), plus
//! what hosts without a lease allowed on `local_rate`, each at most `local_burst + local_rate *
//! W`.

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use antispam_tests::{
    redis::{RedisServer, TcpProxy},
    *,
};

/// The fleet's budget: 120 a minute (2 a second), burst 10; 12 a minute per host without one.
const RATE_PER_MIN: f64 = 120.0;
const BURST: f64 = 10.0;
const LOCAL_PER_MIN: f64 = 12.0;
const LOCAL_BURST: f64 = 2.0;
/// `--fleet-lease` (renewed every second).
const LEASE_S: f64 = 3.0;
/// Each host's clients: one connect every 200 ms, 5 a second (15 for the fleet: far over).
const INTERVAL: Duration = Duration::from_millis(200);

fn policy(uid: u32) -> String {
    format!(
        r#"ports = [25]
[default]
rate = "1000/minute"

[tenant.acme]
rate = "{RATE_PER_MIN}/minute"
burst = {BURST}
local_rate = "{LOCAL_PER_MIN}/minute"
local_burst = {LOCAL_BURST}

[[limit]]
users = [{uid}]
tenant = "acme"
"#
    )
}

/// The fleet bound for a window of `secs` (no host on local_rate).
fn fleet_bound(secs: f64) -> f64 {
    BURST + RATE_PER_MIN / 60.0 * (secs + LEASE_S)
}

/// The bound for one host on local_rate for `secs`.
fn local_bound(secs: f64) -> f64 {
    LOCAL_BURST + LOCAL_PER_MIN / 60.0 * secs
}

struct Host {
    name: &'static str,
    cg: TestCgroup,
    dir: TestDir,
    proxy: TcpProxy,
}

fn tenant(agent: &Agent) -> serde_json::Value {
    agent.status_json()["fleet"]["tenants"][0].clone()
}

fn state(agent: &Agent) -> String {
    tenant(agent)["state"].as_str().unwrap_or("").to_string()
}

fn wait_state(agent: &Agent, want: &str, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    poll_until(bound(limit), Duration::from_millis(50), || {
        (state(agent) == want).then_some(())
    })
    .map(|()| t.elapsed())
}

fn local_used(agent: &Agent) -> f64 {
    metric_value(
        &agent.metrics(),
        "antispam_fleet_tokens_used_total",
        &[("tenant", "acme"), ("source", "local_rate")],
    )
    .unwrap_or(0.0)
}

/// Runs each host's clients at once for `secs`: the connects each host's clients got through.
/// Every refusal must be EPERM.
fn load(hosts: &[&Host], uid: u32, sink: SocketAddr, secs: u32) -> Vec<u64> {
    let count = secs * 1000 / INTERVAL.as_millis() as u32;
    thread::scope(|s| {
        let runs: Vec<_> = hosts
            .iter()
            .map(|h| {
                s.spawn(move || {
                    let opts = ProbeOptions {
                        interval: INTERVAL,
                        ..ProbeOptions::default()
                    };
                    let attempts = connect_probe_as(&h.cg, uid, sink, count, opts);
                    for a in &attempts {
                        assert!(
                            a.ok || a.is_eperm(),
                            "{}: a connect failed otherwise: {a:?}",
                            h.name
                        );
                    }
                    attempts.iter().filter(|a| a.ok).count() as u64
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("load thread"))
            .collect()
    })
}

#[test]
fn three_hosts_hold_one_tenant_budget_through_redis() {
    if !require_kernel() || !redis::available() {
        return;
    }
    let fx = Fixture::new("fleet");
    let mut redis = RedisServer::start(fx.dir.path());
    let target: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let hosts: Vec<Host> = ["host-a", "host-b", "host-c"]
        .into_iter()
        .map(|name| Host {
            name,
            cg: fx.cg.child(name),
            dir: TestDir::new(),
            proxy: TcpProxy::start(target),
        })
        .collect();
    let uid = unique_uid();
    let policy = fx.policy(&policy(uid));
    let password_file = redis.password_file();
    let lease = format!("{LEASE_S}s");
    let mut agents: Vec<Agent> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // Host a reads the password from a file; b and c have it in the URL.
            let url = if i == 0 {
                format!("redis://127.0.0.1:{}", h.proxy.port)
            } else {
                redis.url_via(h.proxy.port)
            };
            let mut args = vec![
                "--fleet-store".to_string(),
                url,
                "--fleet-host".to_string(),
                h.name.to_string(),
                "--fleet-lease".to_string(),
                lease.clone(),
                "--fleet-checkpoint-every".to_string(),
                "1s".to_string(),
            ];
            if i == 0 {
                args.push("--fleet-password-file".to_string());
                args.push(password_file.display().to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Agent::start_with(&policy, &h.cg, &h.dir, &args)
        })
        .collect();
    for (a, h) in agents.iter().zip(&hosts) {
        let took = wait_state(a, "leased", Duration::from_secs(10));
        assert!(
            took.is_some(),
            "{}: no lease: {}\n{}",
            h.name,
            tenant(a),
            a.stderr()
        );
        assert!(
            !a.stderr().contains(&redis.password),
            "{}: the password is in the log",
            h.name
        );
    }
    let all: Vec<&Host> = hosts.iter().collect();
    let sink = fx.smtp_v4();

    // 1. Steady load, a minute, from a tenant bucket that starts empty.
    let local_before: f64 = agents.iter().map(local_used).sum();
    let t = Instant::now();
    let got = load(&all, uid, sink, 60);
    let secs = t.elapsed().as_secs_f64();
    let local: f64 = agents.iter().map(local_used).sum::<f64>() - local_before;
    let total: u64 = got.iter().sum();
    let limit = fleet_bound(secs) + local;
    eprintln!(
        "steady: {got:?} = {total} allowed in {secs:.1}s (budget {:.0}, bound {limit:.1}, {local} on local_rate)",
        RATE_PER_MIN / 60.0 * secs
    );
    assert!(
        total as f64 <= limit,
        "steady: {total} allowed > bound {limit:.1}"
    );
    assert!(
        total as f64 >= 0.6 * RATE_PER_MIN / 60.0 * secs,
        "steady: only {total} allowed: the leases hand out too little of the budget"
    );
    for (n, h) in got.iter().zip(&hosts) {
        assert!(*n > 0, "{}: nothing allowed: {got:?}", h.name);
    }
    let m = agents[0].metrics();
    let trips = metric_value(&m, "antispam_fleet_store_requests_total", &[]).unwrap_or(0.0);
    let rtt_sum = metric_value(&m, "antispam_fleet_store_rtt_seconds_sum", &[]).unwrap_or(0.0);
    let rtt_n = metric_value(&m, "antispam_fleet_store_rtt_seconds_count", &[]).unwrap_or(1.0);
    eprintln!(
        "host-a: {trips} store round trips, mean rtt {:.3} ms",
        rtt_sum / rtt_n * 1000.0
    );
    metrics::promtool_check(&m);
    let t = tenant(&agents[0]);
    assert!(
        t["last_want"].as_u64().unwrap_or(0) > 1 && t["last_grant"].as_u64().is_some(),
        "status shows no renewal: {t}"
    );
    let st = ctl(&agents[1], &["status"]);
    assert!(
        st.1.contains("FLEET store redis://:***@127.0.0.1")
            && st.1.contains("acme")
            && st.1.contains("leased"),
        "antispam status: {}",
        st.1
    );

    // 2. Redis restarted (all its data lost) a few seconds in: leases resume, and the new
    // bucket starts empty, so no burst beyond the budget.
    let local_before: f64 = agents.iter().map(local_used).sum();
    let t = Instant::now();
    let got = thread::scope(|s| {
        let l = s.spawn(|| load(&all, uid, sink, 40));
        thread::sleep(Duration::from_secs(5));
        let took = redis.restart();
        eprintln!("redis restarted in {took:?}");
        l.join().expect("load")
    });
    let secs = t.elapsed().as_secs_f64();
    let local: f64 = agents.iter().map(local_used).sum::<f64>() - local_before;
    let total: u64 = got.iter().sum();
    let limit = fleet_bound(secs) + local;
    eprintln!("restart: {got:?} = {total} allowed in {secs:.1}s (bound {limit:.1}, {local} on local_rate)");
    assert!(
        total as f64 <= limit,
        "restart: {total} allowed > bound {limit:.1}"
    );
    for (a, h) in agents.iter().zip(&hosts) {
        assert!(
            wait_state(a, "leased", Duration::from_secs(5)).is_some(),
            "{}: no lease after the restart: {}",
            h.name,
            tenant(a)
        );
    }
    // The checkpoints written before the restart are gone with Redis' data; wait for new ones.

    // 3. host-c partitioned from Redis: it falls back to local_rate within one lease, the
    // others keep the fleet budget (and get c's share once its demand is older than a lease).
    hosts[2].proxy.cut();
    let fell = wait_state(&agents[2], "local_rate", Duration::from_secs(10))
        .expect("host-c never fell back to local_rate");
    eprintln!(
        "partition: host-c on local_rate {:.2}s after the cut",
        fell.as_secs_f64()
    );
    // Its lease ends one lease length after its last renewal, which was at most one renewal
    // period (a third of a lease) before the cut.
    assert!(
        fell.as_secs_f64() <= LEASE_S * 4.0 / 3.0 + 0.2,
        "host-c fell back after {fell:?}: more than one lease ({LEASE_S}s) after its last renewal"
    );
    let t = Instant::now();
    let got = load(&all, uid, sink, 20);
    let secs = t.elapsed().as_secs_f64();
    let ab = got[0] + got[1];
    eprintln!(
        "partition: {got:?} in {secs:.1}s (a+b bound {:.1}, c bound {:.1})",
        fleet_bound(secs),
        local_bound(secs)
    );
    assert!(
        got[2] as f64 <= local_bound(secs),
        "host-c allowed {} > local bound",
        got[2]
    );
    assert!(
        ab as f64 <= fleet_bound(secs),
        "a+b allowed {ab} > fleet bound"
    );
    assert!(
        ab as f64 >= 0.6 * RATE_PER_MIN / 60.0 * (secs - LEASE_S),
        "a+b allowed only {ab}: c's share did not return to them"
    );
    let m = agents[2].metrics();
    assert!(
        metric_value(
            &m,
            "antispam_fleet_leases_expired_total",
            &[("tenant", "acme")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(metric_value(&m, "antispam_fleet_store_up", &[]), Some(0.0));
    assert!(metric_value(&m, "antispam_fleet_store_errors_total", &[]).unwrap_or(0.0) >= 1.0);
    hosts[2].proxy.heal();
    let back = wait_state(&agents[2], "leased", Duration::from_secs(10))
        .expect("host-c did not recover its lease");
    eprintln!(
        "partition healed: host-c leased again after {:.2}s",
        back.as_secs_f64()
    );
    let lease_states = || -> Vec<String> {
        std::fs::read_to_string(&agents[2].audit_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["event"] == "fleet_lease")
            .map(|r| r["details"]["state"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // The main loop writes the record within a second.
    let recorded = poll_until(
        bound(Duration::from_secs(3)),
        Duration::from_millis(100),
        || {
            lease_states()
                .ends_with(&["leased".into(), "local_rate".into(), "leased".into()])
                .then_some(())
        },
    );
    assert!(
        recorded.is_some(),
        "host-c's audit log: {:?}",
        lease_states()
    );

    // 4. host-c's agent killed: its kernel programs go on, on local_rate once its lease ends;
    // its demand stops counting after a lease, and the others get the whole budget.
    agents[2].kill();
    thread::sleep(Duration::from_secs_f64(LEASE_S + 1.0));
    let t = Instant::now();
    let got = load(&all, uid, sink, 20);
    let secs = t.elapsed().as_secs_f64();
    let ab = got[0] + got[1];
    eprintln!("killed: {got:?} in {secs:.1}s");
    assert!(
        got[2] as f64 <= local_bound(secs),
        "host-c (agent dead) allowed {}",
        got[2]
    );
    assert!(ab as f64 <= fleet_bound(secs));
    assert!(
        ab as f64 >= 0.6 * RATE_PER_MIN / 60.0 * secs,
        "a+b allowed only {ab}: the dead host's share did not return"
    );

    // Audit checkpoints off the host: host-a's log holds every head it appended; a copy cut
    // after a checkpoint does not.
    let verify = |file: &std::path::Path| {
        std::process::Command::new(antispam_bin())
            .args(["audit", "verify"])
            .arg(file)
            .args(["--checkpoints", &redis.url(), "--fleet-host", "host-a"])
            .output()
            .expect("run antispam audit verify")
    };
    let ok = poll_until(
        bound(Duration::from_secs(10)),
        Duration::from_millis(200),
        || {
            let n = redis.cli(&["XLEN", "antispam:audit:host-a"]);
            (n.trim().parse::<u64>().unwrap_or(0) > 0).then_some(())
        },
    );
    assert!(ok.is_some(), "host-a appended no checkpoint");
    let out = verify(&agents[0].audit_path);
    assert!(
        out.status.success(),
        "verify --checkpoints: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The copy ends just before the last checkpointed record.
    let last = redis.cli(&["XREVRANGE", "antispam:audit:host-a", "+", "-", "COUNT", "1"]);
    let words: Vec<&str> = last.lines().collect();
    let seq: usize = words
        .iter()
        .position(|w| *w == "seq")
        .and_then(|i| words.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no seq in the last checkpoint: {last}"));
    let text = std::fs::read_to_string(&agents[0].audit_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        seq >= 2 && seq <= lines.len(),
        "checkpoint {seq} of {} records",
        lines.len()
    );
    let cut = fx
        .dir
        .write("audit-cut.jsonl", &(lines[..seq - 1].join("\n") + "\n"));
    let out = verify(&cut);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a cut log passed: {said}");
    assert!(said.contains("not held"), "{said}");
}

/// The lease script alone, run by redis-cli against a real Redis: a bucket that is not there
/// starts empty (a store restart mints no burst); a host gets what it wants while the bucket
/// covers every live host's demand, else its share; never more than the bucket holds; demand
/// older than a lease stops counting.
#[test]
fn the_lease_script_never_grants_more_than_the_bucket_holds() {
    if !redis::available() {
        return;
    }
    let dir = TestDir::new();
    let redis = RedisServer::start(dir.path());
    let script = workspace_root().join("antispam-user/src/fleet/lease.lua");
    let script = script.to_str().unwrap();
    let (bucket, demand) = ("antispam:{t}:bucket", "antispam:{t}:demand");
    // rate 0.001 tokens/ms (1/s), burst 10, lease 500 ms.
    let lease = |host: &str, want: u64| -> (u64, u64) {
        let out = redis.cli(&[
            "--eval",
            script,
            bucket,
            demand,
            ",",
            host,
            &want.to_string(),
            "0.001",
            "10",
            "500",
        ]);
        let n: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert_eq!(n.len(), 3, "lease script answered {out:?}");
        (n[0], n[1])
    };
    let (granted, _) = lease("a", 5);
    assert_eq!(granted, 0, "a new (or lost) bucket starts empty");
    let now_ms = {
        let t = redis.cli(&["TIME"]);
        let v: Vec<u64> = t.lines().filter_map(|l| l.trim().parse().ok()).collect();
        v[0] * 1000 + v[1] / 1000
    };
    redis.cli(&["HSET", bucket, "tokens", "9", "ts", &now_ms.to_string()]);
    redis.cli(&["DEL", demand]);
    let (a, left) = lease("a", 6);
    assert_eq!(a, 6, "enough for the only host asking");
    assert!(left <= 3);
    // b asks for 6 with a's 6 still counted: a share of what is left, not more.
    let (b, left_b) = lease("b", 6);
    assert!(b <= left && b >= 1, "b got {b} of {left}");
    assert!(
        left_b + b <= left + 1,
        "tokens made from nothing: {b} + {left_b} > {left}"
    );
    // Once a's demand is older than a lease it stops counting: b gets all it wants.
    thread::sleep(Duration::from_millis(2600));
    let (b, _) = lease("b", 2);
    assert_eq!(b, 2, "a's stale demand still counted");
    let entries = redis.cli(&["HKEYS", demand]);
    assert!(
        !entries.lines().any(|l| l.trim() == "a"),
        "a's stale demand kept: {entries}"
    );
}

/// TLS (rediss://) with the CA given by --fleet-ca and AUTH from a file; a store whose
/// certificate does not verify is an error the agent reports while it spends local_rate.
#[test]
fn the_fleet_store_over_tls() {
    if !require_kernel() || !redis::available() {
        return;
    }
    let fx = Fixture::new("fleet-tls");
    let tls = redis::Tls::make(fx.dir.path(), "good");
    let other = redis::Tls::make(fx.dir.path(), "other");
    let redis = RedisServer::start_tls(fx.dir.path(), tls.clone());
    let uid = unique_uid();
    let policy = fx.policy(&policy(uid));
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let password = redis.password_file();
    let start = |ca: &std::path::Path, dir: &TestDir, cg: &TestCgroup| {
        Agent::start_with(
            &policy,
            cg,
            dir,
            &[
                "--fleet-store",
                &url,
                "--fleet-ca",
                ca.to_str().unwrap(),
                "--fleet-password-file",
                password.to_str().unwrap(),
                "--fleet-lease",
                "3s",
            ],
        )
    };
    let agent = start(&tls.ca, &fx.dir, &fx.cg);
    assert!(
        wait_state(&agent, "leased", Duration::from_secs(10)).is_some(),
        "no lease over TLS: {}\n{}",
        agent.status_json()["fleet"],
        agent.stderr()
    );
    drop(agent);
    let dir = TestDir::new();
    let cg = fx.cg.child("wrong-ca");
    let agent = start(&other.ca, &dir, &cg);
    let said = poll_until(
        bound(Duration::from_secs(10)),
        Duration::from_millis(100),
        || {
            let f = agent.status_json()["fleet"].clone();
            f["last_error"].as_str().map(str::to_string)
        },
    )
    .expect("no store error with the wrong CA");
    eprintln!("wrong CA: {said}");
    assert_eq!(state(&agent), "local_rate");
    assert!(said.contains("rediss://127.0.0.1"), "{said}");
}
