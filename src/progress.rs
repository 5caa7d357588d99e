//! Progress reporting that a person can read, and that behaves under cron.
//!
//! Each payload streamed (backed up, restored or verified) is one
//! [`Progress::start`] … [`Progress::finish`]. The count is of plaintext:
//! on backup what the compressor has compressed (not what it has taken
//! in, nor what the source has written: multithreaded xz takes a block
//! per thread in one gulp and the pipes hold more, so those run up to
//! ~60 MiB ahead of the work and move in steps; see
//! [`crate::pipeline::compress`]), on restore and verify what the consumer
//! has taken.
//!
//! On a terminal ([`BarProgress`]) one line per payload: label, a bar with
//! percent and ETA when the total is known (exact from a manifest, or
//! after a folder's walk; an estimate from the previous backup's size for a
//! dump, shown as `~62 %`), the bytes so far, the rate over the last
//! [`WINDOW`] and the elapsed time. When the payload is done the line is
//! replaced by its summary, which stays: plaintext size, time, average
//! rate, stored size and ratio. The line is redrawn by a ticker thread a
//! few times a second and whenever the whole percent changes. Log lines
//! go through [`suspend`], which takes the line away, prints, and draws it
//! again, so the two never tear each other.
//!
//! Without a terminal (cron, systemd: [`LogProgress`]) a log line every 30
//! seconds at info level, which the default filter hides unless `-v`.
//! `--progress=always` draws the line whatever stderr is;
//! `--progress=never` (and `-q`) never does. Tests see no line: their
//! stderr is no terminal.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::cli::ProgressWhen as When;

/// What the stream's plaintext size is known to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Unknown,
    /// From a manifest, or the sizes a folder's walk found.
    Exact(u64),
    /// A guess (the previous backup's size): shown with a `~`.
    Estimate(u64),
}

/// How a stream ended, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Backed up: `plain` bytes from the source became `stored` bytes.
    Stored { plain: u64, stored: u64 },
    /// Restored or verified: `stored` bytes gave back `plain` bytes.
    Read { plain: u64, stored: u64 },
    /// It failed (its error is reported elsewhere): no summary.
    Failed,
}

pub trait Progress: Send + Sync {
    /// A new stream starts; `label` names it (e.g. `shop: shop.pgdump`).
    fn start(&self, label: &str, total: Total);
    /// The total became known (or better known) while streaming.
    fn set_total(&self, _total: Total) {}
    /// `n` more plaintext bytes went through.
    fn advance(&self, n: u64);
    /// The stream ended.
    fn finish(&self, outcome: Outcome);
    /// Whether totals are shown, so worth looking up (the previous
    /// backup's manifest, a walk of the folders).
    fn wants_total(&self) -> bool {
        false
    }
    /// Whether each payload ends with a summary line of its own (so an
    /// info line saying the same would repeat it).
    fn summarizes(&self) -> bool {
        false
    }
}

/// How far back the rate looks.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often the line is redrawn at least.
const TICK: Duration = Duration::from_millis(250);
/// The room kept for the numbers after the bar.
const TAIL_ROOM: usize = 52;
/// Samples for the rate are kept at most this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One stream's counts and the arithmetic over them.
#[derive(Debug, Clone)]
pub struct Meter {
    label: String,
    total: Total,
    pos: u64,
    started: Instant,
    /// (time, position), oldest first, spanning a little over [`WINDOW`].
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    pub fn new(label: &str, total: Total, now: Instant) -> Self {
        Meter {
            label: label.to_string(),
            total,
            pos: 0,
            started: now,
            samples: VecDeque::from([(now, 0)]),
        }
    }

    pub fn advance(&mut self, n: u64, now: Instant) {
        self.pos += n;
        self.sample(now);
    }

