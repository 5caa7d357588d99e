//! The restore engine for MariaDB: restore into a scratch database, then
//! swap its tables in.
//!
//! MariaDB has no `RENAME DATABASE`, so the swap moves tables:
//!
//! 1. Fetch and check: the dump is spooled into an unnamed file and every
//!    check (sizes, BLAKE2b-512, OpenPGP integrity, mariadb-dump's
//!    completion line) passes before the server is touched.
//! 2. Restore into `cellar_scratch_<hash of the target>` through the
//!    `mariadb` client with client commands off (`--binary-mode`,
//!    `--sandbox`), stopping at the first error; then compare the tables
//!    and views it made with the ones the dump holds.
//! 3. (Mirror: `after_restore` and `checks` in the scratch database.)
//! 4. Swap. Triggers and views cannot move between databases, so their
//!    definitions are read first (`SHOW CREATE`, unqualified), then:
//!    the target's triggers and views are dropped, and **one** `RENAME
//!    TABLE` statement moves every table of the target into
//!    `cellar_previous_<hash>` and every table of the scratch database
//!    into the target: atomic, a client sees all old tables or all new
//!    ones. Then the target's old routines and events are dropped and the
//!    backup's views, routines, triggers and events created there.
//!    If any of that fails, the tables are moved back (one `RENAME
//!    TABLE` again) and the old definitions recreated.
//!
//! What is not atomic: between the drop of the old triggers and views and
//! the creation of the new ones (milliseconds, a few statements), a client
//! can find a table without its triggers or a view missing.

use std::time::Duration;

use anyhow::{bail, Context};
use tracing::{info, warn};

use super::database::{self, DbTarget, Marker};
use super::Fetch;
use crate::manifest::{Content, Manifest, Payload};
use crate::profile::DbConn;
use crate::source::mariadb::{self as my, ident, literal};

/// A name MariaDB keeps (64 characters at most).
const MAX_NAME: usize = 64;

/// The inner `Err` is a refusal (exit 2), the outer a server that could
/// not be asked.
pub fn check_target(t: &DbTarget<'_>) -> anyhow::Result<Result<(), String>> {
    if let Some(refused) = database::common_refusal(t.database) {
        return Ok(Err(refused));
    }
    if my::SYSTEM_DATABASES.contains(&t.database.to_ascii_lowercase().as_str()) {
        return Ok(Err(format!(
            "{} is a database MariaDB itself needs; restore into another name",
            t.database
        )));
    }
    if t.database.ends_with(' ') || t.database.chars().any(|c| c as u32 > 0xFFFF || c == '\0') {
        return Ok(Err(format!(
            "{:?} cannot be a MariaDB database name (no trailing space, NUL or character outside the Basic Multilingual Plane, such as an emoji); choose another name",
            t.database
        )));
    }
    if t.database.chars().count() > MAX_NAME {
        return Ok(Err(format!(
            "database name {} is longer than MariaDB's 64 characters; choose a shorter name",
            t.database
        )));
    }
    if let Some(refused) = cut_short(t) {
        return Ok(Err(refused));
    }
    // Foreign keys from other databases follow a table that RENAME TABLE
    // moves: they would point into the previous copy after the swap.
    let incoming = first_column(
        t.conn,
        &format!(
            "SELECT DISTINCT CONCAT(CONSTRAINT_SCHEMA, '.', TABLE_NAME) FROM information_schema.REFERENTIAL_CONSTRAINTS
             WHERE UNIQUE_CONSTRAINT_SCHEMA = {l} AND CONSTRAINT_SCHEMA <> {l} ORDER BY 1;",
            l = literal(t.database)
        ),
    )?;
    if !incoming.is_empty() {
        return Ok(Err(format!(
            "tables in other databases have foreign keys into {}: {}; a swap would leave them pointing at the old tables. Drop those foreign keys first, or restore into a new name",
            t.database,
            incoming.join(", ")
        )));
    }
    database::occupied(t, my::database_state)
}

/// A swap into this target that was cut short (kill -9, a crash, a swap
/// that could not be undone) left its marker and journal. Nothing runs
/// into the target until the operator has put it back by the journal and
/// deleted the marker: a later run would overwrite the journal, the only
/// record of the target's old views, routines, triggers and events.
fn cut_short(t: &DbTarget<'_>) -> Option<String> {
    let server = t.conn.describe();
    let (path, m) = [
        database::marker_path(t.config_dir, &server, t.database),
        database::legacy_marker_path(t.config_dir, t.database),
    ]
    .into_iter()
    .find_map(|p| Some((p.clone(), database::read_marker(&p)?)))
    .filter(|(_, m)| m.server == server)?;
    let journal = m.undo.as_ref()?;
    if m.running() {
        return Some(format!(
            "a restore or mirror into {} is swapping it in right now (pid {}); try again when it is done",
            m.target, m.pid
        ));
    }
    Some(format!(
        "the swap into {target} on {server} of a restore or mirror started at {at} was cut short: {target} may lack its views, routines, triggers and events, and its old tables may be in {previous}; nothing is restored into {target} until it is put back: follow the first lines of {journal}, then delete {marker}",
        target = m.target,
        server = m.server,
        at = m.started_at.format("%Y-%m-%d %H:%M UTC"),
        previous = database::previous_name(&m.target),
        journal = journal.display(),
        marker = path.display(),
    ))
}

