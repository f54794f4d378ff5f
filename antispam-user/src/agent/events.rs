//! Reads decisions from the ring buffer and writes them as JSON lines: each drain's lines in
//! one append to the event log (whole lines or none, see `event_log`), refusals past the rate
//! bound folded into summary lines (see `log_bound`), write errors summarised (`log_limit`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use antispam_common::event::{self as ev, Event};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{event_log::EventLog, log_bound::Bound, log_limit::LogLimit, state::Shared};
use crate::clock::{self, MonoToWall};

/// How often the ring buffer is drained. Events do not wake the agent one by one (see the
/// connect programs): it is woken early only when the ring is an eighth full.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Which decisions are written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFilter {
    /// Every decision on an SMTP connect: the connection trail.
    All,
    /// Refusals, and in monitor mode what would have been refused.
    Denied,
}

/// One JSON line.
#[derive(Serialize)]
pub struct Record<'a> {
    pub ts: String,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The UID charged when it is not `uid`: the owner of a subordinate UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charged_uid: Option<u32>,
    pub gid: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    /// How the mail was handed on: `direct`, `sendmail` or `local_smtp`.
    pub path: &'a str,
    /// The destination of a connect; null for `sendmail`.
    pub dst: Option<String>,
    pub dport: u16,
    /// `ipv4`, `ipv6`; null for `sendmail`.
    pub family: Option<&'a str>,
    /// For `sendmail`: the MTA's submission program that was run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// For `sendmail`: the caller's parent (e.g. the PHP process that ran `sendmail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_comm: Option<String>,
    pub verdict: &'a str,
    pub reason: &'a str,
    pub would_deny: bool,
    pub rule: String,
    pub generation: u32,
    /// On a summary line (refusals past the log's rate bound): how many refusals of this UID,
    /// cgroup, path and reason it stands for; the other fields are the last one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// On a summary line: the time of the first refusal it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ts: Option<String>,
}

pub fn destination(e: &Event) -> IpAddr {
    if e.family == antispam_common::net::AF_INET {
        IpAddr::V4(Ipv4Addr::new(
            e.daddr[0], e.daddr[1], e.daddr[2], e.daddr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(e.daddr))
    }
}

/// A NUL-padded `comm` as text.
fn comm(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

pub fn record<'a>(shared: &Shared, clock: &MonoToWall, e: &Event) -> Record<'a> {
    let connect = e.path != ev::PATH_SENDMAIL;
    let sendmail = !connect;
    Record {
        ts: clock::rfc3339_micros(clock.wall(e.ts_ns)),
        uid: e.uid,
        user: shared.users.name(e.uid),
        charged_uid: (e.charged_uid != e.uid).then_some(e.charged_uid),
        gid: e.gid,
        pid: e.pid,
        comm: comm(&e.comm),
        cgroup: shared.cgroups.label(e.cgroup_id),
        cgroup_id: e.cgroup_id,
        path: ev::path_name(e.path),
        dst: connect.then(|| destination(e).to_string()),
        dport: e.dport,
        family: connect.then_some(if e.family == antispam_common::net::AF_INET {
            "ipv4"
        } else {
            "ipv6"
        }),
        program: (sendmail && e.program > 0)
            .then(|| shared.program_name(e.program))
            .flatten(),
        ppid: (sendmail && e.ppid > 0).then_some(e.ppid),
        parent_comm: (sendmail && e.pcomm[0] != 0).then(|| comm(&e.pcomm)),
        verdict: ev::verdict_name(e.verdict),
        reason: ev::reason_name(e.reason),
        would_deny: e.verdict == ev::VERDICT_WOULD_DENY,
        rule: shared.rule_name(e.rule_id),
        generation: e.generation,
        count: None,
        first_ts: None,
    }
}

/// Where the kept events go, and the bounds on the way.
pub struct Writer {
    pub log: EventLog,
    pub bound: Bound,
    pub filter: EventFilter,
    pub errors: LogLimit,
}

/// Drains the ring buffer until `stop` changes, writing one JSON line per kept event.
pub async fn run(
    ring: RingBuf<MapData>,
    shared: Arc<Shared>,
    mut out: Writer,
    violations: tokio::sync::mpsc::Sender<Violation>,
    mut lines: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) {
    let clock = MonoToWall::new();
    // SAFETY: the ring buffer owns its map fd for its whole life, which the AsyncFd takes over.
    let mut fd =
        match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("cannot poll the event ring buffer: {e}");
                return;
            }
        };
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            r = fd.readable_mut() => {
                match r {
                    Ok(mut guard) => { guard.clear_ready(); }
                    Err(e) => { log::error!("event ring buffer: {e}"); return; }
                }
                false
            }
            _ = tick.tick() => false,
            // Records of other parts of the agent (the MTA policy service's messages): whole
            // lines, so that they never interleave with the kernel's events.
            Some(line) = lines.recv() => {
                let mut text = line;
                // Bounded: what is queued now, at most the channel's capacity.
                while let Ok(more) = lines.try_recv() {
                    text.extend_from_slice(&more);
                }
                write_records(&mut out, &shared, &text);
                continue;
            }
            _ = stop.changed() => true,
        };
        if shared.reopen_log.swap(false, Ordering::Relaxed) {
            match out.log.reopen() {
                Ok(Some(path)) => log::info!("event log {} reopened", path.display()),
                Ok(None) => {}
                Err(e) => out.errors.error(
                    "event log",
                    format!("reopening the event log: {e}; still writing to the file it had open"),
                ),
            }
        }
        let lines = drain(fd.get_mut(), &shared, &clock, &mut out, &violations, last);
        write(&mut out, &shared, &lines);
        out.errors.flush();
        if last {
            return;
        }
    }
}

