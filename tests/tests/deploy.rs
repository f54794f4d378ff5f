//! The deployment files in deploy/: the systemd unit's capabilities are enough (and needed),
//! the unit passes systemd's checks, the Kubernetes manifest is consistent with it, and its
//! example policy gives each pod a budget.

use std::{path::PathBuf, process::Command};

use antispam_tests::*;

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("reading deploy/{path}: {e}"))
}

/// CapabilityBoundingSet= of the unit, e.g. ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"].
fn unit_caps() -> Vec<String> {
    let unit = read("systemd/antispam.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    let mut caps: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    caps.sort();
    caps
}

/// `setpriv` arguments that leave a root process only `caps`.
fn only(caps: &[String]) -> Vec<String> {
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{}", list.join(",")),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
    ]
}

#[test]
fn systemd_unit_capabilities_are_enough_and_each_is_needed() {
    if !require_kernel() {
        return;
    }
    let caps = unit_caps();
    assert_eq!(
        caps,
        ["CAP_BPF", "CAP_CHOWN", "CAP_NET_ADMIN", "CAP_PERFMON"]
    );
    let fx = Fixture::new("deploy");
    let policy = fx.policy("ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n");
    // An operators' group that exists (Debian's nogroup), so the control socket is handed to
    // it: that is what CAP_CHOWN is for.
    let group = ["--operators-group", "nogroup"];
    {
        let wrapper = only(&caps);
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let agent = Agent::start_via(&w, &policy, &fx.cg, &fx.dir, &group);
        let uid = unique_uid();
        assert!(tcp_probe_once(&fx.cg, uid, fx.smtp_v4()).ok);
        assert!(
            tcp_probe_once(&fx.cg, uid, fx.smtp_v4()).is_eperm(),
            "enforcing with only {caps:?}"
        );
        let m = agent.metrics();
        // connect4, connect6, sock_create and the exec hook (mail through sendmail).
        assert_eq!(
            metric_value(&m, "antispam_programs_attached", &[]),
            Some(4.0)
        );
        let hook = agent.status_json()["sendmail"]["hook"].clone();
        assert!(hook == "lsm" || hook == "tracepoint", "{hook}");
    }
    // Without any one of them the agent cannot start (and says why).
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = only(&fewer);
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let (code, err) = run_refused_with(&w, &policy, fx.cg.path(), &fx.dir, None, &group);
        assert_eq!(code, Some(2), "without {missing}: stderr:\n{err}");
        assert!(
            err.contains(&format!("it lacks {missing}")),
            "without {missing}: {err}"
        );
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze() {
    if !require_kernel() {
        return;
    }
    let dir = TestDir::new();
    // The unit as installed, pointing at this build and the example policy.
    let unit = read("systemd/antispam.service")
        .replace(
            "/usr/local/bin/antispam",
            &antispam_bin().display().to_string(),
        )
        .replace(
            "/etc/antispam/policy.toml",
            &deploy("policy.example.toml").display().to_string(),
        );
    let path = dir.write("antispam.service", &unit);
    let p = path.display().to_string();
    let out = Command::new("systemd-analyze")
        .args(["verify", &p])
        .output()
        .expect("systemd-analyze");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    assert!(
        !text.contains("antispam.service:"),
        "warnings about the unit:\n{text}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", &p])
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for antispam.service:")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 3.0, "exposure {score} (want ≤ 3.0, 'OK'):\n{text}");
}

fn yaml_docs() -> Vec<serde_yaml_ng::Value> {
    let text = read("kubernetes/antispam.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML document"))
        .collect()
}

fn kind<'a>(docs: &'a [serde_yaml_ng::Value], k: &str) -> &'a serde_yaml_ng::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(k))
        .unwrap_or_else(|| panic!("no {k} in the manifest"))
}