/// The objects of a database that cannot move with `RENAME TABLE`, as
/// statements that recreate them (run with the database as default).
#[derive(Debug, Default)]
struct Definitions {
    /// (name, statement), in an order that creates them: views (in
    /// dependency order, by retrying), routines, triggers, events.
    views: Vec<(String, String)>,
    routines: Vec<(String, String, String)>,
    triggers: Vec<(String, String)>,
    events: Vec<(String, String)>,
    /// Grants on the routines, (type, name, `GRANT` statement): dropping a
    /// routine revokes them (`automatic_sp_privileges`), so they are given
    /// again with it.
    grants: Vec<(String, String, String)>,
}

/// The statement with the session's sql_mode it was made under.
fn with_mode(mode: &str, statement: &str) -> String {
    format!("SET SESSION sql_mode = {};\n{statement}", literal(mode))
}

fn first_column(conn: &DbConn, sql: &str) -> anyhow::Result<Vec<String>> {
    Ok(my::rows(conn, None, sql)?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
}

/// Reads the definitions in `db` (unqualified: read with `db` as the
/// default database).
fn definitions(conn: &DbConn, db: &str) -> anyhow::Result<Definitions> {
    let l = literal(db);
    let mut d = Definitions::default();
    for v in first_column(
        conn,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {l} ORDER BY 1;"
        ),
    )? {
        let row = my::rows(conn, Some(db), &format!("SHOW CREATE VIEW {};", ident(&v)))?;
        let stmt = row
            .first()
            .and_then(|r| r.get(1))
            .cloned()
            .unwrap_or_default();
        // A view its definer has no rights to read here is shown as
        // stored, with names qualified by this database: unqualified, it
        // is made again wherever it goes.
        let stmt = stmt.replace(&format!("{}.", ident(db)), "");
        d.views.push((v, stmt));
    }
    for r in my::rows(
        conn,
        None,
        &format!("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {l} ORDER BY 1, 2;"),
    )? {
        let [kind, name] = <[String; 2]>::try_from(r)
            .map_err(|_| anyhow::anyhow!("unexpected answer listing routines"))?;
        let row = my::rows(conn, Some(db), &format!("SHOW CREATE {kind} {};", ident(&name)))?;
        let (mode, stmt) = match row.first() {
            Some(r) if r.len() > 2 => (r[1].clone(), r[2].clone()),
            _ => bail!("cannot read the definition of {kind} {name} in {db} (the restoring user needs SELECT on mysql.proc)"),
        };
        d.routines.push((kind, name, with_mode(&mode, &stmt)));
    }
    for t in first_column(
        conn,
        &format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {l} ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER;"),
    )? {
        let row = my::rows(conn, Some(db), &format!("SHOW CREATE TRIGGER {};", ident(&t)))?;
        let (mode, stmt) = match row.first() {
            Some(r) if r.len() > 2 => (r[1].clone(), r[2].clone()),
            _ => bail!("cannot read the definition of trigger {t} in {db}"),
        };
        d.triggers.push((t, with_mode(&mode, &stmt)));
    }
    for e in first_column(
        conn,
        &format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {l} ORDER BY 1;"
        ),
    )? {
        let row = my::rows(conn, Some(db), &format!("SHOW CREATE EVENT {};", ident(&e)))?;
        let (mode, stmt) = match row.first() {
            Some(r) if r.len() > 3 => (r[1].clone(), r[3].clone()),
            _ => bail!("cannot read the definition of event {e} in {db}"),
        };
        d.events.push((e, with_mode(&mode, &stmt)));
    }
    if !d.routines.is_empty() {
        match routine_grants(conn, db) {
            Ok(g) => d.grants = g,
            Err(e) => warn!(
                "cannot read the grants on the routines of {db} (the restoring user needs SELECT on mysql.procs_priv); a swap that drops them does not give them back: {e:#}"
            ),
        }
    }
    Ok(d)
}

/// `GRANT` statements for the grants on `db`'s routines (unqualified).
fn routine_grants(conn: &DbConn, db: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let rows = my::rows(
        conn,
        None,
        &format!(
            "SELECT Routine_type, Routine_name, User, Host, Proc_priv FROM mysql.procs_priv WHERE Db = {} ORDER BY 1, 2, 3, 4;",
            literal(db)
        ),
    )?;
    let mut out = Vec::new();
    for r in rows {
        let Ok([kind, name, user, host, privs]) = <[String; 5]>::try_from(r) else {
            continue;
        };
        let mut what: Vec<&str> = Vec::new();
        for p in privs.split(',') {
            match p {
                "Execute" => what.push("EXECUTE"),
                "Alter Routine" => what.push("ALTER ROUTINE"),
                _ => {}
            }
        }
        if what.is_empty() {
            continue;
        }
        let grantee = if host.is_empty() {
            literal(&user)
        } else {
            format!("{}@{}", literal(&user), literal(&host))
        };
        let option = if privs.split(',').any(|p| p == "Grant") {
            " WITH GRANT OPTION"
        } else {
            ""
        };
        let stmt = format!(
            "GRANT {} ON {kind} {} TO {grantee}{option}",
            what.join(", "),
            ident(&name)
        );
        out.push((kind, name, stmt));
    }
    Ok(out)
}

