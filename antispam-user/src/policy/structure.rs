//! Every structural problem of a policy text in one run: syntax errors (all those the TOML
//! parser recovers from), unknown keys and wrong types. serde stops at the first of the last
//! two, so each found is edited out of a copy of the text (an unknown key or table blanked, a
//! value of the wrong type replaced by one of the right type) and the copy deserialized again,
//! at most [`MAX_ROUNDS`] times; positions are mapped back to the original text.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::raw::RawPolicy;

/// More problems than this in one file are not looked for.
const MAX_ROUNDS: usize = 50;

/// A problem: where, and what.
pub type Found = (Range<usize>, String);

/// What the structural pass found.
pub struct Checked {
    /// The policy's raw form: of the text as it is when `problems` is empty, else of the text
    /// with the problems edited out (for the semantic checks); none when that failed too.
    pub raw: Option<RawPolicy>,
    pub problems: Vec<Found>,
    /// How positions of the edited text map to the original's, and the edited text's own
    /// parts (placeholders, inserted keys), where a semantic problem is not the file's.
    pub edits: Edits,
}

/// Every structural problem of `text`, and its raw form with them edited out.
pub fn check(text: &str) -> Checked {
    let (_, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Checked {
            raw: None,
            problems: syntax.iter().map(found).collect(),
            edits: Edits::default(),
        };
    }
    let mut edited = Edited {
        text: text.to_string(),
        edits: Edits::default(),
    };
    let mut problems: Vec<Found> = Vec::new();
    let mut raw = None;
    for _ in 0..MAX_ROUNDS {
        let e = match toml::from_str::<RawPolicy>(&edited.text) {
            Ok(r) => {
                raw = Some(r);
                break;
            }
            Err(e) => e,
        };
        let (span, message) = found(&e);
        let ours = edited.inserted(span.start);
        // A key missing after an edit may be the edit's doing (its key was unknown, or its
        // value of the wrong type): only a first round's counts.
        let caused = message.starts_with("missing field") && !edited.edits.changes.is_empty();
        if !ours && !caused {
            let original = edited.edits.original(span.start)..edited.edits.original(span.end);
            problems.push((original, message.clone()));
        }
        let fixed = if message.starts_with("invalid type") {
            edited.placeholder(span, &message)
        } else if message.starts_with("unknown field") {
            edited.remove_entry(span.start)
        } else if let Some(field) = missing_field(&message) {
            edited.insert_field(span.start, field)
        } else {
            false
        };
        if !fixed {
            break;
        }
    }
    problems.sort_by_key(|p| p.0.start);
    Checked {
        raw,
        problems,
        edits: edited.edits,
    }
}

fn found(e: &toml::de::Error) -> Found {
    (e.span().unwrap_or(0..0), e.message().trim_end().to_string())
}

/// "missing field `rate`" → rate.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split('`')
        .next()
        .filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Where the edited text differs from the original.
#[derive(Default)]
pub struct Edits {
    /// (start in the edited text, length change), in the order made.
    changes: Vec<(usize, isize)>,
    /// Text this pass wrote (placeholders, inserted keys), in the edited text's positions.
    ours: Vec<Range<usize>>,
}

impl Edits {
    /// A position of the edited text in the original one.
    pub fn original(&self, mut pos: usize) -> usize {
        for &(at, delta) in self.changes.iter().rev() {
            if pos > at {
                pos = pos.saturating_add_signed(-delta).max(at);
            }
        }
        pos
    }

    /// Whether a position of the edited text is in text this pass wrote.
    pub fn ours(&self, pos: usize) -> bool {
        self.ours.iter().any(|r| r.contains(&pos))
    }

    fn record(&mut self, at: usize, old_len: usize, new: Range<usize>, written: bool) {
        let delta = new.len() as isize - old_len as isize;
        for r in &mut self.ours {
            if r.start >= at + old_len {
                *r = r.start.saturating_add_signed(delta)..r.end.saturating_add_signed(delta);
            } else if r.end > at {
                r.end = r.end.saturating_add_signed(delta).max(r.start);
            }
        }
        self.changes.push((at, delta));
        if written {
            self.ours.push(new);
        }
    }
}

/// The text with problems edited out.
struct Edited {
    text: String,
    edits: Edits,
}

impl Edited {
    fn inserted(&self, pos: usize) -> bool {
        self.edits.ours(pos)
    }

