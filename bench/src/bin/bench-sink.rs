//! bench-sink: the far end of the storms. Accepts TCP connections and closes them at once, and
//! reads and discards UDP datagrams, until it is killed or `--max-secs` pass.
//!
//! Prints "ready" on standard output once every socket is bound and listening.

use std::io::Write as _;
use std::net::SocketAddrV4;
use std::time::Duration;

use antispam_bench::{errno, setsockopt, sockaddr_in};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// TCP address to accept on.
    #[arg(long)]
    tcp: Option<SocketAddrV4>,
    /// UDP address to drain.
    #[arg(long)]
    udp: Option<SocketAddrV4>,
    /// Accepting threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Exit after this many seconds whatever happens (at most 3600).
    #[arg(long, default_value_t = 1800)]
    max_secs: u64,
}

fn bound(kind: i32, addr: SocketAddrV4) -> i32 {
    // SAFETY: plain socket syscalls; the descriptor lives until the process exits.
    unsafe {
        let fd = libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            fail("socket");
        }
        let one: libc::c_int = 1;
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
        let sa = sockaddr_in(addr);
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            fail("bind");
        }
        fd
    }
}

fn fail(what: &str) -> ! {
    eprintln!("bench-sink: {what}: errno {}", errno());
    std::process::exit(2)
}

fn main() {
    let args = Args::parse();
    let max = Duration::from_secs(args.max_secs.min(3600));
    std::thread::spawn(move || {
        std::thread::sleep(max);
        std::process::exit(0);
    });
    let mut handles = Vec::new();
    if let Some(addr) = args.tcp {
        let fd = bound(libc::SOCK_STREAM, addr);
        // SAFETY: listen on our socket.
        if unsafe { libc::listen(fd, 4096) } != 0 {
            fail("listen");
        }
        for _ in 0..args.threads.clamp(1, 8) {
            handles.push(std::thread::spawn(move || loop {
                // SAFETY: accept on our listening socket, close what it returns.
                unsafe {
                    let c = libc::accept4(
                        fd,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    );
                    if c >= 0 {
                        libc::close(c);
                    }
                }
            }));
        }
    }
    if let Some(addr) = args.udp {
        let fd = bound(libc::SOCK_DGRAM, addr);
        let size: libc::c_int = 8 << 20;
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
        handles.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                // SAFETY: recv into a live buffer.
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            }
        }));
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
}
