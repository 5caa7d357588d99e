//! Progress reporting that behaves under cron.
//!
//! On a terminal, an indicatif bar shows bytes and rate; log lines are
//! printed through the bar's `suspend` so the two never tear each other.
//! Without a terminal (cron, systemd), a log line every 30 seconds at info
//! level, which the default filter hides unless `-v`. Tests get nothing.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait Progress: Send + Sync {
    /// A new stream starts; `label` names it (e.g. `shop: shop.pgdump`).
    fn start(&self, label: &str);
    /// `n` more plaintext bytes went through.
    fn advance(&self, n: u64);
    /// The stream ended (successfully or not).
    fn finish(&self);
}

/// The bar currently shown, so the log writer can suspend it.
static ACTIVE_BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn active() -> &'static Mutex<Option<ProgressBar>> {
    ACTIVE_BAR.get_or_init(|| Mutex::new(None))
}

/// Runs `f` with the progress bar (if any) hidden, for log output.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    let bar = active().lock().unwrap().clone();
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

pub struct BarProgress;

impl Progress for BarProgress {
    fn start(&self, label: &str) {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {bytes} ({binary_bytes_per_sec}) {elapsed}",
            )
            .unwrap(),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *active().lock().unwrap() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = active().lock().unwrap().as_ref() {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = active().lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}

/// Periodic log lines for runs without a terminal.
pub struct LogProgress {
    state: Mutex<(String, u64, Instant, Instant)>,
}

impl Default for LogProgress {
    fn default() -> Self {
        let now = Instant::now();
        LogProgress {
            state: Mutex::new((String::new(), 0, now, now)),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, label: &str) {
        let now = Instant::now();
        *self.state.lock().unwrap() = (label.to_string(), 0, now, now);
    }

    fn advance(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.1 += n;
        if s.3.elapsed() >= Duration::from_secs(30) {
            s.3 = Instant::now();
            let secs = s.2.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                "{}: {} MiB read, {:.1} MiB/s",
                s.0,
                s.1 >> 20,
                s.1 as f64 / secs / 1048576.0
            );
        }
    }

    fn finish(&self) {}
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// The right reporter for this process: a bar on a terminal, log lines
/// otherwise, nothing when quiet.
pub fn for_terminal(quiet: bool) -> Arc<dyn Progress> {
    use std::io::IsTerminal;
    if quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(BarProgress)
    } else {
        Arc::new(LogProgress::default())
    }
}