    fn sample(&mut self, now: Instant) {
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SAMPLE_EVERY)
        {
            self.samples.push_back((now, self.pos));
        }
        // Keep one sample at or beyond the window's start, as its base.
        while self.samples.len() > 2 && now.saturating_duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the last [`WINDOW`] (less at the start).
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let (t0, p0) = *self.samples.front()?;
        let span = now.saturating_duration_since(t0).as_secs_f64();
        (span >= 0.5).then(|| (self.pos - p0) as f64 / span)
    }

    /// The total, while the count has not passed it (an estimate can be
    /// short; a file can grow while read).
    fn known_total(&self) -> Option<(u64, bool)> {
        match self.total {
            Total::Exact(t) if t > 0 && self.pos <= t => Some((t, false)),
            Total::Estimate(t) if t > 0 && self.pos <= t => Some((t, true)),
            _ => None,
        }
    }

    /// The whole percent done, when the total is known.
    fn percent(&self) -> Option<u64> {
        self.known_total().map(|(t, _)| self.pos * 100 / t)
    }

    /// The line shown while streaming, at most `width` characters.
    pub fn line(&self, now: Instant, width: usize) -> String {
        let elapsed = now.saturating_duration_since(self.started);
        let rate = self.rate(now);
        let rate_text = match rate {
            Some(r) => format!("{}/s", bytes(r as u64)),
            None => "-".into(),
        };
        let tail = match self.known_total() {
            Some((total, guess)) => {
                let tilde = if guess { "~" } else { "" };
                let eta = match rate {
                    Some(r) if r > 0.0 => {
                        duration(Duration::from_secs_f64((total - self.pos) as f64 / r))
                    }
                    _ => "?".into(),
                };
                let percent = format!("{tilde}{}", self.pos * 100 / total);
                format!(
                    "{percent:>3} % {} / {tilde}{} {rate_text} {} ETA {eta}",
                    bytes(self.pos),
                    bytes(total),
                    duration(elapsed),
                )
            }
            None => format!("{} {rate_text} {}", bytes(self.pos), duration(elapsed)),
        };
        // The bar takes what is left once the label and a tail of the
        // usual length fit (the usual length, so it does not come and go
        // as the numbers grow and shrink).
        let label_len = self.label.chars().count();
        let tail_len = tail.chars().count().max(TAIL_ROOM);
        let room = width.saturating_sub(label_len + tail_len + 2);
        let bar = match self.known_total() {
            Some((total, _)) if room >= 10 => {
                let cells = room.min(42) - 2;
                let done = ((self.pos as u128 * cells as u128) / total as u128) as usize;
                format!(
                    " [{}{}]",
                    "#".repeat(done),
                    "-".repeat(cells.saturating_sub(done))
                )
            }
            _ => String::new(),
        };
        fit(&format!("{}{bar} {tail}", self.label), width)
    }

    /// The line that stays once the stream is done.
    pub fn summary(&self, outcome: Outcome, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.started);
        let average = bytes((self.pos as f64 / elapsed.as_secs_f64().max(0.001)) as u64);
        let ratio = |plain: u64, stored: u64| {
            if plain == 0 {
                "-".to_string()
            } else {
                format!("{:.1} %", stored as f64 * 100.0 / plain as f64)
            }
        };
        Some(match outcome {
            Outcome::Failed => return None,
            Outcome::Stored { plain, stored } => format!(
                "{}: {} in {} ({average}/s), stored {} ({} of the plaintext)",
                self.label,
                bytes(plain),
                duration(elapsed),
                bytes(stored),
                ratio(plain, stored),
            ),
            Outcome::Read { plain, stored } => format!(
                "{}: {} in {} ({average}/s), from {} stored ({} of the plaintext)",
                self.label,
                bytes(plain),
                duration(elapsed),
                bytes(stored),
                ratio(plain, stored),
            ),
        })
    }
}

/// Cuts `s` to `width` characters, keeping its end (the numbers).
fn fit(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width < 2 {
        return s.to_string();
    }
    let keep: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{keep}")
}

/// `187.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `8s`, `1m 05s`, `2h 03m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// What is on the screen: the stream being drawn, and whether its line is
/// showing. One for the process, so log lines can take the line away.
struct Screen {
    meter: Option<Meter>,
    shown: bool,
    /// The percent last drawn, to redraw when it changes.
    drawn_percent: Option<u64>,
}

static SCREEN: Mutex<Screen> = Mutex::new(Screen {
    meter: None,
    shown: false,
    drawn_percent: None,
});

fn screen() -> MutexGuard<'static, Screen> {
    SCREEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Carriage return and erase the line.
const CLEAR: &str = "\r\x1b[2K";

impl Screen {
    fn draw(&mut self, now: Instant) {
        let Some(m) = self.meter.as_mut() else {
            return;
        };
        m.sample(now);
        let line = m.line(now, terminal_width().saturating_sub(1));
        self.drawn_percent = m.percent();
        // One write per frame, so a frame is never split.
        let _ = std::io::stderr().write_all(format!("{CLEAR}{line}").as_bytes());
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = std::io::stderr().write_all(CLEAR.as_bytes());
            self.shown = false;
        }
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize we hand it, on our own stderr.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return ws.ws_col as usize;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

/// Runs `f` with the progress line (if any) taken away, for log output;
/// the line is drawn again after.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    let mut s = screen();
    if !s.shown {
        drop(s);
        return f();
    }
    s.clear();
    let r = f();
    s.draw(Instant::now());
    r
}

/// The line on the terminal (or wherever stderr goes, with `always`).
#[derive(Default)]
pub struct BarProgress {
    ticker: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl BarProgress {
    fn stop_ticker(&self) {
        let t = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, handle)) = t {
            drop(stop);
            let _ = handle.join();
        }
    }
}