/// A delimiter no definition holds, for a script of compound statements.
fn delimiter(statements: &[&str]) -> String {
    let mut n = 0u32;
    loop {
        let d = format!("$$cellar{n}$$");
        if statements.iter().all(|s| !s.contains(&d)) {
            return d;
        }
        n += 1;
    }
}

/// View statements ordered so that a view over another view comes after
/// it: a view reads another when its statement names it (a name that only
/// looks alike merely moves it later). Name order otherwise.
fn view_order(views: &[(String, String)]) -> Vec<String> {
    let mut left: Vec<&(String, String)> = views.iter().collect();
    let mut out = Vec::with_capacity(views.len());
    while !left.is_empty() {
        let ready = left.iter().position(|(name, stmt)| {
            let body = stmt.split_once(" AS ").map_or(stmt.as_str(), |(_, b)| b);
            left.iter()
                .all(|(other, _)| other == name || !body.contains(&ident(other)))
        });
        // A cycle cannot be created; name order then.
        let (_, stmt) = left.remove(ready.unwrap_or(0));
        out.push(stmt.clone());
    }
    out
}

/// One script: each statement ended by a delimiter of its own.
fn script(statements: &[String]) -> String {
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    let d = delimiter(&refs);
    let mut s = format!("DELIMITER {d}\n");
    for stmt in statements {
        // with_mode() puts `SET ...;` first: its own statement.
        for part in split_mode(stmt) {
            s.push_str(part);
            s.push('\n');
            s.push_str(&d);
            s.push('\n');
        }
    }
    s.push_str("DELIMITER ;\n");
    s
}

fn split_mode(stmt: &str) -> Vec<&str> {
    match stmt.strip_prefix("SET SESSION sql_mode = ") {
        Some(_) => match stmt.split_once(";\n") {
            Some((set, rest)) => vec![set, rest],
            None => vec![stmt],
        },
        None => vec![stmt],
    }
}

/// How long a swap statement waits for a table lock held by a client
/// (default: a day): the application's queries queue behind it meanwhile.
const LOCK_WAIT: &str = "SET SESSION lock_wait_timeout = 30;\n";

/// Runs `statements` in `db`; stops at the first error.
fn run_all(conn: &DbConn, db: &str, statements: &[String]) -> anyhow::Result<()> {
    if statements.is_empty() {
        return Ok(());
    }
    my::query(
        conn,
        Some(db),
        &format!("{LOCK_WAIT}{}", script(statements)),
    )
    .map(|_| ())
}

/// The journal of a swap: a script that puts the target back as it was,
/// whatever point the swap was cut short at. Its first lines say how.
struct Journal<'a> {
    target: &'a str,
    scratch: &'a str,
    previous: &'a str,
    old: &'a Definitions,
    new: &'a Definitions,
    old_tables: &'a [String],
    new_tables: &'a [String],
}

impl Journal<'_> {
    fn text(&self, marker: &std::path::Path) -> String {
        let (target, previous) = (ident(self.target), ident(self.previous));
        let mut moves: Vec<String> = self
            .new_tables
            .iter()
            .map(|t| {
                format!(
                    "{target}.{} TO {}.{}",
                    ident(t),
                    ident(self.scratch),
                    ident(t)
                )
            })
            .collect();
        moves.extend(
            self.old_tables
                .iter()
                .map(|t| format!("{previous}.{} TO {target}.{}", ident(t), ident(t))),
        );
        let mut out = format!(
            "-- cellar: how to put {target} back as it was before a swap that was cut short.\n\
             -- 0. Wait until SHOW PROCESSLIST lists no statement of the cellar that was cut\n\
             --    short (the server may finish one its killed client sent).\n\
             -- 1. If {previous} holds tables (SHOW TABLES FROM {previous}), the swap's\n\
             --    RENAME TABLE ran: run these two statements first (without the leading --),\n\
             --    to move the backup's tables out and the old ones back:\n\
             -- CREATE DATABASE IF NOT EXISTS {scratch};\n\
             -- RENAME TABLE {moves};\n\
             --    If {previous} is empty or gone, skip this step: the old tables never moved.\n\
             -- 2. Run this file: mariadb --binary-mode {target_arg} < THIS_FILE\n\
             --    It drops the views, routines, triggers and events either side may have\n\
             --    left, and recreates the old ones.\n\
             -- 3. DROP DATABASE {previous}; DROP DATABASE IF EXISTS {scratch};\n\
             --    then delete {marker} (restores into {target_arg} refuse until then).\n",
            scratch = ident(self.scratch),
            moves = if moves.is_empty() {
                "(no tables)".to_string()
            } else {
                moves.join(", ")
            },
            target_arg = self.target,
            marker = marker.display(),
        );
        let mut drops = self.new.drop_triggers_and_views();
        drops.extend(self.old.drop_triggers_and_views());
        drops.extend(self.new.drop_routines_and_events());
        drops.extend(self.old.drop_routines_and_events());
        out += &script(&drops);
        out += &script(&self.old.creates());
        out
    }

    fn write(&self, path: &std::path::Path, marker: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.text(marker).as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        crate::state::sync_parent(path)
    }
}

impl Definitions {
    /// Statements that create everything: routines first (a view may
    /// call a function), then views (each after the views it reads from),
    /// triggers and events.
    fn creates(&self) -> Vec<String> {
        let mut out: Vec<String> = self.routines.iter().map(|(_, _, s)| s.clone()).collect();
        out.extend(self.grants.iter().map(|(_, _, s)| s.clone()));
        out.extend(self.views_and_triggers());
        out.extend(self.events.iter().map(|(_, s)| s.clone()));
        out
    }

