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
//! On a terminal ([`BarProgress`]) one line per payload, drawn by an
//! indicatif [`ProgressBar`]: label, a bar with percent and ETA when the
//! total is known (exact from a manifest, or after a folder's walk; an
//! estimate from the previous backup's size for a dump, shown as `~62 %`),
//! the bytes so far, the rate over the last [`WINDOW`] and the elapsed
//! time. indicatif draws, clears and fits the line to the terminal's
//! width, ticks it a few times a second, and takes it away for log lines
//! ([`suspend`], through [`ProgressBar::suspend`]); [`Meter`] keeps the
//! counts and fills in what indicatif's template keys lack (the `~`, the
//! rate over the window and the ETA at that rate, the elapsed time as the
//! summary reads it). The line is also drawn whenever the whole percent
//! changes, past indicatif's rate limit. When the payload is done the line
//! is cleared and its summary printed, which stays: plaintext size, time,
//! average rate, stored size and ratio.
//!
//! Without a terminal (cron, systemd: [`LogProgress`]) a log line every 30
//! seconds at info level, which the default filter hides unless `-v`.
//! `--progress=always` draws the line whatever stderr is (on a pipe or a
//! file through `AnsiTerm`, indicatif's own stderr target hiding
//! there); `--progress=never` (and `-q`) never does. Tests see no line
//! unless they ask for it: their stderr is no terminal.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};

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
/// The longest the numbers after the bar get.
const TAIL_ROOM: usize = 64;
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

    /// `~` while the total is a guess.
    fn tilde(&self) -> &'static str {
        match self.known_total() {
            Some((_, true)) => "~",
            _ => "",
        }
    }

    /// The rate over the window, as shown: `10.0 MiB/s`, or `-` at first.
    pub fn rate_text(&self, now: Instant) -> String {
        match self.rate(now) {
            Some(r) => format!("{}/s", bytes(r as u64)),
            None => "-".into(),
        }
    }

    /// The time since the stream started, as the summary and the ETA
    /// read (`1m 36s`; indicatif's `{elapsed}` would round it to `2m`).
    pub fn elapsed(&self, now: Instant) -> String {
        duration(now.saturating_duration_since(self.started))
    }

    /// The time left at the rate over the window, or `?`.
    pub fn eta(&self, now: Instant) -> String {
        match (self.known_total(), self.rate(now)) {
            (Some((total, _)), Some(r)) if r > 0.0 => {
                duration(Duration::from_secs_f64((total - self.pos) as f64 / r))
            }
            _ => "?".into(),
        }
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

/// The bar being drawn, so log lines can take it away. One for the
/// process.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> MutexGuard<'static, Option<ProgressBar>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` with the progress line (if any) taken away, for log output;
/// the line is drawn again after.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    let bar = active().clone();
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// Where the line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// stderr as a terminal (indicatif hides the line on anything else).
    #[default]
    Terminal,
    /// stderr whatever it is, with the terminal's escapes
    /// (`--progress=always` without a terminal).
    Always,
}

/// A terminal as indicatif sees it, written as ANSI escapes to anything
/// (a pipe, a file): for `--progress=always` where stderr is no terminal.
/// A frame is buffered and written in one go when indicatif flushes it.
struct AnsiTerm {
    out: Mutex<(Vec<u8>, Box<dyn Write + Send>)>,
    width: u16,
}

impl AnsiTerm {
    fn new(out: Box<dyn Write + Send>, width: u16) -> Self {
        AnsiTerm {
            out: Mutex::new((Vec::new(), out)),
            width,
        }
    }

    /// A pipe or a file has no width: `COLUMNS`, or 80, but room enough
    /// for the line with `label` and a bar, which a terminal would wrap.
    fn stderr(label: &str) -> Self {
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|&c| c > 0)
            .unwrap_or(80);
        let width = columns.max(label.chars().count() + TAIL_ROOM + 12);
        AnsiTerm::new(
            Box::new(std::io::stderr()),
            width.min(u16::MAX.into()) as u16,
        )
    }

    fn put(&self, s: &str) -> std::io::Result<()> {
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn escape(&self, n: usize, code: char) -> std::io::Result<()> {
        match n {
            0 => Ok(()),
            n => self.put(&format!("\x1b[{n}{code}")),
        }
    }
}

impl std::fmt::Debug for AnsiTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnsiTerm")
            .field("width", &self.width)
            .finish()
    }
}

impl TermLike for AnsiTerm {
    fn width(&self) -> u16 {
        self.width
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'A')
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'B')
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'C')
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'D')
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(s)?;
        self.put("\n")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut o = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (buf, out) = &mut *o;
        // One write per frame, so a frame is never split.
        let r = out.write_all(buf).and_then(|()| out.flush());
        buf.clear();
        r
    }
}

/// The line's templates: with a total (indicatif's bar, percent, bytes
/// and elapsed time; the `~` of an estimate, the rate over [`WINDOW`] and
/// the ETA at that rate are [`Meter`]'s), and without one.
const WITH_TOTAL: &str = "{msg} [{wide_bar}] {tilde}{percent} % {bytes:>10} / {tilde}{total_bytes} {rate:>11} {time} ETA {eta}";
const WITHOUT_TOTAL: &str = "{msg} {bytes} {rate} {time}";

