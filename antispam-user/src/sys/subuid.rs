//! Subordinate UIDs (`/etc/subuid`, subuid(5)): the UIDs a user may map into a user namespace
//! (Debian gives every user 65,536 of them). In a rootless container each is a distinct UID to
//! the kernel; charged as itself, each would be a fresh budget. The agent charges them to their
//! owner.

use std::{collections::BTreeMap, path::Path};

/// Where shadow-utils keeps the ranges.
pub const SUBUID: &str = "/etc/subuid";

/// One range: `count` UIDs from `start`, owned by `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u32,
    pub count: u32,
    pub owner: u32,
}

/// Lines left out: (line number, why).
pub type Skipped = Vec<(usize, &'static str)>;

/// The ranges of a subuid file's text; owners given by name are resolved with `resolve`.
/// Malformed lines and unknown owners are skipped and returned as (line number, why).
pub fn parse(text: &str, resolve: impl Fn(&str) -> Option<u32>) -> (Vec<Range>, Skipped) {
    let mut ranges = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let [owner, start, count] = f[..] else {
            skipped.push((i + 1, "not owner:start:count"));
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            skipped.push((i + 1, "start or count is not a number"));
            continue;
        };
        if count == 0 || start.checked_add(count - 1).is_none() {
            skipped.push((i + 1, "the range is empty or runs past 4294967295"));
            continue;
        }
        let owner = match owner.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => resolve(owner),
        };
        let Some(owner) = owner else {
            skipped.push((i + 1, "unknown owner"));
            continue;
        };
        ranges.push(Range {
            start,
            count,
            owner,
        });
    }
    ranges.sort();
    (ranges, skipped)
}

/// Reads and parses the system's file (no file: no ranges).
pub fn read(path: &Path) -> std::io::Result<(Vec<Range>, Skipped)> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text, |name| {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
        Err(e) => Err(e),
    }
}

/// The prefixes (first UID, prefix length in bits) that cover a range exactly.
pub fn prefixes(r: &Range) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut lo = u64::from(r.start);
    let end = lo + u64::from(r.count); // exclusive
    while lo < end {
        // The largest aligned block starting at `lo` that fits.
        let mut size = if lo == 0 {
            1u64 << 32
        } else {
            1u64 << lo.trailing_zeros().min(32)
        };
        while lo + size > end {
            size >>= 1;
        }
        out.push((lo as u32, 32 - size.trailing_zeros()));
        lo += size;
    }
    out
}

/// Every prefix of every range, with its owner (overlaps: the first range wins).
pub fn table(ranges: &[Range]) -> BTreeMap<(u32, u32), u32> {
    let mut t = BTreeMap::new();
    for r in ranges {
        for p in prefixes(r) {
            t.entry(p).or_insert(r.owner);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_lines_and_mistakes() {
        let text = "alice:100000:65536\n1001:165536:65536\n# comment\n\nbob:x:1\nnobody-here:1:1\ncarol:4294967295:2\n";
        let (r, skipped) = parse(text, |n| (n == "alice").then_some(1000));
        assert_eq!(
            r,
            [
                Range {
                    start: 100_000,
                    count: 65_536,
                    owner: 1000
                },
                Range {
                    start: 165_536,
                    count: 65_536,
                    owner: 1001
                }
            ]
        );
        assert_eq!(skipped.iter().map(|s| s.0).collect::<Vec<_>>(), [5, 6, 7]);
    }

    #[test]
    fn prefixes_cover_a_range_exactly() {
        for (start, count) in [
            (100_000u32, 65_536u32),
            (1, 1),
            (0, 16),
            (231_072, 65_536),
            (7, 100),
        ] {
            let ps = prefixes(&Range {
                start,
                count,
                owner: 1,
            });
            assert!(ps.len() <= 64, "{start}+{count}: {} prefixes", ps.len());
            let covered: u64 = ps.iter().map(|(_, len)| 1u64 << (32 - len)).sum();
            assert_eq!(covered, u64::from(count), "{start}+{count}: {ps:?}");
            for (first, len) in &ps {
                let size = 1u64 << (32 - len);
                assert_eq!(u64::from(*first) % size, 0, "aligned");
                assert!(u64::from(*first) >= u64::from(start));
                assert!(u64::from(*first) + size <= u64::from(start) + u64::from(count));
            }
        }
    }
}
