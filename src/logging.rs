//! tracing setup: text or JSON on stderr, written through the progress
//! bar's `suspend` so bars and lines never tear each other.
//!
//! Under cron (stderr is not a terminal) only warnings and errors are
//! shown unless `-v`; on a terminal, info too. `RUST_LOG` overrides both.
//!
//! A line of the log is always cellar's own: a message that holds a line
//! break (a file or table name can) goes on in lines that begin with two
//! spaces, and carriage returns and other control characters are shown
//! escaped, so nothing a name holds can start or overwrite a line.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

struct SuspendingStderr {
    colors: bool,
}

/// `text` as it may appear in the log: every line after the first begins
/// with two spaces, `\r` and the other control characters but the tab are
/// escaped (`\r`, `\u{1b}`). A final line break is kept as it is.
pub fn log_text(text: &str) -> Cow<'_, str> {
    escaped(text, false, true)
}

/// `text` on one line: line breaks and the other control characters but
/// the tab shown escaped (`\n`), for output read line by line (`status`).
pub fn one_line(text: &str) -> Cow<'_, str> {
    escaped(text, false, false)
}

/// Control characters but the tab escaped (and the characters below); the escape character kept when
/// `colors` (the formatter's own colors; it escapes the ones messages hold
/// itself). When `continued`, a line break goes on in a line that begins
/// with two spaces and a final one is kept; otherwise it is shown as `\n`.
fn escaped(text: &str, colors: bool, continued: bool) -> Cow<'_, str> {
    // Besides the control characters: the Unicode line and paragraph
    // separators (a line break to some viewers) and the bidirectional
    // overrides, isolates and marks (they make text read in another order).
    let kept = |c: char| {
        (!c.is_control() || c == '\t' || (colors && c == '\u{1b}'))
            && !matches!(
                c,
                '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{061c}'
            )
    };
    let body = match continued {
        true => text.strip_suffix('\n').unwrap_or(text),
        false => text,
    };
    if body.chars().all(kept) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in body.chars() {
        match c {
            '\n' if continued => out.push_str("\n  "),
            c if kept(c) => out.push(c),
            c => out.extend(c.escape_default()),
        }
    }
    if body.len() < text.len() {
        out.push('\n');
    }
    Cow::Owned(out)
}

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over one whole event at a time.
        let text = String::from_utf8_lossy(buf);
        let text = escaped(&text, self.colors, true);
        crate::progress::suspend(|| io::stderr().write_all(text.as_bytes()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

struct MakeSuspending {
    colors: bool,
}

impl<'a> MakeWriter<'a> for MakeSuspending {
    type Writer = SuspendingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        SuspendingStderr {
            colors: self.colors,
        }
    }
}

pub fn init(verbose: u8, quiet: bool, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) if io::stderr().is_terminal() => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("cellar={level},warn")));
    let colors = format == LogFormat::Text && io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeSuspending { colors })
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(colors).without_time().init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::{escaped, log_text, one_line};

    #[test]
    fn a_name_cannot_start_or_overwrite_a_line() {
        assert_eq!(log_text(" WARN plain\n"), " WARN plain\n");
        assert_eq!(
            log_text(" WARN skipping a\nERROR forged\n"),
            " WARN skipping a\n  ERROR forged\n"
        );
        assert_eq!(
            log_text("x\ry\u{1b}[2Kz\u{9b}\t"),
            "x\\ry\\u{1b}[2Kz\\u{9b}\t"
        );
        assert_eq!(log_text("a\n\n"), "a\n  \n");
        assert_eq!(one_line("a\nb\r\tc"), "a\\nb\\r\tc");
        // Separators and bidi overrides: escaped too; other text is not.
        assert_eq!(
            one_line("a\u{2028}b\u{202e}c\u{2066}d\u{200f}e"),
            "a\\u{2028}b\\u{202e}c\\u{2066}d\\u{200f}e"
        );
        assert_eq!(one_line("Zürich – ok"), "Zürich – ok");
        assert_eq!(
            escaped("\u{1b}[31mERROR\u{1b}[0m a\rb", true, true),
            "\u{1b}[31mERROR\u{1b}[0m a\\rb"
        );
        for line in log_text("ERROR a\n WARN b\nc\r\n").lines().skip(1) {
            assert!(line.starts_with("  "), "{line:?}");
        }
    }
}
