//! One backup of one profile: stream every payload into the store, then
//! write the manifest. If anything fails, the payloads already stored for
//! this id are deleted and no manifest is written, so the store never
//! shows a backup that is not whole.

use anyhow::Context;
use tracing::{debug, info, warn};

use crate::catalog;
use crate::keys;
use crate::manifest::{self, Content, Manifest, Payload, SourceInfo};
use crate::pipeline::{self, PipelineError};
use crate::profile::{Databases, DbSource, DumpFormat, Profile, Source};
use crate::progress::{Outcome, Progress, Total};
use crate::source::{files, mariadb, postgres};
use crate::store::{Store, StoreError};

/// The dump canary failed: the dump lacks data the database holds. Its
/// own type, so `job` can tell a canary failure from any other (prune
/// holds off after one).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DumpCanary(pub String);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{profile}: {payload}: {cause}")]
    Payload {
        profile: String,
        payload: String,
        cause: Box<PipelineError>,
    },
    #[error("{profile}: {message}")]
    Other { profile: String, message: String },
}

impl BackupError {
    /// The dump canary failed (the dump lacks a table's data).
    pub fn dump_canary(&self) -> bool {
        matches!(self, BackupError::Payload { cause, .. }
            if matches!(cause.as_ref(), PipelineError::Source(e)
                if e.chain().any(|c| c.is::<DumpCanary>())))
    }
}

/// How much of a custom archive is kept to read its table of contents.
const TOC_HEAD: usize = 32 << 20;

/// One backup being written: its id, and what it has stored so far (to
/// remove it all if it fails).
struct Backup<'a> {
    profile: &'a Profile,
    store: &'a dyn Store,
    progress: &'a dyn Progress,
    id: String,
    /// The last trusted backup's manifest, for the progress line's
    /// estimates (looked up only when a progress line is drawn).
    previous: Option<Manifest>,
    stored: Vec<Payload>,
    /// Other objects this backup wrote (signature, manifest), in order.
    written: Vec<String>,
}

impl Backup<'_> {
    fn other(&self, e: impl std::fmt::Display) -> BackupError {
        BackupError::Other {
            profile: self.profile.name.clone(),
            message: e.to_string(),
        }
    }

    fn stream<F>(
        &mut self,
        content: Content,
        database: Option<&str>,
        ext: &str,
        produce: F,
    ) -> Result<(), BackupError>
    where
        F: FnOnce(&mut dyn std::io::Write) -> anyhow::Result<()> + Send,
    {
        let name = manifest::payload_name(&self.id, database, ext, &self.profile.compression);
        let key = format!("{}/{name}", self.profile.name);
        // The previous backup's plaintext size of the same payload is the
        // estimate; a files backup replaces it once its walk is done.
        let estimate = self
            .previous
            .iter()
            .flat_map(|m| &m.payloads)
            .find(|p| p.content == content && p.database.as_deref() == database)
            .map_or(Total::Unknown, |p| Total::Estimate(p.plain_size));
        self.progress
            .start(&format!("{}: {name}", self.profile.name), estimate);
        let r = pipeline::backup_stream(
            self.store,
            &key,
            &self.profile.compression,
            &self.profile.encryption.recipients,
            self.progress,
            produce,
        );
        self.progress.finish(match &r {
            Ok(st) => Outcome::Stored {
                plain: st.plain.bytes,
                stored: st.stored.bytes,
            },
            Err(_) => Outcome::Failed,
        });
        let streamed = r.map_err(|cause| BackupError::Payload {
            profile: self.profile.name.clone(),
            payload: name.clone(),
            cause: Box::new(cause),
        })?;
        let line = format!(
            "{}: stored {name}: {} bytes from {} bytes of {}",
            self.profile.name,
            streamed.stored.bytes,
            streamed.plain.bytes,
            content.describe()
        );
        // On a terminal the progress line's summary says it already.
        if self.progress.summarizes() {
            debug!("{line}");
        } else {
            info!("{line}");
        }
        self.stored.push(Payload {
            name,
            content,
            database: database.map(str::to_string),
            stored_size: streamed.stored.bytes,
            stored_blake2b: streamed.stored.hex(),
            plain_size: streamed.plain.bytes,
            plain_blake2b: streamed.plain.hex(),
            inventory: None,
        });
        Ok(())
    }

    /// Removes what this failed backup stored, so no orphan remains.
    /// The manifest goes first, so the backup stops existing before any
    /// of its parts do.
    fn discard(&self) {
        let payloads = self
            .stored
            .iter()
            .map(|p| format!("{}/{}", self.profile.name, p.name));
        for key in self.written.iter().rev().cloned().chain(payloads) {
            match self.store.delete(&key) {
                Ok(()) | Err(crate::store::StoreError::NotFound { .. }) => {}
                Err(e) => warn!("could not remove {key} of the failed backup: {e}"),
            }
        }
    }
}

