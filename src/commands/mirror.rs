//! `cellar mirror PROFILE [--id ID]`: refresh the `[mirror]` database from
//! a backup, swapping it in only when everything succeeded.

use std::path::Path;
use std::time::Duration;

use super::SharedProgress;
use crate::restore::Fetch;
use crate::state::{self, Outcome, Run};
use crate::{catalog, lock, schedule, Failure};

pub fn run(
    dir: &Path,
    name: &str,
    id: Option<&str>,
    database: Option<&str>,
    wait: Duration,
    metrics: Option<&Path>,
    progress: SharedProgress,
) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    let Some(mirror) = &profile.mirror else {
        return Err(Failure::config(anyhow::anyhow!(
            "{} has no [mirror] table; add one with `database = \"{}_test\"`",
            profile.file.display(),
            profile.name
        )));
    };
    let store = super::open_store(dir, &profile)?;
    let identity = super::identity(&profile)?;
    let _lock = lock::acquire(dir, &profile.name, "mirror", wait)?;
    let started_at = schedule::now();
    let m = catalog::manifest(store.as_ref(), &profile, id)?;
    let fetch = Fetch {
        profile: &profile,
        store: store.as_ref(),
        identity: &identity,
        progress: progress.as_ref(),
    };
    crate::mirror::precheck(&fetch, mirror, dir)?
        .map_err(|refused| Failure::config(anyhow::anyhow!(refused)))?;
    let clock = std::time::Instant::now();
    let result = crate::mirror::run(&fetch, &m, mirror, database, &profile.restore, dir);
    let mut st = state::load(dir, &profile.name);
    // A mirror is a drill too: passed or failed, it is recorded.
    if let Ok(payload) = crate::restore::database_payload(&m, database) {
        let (seconds, tables, error) = match &result {
            Ok(d) => (d.restore_seconds, d.tables_compared, None),
            Err(e) => (clock.elapsed().as_secs_f64(), 0, Some(format!("{e:#}"))),
        };
        st.record_drill(crate::drill::record(
            &m, payload, "mirror", started_at, seconds, tables, error,
        ));
    }
    if let Ok(drill) = &result {
        st.last_mirror = Some(Run {
            backup_id: Some(drill.backup_id.clone()),
            started_at,
            finished_at: started_at
                + chrono::Duration::milliseconds((drill.seconds * 1000.0) as i64),
            outcome: Outcome::Success,
            stored_bytes: m.stored_size(),
            plain_bytes: m.payloads.iter().map(|p| p.plain_size).sum(),
            error: None,
            canary_failed: false,
            warnings: drill
                .row_counts
                .iter()
                .take(20)
                .map(|(t, n)| format!("{t}: ~{n} rows"))
                .chain(std::iter::once(format!(
                    "{} check(s) passed",
                    drill.checks_passed
                )))
                .collect(),
        });
    }
    crate::job::save_state(dir, &profile.name, &st);
    crate::job::write_metrics(dir, metrics);
    let drill = result?;
    println!(
        "{}: backup {} mirrored into {} in {:.1}s ({} check(s) passed)",
        profile.name, drill.backup_id, mirror.database, drill.seconds, drill.checks_passed
    );
    for (table, rows) in drill.row_counts.iter().take(10) {
        println!("  {}: ~{rows} rows", crate::logging::one_line(table));
    }
    Ok(0)
}
