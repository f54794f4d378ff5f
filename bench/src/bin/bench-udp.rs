//! bench-udp: small UDP datagrams as fast as possible to one IPv4 address.
//!
//! One connected UDP socket, `send()` in a loop, bounded by a duration AND a maximum count.
//! Prints one JSON object: packets (sent), errors, secs, per_sec.

use std::net::SocketAddrV4;
use std::time::Instant;

use antispam_bench::{bounded_ms, errno, sockaddr_in};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Destination (IPv4 socket address).
    #[arg(long)]
    addr: SocketAddrV4,
    /// Stop after this many milliseconds (at most 600 s).
    #[arg(long)]
    duration_ms: u64,
    /// Stop after this many datagrams.
    #[arg(long)]
    max: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 18)]
    size: usize,
}

fn main() {
    let args = Args::parse();
    let sa = sockaddr_in(args.addr);
    let payload = vec![0x5au8; args.size.clamp(1, 1472)];
    // SAFETY: plain socket syscalls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        eprintln!("bench-udp: socket: {}", errno());
        std::process::exit(2);
    }
    // SAFETY: as above; sa is a valid sockaddr_in.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        eprintln!("bench-udp: connect: {}", errno());
        std::process::exit(2);
    }
    let deadline_in = bounded_ms(args.duration_ms);
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    while sent + errors < args.max {
        // Checking the clock every 64 datagrams keeps it out of the per-packet cost.
        if (sent + errors) % 64 == 0 && start.elapsed() >= deadline_in {
            break;
        }
        // SAFETY: payload is a live buffer of the given length.
        let n = unsafe { libc::send(fd, payload.as_ptr().cast(), payload.len(), 0) };
        if n < 0 {
            errors += 1;
        } else {
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    println!(
        "{{\"packets\":{sent},\"errors\":{errors},\"secs\":{secs:.6},\"per_sec\":{:.1}}}",
        sent as f64 / secs.max(1e-9)
    );
}