/// The latest trusted backup's manifest, quietly (it only feeds estimates).
fn previous_manifest(store: &dyn Store, profile: &Profile) -> Option<Manifest> {
    let entries = catalog::scan(store, &profile.name).ok()?;
    let now = crate::schedule::now();
    entries
        .iter()
        .rev()
        .filter(|e| e.complete && !catalog::in_future(&e.id, now))
        .find_map(|e| match catalog::check(store, profile, e) {
            Ok(catalog::Trust::Trusted { manifest, .. }) => Some(*manifest),
            _ => None,
        })
}

/// The id of a new backup: the start time to the second. When something
/// in the store already uses that id (two backups in one second, or
/// objects anyone could have written), a suffix of 4 hex digits tells them
/// apart: past every suffix of that second already in the store, and
/// growing with the milliseconds, so ids keep sorting by time. The time is
/// never moved, so no one can push a backup's date ahead.
fn new_id(store: &dyn Store, profile: &str) -> Result<String, crate::store::StoreError> {
    let taken: std::collections::HashSet<String> = catalog::scan(store, profile)?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let now = crate::schedule::now();
    let base = manifest::id_for(now);
    if !taken.contains(&base) {
        return Ok(base);
    }
    suffixed(&base, now, &taken).ok_or_else(|| crate::store::StoreError::Remote {
        op: "choosing an id for",
        store: store.location(),
        key: format!("{profile}/{base}"),
        message: "every id of this second (and its suffixes) is taken: look for objects someone else wrote there".into(),
    })
}

/// `base` with the first free suffix at or after the later of: the
/// milliseconds of `now` (times 65, plus a little randomness) and one past
/// the largest suffix of `base` in `taken`; any free one if none is left
/// after those.
fn suffixed(
    base: &str,
    now: chrono::DateTime<chrono::Utc>,
    taken: &std::collections::HashSet<String>,
) -> Option<String> {
    let mut r = [0u8; 1];
    let _ = sequoia_openpgp::crypto::random(&mut r);
    let ms = now.timestamp_subsec_millis().min(999);
    let clock = ms * 65 + (r[0] as u32 % 65);
    let past = taken
        .iter()
        .filter_map(|id| id.strip_prefix(base)?.strip_prefix('-'))
        .filter_map(|x| u32::from_str_radix(x, 16).ok())
        .max()
        .map_or(0, |m| m + 1);
    let id = |n: u32| format!("{base}-{n:04x}");
    (clock.max(past)..=0xffff)
        .chain(0..0xffff)
        .map(id)
        .find(|i| !taken.contains(i))
}

