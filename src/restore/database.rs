//! The one engine behind `restore --to-database` and `mirror`: restore
//! into a scratch database, then swap it in.
//!
//! 1. Fetch and check. A custom archive is spooled, decrypted and
//!    decompressed, into an unnamed file under `[restore] spool_dir`
//!    (nothing is left behind even on `kill -9`); every check (stored size
//!    and BLAKE2b-512, OpenPGP integrity, plaintext size and BLAKE2b-512)
//!    passes before the server is touched. A plain dump streams into psql.
//! 2. Restore into `cellar_scratch_<hash of the target>`: a short name that
//!    can never equal or truncate to the target. Custom archives go through
//!    `pg_restore -j N --exit-on-error`; plain dumps through psql with
//!    `ON_ERROR_STOP` and meta-commands blocked. Whatever the dump does
//!    with transactions (large objects bring their own BEGIN/COMMIT) only
//!    ever touches the scratch database.
//! 3. Database-level properties from the archive (encoding and locale,
//!    owner, comment, settings, grants) are applied to the scratch database.
//! 4. (Mirror: `after_restore`, then `checks`, run by the caller.)
//! 5. [`Scratch::swap`]: end the sessions on the target, rename target →
//!    `cellar_previous_<hash>` and scratch → target in one transaction, drop
//!    the previous copy unless asked to keep it.
//!
//! Any failure before the swap drops the scratch database ([`Scratch`]'s
//! `Drop`), so the target is exactly as it was. A scratch database left by
//! a killed run is dropped by the next run for the same target, and a
//! marker in `state/scratch/` lets `status` report it meanwhile.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tracing::{info, warn};

use super::Fetch;
use crate::commands::human_bytes;
use crate::manifest::{Content, Manifest, Payload};
use crate::profile::{DbConn, Kind};
use crate::source::postgres;

pub const SCRATCH_PREFIX: &str = "cellar_scratch_";
pub const PREVIOUS_PREFIX: &str = "cellar_previous_";

fn tag(target: &str) -> String {
    hex::encode(&blake2b_simd::blake2b(target.as_bytes()).as_bytes()[..6])
}

/// Whether `name` is one of cellar's scratch or previous copies (exactly
/// a prefix and 12 hex digits: a user's `cellar_scratch_payroll` is not).
pub fn is_cellar_copy(name: &str) -> bool {
    [SCRATCH_PREFIX, PREVIOUS_PREFIX].iter().any(|p| {
        name.strip_prefix(p).is_some_and(|t| {
            t.len() == 12 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    })
}

/// The local lock one restore into `target` holds.
pub fn target_lock_name(target: &str) -> String {
    format!("target-{}", tag(target))
}

/// Refusals of a target name for any kind: empty, or cellar's own.
pub fn common_refusal(target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("the target database name is empty".into());
    }
    if target.starts_with(SCRATCH_PREFIX) || target.starts_with(PREVIOUS_PREFIX) {
        return Some(format!(
            "{target} is a name cellar uses for its scratch and previous copies; restore into another name"
        ));
    }
    None
}

/// The scratch database for `target`: 27 bytes, whatever the target's
/// length, so it can never truncate to (or equal) another name.
pub fn scratch_name(target: &str) -> String {
    format!("{SCRATCH_PREFIX}{}", tag(target))
}

/// Where the old content of `target` goes during the swap.
pub fn previous_name(target: &str) -> String {
    format!("{PREVIOUS_PREFIX}{}", tag(target))
}

/// A database restore's target and options.
pub struct DbTarget<'a> {
    /// Which engine restores: postgres or mariadb.
    pub kind: Kind,
    pub conn: &'a DbConn,
    pub database: &'a str,
    /// Replace a target that holds objects (`--clean`); the mirror always does.
    pub clean: bool,
    pub no_owner: bool,
    pub keep_previous: bool,
    /// A mirror run: its kept previous copy is replaced by each run.
    pub mirror: bool,
    pub jobs: usize,
    pub spool_dir: &'a Path,
    /// The config dir, for the target lock and the scratch marker.
    pub config_dir: &'a Path,
    /// Apply the backup's roles and tablespaces once the dump is spooled
    /// and checked, before the scratch database is made (`--globals`).
    pub globals: bool,
    /// Restore only these tables and schemas (`--table`, `--schema`).
    pub only: Option<&'a Selection>,
}

