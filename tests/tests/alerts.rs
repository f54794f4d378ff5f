//! The shipped Prometheus rules (deploy/prometheus/antispam-rules.yml): promtool checks them and
//! runs their unit tests, and a real Prometheus scraping a running agent sees an alert fire and
//! end.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::Duration,
};

use antispam_tests::*;

fn rules_dir() -> std::path::PathBuf {
    workspace_root().join("deploy/prometheus")
}

#[test]
fn the_rules_check_and_their_unit_tests_pass() {
    let dir = rules_dir();
    let out = run_ok(
        "promtool",
        &[
            "check",
            "rules",
            &dir.join("antispam-rules.yml").display().to_string(),
        ],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // promtool resolves rule_files against the test file's directory.
    let out = run_ok(
        "promtool",
        &[
            "test",
            "rules",
            &dir.join("antispam-rules.test.yml").display().to_string(),
        ],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every alert of the rules file has a unit test that expects it to fire.
#[test]
fn every_alert_is_unit_tested() {
    let rules = std::fs::read_to_string(rules_dir().join("antispam-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("antispam-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in alerts {
        // A firing expectation: the alert's name on a line followed (within the same entry)
        // by exp_alerts.
        let fires = tests.split("- eval_time:").any(|entry| {
            entry.contains(&format!("alertname: {a}\n")) && entry.contains("exp_alerts:")
        });
        assert!(fires, "no unit test expects {a} to fire");
    }
}

/// A Prometheus server of the test's, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &TestDir, target: SocketAddr) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.write(
            "prometheus.yml",
            &format!(
                r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: antispam
    static_configs:
      - targets: ["{target}"]
"#,
                rules = rules_dir().join("antispam-rules.yml").display()
            ),
        );
        let data = dir.path().join("prometheus-data");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus (package prometheus)");
        Prometheus { child, addr }
    }

    fn api(&self, path: &str) -> serde_json::Value {
        match http_get(self.addr, path) {
            Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    /// The alert's state ("pending", "firing") or None.
    fn alert_state(&self, name: &str) -> Option<String> {
        let v = self.api("/api/v1/alerts");
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    fn value(&self, query: &str) -> Option<f64> {
        let v = self.api(&format!("/api/v1/query?query={query}"));
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }
}

#[test]
fn a_real_prometheus_sees_the_kill_switch_alert_fire_and_end() {
    if !require_kernel() {
        return;
    }
    let fx = Fixture::new("alerts");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"10/minute\"\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    let prom = Prometheus::start(&fx.dir, agent.metrics_addr);

    // Scraped, enforcing, nothing firing.
    let up = poll_until(
        bound(Duration::from_secs(30)),
        Duration::from_millis(250),
        || (prom.value("up%7Bjob%3D%22antispam%22%7D") == Some(1.0)).then_some(()),
    );
    assert!(
        up.is_some(),
        "Prometheus never scraped the agent; its log:\n{}",
        std::fs::read_to_string(fx.dir.path().join("prometheus.log")).unwrap_or_default()
    );
    assert_eq!(prom.value("antispam_enforcing"), Some(1.0));
    assert_eq!(prom.value("antispam_policy_last_reload_success"), Some(1.0));
    assert!(prom.value("process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert_eq!(prom.alert_state("AntispamKillSwitchOn"), None);

    let (code, out) = ctl(&agent, &["kill-switch", "on", "--reason", "alert test"]);
    assert_eq!(code, Some(0), "{out}");
    let fired = poll_until(
        bound(Duration::from_secs(30)),
        Duration::from_millis(250),
        || (prom.alert_state("AntispamKillSwitchOn").as_deref() == Some("firing")).then_some(()),
    );
    assert!(
        fired.is_some(),
        "AntispamKillSwitchOn never fired: {}",
        prom.api("/api/v1/alerts")
    );
    assert_eq!(prom.alert_state("AntispamAgentDown"), None);

    let (code, out) = ctl(
        &agent,
        &["kill-switch", "off", "--reason", "alert test done"],
    );
    assert_eq!(code, Some(0), "{out}");
    let ended = poll_until(
        bound(Duration::from_secs(30)),
        Duration::from_millis(250),
        || {
            prom.alert_state("AntispamKillSwitchOn")
                .is_none()
                .then_some(())
        },
    );
    assert!(
        ended.is_some(),
        "AntispamKillSwitchOn still active: {}",
        prom.api("/api/v1/alerts")
    );

    // A refused reload: the gauge goes to 0 and the alert fires.
    std::fs::write(&agent.policy_path, "ports = [25\n").unwrap();
    agent.reload();
    let fired = poll_until(
        bound(Duration::from_secs(30)),
        Duration::from_millis(250),
        || (prom.alert_state("AntispamReloadFailed").as_deref() == Some("firing")).then_some(()),
    );
    assert!(
        fired.is_some(),
        "AntispamReloadFailed never fired: {}",
        prom.api("/api/v1/alerts")
    );
}

/// Every series the Grafana dashboard queries is one the agent serves, or one the rules record.
#[test]
fn the_dashboard_queries_only_series_that_exist() {
    if !require_kernel() {
        return;
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/grafana/antispam.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let rules = std::fs::read_to_string(rules_dir().join("antispam-rules.yml")).unwrap();
    let recorded: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    let fx = Fixture::new("dashboard");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"10/minute\"\n");
    let agent = Agent::start(&policy, &fx.cg, &fx.dir);
    // A refusal, so that the per-key series exist too.
    let uid = unique_uid();
    let r = connect_probe_as(&fx.cg, uid, fx.smtp_v4(), 12, ProbeOptions::default());
    assert!(r.iter().any(|x| x.is_eperm()), "{r:?}");
    let metrics = agent.metrics();
    let served: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            // Series names: antispam_…, antispam:…, process_….
            let mut rest = expr;
            while let Some(i) = rest.find(|c: char| c.is_ascii_lowercase()) {
                rest = &rest[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let word = &rest[..end];
                if word.starts_with("antispam") || word.starts_with("process_") {
                    names.push((
                        panel["title"].as_str().unwrap_or("").to_string(),
                        word.to_string(),
                    ));
                }
                rest = &rest[end..];
            }
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    for (title, name) in names {
        assert!(
            served.contains(&name.as_str()) || recorded.contains(&name.as_str()),
            "panel {title:?} queries {name}, which neither the agent serves nor the rules record"
        );
    }
}
