//! bench-exec: executes one program over and over (fork + exec + wait), as fast as possible.
//!
//! Bounded by a duration AND a maximum count. Prints one JSON object: execs (that ran and
//! exited 0), failed, secs, per_sec.

use std::{path::PathBuf, process::Command, time::Instant};

use antispam_bench::bounded_ms;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The program to execute (e.g. /bin/true).
    #[arg(long)]
    program: PathBuf,
    /// Stop after this many milliseconds (at most 600 s).
    #[arg(long)]
    duration_ms: u64,
    /// Stop after this many executions.
    #[arg(long)]
    max: u64,
}

fn main() {
    let args = Args::parse();
    let deadline_in = bounded_ms(args.duration_ms);
    let start = Instant::now();
    let (mut execs, mut failed) = (0u64, 0u64);
    while execs + failed < args.max && start.elapsed() < deadline_in {
        match Command::new(&args.program).status() {
            Ok(s) if s.success() => execs += 1,
            _ => failed += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"execs\": {execs}, \"failed\": {failed}, \"secs\": {secs:.6}, \"per_sec\": {:.1}}}",
        execs as f64 / secs.max(1e-9)
    );
}