/// A key of the template that [`Meter`] fills in.
fn meter_key(
    meter: &Arc<Mutex<Meter>>,
    text: fn(&Meter, Instant) -> String,
) -> impl Fn(&ProgressState, &mut dyn std::fmt::Write) + Send + Sync + Clone + 'static {
    let meter = meter.clone();
    move |_, w| {
        let now = Instant::now();
        let mut m = meter.lock().unwrap_or_else(|p| p.into_inner());
        m.sample(now);
        let _ = w.write_str(&text(&m, now));
    }
}

fn style(meter: &Arc<Mutex<Meter>>, with_total: bool) -> ProgressStyle {
    let template = if with_total {
        WITH_TOTAL
    } else {
        WITHOUT_TOTAL
    };
    ProgressStyle::with_template(template)
        .expect("the progress templates are valid")
        .progress_chars("#-")
        .with_key("tilde", meter_key(meter, |m, _| m.tilde().into()))
        .with_key("rate", meter_key(meter, Meter::rate_text))
        .with_key("eta", meter_key(meter, Meter::eta))
        .with_key("time", meter_key(meter, Meter::elapsed))
}

/// The stream being drawn: indicatif's bar and the counts behind it.
struct Drawn {
    bar: ProgressBar,
    meter: Arc<Mutex<Meter>>,
    /// The total and whole percent last drawn, to redraw when they change.
    drawn: (Option<(u64, bool)>, Option<u64>),
}

impl Drawn {
    /// Brings the bar up to the meter: its length and style when the total
    /// changed, its position, and a frame when the whole percent changed
    /// (so many chunks make many frames, however slow the machine).
    fn update(&mut self, force: bool) {
        let (pos, total, percent) = {
            let m = self.meter.lock().unwrap_or_else(|p| p.into_inner());
            (m.pos, m.known_total(), m.percent())
        };
        let total_changed = total != self.drawn.0;
        if total_changed {
            // The style first, so no frame has one without the other.
            if total.is_some() != self.drawn.0.is_some() || force {
                self.bar.set_style(style(&self.meter, total.is_some()));
            }
            match total {
                Some((t, _)) => self.bar.set_length(t),
                None => self.bar.unset_length(),
            }
        }
        self.bar.set_position(pos);
        if force || total_changed || (percent.is_some() && percent != self.drawn.1) {
            self.bar.force_draw();
        }
        self.drawn = (total, percent);
    }
}

/// The line on the terminal (or wherever stderr goes, with `always`),
/// drawn by indicatif.
#[derive(Default)]
pub struct BarProgress {
    target: Target,
    drawn: Mutex<Option<Drawn>>,
    /// Instead of stderr (tests).
    #[cfg(test)]
    to: Option<(Arc<Mutex<Vec<u8>>>, u16)>,
}

impl BarProgress {
    pub fn new(target: Target) -> Self {
        BarProgress {
            target,
            ..Default::default()
        }
    }

    fn draw_target(&self, label: &str) -> ProgressDrawTarget {
        #[cfg(test)]
        if let Some((buf, width)) = &self.to {
            let term = AnsiTerm::new(Box::new(tests::Shared(buf.clone())), *width);
            return ProgressDrawTarget::term_like_with_hz(Box::new(term), 20);
        }
        match self.target {
            Target::Always if !std::io::stderr().is_terminal() => {
                ProgressDrawTarget::term_like_with_hz(Box::new(AnsiTerm::stderr(label)), 20)
            }
            _ => ProgressDrawTarget::stderr(),
        }
    }

    fn drawn(&self) -> MutexGuard<'_, Option<Drawn>> {
        self.drawn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the bar being drawn, if any, taking its line away.
    fn end(&self) -> Option<Arc<Mutex<Meter>>> {
        let d = self.drawn().take()?;
        d.bar.finish_and_clear();
        *active() = None;
        Some(d.meter)
    }
}

impl Progress for BarProgress {
    fn start(&self, label: &str, total: Total) {
        self.end();
        let meter = Arc::new(Mutex::new(Meter::new(label, total, Instant::now())));
        // Made hidden, so nothing is drawn before it has its style.
        let bar = ProgressBar::hidden()
            .with_style(style(&meter, false))
            .with_message(label.to_string());
        bar.set_draw_target(self.draw_target(label));
        let mut d = Drawn {
            bar: bar.clone(),
            meter,
            drawn: (None, None),
        };
        d.update(true);
        bar.enable_steady_tick(TICK);
        *self.drawn() = Some(d);
        *active() = Some(bar);
    }

    fn set_total(&self, total: Total) {
        if let Some(d) = self.drawn().as_mut() {
            d.meter.lock().unwrap_or_else(|p| p.into_inner()).total = total;
            d.update(false);
        }
    }

    fn advance(&self, n: u64) {
        if let Some(d) = self.drawn().as_mut() {
            d.meter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .advance(n, Instant::now());
            d.update(false);
        }
    }