/// Part of a custom dump: `restore --table` and `--schema`. A table is
/// `schema.table` (`public` when no schema is given), as pg_restore's
/// `-n`/`-t` match them: exact names, no patterns.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub tables: Vec<(String, String)>,
    pub schemas: Vec<String>,
}

impl Selection {
    pub fn new(tables: &[String], schemas: &[String]) -> Result<Selection, String> {
        let mut sel = Selection::default();
        for t in tables {
            let (schema, table) = match t.split_once('.') {
                Some((s, t)) => (s.to_string(), t.to_string()),
                None => ("public".to_string(), t.clone()),
            };
            if schema.is_empty() || table.is_empty() {
                return Err(format!(
                    "--table {t:?}: write the table as NAME or SCHEMA.NAME, exactly as it is named (no quotes, no patterns)"
                ));
            }
            sel.tables.push((schema, table));
        }
        for s in schemas {
            if s.is_empty() {
                return Err("--schema needs a schema name".into());
            }
            sel.schemas.push(s.clone());
        }
        Ok(sel)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.schemas.is_empty()
    }

    /// Whether a table of the inventory (`%I.%I`) is selected.
    pub fn covers(&self, qualified: &str) -> bool {
        let (schema, table) = postgres::split_qualified(qualified);
        self.schemas.contains(&schema) || self.tables.contains(&(schema, table))
    }

    /// The schemas the restored objects live in.
    fn schema_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .tables
            .iter()
            .map(|(s, _)| s.as_str())
            .chain(self.schemas.iter().map(String::as_str))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Tables asked for that are not in the backup's inventory. (A schema
    /// may hold no tables, only functions or views: the table of contents
    /// decides about schemas.)
    pub fn missing_from(&self, inv: &crate::manifest::Inventory) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(s, t)| {
                !inv.tables
                    .keys()
                    .chain(&inv.unreadable)
                    .any(|q| postgres::split_qualified(q) == (s.clone(), t.clone()))
            })
            .map(|(s, t)| format!("table {s}.{t}"))
            .collect()
    }
}

/// Refuses targets that are cellar's own names, and (without `clean`) a
/// target that holds objects: the inner `Err` is such a refusal (exit 2
/// material), the outer one a server that could not be asked. Call before
/// any work.
pub fn check_target(t: &DbTarget<'_>) -> anyhow::Result<Result<(), String>> {
    if t.kind == Kind::Mariadb {
        return super::mariadb::check_target(t);
    }
    if let Some(refused) = common_refusal(t.database) {
        return Ok(Err(refused));
    }
    if matches!(t.database, "postgres" | "template0" | "template1") {
        return Ok(Err(format!(
            "{} is a database PostgreSQL itself needs; restore into another name",
            t.database
        )));
    }
    if t.database.len() > 63 {
        return Ok(Err(format!(
            "database name {} is {} bytes; PostgreSQL keeps only 63, so choose a shorter name",
            t.database,
            t.database.len()
        )));
    }
    let template = postgres::query(
        t.conn,
        "postgres",
        "SELECT datistemplate FROM pg_database WHERE datname = :'name';",
        &[("name", t.database)],
    )?;
    if template.trim() == "t" {
        return Ok(Err(format!(
            "{} is a template database; restore into another name",
            t.database
        )));
    }
    occupied(t, postgres::database_state)
}

/// The refusals that ask the server, for either kind: a copy kept by an
/// earlier `--keep-previous` (never dropped silently by the next
/// restore), and without `clean` a target that holds objects. `state`
/// says whether a database exists and how many objects it holds.
pub(super) fn occupied(
    t: &DbTarget<'_>,
    state: fn(&DbConn, &str) -> anyhow::Result<Option<u64>>,
) -> anyhow::Result<Result<(), String>> {
    if !t.mirror {
        let previous = previous_name(t.database);
        if state(t.conn, &previous)?.is_some() {
            return Ok(Err(format!(
                "{previous} exists: the old content of {} kept by an earlier restore (--keep-previous, or left by a swap that was cut short: `cellar status` says); drop it (DROP DATABASE {previous}) or rename it, then restore again",
                t.database
            )));
        }
    }
    if !t.clean {
        if let Some(n @ 1..) = state(t.conn, t.database)? {
            return Ok(Err(format!(
                "database {} is not empty ({n} objects); pass --clean to replace it (it is swapped out only after the restore succeeded), or restore into a new name",
                t.database
            )));
        }
    }
    Ok(Ok(()))
}

