//! `antispam manpages DIR` (hidden): writes the man pages, generated from this CLI, into DIR:
//! `antispam.8` and one `antispam-<subcommand>.8` per subcommand (what `cargo xtask package`
//! installs under /usr/share/man/man8).

use std::{path::PathBuf, process::ExitCode};

use clap::CommandFactory as _;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the pages (created if missing).
    dir: PathBuf,
}

pub fn main(args: Args) -> ExitCode {
    match write(&args.dir) {
        Ok(n) => {
            println!("{n} man pages written to {}", args.dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("antispam: writing man pages to {}: {e}", args.dir.display());
            ExitCode::from(2)
        }
    }
}

fn write(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let cmd = super::Cli::command().name("antispam");
    let mut n = 0;
    let mut pages = vec![(String::from("antispam"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("antispam-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("antispam {}", sub.get_name()));
        pages.push((name, page));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .section("8")
            .manual("antispam")
            .source(format!("antispam {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.8")), out)?;
        n += 1;
    }
    Ok(n)
}