    fn finish(&self, outcome: Outcome) {
        let Some(meter) = self.end() else {
            return;
        };
        let m = meter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = m.summary(outcome, Instant::now()) {
            #[cfg(test)]
            if let Some((buf, _)) = &self.to {
                let mut b = buf.lock().unwrap();
                b.extend_from_slice(format!("{line}\n").as_bytes());
                return;
            }
            let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
        }
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
    let terminal =
        std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    match when {
        When::Always => Arc::new(BarProgress::new(Target::Always)),
        _ if quiet => Arc::new(NoProgress),
        When::Auto if terminal => Arc::new(BarProgress::new(Target::Terminal)),
        When::Auto | When::Never => Arc::new(LogProgress::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A writer the tests can read back.
    #[derive(Clone)]
    pub(super) struct Shared(pub(super) Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_exact_total_shows_percent_and_eta() {
        let t0 = Instant::now();
        let mut m = Meter::new("files: x.tar.xz.pgp", Total::Exact(300 * MIB), t0);
        for s in 1..=20 {
            m.advance(10 * MIB, t0 + Duration::from_secs(s));
        }
        let now = t0 + Duration::from_secs(20);
        assert_eq!(m.percent(), Some(66));
        assert_eq!(m.tilde(), "");
        assert_eq!(m.rate_text(now), "10.0 MiB/s");
        assert_eq!(m.eta(now), "10s");
    }

    #[test]
    fn an_estimate_is_marked_and_dropped_once_passed() {
        let t0 = Instant::now();
        let mut m = Meter::new("shop: x.pgdump.xz.pgp", Total::Estimate(100 * MIB), t0);
        m.advance(62 * MIB, t0 + Duration::from_secs(2));
        assert_eq!((m.percent(), m.tilde()), (Some(62), "~"));
        m.advance(50 * MIB, t0 + Duration::from_secs(3));
        assert_eq!((m.percent(), m.tilde()), (None, ""));
        assert_eq!(m.eta(t0 + Duration::from_secs(3)), "?");
    }

    /// The frames drawn (each after a carriage return and an erase) and
    /// the lines that stayed.
    fn drawn(out: &[u8]) -> (Vec<String>, Vec<String>) {
        let out = String::from_utf8_lossy(out);
        let mut frames = Vec::new();
        let mut lines = Vec::new();
        for line in out.split('\n') {
            let parts: Vec<&str> = line.split("\r\x1b[2K").collect();
            frames.extend(
                parts
                    .iter()
                    .map(|f| f.trim_end().to_string())
                    .filter(|f| !f.is_empty()),
            );
            let last = parts.last().unwrap().trim_end();
            if !last.is_empty() {
                lines.push(last.to_string());
            }
        }
        (frames, lines)
    }

    #[test]
    fn indicatif_draws_the_line_and_the_summary_stays() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let p = BarProgress {
            to: Some((buf.clone(), 100)),
            ..Default::default()
        };
        p.start("files: x.tar.xz.pgp", Total::Exact(100 * MIB));
        for _ in 0..100 {
            p.advance(MIB);
        }
        p.finish(Outcome::Stored {
            plain: 100 * MIB,
            stored: 10 * MIB,
        });
        let (frames, lines) = drawn(&buf.lock().unwrap());
        // A frame at every whole percent, whatever the rate limit.
        assert!(frames.len() >= 100, "{frames:#?}");
        let half = frames
            .iter()
            .find(|f| f.contains(" 50 % "))
            .unwrap_or_else(|| panic!("{frames:#?}"));
        assert!(half.starts_with("files: x.tar.xz.pgp [#"), "{half}");
        assert!(half.contains("] 50 %  50.00 MiB / 100.00 MiB "), "{half}");
        assert!(half.contains(" ETA "), "{half}");
        assert!(half.chars().count() <= 100, "{half}");
        assert!(frames.iter().all(|f| !f.contains('~')), "{frames:#?}");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("files: x.tar.xz.pgp: 100.0 MiB in ")
                && lines[0].ends_with("stored 10.0 MiB (10.0 % of the plaintext)"),
            "{lines:#?}"
        );
    }

    #[test]
    fn an_estimate_draws_a_tilde_then_the_plain_count() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let p = BarProgress {
            to: Some((buf.clone(), 120)),
            ..Default::default()
        };
        p.start("shop: x.pgdump.xz.pgp", Total::Estimate(10 * MIB));
        for _ in 0..12 {
            p.advance(MIB);
        }
        p.finish(Outcome::Failed);
        let (frames, lines) = drawn(&buf.lock().unwrap());
        assert!(
            frames
                .iter()
                .any(|f| f.contains("] ~50 %   5.00 MiB / ~10.00 MiB ")),
            "{frames:#?}"
        );
        let last = frames.last().unwrap();
        assert!(
            last.starts_with("shop: x.pgdump.xz.pgp 1") && !last.contains('%'),
            "{frames:#?}"
        );
        assert!(lines.is_empty(), "a failure has no summary: {lines:#?}");
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
    fn durations_read_like_a_clock() {
        assert_eq!(duration(Duration::from_secs(8)), "8s");
        assert_eq!(duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 03m");
    }
}