/// A restored scratch database waiting to be swapped in. Dropping it
/// without [`Scratch::swap`] drops the database.
pub struct Scratch<'a> {
    /// Tables whose rows were compared with the backup's inventory (0 when
    /// the backup has no comparable inventory).
    pub tables_compared: usize,
    conn: &'a DbConn,
    target: String,
    name: String,
    keep_previous: bool,
    /// Whether a target with objects may be replaced (`--clean`, mirror);
    /// without it, one that appeared while the restore ran is refused.
    replace: bool,
    /// Database-level statements, applied just before the swap (so a
    /// restored `default_transaction_read_only` or `ALLOW_CONNECTIONS false`
    /// cannot get in the way of the restore or the mirror's statements).
    properties: Option<String>,
    marker: PathBuf,
    done: bool,
    // Dropped after the database (fields drop in order): the scratch name
    // stays ours until it is gone.
    _lock: crate::lock::ProfileLock,
    _server_lock: postgres::ServerLock,
}

impl Scratch<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ends the sessions on the target and renames the scratch database
    /// into its place, both renames in one transaction. Returns the name
    /// the old content was kept under, if kept.
    pub fn swap(mut self) -> anyhow::Result<Option<String>> {
        if let Some(sql) = self.properties.take().filter(|s| !s.trim().is_empty()) {
            step(
                "database properties",
                postgres::psql_restricted(self.conn, "postgres", true, &mut sql.as_bytes()),
            )?;
        }
        if !self.replace {
            if let Some(n @ 1..) = postgres::database_state(self.conn, &self.target)? {
                bail!(
                    "database {} was made while the restore ran and now holds {n} objects; it is not replaced without --clean",
                    self.target
                );
            }
        }
        let kept = swap(self.conn, &self.target, &self.name, self.keep_previous)?;
        self.done = true;
        let _ = std::fs::remove_file(&self.marker);
        Ok(kept)
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // A server that is restarting refuses for a moment: try again.
        let mut dropped = postgres::drop_database(self.conn, &self.name);
        for _ in 0..4 {
            if dropped.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
            dropped = postgres::drop_database(self.conn, &self.name);
        }
        match dropped {
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

/// The marker files for scratch databases that exist (or may, after a
/// crash): `state/scratch/<name>.json`.
pub fn marker_dir(config_dir: &Path) -> PathBuf {
    crate::state::dir(config_dir).join("scratch")
}

/// The marker of a restore or mirror into `target` on `server` (one at a
/// time: the scratch name is the target's). A restore into a database of
/// the same name on another server has a marker of its own, so it never
/// overwrites or removes the record of a leftover on this one.
pub fn marker_path(config_dir: &Path, server: &str, target: &str) -> PathBuf {
    let h = blake2b_simd::Params::new()
        .hash_length(6)
        .hash(server.as_bytes());
    marker_dir(config_dir).join(format!("{}.{}.json", scratch_name(target), h.to_hex()))
}

/// Whether two server descriptions (`postgresql://user@host:port`) name
/// the same server: the same port and user, and hosts that resolve to a
/// common address (`localhost` and `127.0.0.1`), or the same socket.
pub fn same_server(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    fn parts(d: &str) -> Option<(&str, &str, &str, &str)> {
        let (scheme, rest) = d.split_once("://")?;
        let (user, at) = rest.rsplit_once('@')?;
        let (host, port) = at.rsplit_once(':')?;
        Some((scheme, user, host, port))
    }
    let (Some((sa, ua, ha, pa)), Some((sb, ub, hb, pb))) = (parts(a), parts(b)) else {
        return false;
    };
    if sa != sb || ua != ub || pa != pb {
        return false;
    }
    let addresses = |h: &str| -> Vec<std::net::IpAddr> {
        use std::net::ToSocketAddrs;
        (h, 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    let (xa, xb) = (addresses(ha), addresses(hb));
    xa.iter().any(|x| xb.contains(x))
}

/// Markers of runs into `target` on the same server under another
/// spelling (`--host localhost` against `127.0.0.1`) whose run is over:
/// the scratch database they name is this run's too, and was just
/// dropped.
pub fn forget_other_spellings(config_dir: &Path, server: &str, target: &str) {
    for (path, m) in markers(config_dir) {
        if m.target == target
            && m.server != server
            && m.undo.is_none()
            && !m.running()
            && same_server(&m.server, server)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where versions before the server was in the name kept the marker.
pub fn legacy_marker_path(config_dir: &Path, target: &str) -> PathBuf {
    marker_dir(config_dir).join(format!("{}.json", scratch_name(target)))
}

/// The marker at `path`, if there is a readable one.
pub fn read_marker(path: &Path) -> Option<Marker> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub profile: String,
    pub server: String,
    pub target: String,
    pub scratch: String,
    pub pid: u32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// A MariaDB swap under way: the file holding the target's old
    /// views, routines, triggers and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<PathBuf>,
}

/// A swap that failed and could not be undone: the target is not as it
/// was, and the message says where its parts are.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SwapIncomplete(pub String);

/// Adds "TARGET was left as it was" to a failed restore, unless the swap
/// could not be undone (then that would be false).
pub fn left_as_it_was(e: anyhow::Error, target: &str) -> anyhow::Error {
    if e.chain().any(|c| c.is::<SwapIncomplete>()) {
        e
    } else {
        e.context(format!("{target} was left as it was"))
    }
}

impl Marker {
    /// Whether the process that wrote it is still running.
    pub fn running(&self) -> bool {
        // SAFETY: kill with signal 0 only checks that the pid exists.
        unsafe { libc::kill(self.pid as i32, 0) == 0 }
    }
}

/// Every marker, for `status` and `check`.
pub fn markers(config_dir: &Path) -> Vec<(PathBuf, Marker)> {
    let Ok(rd) = std::fs::read_dir(marker_dir(config_dir)) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), read_marker(&e.path())?)))
        .collect()
}

pub(super) fn write_marker(path: &Path, marker: &Marker) -> io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("in a folder"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(marker)?.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    crate::state::sync_parent(path)
}

/// Bytes free for an unprivileged writer in `dir`'s filesystem.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we own from a valid C string.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The step that failed, for the error message.
pub(super) fn step<T>(name: &str, r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.with_context(|| format!("restore step `{name}` failed"))
}

/// Steps 1–3: a checked, restored scratch database for `t`, ready for the
/// mirror's statements and the swap.
pub fn prepare<'a>(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    t: &DbTarget<'a>,
) -> anyhow::Result<Scratch<'a>> {
    let custom = match p.content {
        Content::Pgdump => true,
        Content::Sql => false,
        _ => bail!(
            "backup {} is not a database dump; use --to-dir or --to-file",
            m.id
        ),
    };
    let name = scratch_name(t.database);
    // One restore per target at a time: the scratch name is shared.
    let lock = crate::lock::acquire(
        t.config_dir,
        &target_lock_name(t.database),
        &format!("restore into {}", t.database),
        Duration::ZERO,
    )?;
    // And on the server, for cellars of other config dirs or hosts.
    let Some(server_lock) = postgres::try_server_lock(t.conn, &name)? else {
        bail!(
            "another cellar (from another config dir or host) is restoring into {} on {} right now; try again when it is done",
            t.database,
            t.conn.describe()
        );
    };

    // Step 1: the whole dump, checked (sizes, BLAKE2b, MDC), on local
    // disk, before any of it reaches the server: SQL whose hash turns out
    // wrong must never have run.
    if !custom && !postgres::psql_can_restrict(t.conn)? {
        // Fail before creating anything (the message says what to do).
        postgres::psql_restricted(t.conn, "postgres", true, &mut io::empty())?;
    }
    let spool = step("spool", spool(fetch, m, p, t.spool_dir))?;
    let db_sql = match custom.then_some(&spool) {
        Some(f) => Some(step(
            "read database properties",
            postgres::database_sql(t.conn, f, &name, t.no_owner),
        )?),
        None => None,
    };

    // Roles the dump's objects belong to: only now that the dump is known
    // whole, and before anything of it reaches the server.
    if t.globals {
        step(
            "apply roles and tablespaces",
            super::globals(fetch, m, t.conn),
        )?;
    }

    // A scratch database left by a killed run goes first.
    step(
        "drop leftover scratch database",
        postgres::drop_database(t.conn, &name),
    )?;
    forget_other_spellings(t.config_dir, &t.conn.describe(), t.database);
    let marker = marker_path(t.config_dir, &t.conn.describe(), t.database);
    write_marker(
        &marker,
        &Marker {
            profile: m.profile.clone(),
            server: t.conn.describe(),
            target: t.database.to_string(),
            scratch: name.clone(),
            pid: std::process::id(),
            started_at: chrono::Utc::now(),
            undo: None,
        },
    )
    .with_context(|| format!("writing {}", marker.display()))?;
    let create = db_sql.as_ref().map(|(c, _)| c.as_str()).unwrap_or("");
    let created = if create.is_empty() {
        postgres::create_database(t.conn, &name)
    } else {
        postgres::psql_create_database(t.conn, create)
            .with_context(|| format!("creating {name} as the backup's database was created"))
    };
    if let Err(e) = created {
        let _ = std::fs::remove_file(&marker);
        return Err(e).context("restore step `create scratch database` failed");
    }
    let mut scratch = Scratch {
        tables_compared: 0,
        conn: t.conn,
        target: t.database.to_string(),
        name,
        keep_previous: t.keep_previous,
        replace: t.clean || t.mirror,
        properties: None,
        marker,
        done: false,
        _lock: lock,
        _server_lock: server_lock,
    };

    // Step 2.
    if custom {
        // A partial restore: the chosen entries of the table of contents,
        // into the schemas they belong to (pg_restore -n leaves out the
        // schema itself).
        let list = match t.only.filter(|s| !s.is_empty()) {
            Some(sel) => {
                let (list, unmatched) = step(
                    "select tables",
                    postgres::selected_toc(t.conn, &spool, &sel.tables, &sel.schemas),
                )?;
                if !unmatched.is_empty() {
                    bail!(
                        "backup {} holds no {}; `cellar restore {} {} --to-file F` and `pg_restore --list F` show what it holds",
                        m.id,
                        unmatched.join(", no "),
                        m.profile,
                        m.id
                    );
                }
                for schema in sel.schema_names() {
                    step(
                        "create schema",
                        postgres::query(
                            t.conn,
                            &scratch.name,
                            "CREATE SCHEMA IF NOT EXISTS :\"s\";",
                            &[("s", schema)],
                        )
                        .map(|_| ()),
                    )?;
                }
                Some(list)
            }
            None => None,
        };
        step(
            "pg_restore",
            postgres::restore_custom(
                t.conn,
                &scratch.name,
                &spool,
                t.jobs,
                t.no_owner,
                list.as_ref().map(|l| l.path()),
            ),
        )?;
    } else {
        use std::io::Seek;
        let mut f = &spool;
        f.rewind()?;
        let mut r = io::BufReader::with_capacity(1 << 20, f);
        step(
            "psql",
            postgres::psql_restricted(t.conn, &scratch.name, true, &mut r).map(|_| ()),
        )?;
    }
    // The restore holds what the database held when it was dumped: every
    // table's rows and every kind of object, or it is not swapped in.
    // A partial restore is compared on the tables it chose: their rows,
    // not the objects of the whole database.
    let selected = t.only.filter(|s| !s.is_empty());
    if let Some(inv) = p.inventory.as_ref().filter(|i| !i.filtered) {
        let got = step(
            "count the restored database",
            postgres::inventory(t.conn, &scratch.name),
        )?;
        let diff = match selected {
            None => inv.differences(&got),
            Some(sel) => {
                let mut part = inv.clone();
                part.tables.retain(|q, _| sel.covers(q));
                part.objects.clear();
                let mut got = got;
                got.tables.retain(|q, _| sel.covers(q));
                got.objects.clear();
                part.differences(&got)
            }
        };
        scratch.tables_compared = match selected {
            None => inv.tables.len(),
            Some(sel) => inv.tables.keys().filter(|q| sel.covers(q)).count(),
        };
        if !diff.is_empty() {
            bail!(
                "the restored database differs from the backup's inventory, so it was not swapped in: {}{}",
                diff.iter().take(20).cloned().collect::<Vec<_>>().join("; "),
                if diff.len() > 20 { format!("; and {} more", diff.len() - 20) } else { String::new() }
            );
        }
        match selected {
            None => info!(
                "{}: {} tables and {} objects match the backup's inventory",
                m.profile,
                inv.tables.len(),
                inv.objects.values().sum::<u64>()
            ),
            Some(_) => info!(
                "{}: {} chosen table(s) match the backup's inventory",
                m.profile, scratch.tables_compared
            ),
        }
    }
    // Step 3, carried out by the swap.
    scratch.properties = db_sql.map(|(_, rest)| rest);
    info!(
        "{}: backup {} {} restored into the scratch database {}",
        m.profile, m.id, p.name, scratch.name
    );
    Ok(scratch)
}

