//! Minimal Prometheus text-format reader for assertions.

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = parse_line(line) {
            out.push(s);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let b = rest.as_bytes();
        let mut i = 1;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b',') {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let eq = i + rest[i..].find('=')?;
            let key = rest[i..eq].trim().to_string();
            i = eq + 1;
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            let mut val = String::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    val.push(match b[i] {
                        b'n' => '\n',
                        c => c as char,
                    });
                } else {
                    // Values are UTF-8; copy whole chars.
                    let ch = rest[i..].chars().next()?;
                    val.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
                i += 1;
            }
            i += 1; // closing quote
            labels.push((key, val));
        }
        rest = &rest[i..];
    }
    let value_str = rest.split_whitespace().next()?;
    let value = match value_str {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn matches(s: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    s.name == name
        && labels
            .iter()
            .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
}

/// The value of the first series named `name` carrying all of `labels` (others may exist).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse(text)
        .into_iter()
        .find(|s| matches(s, name, labels))
        .map(|s| s.value)
}

/// The sum over all series named `name` carrying all of `labels` (0 if none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse(text)
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| s.value)
        .sum()
}

/// `promtool check metrics` (Prometheus' own linter) on a scrape: panics with what it says
/// unless it accepts it.
pub fn promtool_check(text: &str) {
    let mut cmd = std::process::Command::new("promtool");
    cmd.args(["check", "metrics"]);
    let (status, said, _) = crate::client::run_bounded_input(
        &mut cmd,
        text.as_bytes(),
        crate::bound(std::time::Duration::from_secs(30)),
    );
    eprintln!("promtool check metrics: {status:?} {said}");
    assert!(
        status.is_some_and(|s| s.success()),
        "promtool check metrics failed: {said}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_values() {
        let t = "# HELP x y\n# TYPE a counter\na_total{verdict=\"allowed\",reason=\"within_limit\"} 3\na_total{verdict=\"denied\",reason=\"rate_limit_uid\"} 2\nb 1.5\nc{p=\"a\\\"b\"} 7\n";
        assert_eq!(
            metric_value(t, "a_total", &[("verdict", "allowed")]),
            Some(3.0)
        );
        assert_eq!(metric_sum(t, "a_total", &[]), 5.0);
        assert_eq!(metric_value(t, "b", &[]), Some(1.5));
        assert_eq!(metric_value(t, "c", &[("p", "a\"b")]), Some(7.0));
        assert_eq!(metric_value(t, "a_total", &[("verdict", "x")]), None);
    }
}
