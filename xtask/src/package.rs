//! `cargo xtask package`: the Debian package, `target/debian/antispam_<version>_<arch>.deb`,
//! built with dpkg-deb from a staged tree (no packaging tool beyond dpkg's own), and with
//! `--static` a statically linked binary, `target/static/antispam`.
//!
//! The package: `/usr/sbin/antispam` (stripped), the systemd unit in `/lib/systemd/system/`
//! (the shipped one with the binary's path), `/etc/antispam/policy.toml` (the example policy)
//! and `/etc/logrotate.d/antispam` as conffiles, man pages generated from the CLI, bash, zsh and
//! fish completions, the docs and the Prometheus rules and Grafana dashboard under
//! `/usr/share/doc/antispam/`. Its maintainer scripts (`deploy/debian/`) create the `antispam`
//! operators' group, start the service only if `antispam check` passes the policy, restart it
//! on upgrade (the new agent takes the pinned programs over: no gap), and on purge remove
//! everything, the pins included.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, root, run, setup};

#[derive(clap::Args)]
pub struct PackageArgs {
    /// Build a statically linked binary (musl) at
    /// target/static/antispam instead of the .deb.
    #[arg(long = "static")]
    static_: bool,
    /// Appended to the version of the .deb (e.g. `+vmtest1`), to make an upgrade of the same
    /// source.
    #[arg(long)]
    version_suffix: Option<String>,
    /// Use target/release/antispam as it is, instead of building it.
    #[arg(long)]
    no_build: bool,
}

/// What building a package needs besides dpkg (always there): strip and objcopy.
const PACKAGE_PACKAGES: &[(&str, &str)] = &[("binutils", "strip, for the packaged binary")];

pub fn package(args: &PackageArgs) -> Result<PathBuf> {
    setup::setup()?;
    if args.static_ {
        return static_binary();
    }
    if !args.no_build {
        progress("building the agent (release)");
        run(cargo().args(["build", "--release", "--package", "antispam-user"]))?;
    }
    let version = format!(
        "{}{}",
        env!("CARGO_PKG_VERSION"),
        args.version_suffix.as_deref().unwrap_or("")
    );
    deb(&root().join("target/release/antispam"), &version)
}

fn progress(what: &str) {
    eprintln!("=== xtask package: {what}");
}

/// The .deb of `binary` at `version`.
pub fn deb(binary: &Path, version: &str) -> Result<PathBuf> {
    setup::ensure_packages(PACKAGE_PACKAGES)?;
    let root = root();
    let out = root.join("target/debian");
    let stage = out.join(format!("antispam_{version}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    progress(&format!("staging {}", stage.display()));

    let sbin = stage.join("usr/sbin/antispam");
    mkdirs(&sbin)?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&sbin)
        .arg(binary))?;

    let unit = fs::read_to_string(root.join("deploy/systemd/antispam.service"))?
        .replace("/usr/local/bin/antispam", "/usr/sbin/antispam")
        .replace(
            "# Install: binary at /usr/sbin/antispam, policy at /etc/antispam/policy.toml, then\n#   systemctl daemon-reload && systemctl enable --now antispam\n",
            "# Installed by the antispam package (enabled and started when the policy checks).\n",
        );
    write(
        &stage.join("lib/systemd/system/antispam.service"),
        &unit,
        0o644,
    )?;
    copy(
        &root.join("deploy/policy.example.toml"),
        &stage.join("etc/antispam/policy.toml"),
        0o644,
    )?;
    copy(
        &root.join("deploy/debian/logrotate"),
        &stage.join("etc/logrotate.d/antispam"),
        0o644,
    )?;

    // Man pages and completions, from the CLI itself.
    let man = stage.join("usr/share/man/man8");
    run(Command::new(&sbin).arg("manpages").arg(&man))?;
    for page in fs::read_dir(&man)? {
        run(Command::new("gzip").args(["-9n"]).arg(page?.path()))?;
    }
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/antispam"),
        ("zsh", "usr/share/zsh/vendor-completions/_antispam"),
        ("fish", "usr/share/fish/vendor_completions.d/antispam.fish"),
    ] {
        let o = Command::new(&sbin).args(["completions", shell]).output()?;
        if !o.status.success() {
            bail!("antispam completions {shell} failed: {o:?}");
        }
        write(&stage.join(path), &String::from_utf8(o.stdout)?, 0o644)?;
    }

    // Docs, the Prometheus rules and the dashboard.
    let doc = stage.join("usr/share/doc/antispam");
    copy(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for entry in fs::read_dir(root.join("docs"))? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "md") {
            copy(&p, &doc.join(p.file_name().unwrap()), 0o644)?;
        }
    }
    for f in ["prometheus/antispam-rules.yml", "grafana/antispam.json"] {
        copy(&root.join("deploy").join(f), &doc.join(f), 0o644)?;
    }
    write(&doc.join("copyright"), COPYRIGHT, 0o644)?;
    let changelog = doc.join("changelog.Debian");
    write(
        &changelog,
        &format!(
            "antispam ({version}) unstable; urgency=medium\n\n  * Built from source by cargo xtask package.\n\n -- antispam developers <antispam@localhost>  {}\n",
            date_rfc2822()?
        ),
        0o644,
    )?;
    run(Command::new("gzip").args(["-9nf"]).arg(&changelog))?;

    // Control files.
    let debian = stage.join("DEBIAN");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let size_kib = output(
        Command::new("du")
            .args(["-sk", "--exclude=DEBIAN"])
            .arg(&stage),
    )?
    .split_whitespace()
    .next()
    .unwrap_or("0")
    .to_string();
    write(
        &debian.join("control"),
        &format!(
            "Package: antispam\n\
Version: {version}\n\
Architecture: {arch}\n\
Maintainer: antispam developers <antispam@localhost>\n\
Installed-Size: {size_kib}\n\
Depends: libc6 (>= 2.34), adduser\n\
Recommends: systemd, logrotate\n\
Section: net\n\
Priority: optional\n\
Homepage: https://github.com/antispam/antispam\n\
Description: {DESCRIPTION}\n"
        ),
        0o644,
    )?;
    write(
        &debian.join("conffiles"),
        "/etc/antispam/policy.toml\n/etc/logrotate.d/antispam\n",
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &root.join("deploy/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }

    let deb = out.join(format!("antispam_{version}_{arch}.deb"));
    progress(&format!("dpkg-deb --build {}", deb.display()));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    check_contents(&deb)?;
    let bytes = fs::metadata(&deb)?.len();
    println!(
        "built {} ({:.1} MiB; installed {} KiB)",
        deb.display(),
        bytes as f64 / (1 << 20) as f64,
        size_kib
    );
    Ok(deb)
}

/// The files every package must hold: a missing one fails the build.
const MUST_HOLD: &[&str] = &[
    "./usr/sbin/antispam",
    "./lib/systemd/system/antispam.service",
    "./etc/antispam/policy.toml",
    "./etc/logrotate.d/antispam",
    "./usr/share/man/man8/antispam.8.gz",
    "./usr/share/man/man8/antispam-run.8.gz",
    "./usr/share/bash-completion/completions/antispam",
    "./usr/share/zsh/vendor-completions/_antispam",
    "./usr/share/fish/vendor_completions.d/antispam.fish",
    "./usr/share/doc/antispam/operations.md",
    "./usr/share/doc/antispam/copyright",
    "./usr/share/doc/antispam/prometheus/antispam-rules.yml",
    "./usr/share/doc/antispam/grafana/antispam.json",
];

fn check_contents(deb: &Path) -> Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let missing: Vec<&str> = MUST_HOLD
        .iter()
        .copied()
        .filter(|f| !listing.lines().any(|l| l.ends_with(f)))
        .collect();
    if !missing.is_empty() {
        bail!("{} lacks {}", deb.display(), missing.join(", "));
    }
    Ok(())
}

