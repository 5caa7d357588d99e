//! `cellar drill PROFILE [ID]`: restore a backup into a scratch database,
//! compare it with the manifest's inventory, drop it, and record the
//! result and timings in the state. A backup of several databases is
//! drilled database by database (or only `--database NAME`), as one record.

use std::path::Path;

use super::SharedProgress;
use crate::restore::{self, Fetch};
use crate::{catalog, state, Failure};

#[allow(clippy::too_many_arguments)]
pub fn run(
    dir: &Path,
    name: &str,
    id: Option<&str>,
    database: Option<&str>,
    no_owner: bool,
    metrics: Option<&Path>,
    progress: SharedProgress,
    lock_wait: std::time::Duration,
) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    // One drill of a profile at a time from this config dir: a second one
    // waits (--lock-wait), then gives up without touching the record of
    // the backup the first one is drilling.
    let _lock = crate::lock::acquire(dir, &format!("{}@drill", profile.name), "drill", lock_wait)
        .map_err(|e| match e {
            crate::lock::LockError::Busy { holder, waited, .. } => Failure::from(anyhow::anyhow!(
                "another drill of {} is running ({holder}); waited {waited:?} (--lock-wait); try again when it is done",
                profile.name
            )),
            other => Failure::from(anyhow::Error::from(other)),
        })?;
    let Some(pg) = profile.source.database() else {
        return Err(Failure::config(anyhow::anyhow!(
            "{} is a files profile; a drill restores a database (use `cellar verify {}` for a files backup)",
            profile.name,
            profile.name
        )));
    };
    // The [mirror] server is the one meant for restores; else the source's.
    let conn = profile.mirror.as_ref().map_or(&pg.conn, |m| &m.conn);
    let store = super::open_store(dir, &profile)?;
    let identity = super::identity(&profile)?;
    let m = catalog::manifest(store.as_ref(), &profile, id)?;
    // One database, or each database of the backup in turn.
    let payloads: Vec<&crate::manifest::Payload> = match database {
        Some(_) => vec![restore::database_payload(&m, database).map_err(Failure::config)?],
        None => m
            .payloads
            .iter()
            .filter(|p| p.content.is_database())
            .collect(),
    };
    if payloads.is_empty() {
        return Err(Failure::config(anyhow::anyhow!(
            "backup {} of {} holds no database dump",
            m.id,
            profile.name
        )));
    }
    let fetch = Fetch {
        profile: &profile,
        store: store.as_ref(),
        identity: &identity,
        progress: progress.as_ref(),
    };
    let mut parts = Vec::new();
    for p in &payloads {
        let d = crate::drill::run(&fetch, &m, p, conn, &profile.restore, no_owner, dir);
        if payloads.len() > 1 {
            let line = format!(
                "{}: {} in {:.1}s{}",
                p.database.as_deref().unwrap_or(&p.name),
                d.result(),
                d.restore_seconds,
                d.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            println!("  {}", crate::logging::one_line(&line));
        }
        parts.push(d);
    }
    let drill = crate::drill::combine(parts);
    let mut st = state::load(dir, &profile.name);
    st.record_drill(drill.clone());
    crate::job::save_state(dir, &profile.name, &st);
    crate::job::write_metrics(dir, metrics);
    if let Some(error) = &drill.error {
        return Err(Failure::from(anyhow::anyhow!(
            "drill of backup {} of {} failed after {:.1}s: {error}",
            m.id,
            profile.name,
            drill.restore_seconds
        )));
    }
    println!(
        "{}: drill of backup {} passed: {} restored in {:.1}s ({}/s) on {}, {}; the scratch database is dropped",
        profile.name,
        m.id,
        super::human_bytes(drill.plain_bytes),
        drill.restore_seconds,
        super::human_bytes(drill.bytes_per_second as u64),
        conn.describe(),
        if drill.tables_compared > 0 && profile.kind == crate::profile::Kind::Mariadb {
            format!(
                "{} table(s) and every view the dump holds were made",
                drill.tables_compared
            )
        } else if drill.tables_compared > 0 {
            format!(
                "{} table(s) and every kind of object match the inventory",
                drill.tables_compared
            )
        } else {
            "not compared: the backup has no inventory, or a filtered one (pg_dump_args)".to_string()
        }
    );
    Ok(0)
}