/// Appends one drain's lines; a failure is counted (the events it held as lost) and logged,
/// summarised when it repeats.
fn write(out: &mut Writer, shared: &Shared, lines: &Lines) {
    if lines.text.is_empty() {
        return;
    }
    let c = &shared.counters;
    match out.log.append(&lines.text) {
        Ok(()) => {
            c.log_summaries
                .fetch_add(lines.summaries, Ordering::Relaxed);
            c.log_folded.fetch_add(lines.folded, Ordering::Relaxed);
        }
        Err(e) => {
            c.log_errors.fetch_add(1, Ordering::Relaxed);
            c.log_lost.fetch_add(lines.events, Ordering::Relaxed);
            out.errors.error(
                "event log",
                format!(
                    "writing the event log: {e}; {} events not logged (counted in antispam_event_log_lost_total)",
                    lines.events
                ),
            );
        }
    }
    c.log_rotations.store(out.log.rotations, Ordering::Relaxed);
}

/// Appends records of other parts of the agent (whole lines); a failure is counted and logged,
/// summarised when it repeats.
fn write_records(out: &mut Writer, shared: &Shared, text: &[u8]) {
    if let Err(e) = out.log.append(text) {
        shared.counters.log_errors.fetch_add(1, Ordering::Relaxed);
        out.errors.error(
            "event log",
            format!("writing the MTA policy service's message records: {e}"),
        );
    }
    shared
        .counters
        .log_rotations
        .store(out.log.rotations, Ordering::Relaxed);
}

/// A refused connect that counts as a strike (see `strikes`).
#[derive(Debug, Clone, Copy)]
pub struct Violation {
    pub uid: u32,
    pub cgroup_id: u64,
    pub reason: u32,
    /// The rule that refused (0: the default rate), for its `[suspension]` settings.
    pub rule_id: u32,
}

/// One drain's JSON lines, and what they stand for.
#[derive(Default)]
struct Lines {
    text: Vec<u8>,
    /// Events the lines stand for (detail lines, and the counts of summary lines).
    events: u64,
    summaries: u64,
    folded: u64,
}

impl Lines {
    fn push(&mut self, rec: &Record<'_>) {
        // A Record is strings and numbers: it always serializes.
        if serde_json::to_writer(&mut self.text, rec).is_ok() {
            self.text.push(b'\n');
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    shared: &Shared,
    clock: &MonoToWall,
    out: &mut Writer,
    violations: &tokio::sync::mpsc::Sender<Violation>,
    last: bool,
) -> Lines {
    let mut lines = Lines::default();
    while let Some(item) = ring.next() {
        shared.counters.events_read.fetch_add(1, Ordering::Relaxed);
        if item.len() < std::mem::size_of::<Event>() {
            shared
                .counters
                .decode_errors
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // SAFETY: the kernel wrote an `Event` (a `#[repr(C)]` plain-data type) at the start of
        // the record, which is at least that long; read_unaligned copes with any alignment.
        let e: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
        drop(item);
        if e.verdict == ev::VERDICT_DENIED
            && matches!(
                e.reason,
                ev::REASON_RATE_UID | ev::REASON_RATE_CGROUP | ev::REASON_BLOCK_DESTINATION
            )
        {
            // A full queue (an outbreak far past the strike threshold) loses strikes, not events.
            let _ = violations.try_send(Violation {
                uid: e.charged_uid,
                cgroup_id: e.cgroup_id,
                reason: e.reason,
                rule_id: e.rule_id,
            });
        }
        if out.filter == EventFilter::Denied && e.verdict == ev::VERDICT_ALLOWED {
            continue;
        }
        if !out.bound.admit(&e) {
            continue;
        }
        lines.events += 1;
        lines.push(&record(shared, clock, &e));
    }
    for f in out.bound.take(Instant::now(), last) {
        let mut rec = record(shared, clock, &f.last);
        rec.count = Some(f.count);
        rec.first_ts = Some(clock::rfc3339_micros(clock.wall(f.first_ns)));
        lines.push(&rec);
        lines.events += f.count;
        lines.summaries += 1;
        lines.folded += f.count;
    }
    lines
}
