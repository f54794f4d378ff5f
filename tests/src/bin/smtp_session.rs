//! smtp_session ADDR GO_FILE
//!
//! Opens an SMTP session to ADDR and reads the banner, then waits (at most 10 s) for GO_FILE to
//! exist, then sends NOOP and waits at most 3 s for the reply. Prints one JSON line:
//! {"banner":bool,"after":"reply"|"timeout"|"error"}. Used to check that a session that was
//! open when a suspension started goes no further.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: smtp_session ADDR GO_FILE");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let go = Path::new(&args[2]);
    let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            println!("{{\"banner\":false,\"after\":\"error\",\"detail\":\"connect: {e}\"}}");
            return;
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    let banner = reader
        .read_line(&mut line)
        .is_ok_and(|n| n > 0 && line.starts_with("220"));
    println!("{{\"banner\":{banner},\"phase\":\"ready\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !go.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut w = stream;
    let after = match w.write_all(b"NOOP\r\n") {
        Err(_) => "error",
        Ok(()) => {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => "reply",
                Ok(_) => "error",
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    "timeout"
                }
                Err(_) => "error",
            }
        }
    };
    println!("{{\"banner\":{banner},\"after\":\"{after}\"}}");
}