impl Progress for BarProgress {
    fn start(&self, label: &str, total: Total) {
        self.stop_ticker();
        {
            let mut s = screen();
            s.clear();
            let now = Instant::now();
            s.meter = Some(Meter::new(label, total, now));
            s.draw(now);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                screen().draw(Instant::now());
            }
        });
        *self.ticker.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, handle));
    }

    fn set_total(&self, total: Total) {
        let mut s = screen();
        if let Some(m) = s.meter.as_mut() {
            m.total = total;
        }
        s.draw(Instant::now());
    }

    fn advance(&self, n: u64) {
        let mut s = screen();
        let now = Instant::now();
        let Some(m) = s.meter.as_mut() else {
            return;
        };
        m.advance(n, now);
        let percent = m.percent();
        if percent.is_some() && percent != s.drawn_percent {
            s.draw(now);
        }
    }

    fn finish(&self, outcome: Outcome) {
        self.stop_ticker();
        let mut s = screen();
        s.clear();
        if let Some(m) = s.meter.take() {
            if let Some(line) = m.summary(outcome, Instant::now()) {
                let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
            }
        }
        s.drawn_percent = None;
    }

    fn wants_total(&self) -> bool {
        true
    }

    fn summarizes(&self) -> bool {
        true
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
    fn start(&self, label: &str, _: Total) {
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

    fn finish(&self, _: Outcome) {}
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Total) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: Outcome) {}
}

/// The right reporter for this process: the line on a terminal (or when
/// asked for), log lines otherwise, nothing when quiet.
pub fn choose(when: When, quiet: bool) -> Arc<dyn Progress> {
    use std::io::IsTerminal;
    let terminal =
        std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    match when {
        When::Always => Arc::new(BarProgress::default()),
        _ if quiet => Arc::new(NoProgress),
        When::Auto if terminal => Arc::new(BarProgress::default()),
        When::Auto | When::Never => Arc::new(LogProgress::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn an_exact_total_shows_percent_and_eta() {
        let t0 = Instant::now();
        let mut m = Meter::new("files: x.tar.xz.pgp", Total::Exact(300 * MIB), t0);
        for s in 1..=20 {
            m.advance(10 * MIB, t0 + Duration::from_secs(s));
        }
        let line = m.line(t0 + Duration::from_secs(20), 120);
        assert!(line.starts_with("files: x.tar.xz.pgp ["), "{line}");
        assert!(
            line.contains("]  66 % 200.0 MiB / 300.0 MiB 10.0 MiB/s 20s ETA 10s"),
            "{line}"
        );
        assert!(line.chars().count() <= 120, "{line}");
    }

    #[test]
    fn an_estimate_is_marked_and_dropped_once_passed() {
        let t0 = Instant::now();
        let mut m = Meter::new("shop: x.pgdump.xz.pgp", Total::Estimate(100 * MIB), t0);
        m.advance(62 * MIB, t0 + Duration::from_secs(2));
        let line = m.line(t0 + Duration::from_secs(2), 120);
        assert!(line.contains("~62 % 62.0 MiB / ~100.0 MiB"), "{line}");
        m.advance(50 * MIB, t0 + Duration::from_secs(3));
        let line = m.line(t0 + Duration::from_secs(3), 120);
        assert!(!line.contains('%') && line.contains("112.0 MiB"), "{line}");
    }

    #[test]
    fn the_rate_is_over_the_last_window_only() {
        let t0 = Instant::now();
        let mut m = Meter::new("l", Total::Unknown, t0);
        // 60 s at 1 MiB/s, then 10 s at 5 MiB/s: the rate says 5.
        for s in 1..=60 {
            m.advance(MIB, t0 + Duration::from_secs(s));
        }
        for s in 61..=70 {
            m.advance(5 * MIB, t0 + Duration::from_secs(s));
        }
        let r = m.rate(t0 + Duration::from_secs(70)).unwrap() / MIB as f64;
        assert!((r - 5.0).abs() < 0.01, "{r}");
        assert!(m.samples.len() <= 12);
    }

    #[test]
    fn the_summary_ends_with_stored_size_and_ratio() {
        let t0 = Instant::now();
        let mut m = Meter::new("files: x.tar.xz.pgp", Total::Exact(300 * MIB), t0);
        m.advance(300 * MIB, t0 + Duration::from_secs(88));
        let done = Outcome::Stored {
            plain: 300 * MIB,
            stored: 41 * MIB,
        };
        assert_eq!(
            m.summary(done, t0 + Duration::from_secs(88)).unwrap(),
            "files: x.tar.xz.pgp: 300.0 MiB in 1m 28s (3.4 MiB/s), stored 41.0 MiB (13.7 % of the plaintext)"
        );
        assert_eq!(m.summary(Outcome::Failed, t0), None);
    }

    #[test]
    fn a_narrow_terminal_keeps_the_numbers() {
        let t0 = Instant::now();
        let mut m = Meter::new(
            "a-rather-long-profile: 20261123T080759Z.tar.xz.pgp",
            Total::Exact(10 * MIB),
            t0,
        );
        m.advance(5 * MIB, t0 + Duration::from_secs(1));
        let line = m.line(t0 + Duration::from_secs(1), 60);
        assert_eq!(line.chars().count(), 60, "{line}");
        assert!(line.ends_with("ETA 1s"), "{line}");
        assert!(!line.contains('['), "{line}");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration(Duration::from_secs(8)), "8s");
        assert_eq!(duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 03m");
    }
}
