//! A Prometheus textfile (for node_exporter's textfile collector) with the
//! state of every profile, rewritten atomically after every run.

use std::fmt::Write;
use std::path::Path;

use crate::state::{Outcome, ProfileState};

/// Renders the metrics for `(profile, state)` pairs.
pub fn render(states: &[(String, ProfileState)]) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&ProfileState) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (profile, st) in states {
            if let Some(v) = value(st) {
                let _ = writeln!(out, "{name}{{profile=\"{}\"}} {v}", escape(profile));
            }
        }
    };
    gauge(
        "cellar_last_run_timestamp_seconds",
        "When the last run of the profile finished (Unix time).",
        &|s| {
            s.last_run
                .as_ref()
                .map(|r| r.finished_at.timestamp() as f64)
        },
    );
    gauge(
        "cellar_last_run_success",
        "1 if the last run of the profile succeeded, 0 if it failed.",
        &|s| {
            s.last_run.as_ref().map(|r| {
                if r.outcome == Outcome::Success {
                    1.0
                } else {
                    0.0
                }
            })
        },
    );
    gauge(
        "cellar_last_run_duration_seconds",
        "How long the last run took.",
        &|s| s.last_run.as_ref().map(|r| r.duration_secs()),
    );
    gauge(
        "cellar_last_success_timestamp_seconds",
        "When the last successful backup finished (Unix time).",
        &|s| {
            s.last_success
                .as_ref()
                .map(|r| r.finished_at.timestamp() as f64)
        },
    );
    gauge(
        "cellar_last_success_stored_bytes",
        "Bytes stored by the last successful backup.",
        &|s| s.last_success.as_ref().map(|r| r.stored_bytes as f64),
    );
    gauge(
        "cellar_last_success_plain_bytes",
        "Size of the dump or tar of the last successful backup, before compression.",
        &|s| s.last_success.as_ref().map(|r| r.plain_bytes as f64),
    );
    gauge(
        "cellar_last_failure_timestamp_seconds",
        "When the last failed run finished (Unix time).",
        &|s| {
            s.last_failure
                .as_ref()
                .map(|r| r.finished_at.timestamp() as f64)
        },
    );
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the textfile for every profile with state in the config dir.
pub fn write(config_dir: &Path, path: &Path) -> std::io::Result<()> {
    let mut states = Vec::new();
    if let Ok(rd) = std::fs::read_dir(crate::state::dir(config_dir)) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                states.push((name.clone(), crate::state::load(config_dir, &name)));
            }
        }
    }
    states.sort_by(|a, b| a.0.cmp(&b.0));
    crate::state::write_atomic(path, render(&states).as_bytes())
}