/// Fetches, checks, decrypts and decompresses a payload into an unnamed
/// file under `dir` (O_TMPFILE: it disappears with the last descriptor,
/// even on `kill -9`).
pub(super) fn spool(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    dir: &Path,
) -> anyhow::Result<File> {
    let free = free_bytes(dir).with_context(|| {
        format!(
            "spool folder {} ([restore] spool_dir) cannot be used",
            dir.display()
        )
    })?;
    // Room for the dump plus a little for everything else on that disk.
    let needed = p.plain_size + p.plain_size / 50 + (16 << 20);
    if free < needed {
        bail!(
            "the spool folder {} has {} free; this restore needs {} for the decrypted dump of {}; \
             free some space or set [restore] spool_dir to a folder with more room",
            dir.display(),
            human_bytes(free),
            human_bytes(needed),
            p.name
        );
    }
    let file = tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a spool file in {}", dir.display()))?;
    fetch.stream(m, p, |r| {
        crate::pipeline::copy_buffered(r, &mut &file)
            .with_context(|| format!("writing the spool file in {}", dir.display()))?;
        Ok(())
    })?;
    // Readers open it anew as /dev/fd/3, so its offset does not matter.
    Ok(file)
}

/// Ends the sessions on the old database and renames the new one in. The
/// two renames are one transaction: either both happen or neither. A
/// client that reconnects in between makes the rename fail; the swap is
/// tried again a few times before giving up.
fn swap(
    conn: &DbConn,
    target: &str,
    scratch: &str,
    keep_previous: bool,
) -> anyhow::Result<Option<String>> {
    let previous = previous_name(target);
    step(
        "drop the previous copy",
        postgres::drop_database(conn, &previous),
    )?;
    let exists = postgres::database_exists(conn, target)?;
    let sql = if exists {
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname IN (:'target', :'scratch') AND pid <> pg_backend_pid();
         BEGIN;
         ALTER DATABASE :\"target\" RENAME TO :\"previous\";
         ALTER DATABASE :\"scratch\" RENAME TO :\"target\";
         COMMIT;"
    } else {
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE datname = :'scratch' AND pid <> pg_backend_pid();
         ALTER DATABASE :\"scratch\" RENAME TO :\"target\";"
    };
    let vars = [
        ("target", target),
        ("scratch", scratch),
        ("previous", previous.as_str()),
    ];
    let mut attempt = 0;
    loop {
        attempt += 1;
        match postgres::query(conn, "postgres", sql, &vars) {
            Ok(_) => break,
            Err(e) if attempt < 3 => {
                warn!("swap attempt {attempt} failed, retrying: {e:#}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context("restore step `swap` failed"),
        }
    }
    if !exists {
        return Ok(None);
    }
    if keep_previous {
        return Ok(Some(previous));
    }
    if let Err(e) = postgres::drop_database(conn, &previous) {
        warn!("the restore is in place, but the old copy {previous} could not be dropped: {e:#}");
    }
    Ok(None)
}

/// A restored scratch database of either kind, waiting to be swapped in:
/// what the mirror and drills work with. Dropped without [`swap`](Prepared::swap),
/// it drops the scratch database.
pub trait Prepared {
    fn name(&self) -> &str;
    /// Tables compared with what the backup holds.
    fn tables_compared(&self) -> usize;
    /// Runs one statement in the scratch database; returns the first
    /// field of its first row (a check's answer).
    fn execute(&self, sql: &str) -> anyhow::Result<String>;
    /// Whether a check's answer means true.
    fn is_true(&self, answer: &str) -> bool;
    /// Estimated rows per table, largest first.
    fn row_counts(&self) -> anyhow::Result<Vec<(String, i64)>>;
    /// Swaps the scratch database in; returns the name the old content
    /// was kept under, if kept.
    fn swap(self: Box<Self>) -> anyhow::Result<Option<String>>;
}

impl Prepared for Scratch<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn tables_compared(&self) -> usize {
        self.tables_compared
    }
    fn execute(&self, sql: &str) -> anyhow::Result<String> {
        let out = postgres::user_query(self.conn, &self.name, &format!("{sql};"))?;
        Ok(out.lines().next().unwrap_or("").trim().to_string())
    }
    fn is_true(&self, answer: &str) -> bool {
        answer == "t"
    }
    fn row_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let out = postgres::query(
            self.conn,
            &self.name,
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
    fn swap(self: Box<Self>) -> anyhow::Result<Option<String>> {
        Scratch::swap(*self)
    }
}

impl Prepared for super::mariadb::Scratch<'_> {
    fn name(&self) -> &str {
        super::mariadb::Scratch::name(self)
    }
    fn tables_compared(&self) -> usize {
        super::mariadb::Scratch::tables_compared(self)
    }
    fn execute(&self, sql: &str) -> anyhow::Result<String> {
        // The whole first row: a check answers with one value, and
        // `SELECT 1, 0` is not true.
        let out = super::mariadb::Scratch::execute(self, sql)?;
        Ok(out.lines().next().unwrap_or("").trim().to_string())
    }
    fn is_true(&self, answer: &str) -> bool {
        answer == "1"
    }
    fn row_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        super::mariadb::Scratch::row_counts(self)
    }
    fn swap(self: Box<Self>) -> anyhow::Result<Option<String>> {
        super::mariadb::Scratch::swap(*self)
    }
}

