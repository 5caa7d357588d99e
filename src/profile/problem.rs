//! A configuration problem: where it is (file, line, column, key) and how
//! to fix it. Validation collects every problem of every profile and
//! reports them together, so one run of `cellar check` shows them all.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file as the user knows it: relative to the config dir.
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    pub column: usize,
    /// `source.password`, `store.url`, … or empty for the whole file.
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Turns byte offsets into line and column for one file's text.
pub struct Locator<'a> {
    pub file: PathBuf,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub fn problem(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        let (line, column) = span.map_or((0, 0), |s| self.at(s.start));
        Problem {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// A serde/TOML error, with a fix chosen from what kind of error it is.
    pub fn from_toml(&self, key: &str, err: &toml::de::Error, template: &str) -> Problem {
        let message = err.message().trim().to_string();
        let fix = if message.starts_with("unknown field") {
            format!("remove or correct the key; {template} lists every key with a comment")
        } else if message.starts_with("missing field") {
            format!("add the key; {template} shows an example")
        } else if message.starts_with("unknown variant") {
            "use one of the values listed".to_string()
        } else if message.starts_with("invalid type") || message.contains("expected") {
            "give the value the type named here (quote strings, no quotes on numbers and booleans)"
                .to_string()
        } else {
            "fix the TOML syntax at this spot".to_string()
        };
        self.problem(err.span(), key, message, fix)
    }
}