pub fn run(
    profile: &Profile,
    store: &dyn Store,
    progress: &dyn Progress,
) -> Result<Manifest, BackupError> {
    let Some(signer) = &profile.encryption.signer else {
        return Err(BackupError::Other {
            profile: profile.name.clone(),
            message: format!(
                "{} has no `signer` in [encryption]: backups are signed so that a forged one can never be restored; make a key with `cellar keygen --sign host` and add signer = \"secrets/host.sign.key.asc\"",
                profile.file.display()
            ),
        });
    };
    // The injectable clock: tests date backups with CELLAR_NOW.
    let started_at = crate::schedule::now();
    let mut id = new_id(store, &profile.name).map_err(|e| BackupError::Other {
        profile: profile.name.clone(),
        message: e.to_string(),
    })?;
    // Another writer (another config dir or host with this profile name
    // and store) may take the same id at the same moment: no write ever
    // replaces an object, so its first payload finds ours, or ours finds
    // its; the one that finds the other starts again with a suffixed id.
    for _ in 0..4 {
        match run_as(profile, store, progress, &id, started_at, signer) {
            Err(BackupError::Payload { cause, .. })
                if matches!(*cause, PipelineError::Store(StoreError::Exists { .. })) =>
            {
                let base = id.split('-').next().unwrap_or(&id).to_string();
                let mine = std::collections::HashSet::from([id.clone()]);
                id = suffixed(&base, crate::schedule::now(), &mine).unwrap_or(id);
                warn!(
                    "{}: another backup took this id at the same moment; starting again as {id}",
                    profile.name
                );
            }
            other => return other,
        }
    }
    run_as(profile, store, progress, &id, started_at, signer)
}

fn run_as(
    profile: &Profile,
    store: &dyn Store,
    progress: &dyn Progress,
    id: &str,
    started_at: chrono::DateTime<chrono::Utc>,
    signer: &keys::SigningKey,
) -> Result<Manifest, BackupError> {
    let id = id.to_string();
    let mut job = Backup {
        profile,
        store,
        progress,
        id: id.clone(),
        previous: progress
            .wants_total()
            .then(|| previous_manifest(store, profile))
            .flatten(),
        stored: Vec::new(),
        written: Vec::new(),
    };
    let result = stream_all(&mut job).and_then(|source| {
        let m = Manifest {
            format_version: manifest::FORMAT_VERSION,
            profile: profile.name.clone(),
            kind: profile.kind,
            id: id.clone(),
            started_at,
            finished_at: crate::schedule::now().max(started_at),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            source,
            compression: profile.compression,
            recipients: profile
                .encryption
                .recipients
                .iter()
                .map(|r| r.fingerprint())
                .collect(),
            payloads: job.stored.clone(),
        };
        let json = serde_json::to_vec_pretty(&m).expect("manifest serializes");
        // The signature goes first: a backup exists exactly when its
        // manifest does, and a manifest is never there without it.
        let sig = keys::sign_detached(signer, &json)
            .map_err(|e| job.other(format!("signing the manifest: {e}")))?;
        let sig_key = Manifest::sig_key(&profile.name, &id);
        if let Err(e) = store.put(&sig_key, &mut &sig[..]) {
            // The write may have happened although it reported a failure
            // (a lost answer): remove it too, unless it is someone else's.
            if !matches!(e, StoreError::Exists { .. }) {
                job.written.push(sig_key);
            }
            return Err(job.other(format!("writing the manifest's signature: {e}")));
        }
        job.written.push(sig_key);
        let manifest_key = Manifest::key(&profile.name, &id);
        if let Err(e) = store.put(&manifest_key, &mut &json[..]) {
            // The write may have happened although it reported a failure
            // (a failed folder fsync, a lost answer): remove it too, unless
            // the object was there before (another writer's).
            if !matches!(e, StoreError::Exists { .. }) {
                job.written.push(manifest_key);
            }
            return Err(job.other(format!("writing the manifest: {e}")));
        }
        Ok(m)
    });
    if result.is_err() {
        job.discard();
    }
    result
}

