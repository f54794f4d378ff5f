//! Where a problem is: file, line and column, computed from byte spans.

use std::{fmt, ops::Range, path::Path};

/// A problem in a policy (or in a file it includes), located for a person to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A text with its name, able to turn byte offsets into 1-based line and column (in characters).
pub struct Source<'a> {
    pub name: String,
    pub text: &'a str,
    /// When the spans come from a copy of the text with its structural problems edited out:
    /// how to map them back (see `structure`).
    pub edits: Option<&'a super::structure::Edits>,
}

impl<'a> Source<'a> {
    pub fn new(path: &Path, text: &'a str) -> Source<'a> {
        Source {
            name: path.display().to_string(),
            text,
            edits: None,
        }
    }

    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = self.edits.map_or(offset, |e| e.original(offset));
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub fn problem(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        let (line, column) = self.line_column(span.start);
        Problem {
            file: self.name.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.line_column(offset).0
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let s = Source {
            name: "p.toml".into(),
            text: "a = 1\nbé = 2\n",
            edits: None,
        };
        assert_eq!(s.line_column(0), (1, 1));
        assert_eq!(s.line_column(4), (1, 5));
        assert_eq!(s.line_column(6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(s.line_column(9), (2, 3));
        assert_eq!(s.problem(6..7, "bad").to_string(), "p.toml:2:1: bad");
    }
}
