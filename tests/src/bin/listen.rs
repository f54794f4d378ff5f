//! Test helper standing in for a local user squatting a port: `listen ADDR SECONDS` listens on
//! ADDR, prints "listening" once it does, and exits after SECONDS (at most 60).

use std::{io::Write as _, net::TcpListener, time::Duration};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: listen ADDR SECONDS");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listen: {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(secs.min(60)));
    drop(listener);
}