fn stream_all(job: &mut Backup<'_>) -> Result<SourceInfo, BackupError> {
    match &job.profile.source {
        Source::Postgres(pg) => {
            let conn = &pg.conn;
            let server_version = postgres::server_version(conn)
                .map_err(|e| job.other(format!("cannot reach {}: {e:#}", conn.describe())))?;
            let databases = to_dump(job, pg, postgres::list_databases)?;
            let several = !matches!(pg.databases, Databases::One(_));
            let (content, ext) = match pg.format {
                DumpFormat::Custom => (Content::Pgdump, "pgdump"),
                DumpFormat::Plain => (Content::Sql, "sql"),
            };
            // Roles and tablespaces are dumped beside the databases.
            let globals = pg.globals.then(|| beside(conn, postgres::dump_globals));
            let mut tables = 0;
            let mut dumped = Vec::new();
            let mut skipped = Vec::new();
            for db in &databases {
                // Counted beside the dump; its error is reported only after
                // the dump's own, which explains more.
                let counting = std::thread::spawn({
                    let (conn, db) = (conn.clone(), db.clone());
                    move || postgres::count_tables(&conn, &db)
                });
                let custom = pg.format == DumpFormat::Custom;
                let args = &pg.dump_args;
                let mut inventory = None;
                let r = job.stream(content, several.then_some(db.as_str()), ext, |w| {
                    // The inventory is counted in the dump's own snapshot,
                    // alongside it.
                    let snap = match postgres::Snapshot::open(conn, db) {
                        Ok(s) => s,
                        Err(e) => {
                            // pg_dump's own error, if any, says more.
                            warn!("{db}: no inventory: cannot export a snapshot ({e:#})");
                            return postgres::dump(conn, db, custom, args, None, w);
                        }
                    };
                    let id = snap.id.clone();
                    let counting = snap.count(conn, db);
                    let pid = counting.as_ref().map(|c| c.pid).ok();
                    // A custom archive's table of contents comes first.
                    let mut head =
                        postgres::Head::new(w, conn, if custom { TOC_HEAD } else { 0 });
                    let (dumped, counted) = std::thread::scope(|s| {
                        let counted = s.spawn(|| counting.and_then(postgres::Counting::result));
                        let dumped = postgres::dump(conn, db, custom, args, Some(&id), &mut head);
                        if let (Err(_), Some(pid)) = (&dumped, pid) {
                            // No use counting on: end psql (and its query).
                            // SAFETY: kill(2) on our own child.
                            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        }
                        (dumped, counted.join().expect("inventory thread panicked"))
                    });
                    dumped?;
                    let toc = head.toc()?;
                    let mut inv = counted.with_context(|| format!("counting the rows of {db}"))?;
                    snap.close()?;
                    inv.filtered = postgres::filters_dump(args);
                    if custom && !inv.filtered {
                        // The dump canary: a table in the database whose
                        // data is not in the dump fails the backup.
                        match toc.map(|toc| postgres::missing_from_toc(&toc, &inv)) {
                            Some(missing) if !missing.is_empty() => {
                                return Err(DumpCanary(format!(
                                    "the dump of {db} lacks the data of {} table(s) that the database holds: {}; if the backup role cannot read them, grant it SELECT (or exclude them in pg_dump_args on purpose)",
                                    missing.len(),
                                    missing.join(", ")
                                ))
                                .into())
                            }
                            Some(_) => {}
                            None => warn!("{db}: the dump's table of contents is over {} MiB; its tables were not checked against the inventory", TOC_HEAD >> 20),
                        }
                    }
                    inventory = Some(inv);
                    Ok(())
                });
                if r.is_ok() {
                    if let Some(p) = job.stored.last_mut() {
                        p.inventory = inventory;
                    }
                }
                let counted = counting.join().expect("counting thread panicked");
                if let Err(e) = r {
                    dropped_meanwhile(job, pg, db, e, &mut skipped, || {
                        matches!(postgres::database_exists(conn, db), Ok(false))
                    })?;
                    continue;
                }
                dumped.push(db.clone());
                tables += match counted {
                    Ok(n) => n,
                    // Dumped, then dropped: the dump stands.
                    Err(_)
                        if matches!(pg.databases, Databases::All)
                            && matches!(postgres::database_exists(conn, db), Ok(false)) =>
                    {
                        0
                    }
                    Err(e) => return Err(job.other(format!("reading {db}: {e:#}"))),
                };
            }
            if let Some(globals) = globals {
                store_beside(job, globals, Content::Globals, "globals.sql")?;
            }
            Ok(SourceInfo {
                description: conn.describe(),
                server_version: Some(server_version),
                databases: dumped,
                paths: Vec::new(),
                entries: Some(tables),
                skipped,
                changed_during_backup: 0,
            })
        }
        Source::Mariadb(my) => stream_mariadb(job, my),
        Source::Files(fs) => {
            let mut stats = files::TarStats::default();
            let progress = job.progress;
            job.stream(Content::Tar, None, "tar", |w| {
                if !progress.wants_total() {
                    stats = files::write_tar(fs, w)?;
                    return Ok(());
                }
                // The walk for the total runs beside the backup's own, so
                // the backup does not wait for it.
                let stop = std::sync::atomic::AtomicBool::new(false);
                std::thread::scope(|s| {
                    s.spawn(|| {
                        if let Some(total) = files::tar_size(fs, &stop) {
                            progress.set_total(Total::Exact(total));
                        }
                    });
                    let r = files::write_tar(fs, w);
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    stats = r?;
                    anyhow::Ok(())
                })
            })?;
            if fs.fail_on_change && stats.changed > 0 {
                return Err(job.other(format!(
                    "{} file(s) changed while they were read ({}{}); fail_on_change = true, so this backup is not kept. Exclude files that are always being written, or snapshot the file system first",
                    stats.changed,
                    stats.changed_names.join(", "),
                    if stats.changed as usize > stats.changed_names.len() { ", ..." } else { "" }
                )));
            }

            Ok(SourceInfo {
                description: format!(
                    "files on {}",
                    hostname().unwrap_or_else(|| "this host".into())
                ),
                server_version: None,
                databases: Vec::new(),
                paths: fs.paths.iter().map(|p| p.display().to_string()).collect(),
                entries: Some(stats.files),
                skipped: stats.skipped(),
                changed_during_backup: stats.changed,
            })
        }
    }
}