    /// The grants of `old` on routines this one has too (same type and
    /// name): what a swap gives back to the routines that replace them.
    fn kept_grants(&self, old: &Definitions) -> Vec<String> {
        old.grants
            .iter()
            .filter(|(kind, name, _)| self.routines.iter().any(|(k, n, _)| k == kind && n == name))
            .map(|(_, _, s)| s.clone())
            .collect()
    }

    fn views_and_triggers(&self) -> Vec<String> {
        let mut out = view_order(&self.views);
        out.extend(self.triggers.iter().map(|(_, s)| s.clone()));
        out
    }

    fn drop_triggers(&self) -> Vec<String> {
        self.triggers
            .iter()
            .map(|(n, _)| format!("DROP TRIGGER IF EXISTS {}", ident(n)))
            .collect()
    }

    fn drop_triggers_and_views(&self) -> Vec<String> {
        let mut out = self.drop_triggers();
        out.extend(
            self.views
                .iter()
                .map(|(n, _)| format!("DROP VIEW IF EXISTS {}", ident(n))),
        );
        out
    }

    fn drop_routines_and_events(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .routines
            .iter()
            .map(|(k, n, _)| format!("DROP {k} IF EXISTS {}", ident(n)))
            .collect();
        out.extend(
            self.events
                .iter()
                .map(|(n, _)| format!("DROP EVENT IF EXISTS {}", ident(n))),
        );
        out
    }

    fn count(&self) -> usize {
        self.views.len() + self.routines.len() + self.triggers.len() + self.events.len()
    }
}

/// The tables (and sequences) of `db`.
fn tables(conn: &DbConn, db: &str) -> anyhow::Result<Vec<String>> {
    first_column(
        conn,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE <> 'VIEW' ORDER BY 1;",
            literal(db)
        ),
    )
}

/// One `RENAME TABLE` for all of `moves` (from db, to db, table): atomic.
fn rename_all(conn: &DbConn, moves: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = moves
        .iter()
        .map(|(from, to, t)| format!("{}.{} TO {}.{}", ident(from), ident(t), ident(to), ident(t)))
        .collect();
    my::query(
        conn,
        None,
        &format!("{LOCK_WAIT}RENAME TABLE {};", list.join(", ")),
    )
    .map(|_| ())
}

fn create_database(conn: &DbConn, db: &str) -> anyhow::Result<()> {
    my::query(
        conn,
        None,
        &format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;",
            ident(db)
        ),
    )
    .map(|_| ())
}

pub fn drop_database(conn: &DbConn, db: &str) -> anyhow::Result<()> {
    my::query(
        conn,
        None,
        &format!("DROP DATABASE IF EXISTS {};", ident(db)),
    )
    .map(|_| ())
}

/// A restored scratch database waiting to be swapped in; dropped unless
/// swapped.
pub struct Scratch<'a> {
    tables_compared: usize,
    conn: &'a DbConn,
    profile: String,
    target: String,
    name: String,
    keep_previous: bool,
    /// `--clean` or a mirror: a target with tables may be replaced.
    replace: bool,
    marker: std::path::PathBuf,
    started_at: chrono::DateTime<chrono::Utc>,
    /// The target's old definitions, written by the swap.
    journal: Option<std::path::PathBuf>,
    /// The backup's grants on single tables, columns and routines, given
    /// once the swap put them in place (`--globals`).
    object_grants: Vec<String>,
    done: bool,
    _lock: crate::lock::ProfileLock,
    _server_lock: my::ServerLock,
}

