//! connect_probe ADDR COUNT [--udp] [--smtp] [--interval-ms N] [--timeout-ms N]
//!
//! Connects COUNT (<= 1000) times to ADDR (a socket address: `10.0.0.1:25`, `[fd00::2]:25`,
//! `[::ffff:10.0.0.1]:25` for an AF_INET6 socket to an IPv4-mapped address) and prints one JSON
//! line per attempt: {"ok":bool,"errno":i32,"micros":u64}. `micros` is the time the connect()
//! call took. With --udp it connects a UDP socket and sends one datagram instead. With --smtp
//! it reads the banner and sends QUIT after a successful TCP connect.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: connect_probe ADDR COUNT [--udp] [--smtp] [--interval-ms N] [--timeout-ms N]"
        );
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().unwrap_or_else(|e| {
        eprintln!("bad address {}: {e}", args[1]);
        std::process::exit(2)
    });
    let count: u32 = args[2].parse().expect("COUNT");
    let count = count.min(1000);
    let mut udp = false;
    let mut smtp = false;
    let mut interval = Duration::ZERO;
    let mut timeout = Duration::from_secs(3);
    let mut i = 3;
    while i < args.len() {
        match args[i].as_str() {
            "--udp" => udp = true,
            "--smtp" => smtp = true,
            "--interval-ms" => {
                i += 1;
                interval = Duration::from_millis(args[i].parse::<u64>().expect("ms").min(10_000));
            }
            "--timeout-ms" => {
                i += 1;
                timeout =
                    Duration::from_millis(args[i].parse::<u64>().expect("ms").clamp(1, 10_000));
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 1;
    }

    let stdout = std::io::stdout();
    for n in 0..count {
        if n > 0 && !interval.is_zero() {
            std::thread::sleep(interval);
        }
        let (ok, errno, micros) = if udp {
            udp_once(addr)
        } else {
            tcp_once(addr, timeout, smtp)
        };
        let mut out = stdout.lock();
        let _ = writeln!(out, "{{\"ok\":{ok},\"errno\":{errno},\"micros\":{micros}}}");
        let _ = out.flush();
    }
}

fn tcp_once(addr: SocketAddr, timeout: Duration, smtp: bool) -> (bool, i32, u64) {
    let start = Instant::now();
    let res = TcpStream::connect_timeout(&addr, timeout);
    let micros = start.elapsed().as_micros() as u64;
    match res {
        Ok(s) => {
            if smtp {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let mut r = BufReader::new(&s);
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = (&s).write_all(b"QUIT\r\n");
                line.clear();
                let _ = r.read_line(&mut line);
            }
            (true, 0, micros)
        }
        Err(e) => (false, e.raw_os_error().unwrap_or(-1), micros),
    }
}

fn udp_once(addr: SocketAddr) -> (bool, i32, u64) {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let start = Instant::now();
    let res = UdpSocket::bind(bind).and_then(|s| {
        s.connect(addr)?;
        s.send(b"antispam connect_probe\r\n")?;
        Ok(())
    });
    let micros = start.elapsed().as_micros() as u64;
    match res {
        Ok(()) => (true, 0, micros),
        Err(e) => (false, e.raw_os_error().unwrap_or(-1), micros),
    }
}
