//! Test helper standing in for an MTA program that executes itself again (as Exim does to
//! deliver): `reexec` executes its own file once more with the argument `again`, then exits 0.
//! Exit status 126 when the second execution was refused (EPERM), 1 on other errors.

use std::os::unix::process::CommandExt as _;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("again") {
        return;
    }
    // Our own file by its path (argv[0] is the path the test ran).
    let err = std::process::Command::new(&args[0]).arg("again").exec();
    eprintln!("reexec: executing {} again: {err}", args[0]);
    std::process::exit(if err.raw_os_error() == Some(libc::EPERM) {
        126
    } else {
        1
    });
}
