//! The usual per-test setup: temp dir, netns with smtp-sink on port 25, a test cgroup.

use std::net::{IpAddr, SocketAddr};

use crate::{SmtpSink, TestCgroup, TestDir, TestNetns};

/// Fields drop in declaration order: the sink first, then the cgroup, the netns, the temp dir.
/// Declare the `Agent` after the fixture so that it is dropped (stopped) before all of these.
pub struct Fixture {
    pub sink: SmtpSink,
    pub cg: TestCgroup,
    pub ns: TestNetns,
    pub dir: TestDir,
}

impl Fixture {
    /// netns + smtp-sink on <ns v4>:25 + cgroup `<run dir>/<name>` + temp dir.
    pub fn new(name: &str) -> Fixture {
        let dir = TestDir::new();
        let ns = TestNetns::new();
        let cg = TestCgroup::new(name);
        let sink = SmtpSink::start(&ns, IpAddr::V4(ns.addr_v4()), 25);
        Fixture { sink, cg, ns, dir }
    }

    /// The IPv4 SMTP server address.
    pub fn smtp_v4(&self) -> SocketAddr {
        self.sink.addr()
    }

    /// Writes the policy file `policy.toml` in the temp dir.
    pub fn policy(&self, text: &str) -> std::path::PathBuf {
        self.dir.write("policy.toml", text)
    }
}

impl Drop for Fixture {
    /// The agents' pinned programs go first, while the test cgroup they are attached to still
    /// exists; then the fields, in order.
    fn drop(&mut self) {
        self.dir.remove_pins();
    }
}

/// Event field helpers.
pub fn ev_u64(e: &serde_json::Value, key: &str) -> Option<u64> {
    e.get(key).and_then(|v| v.as_u64())
}

pub fn ev_str<'a>(e: &'a serde_json::Value, key: &str) -> &'a str {
    e.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// Predicate: the event belongs to `uid`.
pub fn by_uid(uid: u32) -> impl Fn(&serde_json::Value) -> bool {
    move |e| ev_u64(e, "uid") == Some(uid as u64)
}

/// Pretty list of events for failure messages.
pub fn show(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `GET /metrics` (≤ 3 s) until `ok(text)` holds; returns the last text either way.
pub fn wait_metrics(agent: &crate::Agent, ok: impl Fn(&str) -> bool) -> String {
    // A wait, not a speed requirement: longer where the machine is emulated.
    let deadline = std::time::Instant::now() + crate::bound(std::time::Duration::from_secs(3));
    loop {
        let m = agent.metrics();
        if ok(&m) || std::time::Instant::now() >= deadline {
            return m;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
