//! smtp_messages ADDR FROM COUNT RCPT[,RCPT...]
//!
//! One SMTP session to ADDR carrying COUNT messages, each to the comma-separated recipients.
//! For every message it sends MAIL, each RCPT, and (if a recipient was accepted) DATA and a
//! small message, then RSET when the transaction failed. Prints one JSON line per message:
//! {"i":N,"mail":"250 ...","rcpt":["250 ...",...],"data":"354 ..."|null,"end":"250 ..."|null}
//! and finally {"quit":"221 ..."}. Every read is bounded (5 s); replies are whole (multi-line
//! replies joined by " | ").

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

fn reply(r: &mut impl BufRead) -> String {
    let mut all = Vec::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => return format!("EOF {}", all.join(" | ")),
        }
        let l = line.trim_end().to_string();
        let more = l.len() > 3 && l.as_bytes()[3] == b'-';
        all.push(l);
        if !more {
            return all.join(" | ");
        }
    }
}

fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: smtp_messages ADDR FROM COUNT RCPT[,RCPT...]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let from = &args[2];
    let count: usize = args[3].parse().expect("COUNT");
    let rcpts: Vec<&str> = args[4].split(',').filter(|r| !r.is_empty()).collect();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| {
        println!("{{\"error\":{}}}", json(&format!("connect: {e}")));
        std::process::exit(1);
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut r = BufReader::new(stream.try_clone().expect("clone"));
    let mut w = stream;
    let say = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str| {
        let _ = w.write_all(format!("{line}\r\n").as_bytes());
        reply(r)
    };
    let banner = reply(&mut r);
    if !banner.starts_with("220") {
        println!("{{\"error\":{}}}", json(&banner));
        std::process::exit(1);
    }
    say(&mut w, &mut r, "EHLO client.example.test");
    for i in 0..count {
        let mail = say(&mut w, &mut r, &format!("MAIL FROM:<{from}>"));
        let mut rc = Vec::new();
        for to in &rcpts {
            rc.push(say(&mut w, &mut r, &format!("RCPT TO:<{to}>")));
        }
        let any = rc.iter().any(|x| x.starts_with('2'));
        let (mut data, mut end) = (None, None);
        if any {
            let d = say(&mut w, &mut r, "DATA");
            if d.starts_with("354") {
                let msg = format!(
                    "From: <{from}>\r\nTo: {}\r\nSubject: message {i} of one session\r\n\r\nmessage {i}\r\n.",
                    rcpts.join(", ")
                );
                end = Some(say(&mut w, &mut r, &msg));
            }
            data = Some(d);
        }
        if !end.as_deref().is_some_and(|e| e.starts_with('2')) {
            say(&mut w, &mut r, "RSET");
        }
        let opt = |o: &Option<String>| o.as_deref().map_or("null".to_string(), json);
        let rc: Vec<String> = rc.iter().map(|x| json(x)).collect();
        println!(
            "{{\"i\":{i},\"mail\":{},\"rcpt\":[{}],\"data\":{},\"end\":{}}}",
            json(&mail),
            rc.join(","),
            opt(&data),
            opt(&end)
        );
    }
    let quit = say(&mut w, &mut r, "QUIT");
    println!("{{\"quit\":{}}}", json(&quit));
}
