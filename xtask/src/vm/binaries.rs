//! The integration test binaries of antispam-tests: built and named by
//! `cargo test --no-run --message-format=json`, or (with --no-build) the newest ones already in
//! target/release/deps.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::SystemTime,
};

use anyhow::{bail, Context as _, Result};

use super::guest::TestBinary;
use crate::{cargo, root, run, setup};

pub fn test_binaries(build: bool) -> Result<Vec<TestBinary>> {
    let mut bins = if build {
        built()?
    } else {
        already_built(&root().join("target/release/deps"), &test_names()?)
    };
    if bins.is_empty() {
        bail!("found no integration test binaries of antispam-tests");
    }
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(bins)
}

/// Builds the agent and the test binaries (release), and returns the test binaries cargo
/// reports.
fn built() -> Result<Vec<TestBinary>> {
    setup::setup()?;
    run(cargo().args(["build", "--release", "--package", "antispam-user"]))?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "antispam-tests",
        "--no-run",
    ])
    .arg("--message-format=json")
    .current_dir(root())
    .stderr(Stdio::inherit());
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_artifact)
        .collect())
}

/// A JSON string value `"key":"…"` of a cargo message (no JSON parser in xtask's
/// dependencies; cargo's messages are one object a line, and these values are paths and names).
fn json_str(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// An integration test (`kind: ["test"]`) of antispam-tests with an executable.
fn parse_artifact(line: &str) -> Option<TestBinary> {
    if !line.contains("\"reason\":\"compiler-artifact\"") || !line.contains("\"kind\":[\"test\"]") {
        return None;
    }
    if !json_str(line, "package_id")?.contains("antispam-tests") {
        return None;
    }
    let path = PathBuf::from(json_str(line, "executable")?);
    let name = json_str(line, "src_path").and_then(|p| {
        Path::new(&p)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    })?;
    Some(TestBinary { name, path })
}

/// The integration tests' names: tests/tests/*.rs.
fn test_names() -> Result<Vec<String>> {
    let dir = root().join("tests/tests");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The newest `deps/<name>-<hash>` executable for each name.
fn already_built(deps: &Path, names: &[String]) -> Vec<TestBinary> {
    let Ok(rd) = fs::read_dir(deps) else {
        return Vec::new();
    };
    let entries: Vec<(String, PathBuf, SystemTime)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let m = e.metadata().ok()?;
            use std::os::unix::fs::PermissionsExt as _;
            (m.is_file() && m.permissions().mode() & 0o111 != 0)
                .then(|| (n, e.path(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect();
    names
        .iter()
        .filter_map(|name| {
            entries
                .iter()
                .filter(|(n, _, _)| {
                    n.strip_prefix(name.as_str())
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                })
                .max_by_key(|(_, _, t)| *t)
                .map(|(_, p, _)| TestBinary {
                    name: name.clone(),
                    path: p.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_artifact_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#antispam-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"limits","src_path":"/w/tests/tests/limits.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"test":true},"features":[],"filenames":["/w/target/release/deps/limits-0123456789abcdef"],"executable":"/w/target/release/deps/limits-0123456789abcdef","fresh":true}"#;
        let b = parse_artifact(line).unwrap();
        assert_eq!(b.name, "limits");
        assert_eq!(
            b.path,
            Path::new("/w/target/release/deps/limits-0123456789abcdef")
        );
        let lib = line.replace(r#""kind":["test"]"#, r#""kind":["lib"]"#);
        assert!(parse_artifact(&lib).is_none());
        assert_eq!(json_str(r#"{"a":"x\"y"}"#, "a").as_deref(), Some("x\"y"));
    }
}
