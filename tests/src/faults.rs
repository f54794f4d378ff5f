//! Helpers of the fault-injection tests: policy versions that tell themselves apart by what
//! the kernel does, a refused-connect storm, the audit chain checked with `antispam audit
//! verify`.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::{antispam_bin, connect_probe_as, unique_uid, ProbeOptions, TestCgroup};

/// A policy whose default budget is `burst` connects (no refill within a test: 1/hour), with
/// `allowed` allow-listed. The `[default]` table comes last, after `padding` comment lines, so
/// that any cut of the file shows: a cut before `burst` leaves burst 1 (the rate's N), a cut
/// before `[default]` leaves the built-in 30/minute, an empty file is the built-in policy.
pub fn version(burst: u32, allowed: u32, padding: usize) -> String {
    let mut text = format!("ports = [25]\n[[allow]]\nusers = [{allowed}]\n");
    for i in 0..padding {
        text.push_str(&format!(
            "# padding line {i}: a policy long enough to be cut mid-way\n"
        ));
    }
    text.push_str(&format!("[default]\nrate = \"1/hour\"\nburst = {burst}\n"));
    text
}

/// The default budget the kernel enforces now: how many of 8 connects of a UID never seen
/// before get through (8 means "more than 7": no version of [`version`] allows that many).
pub fn burst_in_force(cg: &TestCgroup, server: SocketAddr) -> usize {
    connect_probe_as(cg, unique_uid(), server, 8, ProbeOptions::default())
        .iter()
        .take_while(|a| a.ok)
        .count()
}

/// Refused connects of `uid`, about 300 a second, until `stop` is set or `limit` passes.
/// Returns how many were tried.
pub fn storm(
    cg: &TestCgroup,
    uid: u32,
    server: SocketAddr,
    stop: &AtomicBool,
    limit: Duration,
) -> u64 {
    let end = Instant::now() + limit;
    let mut tried = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let opts = ProbeOptions {
            interval: Duration::from_millis(2),
            ..ProbeOptions::default()
        };
        tried += connect_probe_as(cg, uid, server, 50, opts).len() as u64;
    }
    tried
}

/// Runs `body` while `uid` makes refused connects to `server` (a [`storm`] of at most `limit`);
/// returns what `body` returned and how many connects the storm tried.
pub fn during_storm<T>(
    cg: &TestCgroup,
    uid: u32,
    server: SocketAddr,
    limit: Duration,
    body: impl FnOnce() -> T,
) -> (T, u64) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let storm = s.spawn(|| storm(cg, uid, server, &stop, limit));
        let out = {
            let _stop = StopOnDrop(&stop);
            body()
        };
        (out, storm.join().expect("storm"))
    })
}

/// Sets its flag when dropped: the background loops of a test (a storm, a watcher) stop also
/// when the test panics, so that `std::thread::scope` does not wait for them.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `antispam audit verify FILE`: exit status and output.
pub fn audit_verify(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(antispam_bin())
        .args(["audit", "verify", &path.display().to_string()])
        .output()
        .expect("antispam audit verify");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// SHA-256 of a text, by coreutils (an implementation independent of the agent's).
pub fn sha256_text(text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The audit records of a log file.
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A pseudo-random number in `0..n`, different in every call (the tests' random points).
pub fn random_below(n: u64) -> u64 {
    let x = crate::nanos() as u64 ^ (u64::from(crate::next_seq()) << 32);
    // splitmix64
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % n.max(1)
}
