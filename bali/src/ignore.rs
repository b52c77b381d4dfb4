//! `.dockerignore`: which context paths COPY and ADD may not see.
//!
//! Patterns use Go `filepath.Match` syntax plus `**` for any number of
//! directories; `!` re-includes; the last matching pattern wins; a pattern
//! that matches a directory also matches everything below it. Paths are
//! relative to the context, with `/` separators.

use glob::{MatchOptions, Pattern};

/// Parsed ignore rules.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<(Pattern, bool)>,
}

/// A pattern that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(".dockerignore line {line}: bad pattern {pattern:?}")]
pub struct IgnoreError {
    /// 1-based line.
    pub line: usize,
    /// The pattern text.
    pub pattern: String,
}

const OPTS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Ignore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (neg, pat) = match t.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, t),
            };
            let pat = clean(pat);
            if pat.is_empty() {
                continue;
            }
            let p = Pattern::new(&pat).map_err(|_| IgnoreError {
                line: i + 1,
                pattern: t.to_string(),
            })?;
            rules.push((p, neg));
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (context-relative) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let rel = clean(rel);
        if rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for (pat, neg) in &self.rules {
            let hit = (1..=parts.len()).any(|n| pat.matches_with(&parts[..n].join("/"), OPTS));
            if hit {
                excluded = !neg;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let i = Ignore::parse("# c\n*.log\n/secret\nbuild/\n**/*.tmp\n!keep.log\n").unwrap();
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(!i.excluded("sub/a.log"));
        assert!(i.excluded("secret"));
        assert!(i.excluded("secret/inner"));
        assert!(i.excluded("build/x/y"));
        assert!(i.excluded("deep/er/x.tmp"));
        assert!(i.excluded("x.tmp"));
        assert!(!i.excluded("src/main.rs"));
        let i = Ignore::parse("docs\n!docs/keep.md\n").unwrap();
        assert!(i.excluded("docs/other.md"));
        assert!(!i.excluded("docs/keep.md"));
    }
}
