//! tracing setup: text or JSON on stderr, written through the progress
//! bar's `suspend` so bars and lines never tear each other.
//!
//! Under cron (stderr is not a terminal) only warnings and errors are
//! shown unless `-v`; on a terminal, info too. `RUST_LOG` overrides both.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

struct SuspendingStderr;

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::progress::suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

struct MakeSuspending;

impl<'a> MakeWriter<'a> for MakeSuspending {
    type Writer = SuspendingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        SuspendingStderr
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeSuspending)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(io::stderr().is_terminal())
            .without_time()
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}
