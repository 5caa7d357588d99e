//! Mirror: refresh a test database from the latest backup, and swap it in
//! only when the restore, the `after_restore` statements and the `checks`
//! all succeeded.
//!
//! 1. Restore into a fresh `<database>__cellar_incoming` (dropped first if
//!    a previous run left it), through the same verified, single-transaction
//!    restore as `cellar restore`.
//! 2. Run `after_restore` (anonymization), then `checks` (each must return
//!    true); any failure aborts.
//! 3. Only then: end the sessions on `<database>`, rename it to
//!    `<database>__cellar_previous`, rename the incoming one to
//!    `<database>`, drop the previous one (unless `keep_previous`).
//!
//! On any failure before step 3 the incoming database is dropped and
//! `<database>` is exactly as it was.

use std::time::Instant;

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::manifest::Manifest;
use crate::profile::{Mirror, PgConn};
use crate::restore::{self, Ctx, DbTarget};
use crate::source::postgres;

pub fn incoming_name(db: &str) -> String {
    format!("{db}__cellar_incoming")
}

pub fn previous_name(db: &str) -> String {
    format!("{db}__cellar_previous")
}

/// What a successful mirror measured.
#[derive(Debug, Clone)]
pub struct Drill {
    pub backup_id: String,
    pub seconds: f64,
    pub checks_passed: usize,
    /// Estimated rows per table (after ANALYZE), largest first.
    pub row_counts: Vec<(String, i64)>,
}

/// The step that failed, for the error message and exit 1.
fn step<T>(name: &str, r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.with_context(|| format!("mirror step `{name}` failed"))
}

pub fn run(
    ctx: &Ctx<'_>,
    m: &Manifest,
    mirror: &Mirror,
    database: Option<&str>,
) -> anyhow::Result<Drill> {
    let started = Instant::now();
    let conn = &mirror.conn;
    let target = &mirror.database;
    let incoming = incoming_name(target);
    let payload = restore::database_payload(m, database)?;

    step(
        "drop leftover incoming",
        postgres::drop_database(conn, &incoming),
    )?;
    let prepared = (|| -> anyhow::Result<(usize, Vec<(String, i64)>)> {
        step(
            "restore",
            restore::to_database(
                ctx,
                m,
                payload,
                &DbTarget {
                    conn,
                    database: &incoming,
                    clean: false,
                    no_owner: false,
                },
            ),
        )?;
        for (i, sql) in mirror.after_restore.iter().enumerate() {
            step(
                &format!("after_restore #{}", i + 1),
                postgres::query(conn, &incoming, &format!("{sql};"), &[]).map(|_| ()),
            )?;
        }
        for (i, sql) in mirror.checks.iter().enumerate() {
            let out = step(
                &format!("check #{}", i + 1),
                postgres::query(conn, &incoming, &format!("{sql};"), &[]),
            )?;
            let value = out.lines().next().unwrap_or("").trim();
            if value != "t" {
                bail!(
                    "mirror step `check #{}` failed: `{sql}` returned {:?}, not true",
                    i + 1,
                    value
                );
            }
        }
        let counts = step("count rows", row_counts(conn, &incoming))?;
        Ok((mirror.checks.len(), counts))
    })();
    let (checks_passed, row_counts) = match prepared {
        Ok(v) => v,
        Err(e) => {
            if let Err(d) = postgres::drop_database(conn, &incoming) {
                warn!("could not drop {incoming}: {d:#}");
            }
            return Err(e.context(format!("{target} was left as it was")));
        }
    };
    if let Err(e) = step("swap", swap(conn, target, &incoming, mirror.keep_previous)) {
        if let Err(d) = postgres::drop_database(conn, &incoming) {
            warn!("could not drop {incoming}: {d:#}");
        }
        return Err(e.context(format!("{target} was left as it was")));
    }
    let drill = Drill {
        backup_id: m.id.clone(),
        seconds: started.elapsed().as_secs_f64(),
        checks_passed,
        row_counts,
    };
    info!(
        "{}: mirror of backup {} into {target} done in {:.1}s, {} check(s) passed",
        m.profile, m.id, drill.seconds, drill.checks_passed
    );
    Ok(drill)
}

fn row_counts(conn: &PgConn, db: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let out = postgres::query(
        conn,
        db,
        "ANALYZE; SELECT n.nspname || '.' || c.relname, c.reltuples::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
         ORDER BY 2 DESC, 1;",
        &[],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.rsplit_once('|'))
        .map(|(t, n)| (t.to_string(), n.trim().parse().unwrap_or(0).max(0)))
        .collect())
}

/// Ends the sessions on the old database and renames the new one in. The
/// two renames are one transaction: either both happen or neither. A
/// client that reconnects in between makes the rename fail; the swap is
/// tried again a few times before giving up.
fn swap(conn: &PgConn, target: &str, incoming: &str, keep_previous: bool) -> anyhow::Result<()> {
    let previous = previous_name(target);
    postgres::drop_database(conn, &previous)?;
    let exists = postgres::database_state(conn, target)?.is_some();
    let sql = if exists {
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname IN (:'target', :'incoming') AND pid <> pg_backend_pid();
         BEGIN;
         ALTER DATABASE :\"target\" RENAME TO :\"previous\";
         ALTER DATABASE :\"incoming\" RENAME TO :\"target\";
         COMMIT;"
    } else {
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname = :'incoming' AND pid <> pg_backend_pid();
         ALTER DATABASE :\"incoming\" RENAME TO :\"target\";"
    };
    let vars = [
        ("target", target),
        ("incoming", incoming),
        ("previous", previous.as_str()),
    ];
    let mut attempt = 0;
    loop {
        attempt += 1;
        match postgres::query(conn, "postgres", sql, &vars) {
            Ok(_) => break,
            Err(e) if attempt < 3 => {
                warn!("swap attempt {attempt} failed, retrying: {e:#}");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
    if exists && !keep_previous {
        postgres::drop_database(conn, &previous)?;
    }
    Ok(())
}