/// Steps 1–2: a checked, restored scratch database.
pub fn prepare<'a>(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    t: &DbTarget<'a>,
) -> anyhow::Result<Scratch<'a>> {
    if p.content != Content::Mariadb {
        bail!(
            "payload {} of backup {} is not a MariaDB dump; use --to-file",
            p.name,
            m.id
        );
    }
    if t.only.is_some_and(|s| !s.is_empty()) {
        bail!("--table and --schema work for PostgreSQL custom dumps only");
    }
    let name = database::scratch_name(t.database);
    let lock = crate::lock::acquire(
        t.config_dir,
        &database::target_lock_name(t.database),
        &format!("restore into {}", t.database),
        Duration::ZERO,
    )?;
    let Some(server_lock) = my::try_server_lock(t.conn, &name)? else {
        bail!(
            "another cellar (from another config dir or host) is restoring into {} on {} right now; try again when it is done",
            t.database,
            t.conn.describe()
        );
    };
    // Step 1: the whole dump, checked, before any of it reaches the server.
    let spool = database::step("spool", database::spool(fetch, m, p, t.spool_dir))?;
    let facts = {
        use std::io::Seek;
        let mut f = &spool;
        f.rewind()?;
        database::step("check the dump", my::check_dump(&mut f, false))?
    };
    let object_grants = if t.globals {
        database::step("apply users and grants", globals(fetch, m, t.conn))?
    } else {
        Vec::new()
    };
    database::step(
        "drop leftover scratch database",
        drop_database(t.conn, &name),
    )?;
    database::forget_other_spellings(t.config_dir, &t.conn.describe(), t.database);
    let marker = database::marker_path(t.config_dir, &t.conn.describe(), t.database);
    let mut scratch = Scratch {
        tables_compared: 0,
        conn: t.conn,
        profile: m.profile.clone(),
        target: t.database.to_string(),
        name,
        keep_previous: t.keep_previous,
        replace: t.clean || t.mirror,
        marker,
        started_at: chrono::Utc::now(),
        journal: None,
        object_grants,
        done: false,
        _lock: lock,
        _server_lock: server_lock,
    };
    database::write_marker(&scratch.marker, &scratch.marker_text(None))
        .with_context(|| format!("writing {}", scratch.marker.display()))?;
    if let Err(e) = create_database(t.conn, &scratch.name) {
        let _ = std::fs::remove_file(&scratch.marker);
        scratch.done = true;
        return Err(e).context("restore step `create scratch database` failed");
    }
    {
        use std::io::Seek;
        let mut f = &spool;
        f.rewind()?;
    }
    database::step(
        "mariadb",
        my::run_script(t.conn, Some(&scratch.name), spool.try_clone()?),
    )?;
    // The restore made every table and view the dump holds.
    let made_tables = tables(t.conn, &scratch.name)?.len() as u64;
    let made_views = first_column(
        t.conn,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {};",
            literal(&scratch.name)
        ),
    )?
    .len() as u64;
    if made_tables != facts.tables || made_views != facts.views {
        bail!(
            "the restored database differs from the dump, so it was not swapped in: the dump holds {} table(s) and {} view(s), the restore made {made_tables} and {made_views}",
            facts.tables,
            facts.views
        );
    }
    scratch.tables_compared = made_tables as usize;
    info!(
        "{}: backup {} {} restored into the scratch database {} ({made_tables} tables, {made_views} views)",
        m.profile, m.id, p.name, scratch.name
    );
    Ok(scratch)
}

/// Applies the backup's users, roles and grants (checked whole first).
/// Accounts that exist on the server are left exactly as they are: every
/// statement about one (its `CREATE`, `GRANT ... TO` it, its default role)
/// is left out, so a restore never changes root's password or an existing
/// user's grants; the accounts left alone are named in a warning.
///
/// Grants on a single table, column or routine need it to exist, so they
/// are not applied here but returned, for [`object_grants`] once the
/// database is in place.
pub fn globals(fetch: &Fetch<'_>, m: &Manifest, conn: &DbConn) -> anyhow::Result<Vec<String>> {
    let Some(p) = m
        .payloads
        .iter()
        .find(|p| p.content == Content::MariadbUsers)
    else {
        bail!(
            "backup {} has no users and grants (the profile has globals = false)",
            m.id
        );
    };
    let mut text = Vec::new();
    fetch.stream(m, p, |r| {
        std::io::Read::read_to_end(&mut std::io::Read::take(r, 256 << 20), &mut text)?;
        Ok(())
    })?;
    my::check_dump(&mut text.as_slice(), true)?;
    let existing = accounts(conn)?;
    // Statements about an existing account are found line by line: one
    // whose name holds a line break could not be told apart, and would be
    // changed. Nothing is applied then.
    if let Some((name, _)) = existing.iter().find(|(n, _)| n.contains(['\n', '\r'])) {
        bail!(
            "account {} on {} has a line break in its name, so cellar cannot keep the backup's users and grants from changing it; restore without --globals, or rename that account",
            name.escape_debug(),
            conn.describe()
        );
    }
    let (script, kept) = new_accounts_only(&String::from_utf8_lossy(&text), &existing);
    let (script, later) = without_object_grants(&script);
    if !kept.is_empty() {
        warn!(
            "users and grants: {} account(s) exist on {} and were left as they are: {}",
            kept.len(),
            conn.describe(),
            kept.join(", ")
        );
    }
    let mut f = tempfile::tempfile()?;
    use std::io::{Seek, Write};
    f.write_all(script.as_bytes())?;
    f.rewind()?;
    my::run_script(conn, None, f).map_err(|e| {
        // mariadb-dump's script grants itself a helper role and drops it at
        // its end: a script that stopped half-way must not leave it.
        let _ = my::query(conn, None, "DROP ROLE IF EXISTS mariadb_dump_import_role;");
        let why = if format!("{e:#}").contains("Access denied") {
            "; a role that exists on the server can be granted to a restored user only by an account with ADMIN OPTION on it"
        } else {
            ""
        };
        e.context(format!(
            "applying the users and grants failed part-way (users made before the error stay{why})"
        ))
    })?;
    Ok(later)
}

/// Gives the grants on single tables, columns and routines that
/// [`globals`] put aside, one at a time; those that fail (the object is not
/// on the server: the grant names the backed-up database, and the restore
/// went under another name) are named in a warning.
pub fn object_grants(conn: &DbConn, grants: &[String]) {
    let mut failed = Vec::new();
    for g in grants {
        if let Err(e) = my::query(conn, None, g) {
            failed.push(format!(
                "{} ({})",
                g.trim_end_matches(';'),
                crate::logging::one_line(&format!("{e:#}"))
            ));
        }
    }
    if !failed.is_empty() {
        warn!(
            "users and grants: {} grant(s) on single tables, columns or routines could not be given: {}",
            failed.len(),
            failed.join("; ")
        );
    }
}

