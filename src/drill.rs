//! Restore drills: proof that a backup restores, as a measured fact.
//!
//! `cellar drill` restores a backup through the one restore engine
//! ([`crate::restore::database`]) into a scratch database, which the engine
//! compares with the manifest's inventory (every table's rows, every kind
//! of object), and then drops it. Nothing is swapped in: the scratch name
//! is a hash (`cellar_scratch_<12 hex>`) that no other database can have,
//! so a drill never touches another database. Each drill, and each mirror
//! run (a drill that also swaps), is recorded in the state: result, backup
//! id, restore wall time, throughput and bytes. `status` checks the `rto`
//! against it, `list` shows it per backup, and the retention keeps the
//! newest backup whose drill passed.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::info;

use crate::manifest::{Manifest, Payload};
use crate::profile::{DbConn, RestoreConfig};
use crate::restore::database::{self, DbTarget};
use crate::restore::Fetch;
use crate::state;

/// The main payloads' plaintext size (roles and tablespaces excluded): the
/// measure that restore times are projected with.
pub fn backup_plain_bytes(m: &Manifest) -> u64 {
    m.payloads
        .iter()
        .filter(|p| !p.content.is_globals())
        .map(|p| p.plain_size)
        .sum()
}

/// What names a drill's scratch database (`cellar_scratch_<hash of it>`).
pub fn scratch_key(config_dir: &Path, profile: &str) -> String {
    format!("cellar drill of {profile} from {}", config_dir.display())
}

/// The state record of one drill of payload `p` of backup `m`.
pub fn record(
    m: &Manifest,
    p: &Payload,
    by: &str,
    started_at: DateTime<Utc>,
    restore_seconds: f64,
    tables_compared: usize,
    error: Option<String>,
) -> state::Drill {
    let finished_at = crate::schedule::now();
    state::Drill {
        backup_id: m.id.clone(),
        by: by.to_string(),
        started_at,
        finished_at: finished_at.max(started_at),
        passed: error.is_none(),
        restore_seconds,
        plain_bytes: p.plain_size,
        stored_bytes: p.stored_size,
        backup_plain_bytes: backup_plain_bytes(m),
        bytes_per_second: if restore_seconds > 0.0 {
            p.plain_size as f64 / restore_seconds
        } else {
            0.0
        },
        tables_compared,
        error,
        passed_before: false,
    }
}

/// One record for the drills of several databases of one backup: times,
/// bytes and tables add up; it passed when each did.
pub fn combine(parts: Vec<state::Drill>) -> state::Drill {
    let mut it = parts.into_iter();
    let mut all = it.next().expect("at least one drill");
    for d in it {
        all.finished_at = all.finished_at.max(d.finished_at);
        all.passed &= d.passed;
        all.restore_seconds += d.restore_seconds;
        all.plain_bytes += d.plain_bytes;
        all.stored_bytes += d.stored_bytes;
        all.tables_compared += d.tables_compared;
        all.error = match (all.error.take(), d.error) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
    }
    all.bytes_per_second = if all.restore_seconds > 0.0 {
        all.plain_bytes as f64 / all.restore_seconds
    } else {
        0.0
    };
    all
}

/// Restores payload `p` into a scratch database on `conn`, compares it
/// with the inventory, and drops it. Returns the record, passed or failed.
pub fn run(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    conn: &DbConn,
    options: &RestoreConfig,
    no_owner: bool,
    config_dir: &Path,
) -> state::Drill {
    let started_at = crate::schedule::now();
    let clock = Instant::now();
    // Never created: only its hash names the scratch database and the
    // lock. The config dir is part of it, so two hosts or config dirs with
    // the same profile name can drill on one server at once.
    let key = scratch_key(config_dir, &m.profile);
    let t = DbTarget {
        kind: fetch.profile.kind,
        conn,
        database: &key,
        clean: true,
        no_owner,
        keep_previous: false,
        mirror: true,
        jobs: options.jobs,
        spool_dir: &options.spool_dir,
        config_dir,
        globals: false,
        only: None,
    };
    let prepared = database::prepare_any(fetch, m, p, &t);
    let drill = match prepared {
        Ok(scratch) => {
            let seconds = clock.elapsed().as_secs_f64();
            let tables = scratch.tables_compared();
            let name = scratch.name().to_string();
            // Dropping the guard drops the scratch database.
            drop(scratch);
            info!(
                "{}: drill of backup {}: the scratch database {name} is dropped",
                m.profile, m.id
            );
            record(m, p, "drill", started_at, seconds, tables, None)
        }
        Err(e) => record(
            m,
            p,
            "drill",
            started_at,
            clock.elapsed().as_secs_f64(),
            0,
            Some(format!("{e:#}")),
        ),
    };
    drill
}