#[test]
fn daemonset_matches_the_unit_and_its_policy_checks() {
    let docs = yaml_docs();
    let ds = kind(&docs, "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let add: Vec<String> = c["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let mut add_sorted = add.clone();
    add_sorted.sort();
    assert_eq!(
        add_sorted,
        unit_caps(),
        "the DaemonSet adds the unit's capabilities"
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(
        spec["hostNetwork"], true,
        "the node's network namespace (local SMTP, the SYN check on pods' veths)"
    );
    assert_eq!(
        spec["hostPID"], true,
        "the node's PIDs: operators' login UIDs for break glass"
    );
    let mem = c["resources"]["requests"]["memory"].as_str().unwrap();
    let mib: u64 = mem.trim_end_matches("Mi").parse().expect("memory in Mi");
    assert!(mib >= 42 + 60, "the maps (42 MiB) plus the RSS: {mem}");
    assert_eq!(
        c["image"].as_str().unwrap(),
        format!("antispam:{}", env!("CARGO_PKG_VERSION")),
        "the image deploy/container/Containerfile builds"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    let addr = args
        .iter()
        .position(|a| *a == "--metrics-addr")
        .map(|i| args[i + 1]);
    assert_eq!(
        addr,
        Some("0.0.0.0:9897"),
        "metrics reachable from Prometheus: {args:?}"
    );
    assert_eq!(c["ports"][0]["containerPort"], 9897);
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9897");
    let host_paths: Vec<&str> = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert!(
        host_paths.contains(&"/sys/fs/cgroup") && host_paths.contains(&"/sys/fs/bpf"),
        "{host_paths:?}"
    );
    // The root filesystem is read-only: everything the agent writes must be on a writable
    // volume (the paths given in args, or the agent's defaults).
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let writable: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"].as_bool() != Some(true))
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    let arg = |flag: &str, default: &'static str| -> String {
        args.iter()
            .position(|a| *a == flag)
            .map_or(default.to_string(), |i| args[i + 1].to_string())
    };
    for (flag, default) in [
        ("--audit-log", "/var/lib/antispam/audit.jsonl"),
        ("--control-socket", "/run/antispam/control.sock"),
        ("--mta-socket", "/run/antispam/mta/mta.sock"),
        ("--pin-dir", "/sys/fs/bpf/antispam"),
    ] {
        let path = arg(flag, default);
        assert!(
            writable
                .iter()
                .any(|m| path.starts_with(&format!("{}/", m.trim_end_matches('/')))),
            "{flag} {path} is not on a writable volume ({writable:?})"
        );
    }

    // The policy in the ConfigMap is valid.
    let policy = kind(&docs, "ConfigMap")["data"]["policy.toml"]
        .as_str()
        .expect("policy.toml");
    let dir = TestDir::new();
    let path = dir.write("policy.toml", policy);
    let r = antispam_check(&path);
    assert_eq!(
        r.code,
        Some(0),
        "antispam check on the ConfigMap policy:\n{}",
        r.stderr
    );
    let r = antispam_check(&deploy("policy.example.toml"));
    assert_eq!(
        r.code,
        Some(0),
        "antispam check deploy/policy.example.toml:\n{}",
        r.stderr
    );
}

#[test]
fn daemonset_policy_gives_each_pod_a_budget() {
    if !require_kernel() {
        return;
    }
    let docs = yaml_docs();
    let policy = kind(&docs, "ConfigMap")["data"]["policy.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let fx = Fixture::new("k8s");
    let base = fx.cg.relative();
    // The same policy, rooted at the test's cgroup instead of the node's root.
    let policy = policy.replace("\"/kubepods", &format!("\"{base}/kubepods"));
    let burst: u32 = policy
        .split("[[limit]]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("burst = ")))
        .and_then(|b| b.trim().parse().ok())
        .expect("the pod rule has a burst");
    let path = fx.policy(&policy);
    // Pods as kubelet's systemd driver lays them out: burstable, and guaranteed.
    let kubepods = fx.cg.child("kubepods.slice");
    let burstable = kubepods.child("kubepods-burstable.slice");
    let pod_a = burstable.child("kubepods-burstable-pod1111.slice");
    let ctr_a = pod_a.child("cri-containerd-aaaa.scope");
    let pod_b = kubepods.child("kubepods-pod2222.slice");
    let agent = Agent::start(&path, &fx.cg, &fx.dir);
    // A pod that starts later.
    let ctr_b = pod_b.child("cri-containerd-bbbb.scope");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let server = fx.smtp_v4();
    for (name, ctr) in [("burstable pod", &ctr_a), ("guaranteed pod", &ctr_b)] {
        let r = connect_probe_as(
            ctr,
            unique_uid(),
            server,
            burst + 1,
            ProbeOptions::default(),
        );
        let ok = r.iter().filter(|a| a.ok).count() as u32;
        assert_eq!(ok, burst, "{name}: {burst} allowed");
        assert!(
            r.last().unwrap().is_eperm(),
            "{name}: the connect over the pod's budget is refused"
        );
    }
    let st = agent.status_json();
    let covered: Vec<&str> = st["cgroup_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["cgroup"].as_str())
        .collect();
    assert!(
        covered.contains(&pod_a.relative().as_str())
            && covered.contains(&ctr_b.relative().as_str()),
        "{covered:?}"
    );
}
