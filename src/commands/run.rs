//! `cellar run [--due] [PROFILE...]`: back up every profile (or, with
//! `--due`, those whose schedule fired since their last successful
//! backup); one failing profile never stops the others, and a summary at
//! the end names each failure. Exit 2 when a profile is invalid, else 1
//! when a backup failed.

use std::path::Path;

use tracing::{debug, error, warn};

use super::SharedProgress;
use crate::profile::{self, ProblemList, Profile};
use crate::{catalog, manifest, schedule, state, Failure};

/// When the profile last succeeded: the state file, or else the newest
/// complete backup in the store (so a lost state folder cannot cause a
/// burst of backups, nor hide a missing one).
/// A last success dated after `now` (made while the clock ran ahead) is
/// passed over for the store's newest backup that is not.
fn last_success(
    dir: &Path,
    p: &Profile,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let st = state::load(dir, &p.name);
    if let Some(r) = st.present_success(now) {
        return Some(r.started_at);
    }
    if let Some(r) = &st.last_success {
        warn!(
            "{}: the last success ({}) is dated after now (the clock went back?); going by the store",
            p.name,
            r.started_at.format("%Y-%m-%d %H:%M UTC")
        );
    }
    let store = crate::store::open(&p.store, dir).ok()?;
    // The newest trusted backup: a planted one must not suppress backups.
    catalog::manifest(store.as_ref(), p, None)
        .ok()
        .and_then(|m| manifest::parse_id(&m.id))
}

/// Whether `--due` picks the profile now.
pub fn due(dir: &Path, p: &Profile, now: chrono::DateTime<chrono::Utc>) -> bool {
    match &p.schedule {
        None => {
            debug!(
                "{}: no schedule; `run --due` leaves it to explicit runs",
                p.name
            );
            false
        }
        Some(s) => {
            if !schedule::is_due(&s.cron, last_success(dir, p, now), now) {
                return false;
            }
            // A failing profile is retried after `retry_after`, not on
            // every tick (each try would fire on_failure again).
            let last = state::load(dir, &p.name).last_run;
            match last.filter(|r| r.outcome == state::Outcome::Failure) {
                Some(r)
                    if now
                        < r.started_at
                            + chrono::Duration::from_std(p.retry_after).unwrap_or_default() =>
                {
                    tracing::info!(
                        "{}: due, but the last run failed at {}; retrying after {} (retry_after)",
                        p.name,
                        r.started_at.format("%Y-%m-%d %H:%M UTC"),
                        humantime::format_duration(p.retry_after)
                    );
                    false
                }
                _ => true,
            }
        }
    }
}

pub fn run(
    dir: &Path,
    names: &[String],
    only_due: bool,
    opts: &super::Opts<'_>,
    progress: SharedProgress,
) -> Result<i32, Failure> {
    let files = profile::discover(dir).map_err(Failure::config)?;
    let files = profile::select(dir, files, names).map_err(Failure::config)?;
    let global = super::load_global(dir)?;
    let runner = super::runner(dir, &global, opts, progress.as_ref());
    let now = schedule::now();
    let mut ok = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut invalid = false;
    for file in &files {
        let p = match profile::load(dir, file) {
            Ok(p) => p,
            Err(problems) => {
                invalid = true;
                let text = ProblemList(problems).to_string();
                error!("{}: invalid profile, skipped:\n{text}", file.name);
                failed.push((file.name.clone(), "invalid profile (see above)".into()));
                continue;
            }
        };
        for w in &p.warnings {
            warn!("{w}");
        }
        if only_due && !due(dir, &p, now) {
            continue;
        }
        // Asked again once the lock is held: an overlapping run may have
        // made this backup while this one waited.
        let made = runner.run_if(&p, || !only_due || due(dir, &p, schedule::now()));
        match made {
            Ok(None) => {
                println!(
                    "{}: backed up meanwhile by another run; not due any more",
                    p.name
                );
            }
            Ok(Some(m)) => {
                println!("{}: backup {} complete", p.name, m.id);
                ok.push(p.name.clone());
            }
            Err(e) => {
                error!("{:#}", e);
                failed.push((p.name.clone(), format!("{e:#}")));
            }
        }
        if crate::cancel::requested() {
            break;
        }
    }
    println!("summary: {} succeeded, {} failed", ok.len(), failed.len());
    for (name, why) in &failed {
        println!(
            "  failed: {name}: {}",
            crate::logging::one_line(why.lines().next().unwrap_or(""))
        );
    }
    Ok(if invalid {
        2
    } else if failed.is_empty() {
        0
    } else {
        1
    })
}