/// A statically linked agent, for musl (Rust's `x86_64-unknown-linux-musl` target, added with
/// rustup if missing): it runs on any x86-64 Linux with no shared library at all, and looks
/// users up in /etc/passwd itself. (glibc linked statically crashes in getpwnam: its NSS
/// modules are loaded dynamically.)
fn static_binary() -> Result<PathBuf> {
    setup::ensure_packages(PACKAGE_PACKAGES)?;
    let triple = "x86_64-unknown-linux-musl";
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == triple)
        })
        .unwrap_or(false);
    if !installed {
        progress(&format!("rustup target add {triple}"));
        run(Command::new("rustup").args(["target", "add", triple]))?;
    }
    progress(&format!("building the agent statically linked ({triple})"));
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "antispam-user",
        "--target",
        triple,
    ]))?;
    let built = root().join(format!("target/{triple}/release/antispam"));
    let out = root().join("target/static/antispam");
    mkdirs(&out)?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(&built))?;
    let file = output(Command::new("file").arg("-b").arg(&out)).unwrap_or_default();
    let ldd = Command::new("ldd").arg(&out).output()?;
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    if !(ldd.contains("not a dynamic executable") || ldd.contains("statically linked")) {
        bail!("{} is not static: ldd says {ldd}", out.display());
    }
    let bytes = fs::metadata(&out)?.len();
    println!(
        "built {} ({:.1} MiB, {}{})",
        out.display(),
        bytes as f64 / (1 << 20) as f64,
        ldd.trim(),
        if file.is_empty() {
            String::new()
        } else {
            format!("; {file}")
        }
    );
    Ok(out)
}

/// The control file's description: a synopsis, then lines that begin with a space.
const DESCRIPTION: &str = concat!(
    "kernel-enforced outbound mail limits per UID and cgroup\n",
    " eBPF programs see every way a process hands mail to the outside world (direct\n",
    " SMTP, the sendmail interface, SMTP to the local MTA), charge it to the UID and\n",
    " the cgroup that did it, and refuse it with EPERM over the policy's budgets. The\n",
    " agent fills the kernel's maps from a checked policy, logs every decision, serves\n",
    " Prometheus metrics and keeps a tamper-evident audit log.",
);

const COPYRIGHT: &str = concat!(
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
    "Upstream-Name: antispam\n",
    "\n",
    "Files: *\n",
    "Copyright: antispam developers\n",
    "License: MIT or Apache-2.0\n",
    " Licensed under either of the MIT license or the Apache License, Version 2.0, at\n",
    " your option. On Debian systems the Apache License 2.0 is in\n",
    " /usr/share/common-licenses/Apache-2.0.\n",
);

fn mkdirs(file: &Path) -> Result<()> {
    let dir = file.parent().expect("a file in a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    mkdirs(path)?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let text = fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &text, mode)
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8(o.stdout)?.trim().to_string())
}

fn date_rfc2822() -> Result<String> {
    output(Command::new("date").arg("-R"))
}
