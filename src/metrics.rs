//! A Prometheus textfile (for node_exporter's textfile collector) with the
//! state of every profile, rewritten atomically after every run.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::{Outcome, ProfileState};

/// A profile's recovery objectives (`rto`, `rpo`), if it declares them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Objectives {
    pub rto: Option<Duration>,
    pub rpo: Option<Duration>,
}

/// One profile's line in the metrics file.
pub struct Row {
    pub profile: String,
    pub state: ProfileState,
    pub objectives: Objectives,
}

/// Renders the metrics for each profile at `now`.
pub fn render(rows: &[Row], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let mut gauge_of = |name: &str, help: &str, value: &dyn Fn(&Row) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for row in rows {
            if let Some(v) = value(row) {
                let _ = writeln!(out, "{name}{{profile=\"{}\"}} {v}", escape(&row.profile));
            }
        }
    };
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&ProfileState) -> Option<f64>| {
        gauge_of(name, help, &|r: &Row| value(&r.state))
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
    gauge(
        "cellar_last_drill_timestamp_seconds",
        "When the last restore drill (drill or mirror) finished (Unix time).",
        &|s| {
            s.last_drill
                .as_ref()
                .map(|d| d.finished_at.timestamp() as f64)
        },
    );
    gauge(
        "cellar_last_drill_success",
        "1 if the last restore drill passed (restored and matched the inventory), 0 if not.",
        &|s| {
            s.last_drill
                .as_ref()
                .map(|d| if d.passed { 1.0 } else { 0.0 })
        },
    );
    gauge(
        "cellar_last_drill_seconds",
        "Restore wall time of the last drill (fetch, restore, compare).",
        &|s| s.last_drill.as_ref().map(|d| d.restore_seconds),
    );
    gauge(
        "cellar_last_drill_bytes_per_second",
        "Plaintext bytes restored per second by the last drill.",
        &|s| s.last_drill.as_ref().map(|d| d.bytes_per_second),
    );
    gauge(
        "cellar_projected_restore_seconds",
        "The last passed drill's restore time, projected to the newest backup's size.",
        &|s| s.projected_restore_seconds(),
    );
    gauge(
        "cellar_newest_backup_age_seconds",
        "Age of the newest good backup's data (since its start).",
        &|s| s.newest_backup_age_seconds(now),
    );
    gauge_of(
        "cellar_rto_seconds",
        "The profile's recovery time objective (rto).",
        &|r| r.objectives.rto.map(|d| d.as_secs_f64()),
    );
    gauge_of(
        "cellar_rpo_seconds",
        "The profile's recovery point objective (rpo).",
        &|r| r.objectives.rpo.map(|d| d.as_secs_f64()),
    );
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Each profile's objectives, by name, read from its file without its
/// secrets (see `profile::objectives`).
pub fn objectives(config_dir: &Path) -> std::collections::BTreeMap<String, Objectives> {
    crate::profile::discover(config_dir)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let (rto, rpo) = crate::profile::objectives(&f.path);
            (f.name, Objectives { rto, rpo })
        })
        .collect()
}

/// Writes the textfile for every profile with state in the config dir.
pub fn write(config_dir: &Path, path: &Path) -> std::io::Result<()> {
    let objectives = objectives(config_dir);
    let mut rows = Vec::new();
    if let Ok(rd) = std::fs::read_dir(crate::state::dir(config_dir)) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                rows.push(Row {
                    state: crate::state::load(config_dir, &name),
                    objectives: objectives.get(&name).copied().unwrap_or_default(),
                    profile: name,
                });
            }
        }
    }
    rows.sort_by(|a, b| a.profile.cmp(&b.profile));
    crate::state::write_atomic(path, render(&rows, crate::schedule::now()).as_bytes())
}