/// Splits a users script into what can run before the database exists and
/// the `GRANT ... ON `db`.`object` TO ...` lines (tables, columns,
/// procedures, functions, packages) that need their object.
fn without_object_grants(script: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(script.len());
    let mut later = Vec::new();
    for line in script.lines() {
        if is_object_grant(line) {
            later.push(line.to_string());
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, later)
}

/// `GRANT ... ON [PROCEDURE|FUNCTION|PACKAGE [BODY]] `db`.`object` ...`,
/// as mariadb-dump writes it (one statement a line, names in backquotes).
fn is_object_grant(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("GRANT ") else {
        return false;
    };
    // The end of a backquoted name that starts at `s[0]`.
    fn quoted(s: &str) -> Option<&str> {
        let mut chars = s.strip_prefix('`')?.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if chars.peek().is_some_and(|(_, n)| *n == '`') {
                    chars.next();
                    continue;
                }
                return Some(&s[i + 2..]);
            }
        }
        None
    }
    rest.match_indices(" ON ").any(|(i, _)| {
        let mut after = &rest[i + 4..];
        for kind in ["PROCEDURE ", "FUNCTION ", "PACKAGE BODY ", "PACKAGE "] {
            if let Some(a) = after.strip_prefix(kind) {
                after = a;
                break;
            }
        }
        quoted(after)
            .and_then(|a| a.strip_prefix('.'))
            .is_some_and(|a| a.starts_with('`'))
    })
}

/// The accounts (and roles) on the server, each in the two quotings
/// mariadb-dump writes: `` `u`@`h` `` and `'u'@'h'` (a role: `` `r` ``).
fn accounts(conn: &DbConn) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    Ok(
        my::rows(conn, None, "SELECT User, Host, is_role FROM mysql.user;")?
            .into_iter()
            .filter_map(|r| {
                let [user, host, role] = <[String; 3]>::try_from(r).ok()?;
                let bq = |s: &str| format!("`{}`", s.replace('`', "``"));
                let sq = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
                Some(if role == "Y" {
                    (user.clone(), vec![bq(&user), sq(&user)])
                } else {
                    (
                        format!("'{user}'@'{host}'"),
                        vec![
                            format!("{}@{}", bq(&user), bq(&host)),
                            format!("{}@{}", sq(&user), sq(&host)),
                        ],
                    )
                })
            })
            .collect(),
    )
}

