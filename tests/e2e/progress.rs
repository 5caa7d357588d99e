//! The progress line as a person sees it: `cellar` under a pseudo terminal
//! (util-linux `script`, which records every byte written to the terminal),
//! and `--progress` without one. No assertion depends on timing: the line
//! is drawn whenever its whole percent changes, so a payload of many
//! chunks shows many frames however slow the machine is.

use std::process::Command;

use crate::harness::{noise, pg, TestEnv};

/// The frames drawn on the terminal (each starts with a carriage return
/// and an erase), and the lines that stayed.
struct Screen {
    frames: Vec<String>,
    lines: Vec<String>,
}

fn screen(raw: &str) -> Screen {
    let mut frames = Vec::new();
    let mut lines = Vec::new();
    for line in raw.split('\n') {
        let mut parts = line.split("\r\x1b[2K");
        let before = parts.next().unwrap_or("");
        let mut last = before.to_string();
        for f in parts {
            if !f.trim().is_empty() {
                frames.push(f.trim_end_matches('\r').to_string());
            }
            last = f.to_string();
        }
        let last = last.trim_end_matches('\r').trim();
        if !last.is_empty() {
            lines.push(last.to_string());
        }
    }
    Screen { frames, lines }
}

/// The byte count of a frame: the number before "MiB /", "KiB /" or "B /".
fn position(frame: &str) -> Option<String> {
    let i = frame.find(" / ")?;
    let head = &frame[..i];
    let mut words = head.rsplit(' ');
    let unit = words.next()?;
    let number = words.next()?;
    Some(format!("{number} {unit}"))
}

/// Runs cellar under a pseudo terminal; returns its exit code and what
/// it wrote to the terminal.
fn under_terminal(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let bin = env!("CARGO_BIN_EXE_cellar");
    let mut line = shell_words::quote(bin).into_owned();
    for a in args {
        line.push(' ');
        line.push_str(&shell_words::quote(a));
    }
    // A terminal of 120 columns (one without a size would get 80).
    let line = format!("stty cols 120 rows 30; {line}");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("CELLAR_CONFIG_DIR", env.path())
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn progress_on_a_terminal_shows_a_bar_that_advances_then_the_summary() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("big", &noise(24 << 20, 7)), ("small", b"hello")]);
    env.files_profile("www", &[&data], "threads = 2");

    let (code, raw) = under_terminal(&env, &["backup", "www"]);
    assert_eq!(code, 0, "{raw}");
    let s = screen(&raw);
    let bars: Vec<&String> = s.frames.iter().filter(|f| f.contains("% ")).collect();
    assert!(
        bars.iter()
            .all(|f| f.starts_with("www: ") && f.contains(".tar.xz.pgp")),
        "{bars:#?}"
    );
    let mut seen: Vec<String> = bars.iter().filter_map(|f| position(f)).collect();
    seen.dedup();
    assert!(
        seen.iter().filter(|p| !p.starts_with("0 ")).count() >= 2,
        "the bar should advance at least twice: {seen:?}\n{raw}"
    );
    assert!(
        bars.iter().any(|f| f.contains('[') && f.contains("ETA")),
        "{bars:#?}"
    );
    let summary = s
        .lines
        .iter()
        .find(|l| l.starts_with("www: ") && l.contains(", stored "))
        .unwrap_or_else(|| panic!("no summary line:\n{raw}"));
    assert!(summary.contains("24.0 MiB in "), "{summary}");
    assert!(summary.ends_with("% of the plaintext)"), "{summary}");
    // The summary replaces the line-by-line info of what was stored.
    assert!(!raw.contains("bytes of tar"), "{raw}");

    let target = env.path().join("restored");
    let (code, raw) = under_terminal(
        &env,
        &["restore", "www", "--to-dir", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{raw}");
    let s = screen(&raw);
    let percents: Vec<&String> = s.frames.iter().filter(|f| f.contains(" % ")).collect();
    let mut seen: Vec<String> = percents.iter().filter_map(|f| position(f)).collect();
    seen.dedup();
    assert!(
        seen.iter().filter(|p| !p.starts_with("0 ")).count() >= 2,
        "the bar should advance at least twice: {seen:?}\n{raw}"
    );
    // A restore knows its total exactly: no estimate mark.
    assert!(percents.iter().all(|f| !f.contains('~')), "{percents:#?}");
    assert!(
        s.lines.iter().any(|l| l.starts_with("www: ")
            && l.contains("24.0 MiB in ")
            && l.contains(" stored (")),
        "{raw}"
    );
    let restored = target.join(data.strip_prefix("/").unwrap()).join("big");
    assert_eq!(std::fs::metadata(restored).unwrap().len(), 24 << 20);
}

#[test]
fn without_a_terminal_only_progress_always_draws_the_line() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("f", &noise(2 << 20, 3))]);
    env.files_profile("www", &[&data], "algorithm = \"zstd\"");

    // Cron: no terminal, no line (and the default filter shows no info).
    let out = env.cellar(&["backup", "www"]);
    out.ok();
    assert!(!out.stderr.contains('\r'), "{}", out.stderr);

    let out = env.cellar(&["--progress=always", "backup", "www"]);
    out.ok();
    let s = screen(&out.stderr);
    assert!(
        s.frames
            .iter()
            .any(|f| f.starts_with("www: ") && f.contains(" % ")),
        "{:?}",
        out.stderr
    );
    assert!(
        s.lines
            .iter()
            .any(|l| l.contains("2.0 MiB in ") && l.contains(", stored ")),
        "{:?}",
        out.stderr
    );

    let out = env.cellar(&["--progress=never", "verify", "www"]);
    out.ok();
    assert!(!out.stderr.contains('\r'), "{}", out.stderr);
    let out = env.cellar(&["--progress=always", "verify", "www"]);
    out.ok();
    assert!(
        screen(&out.stderr)
            .lines
            .iter()
            .any(|l| l.starts_with("www: ") && l.contains(" stored (")),
        "{:?}",
        out.stderr
    );
}

#[test]
fn a_dump_shows_its_total_as_an_estimate_from_the_previous_backup() {
    let db = pg().filled_db(
        "progress_estimate",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;",
    );
    let env = TestEnv::new();
    env.pg_profile("shop", &db, "", "");

    // The first backup has nothing to go by.
    let out = env.cellar(&["--progress=always", "backup", "shop"]);
    out.ok();
    let first = screen(&out.stderr);
    assert!(
        !first.frames.iter().any(|f| f.contains("ETA")),
        "{:?}",
        out.stderr
    );
    assert!(
        first
            .lines
            .iter()
            .any(|l| l.starts_with("shop: ") && l.contains(", stored ")),
        "{:?}",
        out.stderr
    );

    let out = env.cellar(&["--progress=always", "backup", "shop"]);
    out.ok();
    let second = screen(&out.stderr);
    assert!(
        second
            .frames
            .iter()
            .any(|f| f.starts_with("shop: ") && f.contains(" %") && f.contains(" / ~")),
        "{:?}",
        out.stderr
    );
}