/// A dump that failed because its database was dropped after the listing
/// (all = true) is not a failed backup: the database is gone, and named in
/// the manifest's `skipped`. Any other failure stands.
fn dropped_meanwhile(
    job: &Backup<'_>,
    db_source: &DbSource,
    db: &str,
    e: BackupError,
    skipped: &mut Vec<String>,
    gone: impl FnOnce() -> bool,
) -> Result<(), BackupError> {
    if !matches!(db_source.databases, Databases::All) || crate::cancel::requested() || !gone() {
        return Err(e);
    }
    warn!(
        "{}: database {db} was dropped during the backup; it is not in this backup",
        job.profile.name
    );
    skipped.push(format!("{db}: dropped during the backup"));
    Ok(())
}

/// The databases a profile dumps: those it names, or every one on the
/// server (`all = true`, listed by `list`).
fn to_dump(
    job: &Backup<'_>,
    db: &DbSource,
    list: fn(&crate::profile::DbConn) -> anyhow::Result<Vec<String>>,
) -> Result<Vec<String>, BackupError> {
    Ok(match &db.databases {
        Databases::One(d) => vec![d.clone()],
        Databases::Many(ds) => ds.clone(),
        Databases::All => {
            list(&db.conn).map_err(|e| job.other(format!("listing databases: {e:#}")))?
        }
    })
}

type Beside = std::thread::JoinHandle<anyhow::Result<std::fs::File>>;

/// Dumps roles or users beside the databases, into an unnamed temporary
/// file, stored after them by [`store_beside`].
fn beside(
    conn: &crate::profile::DbConn,
    dump: fn(&crate::profile::DbConn, &mut dyn std::io::Write) -> anyhow::Result<()>,
) -> Beside {
    let conn = conn.clone();
    std::thread::spawn(move || {
        let mut f = tempfile::tempfile().context("creating a temporary file")?;
        dump(&conn, &mut f)?;
        std::io::Seek::rewind(&mut f)?;
        Ok(f)
    })
}

fn store_beside(
    job: &mut Backup<'_>,
    dumped: Beside,
    content: Content,
    ext: &str,
) -> Result<(), BackupError> {
    let dumped = dumped.join().expect("globals thread panicked");
    job.stream(content, None, ext, |w| {
        std::io::copy(&mut dumped?, w)?;
        Ok(())
    })
}