    /// `field = ""` added on a line of its own after the line of `at` (a table's header or its
    /// first key), so that the table deserializes; a wrong type is then replaced in turn.
    fn insert_field(&mut self, at: usize, field: &str) -> bool {
        let eol = self.text[at.min(self.text.len())..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        let line = format!("\n{field} = \"\"");
        if self.inserted(eol)
            || self
                .text
                .get(eol..)
                .is_some_and(|rest| rest.starts_with(&line))
        {
            return false;
        }
        self.text.insert_str(eol, &line);
        self.edits.record(eol, 0, eol..eol + line.len(), true);
        true
    }

    /// `range` replaced by `with`; `written`: a placeholder (not blanks).
    fn replace(&mut self, range: Range<usize>, with: &str, written: bool) -> bool {
        if self.text.get(range.clone()).is_none_or(|old| old == with) {
            return false;
        }
        self.text.replace_range(range.clone(), with);
        self.edits.record(
            range.start,
            range.len(),
            range.start..range.start + with.len(),
            written,
        );
        true
    }

    /// A value of the wrong type replaced by one of the type expected ("expected a string").
    fn placeholder(&mut self, span: Range<usize>, message: &str) -> bool {
        let expected = message.rsplit("expected").next().unwrap_or("");
        let value = if expected.contains("string") {
            "\"\""
        } else if expected.contains("integer")
            || expected.contains("i64")
            || expected.contains("u") && expected.contains("int")
        {
            "0"
        } else if expected.contains("sequence") || expected.contains("array") {
            "[]"
        } else if expected.contains("bool") {
            "false"
        } else if expected.contains("struct")
            || expected.contains("map")
            || expected.contains("table")
        {
            "{}"
        } else {
            return self.remove_entry(span.start);
        };
        self.replace(span, value, true)
    }

    /// The innermost `key = value` or table holding `at`, blanked out (a table with its header
    /// and its keys).
    fn remove_entry(&mut self, at: usize) -> bool {
        let Some(range) = DeTable::parse(&self.text)
            .ok()
            .and_then(|doc| in_table(doc.get_ref(), at))
        else {
            return false;
        };
        // A table's header: from its line's start ("[name]", "[[name]]").
        let line = self.text[..range.start].rfind('\n').map_or(0, |i| i + 1);
        let start = if self.text[line..range.start].trim_start().starts_with('[') {
            line
        } else {
            range.start
        };
        let end = if start == line {
            // ...to the end of the header's line at least ("]]").
            let eol = self.text[range.start..]
                .find('\n')
                .map_or(self.text.len(), |i| range.start + i);
            range.end.max(eol)
        } else {
            range.end
        };
        let spaces: String = self.text[start..end]
            .chars()
            .map(|c| if c == '\n' { "\n" } else { " " })
            .collect();
        self.replace(start..end, &spaces, false)
    }
}

/// The innermost entry of `table` that holds byte `at`: its key to the end of its value (a
/// table's: its last key's).
fn in_table(table: &DeTable<'_>, at: usize) -> Option<Range<usize>> {
    for (key, value) in table.iter() {
        if let Some(inner) = in_value(value, at) {
            return Some(inner);
        }
        let whole = key.span().start.min(value.span().start)..extent(value).max(key.span().end);
        if whole.contains(&at) {
            return Some(whole);
        }
    }
    None
}

fn in_value(value: &Spanned<DeValue<'_>>, at: usize) -> Option<Range<usize>> {
    match value.get_ref() {
        DeValue::Table(t) => in_table(t, at),
        DeValue::Array(a) => a.iter().find_map(|v| match v.get_ref() {
            DeValue::Table(t) => in_table(t, at),
            _ => None,
        }),
        _ => None,
    }
}

/// Where a value ends, a table's keys included.
fn extent(value: &Spanned<DeValue<'_>>) -> usize {
    let nested = match value.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .map(|(k, v)| extent(v).max(k.span().end))
            .max()
            .unwrap_or(0),
        DeValue::Array(a) => a.iter().map(extent).max().unwrap_or(0),
        _ => 0,
    };
    value.span().end.max(nested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_and_wrong_type_is_found() {
        let text = "mode = \"enforce\"\nportz = [25]\n[default]\nrate = 5\n[[limit]]\nusers = [\"1000\"]\nrat = \"1/hour\"\n[[limit]]\nusers = [\"1001\"]\nrate = \"2/hour\"\nburstt = 3\n";
        let problems = check(text).problems;
        let at = |p: &Found| text[..p.0.start].matches('\n').count() + 1;
        let lines: Vec<usize> = problems.iter().map(at).collect();
        assert_eq!(lines, [2, 4, 7, 11], "{problems:?}");
        assert!(
            problems[0].1.contains("unknown field `portz`"),
            "{problems:?}"
        );
        assert!(problems[1].1.contains("invalid type"), "{problems:?}");
    }

    #[test]
    fn a_good_text_passes_and_syntax_errors_are_all_reported() {
        let good = check("mode = \"monitor\"\n");
        assert!(good.raw.is_some() && good.problems.is_empty());
        let problems = check("mode = \"x\nports = [25\n").problems;
        assert!(!problems.is_empty());
    }

    #[test]
    fn an_unknown_table_is_one_problem() {
        let text = "[defualt]\nrate = \"1/hour\"\nburst = 2\n[[limit]]\nusers = [\"1\"]\nrate = \"1/hour\"\n";
        let problems = check(text).problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].1.contains("unknown field `defualt`"),
            "{problems:?}"
        );
    }
}
