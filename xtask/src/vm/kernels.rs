//! Debian's own kernels, fetched with `apt-get download` under a private apt configuration (its
//! own sources list built from the host's Debian mirrors, its own lists and cache, an empty dpkg
//! status) and unpacked with `dpkg -x` plus `depmod -b` into ~/.cache/antispam/kernels: nothing
//! is installed on the host. The newest version the mirror offers is picked; an unpacked one is
//! reused, so a second run downloads nothing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _, Result};

use crate::setup;

/// Refresh the private package lists when they are older than this (or with `--refresh`).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Keyring of Debian's archive, when the host's entry does not name one.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel line the VMs can boot: packages are named `<prefix><N><suffix>`, newest N wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// What `--kernel` calls it, and the name of its log (target/vm/<name>.log).
    pub name: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    /// The Debian release it comes from (the host's release does not matter).
    suite: &'static str,
    /// Below the agent's kernel floor: the agent must refuse to start there, so only the
    /// `floor` test binary runs in its VM.
    pub below_floor: bool,
}

/// The generic (not cloud: those have no 9p) amd64 flavours.
pub const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
        suite: "bookworm",
        below_floor: false,
    },
    Series {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
        suite: "bookworm",
        below_floor: false,
    },
    // Debian 11's kernel: it lacks BPF atomics (5.12) and SO_NETNS_COOKIE (5.14).
    Series {
        name: "5.10",
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64",
        suite: "bullseye",
        below_floor: true,
    },
];

impl Series {
    /// The N of a package name of this series (`linux-image-6.1.0-57-amd64` → 57).
    fn number(&self, package: &str) -> Option<u32> {
        let n = package
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    }
}

/// An unpacked kernel package.
#[derive(Debug)]
pub struct Kernel {
    pub series: Series,
    pub package: String,
    pub version: String,
    /// `uname -r` of the guest, the directory under lib/modules.
    pub release: String,
    /// The `dpkg -x` tree.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub fn modules(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
}

pub fn cache_dir() -> PathBuf {
    setup::cache_dir().join("kernels")
}

/// The newest kernel of `series` the mirror offers, downloaded and unpacked if not cached yet.
pub fn ensure(series: Series, refresh: bool) -> Result<Kernel> {
    let apt = Apt::new(&cache_dir(), series.suite)?;
    let chosen = apt
        .update_if_stale(refresh)
        .and_then(|()| apt.newest(series));
    let (package, version) = match chosen {
        Ok(pv) => pv,
        Err(e) => {
            // Offline, or the mirror is away: an unpacked kernel of this series still serves.
            if let Some(k) = newest_cached(series) {
                eprintln!(
                    "vm-test: cannot ask the mirror for {} kernels ({e:#}); using cached {} {}",
                    series.name, k.package, k.version
                );
                return Ok(k);
            }
            return Err(e.context(format!("finding a {} kernel", series.name)));
        }
    };
    let dir = cache_dir().join(format!("{package}_{version}"));
    let kernel = Kernel {
        series,
        release: package.trim_start_matches("linux-image-").to_string(),
        package,
        version,
        root: dir,
    };
    if !is_ready(&kernel.root) {
        apt.download_and_unpack(&kernel)?;
    }
    prune_older(&kernel);
    Ok(kernel)
}

fn is_ready(dir: &Path) -> bool {
    dir.join(".ready").is_file()
}

/// Unpacked kernels of `series` in the cache: (N, dir name).
fn cached(series: Series) -> Vec<(u32, String)> {
    let Ok(rd) = fs::read_dir(cache_dir()) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (pkg, _) = name.split_once('_')?;
            let n = series.number(pkg)?;
            is_ready(&e.path()).then_some((n, name))
        })
        .collect()
}

fn newest_cached(series: Series) -> Option<Kernel> {
    let (_, name) = cached(series).into_iter().max()?;
    let (package, version) = name.split_once('_')?;
    Some(Kernel {
        series,
        release: package.trim_start_matches("linux-image-").to_string(),
        package: package.to_string(),
        version: version.to_string(),
        root: cache_dir().join(&name),
    })
}

/// Removes older unpacked kernels of the same series (about 500 MB each).
fn prune_older(keep: &Kernel) {
    let keep_name = keep
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    for (_, name) in cached(keep.series) {
        if Some(&name) != keep_name.as_ref() {
            eprintln!("vm-test: removing the older cached kernel {name}");
            let _ = fs::remove_dir_all(cache_dir().join(&name));
        }
    }
}

/// A private apt: own sources list, lists, cache and state under `dir/apt`, no dpkg status.
struct Apt {
    dir: PathBuf,
    conf: PathBuf,
}