/// A mariadb profile: one `mariadb-dump` per database, then users and
/// grants (dumped beside them) when `globals = true`.
fn stream_mariadb(job: &mut Backup<'_>, my: &DbSource) -> Result<SourceInfo, BackupError> {
    let conn = &my.conn;
    let server_version = mariadb::server_version(conn)
        .map_err(|e| job.other(format!("cannot reach {}: {e:#}", conn.describe())))?;
    let databases = to_dump(job, my, mariadb::list_databases)?;
    let several = !matches!(my.databases, Databases::One(_));
    let globals = my.globals.then(|| beside(conn, mariadb::dump_globals));
    let mut tables = 0;
    let mut dumped = Vec::new();
    let mut skipped = Vec::new();
    for db in &databases {
        // What the dump cannot hold consistently or would leave out, and
        // the table count, asked beside the dump (one client start each
        // costs tens of milliseconds).
        let survey = std::thread::spawn({
            let (conn, db, args) = (conn.clone(), db.clone(), my.dump_args.clone());
            move || {
                let mut warnings = Vec::new();
                let before = mariadb::non_transactional_tables(&conn, &db);
                match &before {
                    Ok(names) if !names.is_empty() => warnings.push(format!(
                        "{db}: {} table(s) without transactions are not part of the dump's consistent snapshot (rows written during the dump may be missing or half-there): {}",
                        names.len(),
                        names.join(", ")
                    )),
                    Ok(_) => {}
                    Err(e) => warnings.push(format!("{db}: could not list its table engines: {e:#}")),
                }
                warnings.extend(mariadb::left_out(&conn, &db, &args));
                (
                    warnings,
                    mariadb::count_tables(&conn, &db),
                    before.unwrap_or_default(),
                )
            }
        });
        let args = &my.dump_args;
        let r = job.stream(
            Content::Mariadb,
            several.then_some(db.as_str()),
            "mariadb.sql",
            |w| mariadb::dump(conn, db, args, w),
        );
        let (mut warnings, counted, before) = survey.join().expect("survey thread panicked");
        if r.is_ok() {
            // A table moved to such an engine while the dump ran (ALTER
            // TABLE ... ENGINE=MyISAM) was read outside the snapshot too.
            match mariadb::non_transactional_tables(conn, db) {
                Ok(after) => {
                    let moved: Vec<&String> =
                        after.iter().filter(|t| !before.contains(t)).collect();
                    if !moved.is_empty() {
                        warnings.push(format!(
                            "{db}: {} table(s) were changed to an engine without transactions while the dump ran, and may have been read outside its consistent snapshot: {}",
                            moved.len(),
                            moved.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                Err(e) => warnings.push(format!(
                    "{db}: could not list its table engines after the dump: {e:#}"
                )),
            }
        }
        for w in warnings {
            warn!("{}: {w}", job.profile.name);
        }
        if let Err(e) = r {
            dropped_meanwhile(job, my, db, e, &mut skipped, || {
                matches!(mariadb::exists(conn, db), Ok(false))
            })?;
            continue;
        }
        dumped.push(db.clone());
        tables += counted.map_err(|e| job.other(format!("reading {db}: {e:#}")))?;
    }
    if let Some(globals) = globals {
        store_beside(job, globals, Content::MariadbUsers, "users.sql")?;
    }
    Ok(SourceInfo {
        description: conn.describe(),
        server_version: Some(server_version),
        databases: dumped,
        paths: Vec::new(),
        entries: Some(tables),
        skipped,
        changed_during_backup: 0,
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn suffixes_sort_after_what_the_second_already_holds() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00.500Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let base = "20261201T000000Z";
        let taken: std::collections::HashSet<String> =
            [base.to_string(), format!("{base}-f000")].into();
        let id = suffixed(base, now, &taken).unwrap();
        assert!(id.as_str() > "20261201T000000Z-f000", "{id}");
        // Later milliseconds, later suffixes.
        let early = suffixed(base, now - chrono::Duration::milliseconds(400), &[].into()).unwrap();
        let late = suffixed(base, now + chrono::Duration::milliseconds(400), &[].into()).unwrap();
        assert!(early < late, "{early} {late}");
        // Every later suffix taken: any free one.
        let full: std::collections::HashSet<String> = (0x8000..=0xffffu32)
            .map(|n| format!("{base}-{n:04x}"))
            .collect();
        assert!(suffixed(base, now, &full).unwrap().as_str() < "20261201T000000Z-8000");
    }
}