/// Steps 1–3 for the target's kind.
pub fn prepare_any<'a>(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    t: &DbTarget<'a>,
) -> anyhow::Result<Box<dyn Prepared + 'a>> {
    Ok(match t.kind {
        Kind::Mariadb => Box::new(super::mariadb::prepare(fetch, m, p, t)?),
        _ => Box::new(prepare(fetch, m, p, t)?),
    })
}

/// `restore --to-database`: the whole engine, swap included.
pub fn restore(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    t: &DbTarget<'_>,
) -> anyhow::Result<Option<String>> {
    let scratch = prepare_any(fetch, m, p, t).map_err(|e| left_as_it_was(e, t.database))?;
    scratch.swap().map_err(|e| left_as_it_was(e, t.database))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_short_and_distinct_for_long_targets() {
        let a = "a".repeat(63);
        let b = format!("{}b", "a".repeat(62));
        for t in [a.as_str(), b.as_str(), "shop"] {
            assert!(scratch_name(t).len() < 40);
            assert_ne!(scratch_name(t), t);
            assert_ne!(scratch_name(t), previous_name(t));
        }
        assert_ne!(scratch_name(&a), scratch_name(&b));
        assert_eq!(scratch_name("shop"), scratch_name("shop"));
    }

    #[test]
    fn one_server_under_two_names() {
        let a = "postgresql://postgres@127.0.0.1:5432";
        use std::net::ToSocketAddrs;
        let loopback = ("localhost", 0)
            .to_socket_addrs()
            .is_ok_and(|mut i| i.any(|s| s.ip() == std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(
            same_server(a, "postgresql://postgres@localhost:5432"),
            loopback
        );
        assert!(same_server(a, a));
        assert!(!same_server(a, "postgresql://postgres@localhost:5433"));
        assert!(!same_server(a, "postgresql://other@localhost:5432"));
        assert!(!same_server(a, "mariadb://postgres@localhost:5432"));
        assert!(!same_server(a, "postgresql://postgres@192.0.2.1:5432"));
    }

    #[test]
    fn free_space_of_a_folder() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(free_bytes(Path::new("/no/such/folder")).is_err());
    }
}
