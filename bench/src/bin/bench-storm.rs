//! bench-storm: a connect storm against one IPv4 address.
//!
//! N threads, each looping: socket, SO_LINGER {1, 0}, connect, close (an RST, so the client
//! keeps no TIME_WAIT and port reuse is not the ceiling). Bounded by a duration AND a maximum
//! count. With `--uids A-B` (run as root) each thread switches its own UIDs before every socket,
//! cycling through the range, so every UID in it gets live state in whatever limits per UID;
//! with one UID each thread switches once. `--rate` paces the whole storm (connects/s).
//!
//! Prints one JSON object: attempts, ok, eperm, other (and the first other errno), secs, per_sec.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use antispam_bench::{bounded_ms, errno, parse_range, setsockopt, sockaddr_in, thread_setresuid};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Destination (IPv4 socket address).
    #[arg(long)]
    addr: SocketAddrV4,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Stop after this many milliseconds (at most 600 s).
    #[arg(long)]
    duration_ms: u64,
    /// Stop after this many connect attempts in all.
    #[arg(long)]
    max: u64,
    /// UID, or inclusive UID range to cycle through ("100000-100999"); default: keep ours.
    #[arg(long)]
    uids: Option<String>,
    /// Pace the storm to this many connects per second in all (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Wait this long (ms) before starting, so a caller can sample the system first.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Default)]
struct Counts {
    ok: u64,
    eperm: u64,
    other: u64,
    other_errno: i32,
}

fn main() {
    let args = Args::parse();
    let uids = args.uids.as_deref().map(|s| {
        parse_range(s).unwrap_or_else(|e| {
            eprintln!("bench-storm: bad --uids {e}");
            std::process::exit(2)
        })
    });
    let threads = args.threads.clamp(1, 64);
    let duration = bounded_ms(args.duration_ms);
    std::thread::sleep(bounded_ms(args.delay_ms.min(10_000)));
    let taken = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let per_thread_rate = args.rate.map(|r| r.max(1.0) / f64::from(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let taken = taken.clone();
            let max = args.max;
            std::thread::spawn(move || {
                storm(
                    args.addr,
                    t,
                    threads,
                    uids,
                    deadline,
                    max,
                    &taken,
                    per_thread_rate,
                )
            })
        })
        .collect();
    let mut total = Counts::default();
    for h in handles {
        let c = h.join().expect("storm thread");
        total.ok += c.ok;
        total.eperm += c.eperm;
        total.other += c.other;
        if total.other_errno == 0 {
            total.other_errno = c.other_errno;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let attempts = total.ok + total.eperm + total.other;
    println!(
        "{{\"threads\":{threads},\"attempts\":{attempts},\"ok\":{},\"eperm\":{},\"other\":{},\"other_errno\":{},\"secs\":{secs:.6},\"per_sec\":{:.1}}}",
        total.ok,
        total.eperm,
        total.other,
        total.other_errno,
        attempts as f64 / secs.max(1e-9)
    );
}

#[expect(
    clippy::too_many_arguments,
    reason = "one storm thread's whole configuration, passed once at spawn"
)]
fn storm(
    addr: SocketAddrV4,
    t: u32,
    threads: u32,
    uids: Option<(u32, u32)>,
    deadline: Instant,
    max: u64,
    taken: &AtomicU64,
    rate: Option<f64>,
) -> Counts {
    let mut c = Counts::default();
    let sa = sockaddr_in(addr);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // A connect that is not answered (a full backlog) must not hang the storm.
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    let cycle = match uids {
        Some((a, b)) if a == b => {
            // Saved UID stays 0 so the thread could switch back; the real and effective UIDs
            // (what BPF, meta skuid and -m owner see) are the test UID.
            if let Err(e) = thread_setresuid(a, a, 0) {
                eprintln!("bench-storm: setresuid({a}): {e}");
                std::process::exit(2);
            }
            None
        }
        Some((a, b)) => Some((a, u64::from(b - a) + 1)),
        None => None,
    };
    let start = Instant::now();
    let mut i: u64 = 0;
    loop {
        if taken.fetch_add(1, Ordering::Relaxed) >= max {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / r);
            if due > now {
                std::thread::sleep((due - now).min(deadline - now));
            }
        }
        if let Some((base, n)) = cycle {
            let uid = base + ((u64::from(t) + i * u64::from(threads)) % n) as u32;
            if thread_setresuid(0, 0, 0).is_err() || thread_setresuid(uid, uid, 0).is_err() {
                eprintln!("bench-storm: cannot switch to uid {uid}: {}", errno());
                std::process::exit(2);
            }
        }
        i += 1;
        // SAFETY: plain socket syscalls on a descriptor this loop owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                c.other += 1;
                if c.other_errno == 0 {
                    c.other_errno = errno();
                }
                continue;
            }
            let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
            let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout);
            let r = libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if r == 0 {
                c.ok += 1;
            } else {
                let e = errno();
                if e == libc::EPERM {
                    c.eperm += 1;
                } else {
                    c.other += 1;
                    if c.other_errno == 0 {
                        c.other_errno = e;
                    }
                }
            }
            libc::close(fd);
        }
    }
    c
}
