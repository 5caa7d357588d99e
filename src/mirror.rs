//! Mirror: refresh a test database from the latest backup, and swap it in
//! only when the restore, the `after_restore` statements and the `checks`
//! all succeeded.
//!
//! 1. Restore into a scratch database through the same engine as
//!    `cellar restore --to-database` ([`crate::restore::database`]).
//! 2. Run `after_restore` (anonymization), then `checks` (each must return
//!    true) in the scratch database; any failure aborts.
//! 3. Only then: swap it in (the engine's swap), and drop the previous
//!    copy unless `keep_previous`.
//!
//! On any failure before step 3 the scratch database is dropped and
//! `<database>` is exactly as it was.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use tracing::info;

use crate::manifest::Manifest;
use crate::profile::{Mirror, RestoreConfig};
use crate::restore::database::{self, DbTarget};
use crate::restore::{self, Fetch};

/// What a successful mirror measured.
#[derive(Debug, Clone)]
pub struct Drill {
    pub backup_id: String,
    pub seconds: f64,
    /// Fetch, restore and compare, without the statements and the swap.
    pub restore_seconds: f64,
    pub tables_compared: usize,
    pub checks_passed: usize,
    /// Estimated rows per table (after ANALYZE), largest first.
    pub row_counts: Vec<(String, i64)>,
}

/// The step that failed, for the error message and exit 1.
fn step<T>(name: &str, r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.with_context(|| format!("mirror step `{name}` failed"))
}

/// Refuses a mirror that must not run (a target the profile backs up, a
/// name cellar or PostgreSQL reserves): the inner `Err`, which is not a
/// failed drill. The outer one is a server that could not be asked.
pub fn precheck(
    fetch: &Fetch<'_>,
    mirror: &Mirror,
    config_dir: &Path,
) -> anyhow::Result<Result<(), String>> {
    let conn = &mirror.conn;
    let target = &mirror.database;
    if let Some(db) = fetch.profile.source.database() {
        // By name, and by asking both servers who they are (`127.1` and
        // `localhost` are the same server as `127.0.0.1`).
        let named = match &db.databases {
            crate::profile::Databases::One(d) => d == target,
            crate::profile::Databases::Many(ds) => ds.contains(target),
            crate::profile::Databases::All => true,
        };
        let same = || {
            let a = server_identity(fetch.profile.kind, &db.conn)?;
            let b = server_identity(fetch.profile.kind, conn)?;
            Ok::<bool, anyhow::Error>(a == b)
        };
        if db.backs_up(conn, target) || (named && same().unwrap_or(false)) {
            return Ok(Err(format!(
                "refusing to mirror into {target}: the profile backs it up on the same server ({}), so the mirror would replace it with the last backup; set [mirror] database to a separate test database",
                conn.describe()
            )));
        }
    }
    let spool = fetch.profile.restore.spool_dir.clone();
    database::check_target(&target_of(fetch, mirror, 1, &spool, config_dir))
}

/// What tells one server from another, however it is reached.
fn server_identity(
    kind: crate::profile::Kind,
    conn: &crate::profile::DbConn,
) -> anyhow::Result<String> {
    match kind {
        crate::profile::Kind::Mariadb => crate::source::mariadb::query(
            conn,
            None,
            "SELECT @@hostname, @@port, @@datadir, @@server_id;",
        ),
        _ => crate::source::postgres::query(
            conn,
            "postgres",
            "SELECT (SELECT system_identifier FROM pg_control_system()), current_setting('port');",
            &[],
        ),
    }
}

/// The mirror's database as the restore engine's target: always replaced
/// (`clean`), never with the source's roles.
fn target_of<'a>(
    fetch: &Fetch<'_>,
    mirror: &'a Mirror,
    jobs: usize,
    spool_dir: &'a Path,
    config_dir: &'a Path,
) -> DbTarget<'a> {
    DbTarget {
        kind: fetch.profile.kind,
        globals: false,
        only: None,
        conn: &mirror.conn,
        database: &mirror.database,
        clean: true,
        no_owner: false,
        keep_previous: mirror.keep_previous,
        mirror: true,
        jobs,
        spool_dir,
        config_dir,
    }
}

pub fn run(
    fetch: &Fetch<'_>,
    m: &Manifest,
    mirror: &Mirror,
    database: Option<&str>,
    options: &RestoreConfig,
    config_dir: &Path,
) -> anyhow::Result<Drill> {
    let started = Instant::now();
    let target = &mirror.database;
    let payload = restore::database_payload(m, database)?;
    let t = target_of(fetch, mirror, options.jobs, &options.spool_dir, config_dir);
    let mut restore_seconds = 0.0;
    let mut tables_compared = 0;
    let prepared = (|| -> anyhow::Result<_> {
        let scratch = step("restore", database::prepare_any(fetch, m, payload, &t))?;
        restore_seconds = started.elapsed().as_secs_f64();
        tables_compared = scratch.tables_compared();
        for (i, sql) in mirror.after_restore.iter().enumerate() {
            step(
                &format!("after_restore #{}", i + 1),
                scratch.execute(sql).map(|_| ()),
            )?;
        }
        for (i, sql) in mirror.checks.iter().enumerate() {
            let value = step(&format!("check #{}", i + 1), scratch.execute(sql))?;
            if !scratch.is_true(&value) {
                bail!(
                    "mirror step `check #{}` failed: `{sql}` returned {:?}, not true",
                    i + 1,
                    value
                );
            }
        }
        let counts = step("count rows", scratch.row_counts())?;
        // A SIGTERM that came while a statement ran (it ends first on a
        // MariaDB server) stops the mirror here, before the swap.
        if crate::cancel::requested() {
            return Err(anyhow::Error::new(crate::cancel::interrupted())
                .context("mirror stopped before the swap"));
        }
        Ok((scratch, counts))
    })();
    let (scratch, row_counts) = prepared.map_err(|e| database::left_as_it_was(e, target))?;
    let kept = step("swap", scratch.swap()).map_err(|e| database::left_as_it_was(e, target))?;
    if let Some(previous) = kept {
        info!("{}: the previous {target} is kept as {previous}", m.profile);
    }
    let drill = Drill {
        backup_id: m.id.clone(),
        seconds: started.elapsed().as_secs_f64(),
        restore_seconds,
        tables_compared,
        checks_passed: mirror.checks.len(),
        row_counts,
    };
    info!(
        "{}: mirror of backup {} into {target} done in {:.1}s, {} check(s) passed",
        m.profile, m.id, drill.seconds, drill.checks_passed
    );
    Ok(drill)
}