impl Apt {
    /// The private apt of one Debian release: `apt/` for bookworm (as before), `apt-<suite>/`
    /// for the others, so that a release that has left the mirror cannot break the others.
    fn new(cache: &Path, suite: &str) -> Result<Apt> {
        let dir = if suite == "bookworm" {
            cache.join("apt")
        } else {
            cache.join(format!("apt-{suite}"))
        };
        for sub in [
            "lists/partial",
            "archives/partial",
            "cache",
            "state",
            "sources.list.d",
            "preferences.d",
            "download",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let sources = sources_list(&host_sources()?, suite)?;
        write_if_changed(&dir.join("sources.list"), &sources)?;
        let d = dir.display();
        let conf = format!(
            "// Written by cargo xtask vm-test: a private apt that only downloads kernels.\n\
             Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
             Dir::Etc::Preferences \"/dev/null\";\n\
             Dir::Etc::PreferencesParts \"{d}/preferences.d\";\n\
             Dir::State \"{d}/state\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::State::status \"/dev/null\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Cache::archives \"{d}/archives\";\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n\
             APT::Architectures {{ \"amd64\"; }};\n"
        );
        // An older release's security suite is no longer re-signed every few days; its packages
        // are still checked against the archive's keys.
        let conf = if suite == "bookworm" {
            conf
        } else {
            conf + "Acquire::Check-Valid-Until \"false\";\n"
        };
        let conf_path = dir.join("apt.conf");
        write_if_changed(&conf_path, &conf)?;
        Ok(Apt {
            dir,
            conf: conf_path,
        })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg("-c").arg(&self.conf);
        c
    }

    fn stamp(&self) -> PathBuf {
        self.dir.join("lists/.updated")
    }

    /// `apt-get update` when the lists are missing, older than a day, the sources changed, or
    /// `force`.
    fn update_if_stale(&self, force: bool) -> Result<()> {
        let stamp_time = fs::metadata(self.stamp()).and_then(|m| m.modified()).ok();
        let sources_time = fs::metadata(self.dir.join("sources.list"))
            .and_then(|m| m.modified())
            .ok();
        let fresh = match (stamp_time, sources_time) {
            (Some(s), Some(src)) => {
                s >= src
                    && SystemTime::now()
                        .duration_since(s)
                        .is_ok_and(|age| age < LISTS_MAX_AGE)
            }
            _ => false,
        };
        if fresh && !force {
            return Ok(());
        }
        eprintln!(
            "vm-test: refreshing the private package lists (kernels only, nothing installed)"
        );
        let out = self
            .cmd("apt-get")
            .args(["-q", "update"])
            .output()
            .context("running apt-get update")?;
        if !out.status.success() {
            bail!(
                "apt-get update (private config {}) failed: {}",
                self.conf.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        fs::write(self.stamp(), b"")?;
        Ok(())
    }

    /// The newest package of `series` that has a candidate version: (name, version).
    fn newest(&self, series: Series) -> Result<(String, String)> {
        let out = self
            .cmd("apt-cache")
            .args(["pkgnames", series.prefix])
            .output()
            .context("running apt-cache pkgnames")?;
        let mut names: Vec<(u32, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| series.number(l.trim()).map(|n| (n, l.trim().to_string())))
            .collect();
        names.sort();
        // Names only referenced (no candidate) are skipped; a handful at most.
        for (_, name) in names.iter().rev().take(20) {
            if let Some(v) = self.candidate(name)? {
                return Ok((name.clone(), v));
            }
        }
        bail!(
            "the mirror offers no {}N{} package (private apt config {})",
            series.prefix,
            series.suffix,
            self.conf.display()
        )
    }

    fn candidate(&self, package: &str) -> Result<Option<String>> {
        let out = self
            .cmd("apt-cache")
            .args(["policy", package])
            .output()
            .context("running apt-cache policy")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v != "(none)"))
    }

    fn download_and_unpack(&self, k: &Kernel) -> Result<()> {
        let dl = self.dir.join("download");
        // Leftovers of an interrupted run.
        let _ = fs::remove_dir_all(&dl);
        fs::create_dir_all(&dl)?;
        eprintln!(
            "vm-test: downloading {} {} (about 70-100 MB)",
            k.package, k.version
        );
        let status = self
            .cmd("apt-get")
            .args(["-q", "download"])
            .arg(format!("{}={}", k.package, k.version))
            .current_dir(&dl)
            .status()
            .context("running apt-get download")?;
        if !status.success() {
            bail!("apt-get download {}={} failed", k.package, k.version);
        }
        let deb = fs::read_dir(&dl)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download left no .deb in {}", dl.display()))?;
        let partial = k.root.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        eprintln!("vm-test: unpacking {} (dpkg -x, depmod -b)", deb.display());
        crate::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
        crate::run(
            Command::new("depmod")
                .arg("-b")
                .arg(&partial)
                .arg(&k.release),
        )?;
        for need in [
            format!("boot/vmlinuz-{}", k.release),
            format!("lib/modules/{}/modules.dep", k.release),
        ] {
            if !partial.join(&need).is_file() {
                bail!("{} has no {need}", deb.display());
            }
        }
        fs::write(
            partial.join(".ready"),
            format!("{} {}\n", k.package, k.version),
        )?;
        let _ = fs::remove_dir_all(&k.root);
        fs::rename(&partial, &k.root)?;
        let _ = fs::remove_dir_all(&dl);
        Ok(())
    }
}

fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if fs::read_to_string(path).ok().as_deref() != Some(content) {
        fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One `deb` entry of the host's apt sources.
#[derive(Debug, Default, Clone)]
struct Source {
    uri: String,
    suites: Vec<String>,
    signed_by: Option<String>,
}

/// Debian's code names and aliases: an entry with another suite is not a Debian mirror.
fn is_debian_suite(suite: &str) -> bool {
    let base = suite.split(['-', '/']).next().unwrap_or_default();
    [
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
        "sid",
        "stable",
        "oldstable",
        "testing",
        "unstable",
    ]
    .contains(&base)
}

fn is_security(s: &Source) -> bool {
    s.suites
        .iter()
        .any(|x| x.ends_with("-security") || x.ends_with("/updates"))
}

/// The host's `deb` entries from sources.list, sources.list.d/*.list and *.sources.
fn host_sources() -> Result<Vec<Source>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822(&text)),
            Some("list") => out.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    Ok(out)
}

fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            for o in opts.split_whitespace() {
                if let Some(v) = o.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            signed_by,
        });
    }
    out
}

fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // A continuation line (an inline key block): kept as part of the value.
                if let Some(last) = fields.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        if !get("types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if get("enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let suites: Vec<String> = get("suites")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        // An inline key cannot be named in a one-line entry: the archive keyring serves.
        let signed_by = get("signed-by")
            .filter(|v| !v.contains('\n') && !v.contains("BEGIN PGP"))
            .map(str::to_string);
        for uri in get("uris").unwrap_or_default().split_whitespace() {
            out.push(Source {
                uri: uri.to_string(),
                suites: suites.clone(),
                signed_by: signed_by.clone(),
            });
        }
    }
    out
}

/// The private sources list: SUITE, SUITE-updates (and for bookworm SUITE-backports) from the
/// host's Debian mirror, SUITE-security from its security mirror (main only: kernels live
/// there). bullseye-backports has left the mirror.
fn sources_list(host: &[Source], suite: &str) -> Result<String> {
    let suffixes: &[&str] = if suite == "bookworm" {
        &["", "-updates", "-backports"]
    } else {
        &["", "-updates"]
    };
    let debian: Vec<&Source> = host
        .iter()
        .filter(|s| s.suites.iter().any(|x| is_debian_suite(x)))
        .collect();
    let main = debian
        .iter()
        .find(|s| !is_security(s))
        .context("the host's apt sources name no Debian mirror (/etc/apt/sources.list*)")?;
    let keyring = |s: &Source| {
        s.signed_by
            .clone()
            .unwrap_or_else(|| DEBIAN_KEYRING.to_string())
    };
    let mut out = String::from("# Written by cargo xtask vm-test from the host's apt sources.\n");
    for suffix in suffixes {
        out.push_str(&format!(
            "deb [signed-by={}] {} {suite}{suffix} main\n",
            keyring(main),
            main.uri
        ));
    }
    match debian.iter().find(|s| is_security(s)) {
        Some(sec) => out.push_str(&format!(
            "deb [signed-by={}] {} {suite}-security main\n",
            keyring(sec),
            sec.uri
        )),
        None => eprintln!(
            "vm-test: the host's apt sources name no Debian security mirror: only {suite}, \
             -updates and -backports kernels are looked at"
        ),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_numbers() {
        let s61 = SERIES[0];
        let s612 = SERIES[1];
        assert_eq!(s61.number("linux-image-6.1.0-57-amd64"), Some(57));
        assert_eq!(s61.number("linux-image-6.1.0-57-cloud-amd64"), None);
        assert_eq!(s61.number("linux-image-6.1.0-57-amd64-unsigned"), None);
        assert_eq!(s61.number("linux-image-6.1.0-57-amd64-dbg"), None);
        assert_eq!(s612.number("linux-image-6.12.117+deb12-amd64"), Some(117));
        assert_eq!(s612.number("linux-image-6.12.117+deb12-cloud-amd64"), None);
        assert_eq!(s612.number("linux-image-6.12.117+deb12-rt-amd64"), None);
    }

    #[test]
    fn sources_from_deb822_and_one_line() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n\n\
                      Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n\
                      Suites: nodistro\nComponents: main\n";
        let mut host = parse_deb822(deb822);
        host.extend(parse_one_line(
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
        ));
        let list = sources_list(&host, "bookworm").unwrap();
        let old = sources_list(&host, "bullseye").unwrap();
        assert!(old.contains("http://deb.debian.org/debian bullseye-updates main\n"));
        assert!(!old.contains("backports"));
        assert!(old.contains("debian-security bullseye-security main\n"));
        assert!(list.contains(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian bookworm-backports main\n"
        ));
        assert!(list.contains("http://deb.debian.org/debian-security bookworm-security main\n"));
        assert!(!list.contains("nodesource") && !list.contains("google"));
        let one = parse_one_line("deb [arch=amd64 signed-by=/k.gpg] http://m/debian trixie main");
        assert_eq!(one[0].uri, "http://m/debian");
        assert_eq!(one[0].signed_by.as_deref(), Some("/k.gpg"));
    }
}