/// The users script without the statements about `existing` accounts;
/// and the names of those that were in it. A statement is about an
/// account when the account follows `CREATE USER [IF NOT EXISTS]`,
/// `CREATE ROLE [IF NOT EXISTS]`, `ALTER USER`, `TO` or `FOR` (wherever in
/// the line: an account's own name may hold " TO ").
fn new_accounts_only(script: &str, existing: &[(String, Vec<String>)]) -> (String, Vec<String>) {
    const BEFORE: &[&str] = &[
        " TO ",
        " FOR ",
        "IF NOT EXISTS ",
        "ALTER USER ",
        "CREATE USER ",
        "CREATE ROLE ",
    ];
    let mut out = String::with_capacity(script.len());
    let mut kept: Vec<String> = Vec::new();
    for line in script.lines() {
        let about = existing.iter().find(|(_, forms)| {
            forms.iter().any(|f| {
                BEFORE.iter().any(|k| {
                    let pattern = format!("{k}{f}");
                    line.match_indices(&pattern).any(|(i, _)| {
                        line[i + pattern.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| matches!(c, ' ' | ';' | '*' | ','))
                    })
                })
            })
        });
        match about {
            Some((name, _)) => {
                if !kept.contains(name) {
                    kept.push(name.clone());
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    (out, kept)
}

impl Scratch<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tables_compared(&self) -> usize {
        self.tables_compared
    }

    /// Step 4 (see the module's comment).
    pub fn swap(mut self) -> anyhow::Result<Option<String>> {
        let conn = self.conn;
        let (target, scratch) = (self.target.clone(), self.name.clone());
        let previous = database::previous_name(&target);
        database::step("drop the previous copy", drop_database(conn, &previous))?;
        let new = database::step("read the backup's definitions", definitions(conn, &scratch))?;
        let exists = my::exists(conn, &target)?;
        if exists && !self.replace {
            // Without --clean, a target that someone made and filled while
            // the restore ran is not replaced.
            if let Some(n @ 1..) = my::database_state(conn, &target)? {
                bail!(
                    "database {target} was made while the restore ran and now holds {n} objects; it is not replaced without --clean"
                );
            }
        }
        let old = if exists {
            database::step("read the target's definitions", definitions(conn, &target))?
        } else {
            Definitions::default()
        };
        let old_tables = if exists {
            tables(conn, &target)?
        } else {
            Vec::new()
        };
        // Asked once more, from what is about to move: a table made right
        // after the question above is not moved out and dropped either.
        if exists && !self.replace && (!old_tables.is_empty() || old.count() > 0) {
            bail!(
                "database {target} was made while the restore ran and now holds {} objects; it is not replaced without --clean",
                old_tables.len() + old.count()
            );
        }
        let new_tables = tables(conn, &scratch)?;
        // What the target held besides its tables, on disk before any of
        // it is dropped: a swap cut short by kill -9 can be finished by
        // hand from it (`status` names the file).
        let journal = self.marker.with_extension("undo.sql");
        if exists {
            let j = Journal {
                target: &target,
                scratch: &scratch,
                previous: &previous,
                old: &old,
                new: &new,
                old_tables: &old_tables,
                new_tables: &new_tables,
            };
            j.write(&journal, &self.marker).with_context(|| {
                format!("restore step `swap` failed writing {}", journal.display())
            })?;
            self.journal = Some(journal.clone());
            database::write_marker(&self.marker, &self.marker_text(Some(&journal)))
                .with_context(|| format!("writing {}", self.marker.display()))?;
        }
        if exists {
            create_database(conn, &previous)?;
        } else {
            create_database(conn, &target)?;
        }
        // Triggers keep a table in its database: off the scratch tables
        // (their definitions are read), off the target's with its views.
        database::step(
            "drop the scratch triggers",
            run_all(conn, &scratch, &new.drop_triggers()),
        )?;
        let mut moves: Vec<(&str, &str, &str)> = old_tables
            .iter()
            .map(|t| (target.as_str(), previous.as_str(), t.as_str()))
            .collect();
        moves.extend(
            new_tables
                .iter()
                .map(|t| (scratch.as_str(), target.as_str(), t.as_str())),
        );
        // Stage 1 and 2: the target's triggers and views off, then every
        // table moved in one statement. A failure puts the old views and
        // triggers back: the tables never moved.
        let moved = run_all(conn, &target, &old.drop_triggers_and_views())
            .and_then(|()| rename_all(conn, &moves));
        // A target made just now goes again on a failure.
        let unmake = || {
            if exists {
                Ok(())
            } else {
                drop_database(conn, &target)
            }
        };
        if let Err(e) = moved {
            let undone = run_all(conn, &target, &old.drop_triggers_and_views())
                .and_then(|()| run_all(conn, &target, &old.views_and_triggers()))
                .and_then(|()| unmake());
            return self.failed(e, undone, &target, &previous, exists);
        }
        // Stage 3: the target's old routines and events off, the backup's
        // definitions in. A failure moves every table back (the new ones
        // out first, so no name is taken twice) and recreates the old
        // definitions.
        let mut defs = old.drop_routines_and_events();
        defs.extend(new.creates());
        if let Err(e) = run_all(conn, &target, &defs) {
            let mut drops = new.drop_triggers_and_views();
            drops.extend(new.drop_routines_and_events());
            let back: Vec<(&str, &str, &str)> =
                moves.iter().rev().map(|(a, b, t)| (*b, *a, *t)).collect();
            let undone = run_all(conn, &target, &drops)
                .and_then(|()| rename_all(conn, &back))
                .and_then(|()| run_all(conn, &target, &old.drop_routines_and_events()))
                .and_then(|()| run_all(conn, &target, &old.creates()))
                .and_then(|()| unmake());
            return self.failed(e, undone, &target, &previous, exists);
        }
        // The target's grants on routines that the backup has too.
        if let Err(e) = run_all(conn, &target, &new.kept_grants(&old)) {
            warn!("{target}: the grants on its routines could not all be given back: {e:#}");
        }
        // The backup's own grants on tables and routines (`--globals`).
        object_grants(conn, &self.object_grants);
        self.done = true;
        let _ = std::fs::remove_file(&self.marker);
        let _ = std::fs::remove_file(&journal);
        if let Err(e) = drop_database(conn, &scratch) {
            warn!("could not drop the emptied scratch database {scratch}: {e:#}");
        }
        info!(
            "{target}: {} table(s) swapped in, {} view(s), routine(s), trigger(s) and event(s) recreated",
            new_tables.len(),
            new.count()
        );
        if !exists {
            return Ok(None);
        }
        if self.keep_previous {
            return Ok(Some(previous));
        }
        if let Err(e) = drop_database(conn, &previous) {
            warn!("the restore is in place, but the old tables in {previous} could not be dropped: {e:#}");
        }
        Ok(None)
    }

    /// A swap that failed: when undone, the target is as it was (and the
    /// caller says so); when not, the error says where everything is.
    fn failed(
        &mut self,
        e: anyhow::Error,
        undone: anyhow::Result<()>,
        target: &str,
        previous: &str,
        exists: bool,
    ) -> anyhow::Result<Option<String>> {
        match undone {
            Ok(()) => {
                if exists {
                    let _ = drop_database(self.conn, previous);
                }
                if let Some(j) = self.journal.take() {
                    let _ = std::fs::remove_file(j);
                }
                Err(e.context("restore step `swap` failed, and was undone"))
            }
            Err(u) => {
                // Nothing more is done by cellar: the marker and the journal
                // stay for `status`, and the scratch database is kept.
                self.done = true;
                Err(database::SwapIncomplete(format!(
                    "restore step `swap` failed ({e:#}) and could not be undone ({u:#}): {target} may hold the backup's tables without their views, routines, triggers or events; its old tables are in {previous}{}",
                    match &self.journal {
                        Some(j) => format!(" and its old views, routines, triggers and events in {}", j.display()),
                        None => String::new(),
                    }
                ))
                .into())
            }
        }
    }

    fn marker_text(&self, undo: Option<&std::path::Path>) -> Marker {
        Marker {
            profile: self.profile.clone(),
            server: self.conn.describe(),
            target: self.target.clone(),
            scratch: self.name.clone(),
            pid: std::process::id(),
            started_at: self.started_at,
            undo: undo.map(|p| p.to_path_buf()),
        }
    }

    /// Runs a mirror statement in the scratch database.
    pub fn execute(&self, sql: &str) -> anyhow::Result<String> {
        my::query(self.conn, Some(&self.name), &format!("{sql};"))
    }

    /// Estimated rows per table, largest first.
    pub fn row_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(my::rows(
            self.conn,
            None,
            &format!(
                "SELECT TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE' ORDER BY 2 DESC, 1;",
                literal(&self.name)
            ),
        )?
        .into_iter()
        .filter_map(|r| {
            let n = r.get(1)?.parse().unwrap_or(0);
            Some((r.into_iter().next()?, n))
        })
        .collect())
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match drop_database(self.conn, &self.name) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.marker);
            }
            Err(e) => warn!(
                "could not drop the scratch database {} (it may hold restored data; drop it by hand): {e:#}",
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_on_single_objects_are_put_aside() {
        for (line, object) in [
            ("GRANT SELECT ON `shop`.`orders` TO `r`;", true),
            ("GRANT INSERT (`a`) ON `shop`.`t2` TO `u1`@`%`;", true),
            ("GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `u1`@`%`;", true),
            ("GRANT EXECUTE ON FUNCTION `a``b`.`f` TO `u`@`%`;", true),
            ("GRANT SELECT ON `shop`.* TO `u1`@`%`;", false),
            (
                "GRANT USAGE ON *.* TO `u1`@`%` IDENTIFIED BY PASSWORD '*D8';",
                false,
            ),
            ("GRANT `rol\"e` TO `u1`@`%`;", false),
            (
                "GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION;",
                false,
            ),
            ("CREATE USER `u`@`%`;", false),
            ("GRANT SELECT ON `sh``op`.* TO `x ON `@`%`;", false),
        ] {
            assert_eq!(is_object_grant(line), object, "{line}");
        }
        let (now, later) = without_object_grants(
            "CREATE USER `u`@`%`;\nGRANT SELECT ON `s`.`t` TO `u`@`%`;\nGRANT SELECT ON `s`.* TO `u`@`%`;\n",
        );
        assert_eq!(
            now,
            "CREATE USER `u`@`%`;\nGRANT SELECT ON `s`.* TO `u`@`%`;\n"
        );
        assert_eq!(later, ["GRANT SELECT ON `s`.`t` TO `u`@`%`;"]);
    }

    #[test]
    fn statements_about_existing_accounts_are_left_out() {
        let dump = "CREATE USER IF NOT EXISTS `root`@`localhost` IDENTIFIED BY PASSWORD '*AB';
CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*CD';
GRANT mariadb_dump_import_role TO CURRENT_USER();
/*M!100005 GRANT 'r1' TO 'root'@'localhost' WITH ADMIN OPTION */;
GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED BY PASSWORD '*AB' WITH GRANT OPTION;
/*M!100005 SET DEFAULT ROLE NONE FOR 'root'@'localhost' */;
/*!80001 ALTER USER 'root'@'localhost' DEFAULT ROLE NONE */;
GRANT SELECT ON `shop`.* TO `app`@`%`;
GRANT SELECT ON `shop`.* TO `root`@`localhost2`;
GRANT USAGE ON *.* TO `r1`;
CREATE USER IF NOT EXISTS `we'ird TO x`@`%` IDENTIFIED BY PASSWORD '*EF';
";
        let existing = vec![
            (
                "'root'@'localhost'".to_string(),
                vec![
                    "`root`@`localhost`".to_string(),
                    "'root'@'localhost'".to_string(),
                ],
            ),
            (
                "r1".to_string(),
                vec!["`r1`".to_string(), "'r1'".to_string()],
            ),
        ];
        let (script, kept) = new_accounts_only(dump, &existing);
        assert!(!script.contains("'*AB'"), "{script}");
        assert!(!script.contains("'root'@'localhost'"), "{script}");
        assert!(script.contains("`app`@`%` IDENTIFIED"));
        assert!(script.contains("TO `app`@`%`;"));
        assert!(script.contains("CURRENT_USER()"));
        assert!(script.contains("`root`@`localhost2`"));
        assert!(!script.contains("TO `r1`"));
        assert_eq!(
            kept,
            vec!["'root'@'localhost'".to_string(), "r1".to_string()]
        );
    }

    #[test]
    fn views_come_after_the_views_they_read() {
        let views = vec![
            (
                "a".to_string(),
                "CREATE VIEW `a` AS select `b`.`x` AS `x` from `b`".to_string(),
            ),
            (
                "b".to_string(),
                "CREATE VIEW `b` AS select `t`.`x` AS `x` from `t`".to_string(),
            ),
        ];
        let order = view_order(&views);
        assert!(order[0].starts_with("CREATE VIEW `b`"));
        assert!(order[1].starts_with("CREATE VIEW `a`"));
    }

    #[test]
    fn scripts_use_a_delimiter_no_statement_holds() {
        let s = script(&[
            with_mode("STRICT_TRANS_TABLES", "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET @a = '$$cellar0$$'; END"),
            "CREATE VIEW v AS SELECT 1".into(),
        ]);
        assert!(s.starts_with("DELIMITER $$cellar1$$\n"));
        assert!(
            s.contains("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'\n$$cellar1$$\nCREATE TRIGGER")
        );
        assert!(s.ends_with("CREATE VIEW v AS SELECT 1\n$$cellar1$$\nDELIMITER ;\n"));
    }
}
