//! Verify and restore: the way back from the store.
//!
//! Every path goes through [`pipeline::restore_stream`], which proves size,
//! BLAKE2b-512 and the OpenPGP integrity check before its consumer's work
//! may be committed. Each target has its own commit step: the swap of a
//! scratch database into place ([`database`]), or a rename into place of a
//! folder or file that was written beside the target.

pub mod database;
pub mod mariadb;

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::keys::Identity;
use crate::manifest::{Content, Manifest, Payload};
use crate::pipeline::{self, RestoreError};
use crate::profile::{DbConn, Profile, Source};
use crate::progress::{Outcome, Progress, Total};
use crate::source::{postgres, untar};
use crate::store::Store;

/// The way back from one profile's store: the store, the key that
/// decrypts, and where progress goes. Every payload is read through
/// [`Fetch::stream`], which checks it on the way.
pub struct Fetch<'a> {
    pub profile: &'a Profile,
    pub store: &'a dyn Store,
    pub identity: &'a Identity,
    pub progress: &'a dyn Progress,
}

impl Fetch<'_> {
    fn stream<T>(
        &self,
        m: &Manifest,
        p: &Payload,
        consume: impl FnOnce(&mut dyn std::io::BufRead) -> anyhow::Result<T>,
    ) -> Result<T, RestoreError> {
        self.progress.start(
            &format!("{}: {}", self.profile.name, p.name),
            Total::Exact(p.plain_size),
        );
        let r = pipeline::restore_stream(self.store, m, p, self.identity, self.progress, consume);
        self.progress.finish(match r {
            Ok(_) => Outcome::Read {
                plain: p.plain_size,
                stored: p.stored_size,
            },
            Err(_) => Outcome::Failed,
        });
        r
    }
}

fn pg_tools(profile: &Profile) -> DbConn {
    match &profile.source {
        Source::Postgres(pg) => pg.conn.clone(),
        // Only pg_restore's path matters for checking archives.
        Source::Mariadb(_) | Source::Files(_) => DbConn {
            mariadb: false,
            host: String::new(),
            port: 0,
            user: String::new(),
            password: None,
            password_source: None,
            bin_dir: None,
        },
    }
}

/// Fetches, decrypts and decompresses every payload and checks its
/// structure, without restoring anything.
pub fn verify(fetch: &Fetch<'_>, m: &Manifest) -> Result<(), RestoreError> {
    let tools = pg_tools(fetch.profile);
    for p in &m.payloads {
        fetch.stream(m, p, |r| match p.content {
            Content::Tar => untar::check(r).map(|_| ()),
            Content::Pgdump => postgres::check_archive(&tools, r),
            Content::Sql => postgres::check_sql(r, false),
            Content::Globals => postgres::check_sql(r, true),
            Content::Mariadb => crate::source::mariadb::check_dump(r, false).map(|_| ()),
            Content::MariadbUsers => crate::source::mariadb::check_dump(r, true).map(|_| ()),
        })?;
        info!("{}: {} {}: intact", m.profile, m.id, p.name);
    }
    Ok(())
}

/// Picks the database payload to restore: the only one, or `--database`.
pub fn database_payload<'m>(
    m: &'m Manifest,
    database: Option<&str>,
) -> anyhow::Result<&'m Payload> {
    let dbs: Vec<&Payload> = m
        .payloads
        .iter()
        .filter(|p| p.content.is_database() || p.content == Content::Tar)
        .collect();
    match database {
        Some(name) => dbs
            .into_iter()
            .find(|p| {
                p.database.as_deref() == Some(name)
                    || (p.database.is_none() && m.source.databases == [name])
            })
            .with_context(|| {
                format!(
                    "backup {} has no database {name}; it holds: {}",
                    m.id,
                    m.source.databases.join(", ")
                )
            }),
        None if dbs.len() == 1 => Ok(dbs[0]),
        None => bail!(
            "backup {} holds several databases ({}); choose one with --database NAME",
            m.id,
            m.source.databases.join(", ")
        ),
    }
}

/// A `--to-file` target: it must not exist (checked again at the end,
/// since cellar never replaces a file).
pub fn check_file_target(file: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(file).is_ok() {
        bail!(
            "{} already exists; remove it or choose another --to-file",
            file.display()
        );
    }
    Ok(())
}

/// Refuses a folder (or one above it) that another user could change: not
/// owned by root or by us, or writable by others without the sticky bit.
fn safe_folder(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = unsafe { libc::geteuid() };
    for a in dir.ancestors() {
        let md = std::fs::metadata(a).with_context(|| format!("reading {}", a.display()))?;
        let others_write = md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0;
        if (md.uid() != 0 && md.uid() != me) || others_write {
            bail!(
                "{} can be changed by another user (owner uid {}, mode {:o}), who could redirect the restore; restore into a folder only you (or root) can write to",
                a.display(),
                md.uid(),
                md.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// Whether `path` is where a file system is mounted (a bind mount of the
/// same file system too, which device numbers do not show).
fn mount_root(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statx is plain data; zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated name and a live statx buffer.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    };
    let flag = libc::STATX_ATTR_MOUNT_ROOT as u64;
    r == 0 && st.stx_attributes_mask & flag != 0 && st.stx_attributes & flag != 0
}

/// A `--to-dir` target: missing, or an empty folder. Returns whether it
/// exists.
pub fn check_dir_target(dir: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    if !matches!(
        dir.components().next_back(),
        Some(std::path::Component::Normal(_))
    ) {
        bail!(
            "{} does not name a new folder; give a path that ends in a folder name",
            dir.display()
        );
    }
    if dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(INCOMING))
    {
        bail!(
            "{} is named like cellar's own hidden folders ({INCOMING}…), which a later restore may remove; choose another name",
            dir.display()
        );
    }
    if let Ok(md) = std::fs::symlink_metadata(dir) {
        if md.file_type().is_symlink() {
            bail!(
                "{} is a symlink; restore into a real folder (it is created)",
                dir.display()
            );
        }
        let parent = std::fs::metadata(parent_of(dir)).ok();
        if md.is_dir() && (parent.is_some_and(|p| p.dev() != md.dev()) || mount_root(dir)) {
            bail!(
                "{} is a mount point, which cellar cannot replace; restore into a new folder inside it",
                dir.display()
            );
        }
    }
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                bail!(
                    "{} is not empty; restore into a new folder (it is created) or empty it first",
                    dir.display()
                );
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Writes the plaintext dump or tar to `file`, via a temporary file beside
/// it that is renamed into place once verified.
pub fn to_file(fetch: &Fetch<'_>, m: &Manifest, p: &Payload, file: &Path) -> anyhow::Result<()> {
    check_file_target(file)?;
    let dir = parent_of(file);
    // An unnamed file (O_TMPFILE) in the target's folder, linked into
    // place once verified: a kill -9 or a second signal leaves nothing.
    // Filesystems without O_TMPFILE get a named temporary file instead.
    let unnamed = if std::path::Path::new("/proc/self/fd").is_dir() {
        unnamed_in(&dir).ok()
    } else {
        None
    };
    let mut named = None;
    let out = match unnamed {
        Some(f) => f,
        None => {
            let tmp = tempfile::Builder::new()
                .prefix(".cellar-restore-")
                .tempfile_in(&dir)
                .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
            let f = tmp.reopen()?;
            named = Some(tmp);
            f
        }
    };
    fetch.stream(m, p, |r| {
        // Write-out starts as the file grows, so the fsync is short.
        pipeline::copy_buffered(r, &mut pipeline::writeback::WriteBehind::new(&out))
            .and_then(|_| out.sync_all())
            .with_context(|| format!("writing the restored file in {}", dir.display()))
    })?;
    match named {
        None => link_into_place(&out, file),
        Some(tmp) => tmp.persist_noclobber(file).map(|_| ()).map_err(|e| e.error),
    }
    .with_context(|| format!("moving the restored file to {}", file.display()))?;
    crate::state::sync_parent(file)
        .with_context(|| format!("flushing the folder of {}", file.display()))?;
    Ok(())
}

/// An unnamed regular file in `dir` (mode 0600), gone with its last
/// descriptor unless linked.
fn unnamed_in(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// Gives the unnamed file `f` the name `path`; fails, replacing nothing,
/// when `path` exists.
fn link_into_place(f: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Extracts a files backup beside `dir` and renames it into place once
/// verified. `dir` must not exist or be empty.
pub fn to_dir(fetch: &Fetch<'_>, m: &Manifest, p: &Payload, dir: &Path) -> anyhow::Result<()> {
    if p.content != Content::Tar {
        bail!(
            "backup {} is a database dump; use --to-database or --to-file",
            m.id
        );
    }
    let existed_empty = check_dir_target(dir)?;
    let parent = parent_of(dir);
    // Folders made on the way are removed again if the restore fails.
    let mut made = Vec::new();
    let mut missing = parent.as_path();
    while !missing.as_os_str().is_empty() && std::fs::symlink_metadata(missing).is_err() {
        made.push(missing.to_path_buf());
        missing = missing.parent().unwrap_or(Path::new(""));
    }
    // Not writable by others whatever the umask (002 is common): the
    // folders on the way must pass the check below.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let r = to_dir_in(fetch, m, p, dir, &parent, existed_empty);
    if r.is_err() {
        for d in &made {
            let _ = std::fs::remove_dir(d);
        }
    }
    r
}

/// The hidden folder a `--to-dir` restore writes into, then `PID-`.
const INCOMING: &str = ".cellar-incoming-";

/// Removes what restores killed with `kill -9` left in `parent`: hidden
/// folders of ours that no process holds (each restore holds a `flock` on
/// its folder for as long as it runs, whichever PID namespace or host it
/// runs in). A folder whose process still runs is left alone.
fn sweep_incoming(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(INCOMING))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // Ours (not a symlink: never followed), and verified or not.
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        let held = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(e.path())
                .and_then(|f| crate::lock::try_exclusive(&f))
                .map_or(true, |got| !got)
        };
        if ours && !alive && !held() {
            let path = e.path();
            let _ = untar::make_removable(&path);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::warn!(
                    "removed {}, left by a restore that was killed (process {pid})",
                    path.display()
                ),
                Err(err) => tracing::warn!(
                    "cannot remove {}, left by a restore that was killed: {err}",
                    path.display()
                ),
            }
        }
    }
}

fn to_dir_in(
    fetch: &Fetch<'_>,
    m: &Manifest,
    p: &Payload,
    dir: &Path,
    parent: &Path,
    existed_empty: bool,
) -> anyhow::Result<()> {
    // Every folder on the way is resolved once and must be safe from other
    // users: one who could rename the hidden folder could redirect the
    // restore's writes and chmods elsewhere.
    let parent =
        std::fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    safe_folder(&parent)?;
    let dir = &parent.join(dir.file_name().expect("checked: a final name"));
    // Only this user can enter the hidden folder until every byte is
    // verified: the tree is written while the payload streams in, and a
    // payload swapped in the store could hold a setuid file or a device
    // that another local user must never reach before the hashes fail.
    sweep_incoming(&parent);
    let incoming = tempfile::Builder::new()
        .prefix(&format!("{INCOMING}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a folder in {}", parent.display()))?;
    // Held while this restore lives (the kernel lets go when it dies, in
    // any PID namespace): what tells a sweep that the folder is in use.
    let _in_use = File::open(incoming.path())
        .and_then(|f| crate::lock::try_exclusive(&f).map(|_| f))
        .with_context(|| format!("locking {}", incoming.path().display()))?;
    if let Err(e) = fetch.stream(m, p, |r| untar::extract(r, incoming.path())) {
        // Folders restored read-only must not keep the tree from going.
        let _ = untar::make_removable(incoming.path());
        return Err(e.into());
    }
    std::fs::set_permissions(
        incoming.path(),
        std::fs::Permissions::from_mode(0o777 & !umask()),
    )
    .with_context(|| format!("setting the mode of {}", incoming.path().display()))?;
    if existed_empty {
        std::fs::remove_dir(dir)
            .with_context(|| format!("replacing the empty {}", dir.display()))?;
    }
    // On failure the hidden folder and the tree in it are removed.
    std::fs::rename(incoming.path(), dir).with_context(|| {
        format!(
            "moving the restored tree from {} to {}",
            incoming.path().display(),
            dir.display()
        )
    })?;
    let _ = incoming.keep();
    crate::state::sync_parent(dir)
        .with_context(|| format!("flushing the folder of {}", dir.display()))?;
    Ok(())
}

/// The process's umask (read from /proc, which does not change it).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Restores the roles and tablespaces (or MariaDB's users and grants)
/// payload, after verifying it whole.
pub fn globals(fetch: &Fetch<'_>, m: &Manifest, conn: &DbConn) -> anyhow::Result<()> {
    if fetch.profile.kind == crate::profile::Kind::Mariadb {
        let later = mariadb::globals(fetch, m, conn)?;
        mariadb::object_grants(conn, &later);
        return Ok(());
    }
    let Some(p) = m.payloads.iter().find(|p| p.content == Content::Globals) else {
        bail!(
            "backup {} has no roles and tablespaces (the profile has globals = false)",
            m.id
        );
    };
    // Checked whole before any of it runs: spooled to an unnamed file.
    let mut tmp = tempfile::tempfile()?;
    fetch.stream(m, p, |r| {
        std::io::copy(r, &mut tmp)?;
        Ok(())
    })?;
    use std::io::{Read, Seek};
    tmp.rewind()?;
    let mut sql = Vec::new();
    tmp.read_to_end(&mut sql)?;
    // Roles and tablespaces that exist are left exactly as they are: no
    // password, attribute, setting or membership of theirs is changed.
    let (roles, spaces) = postgres::existing_globals(conn)?;
    let (sql, left) = postgres::globals_for_new_only(&sql, &roles, &spaces);
    for name in &left {
        warn!("globals: {name} exists on the server and was left as it is");
    }
    // Roles made in the meantime are errors psql reports and carries past;
    // any other error fails the restore before the database is touched.
    let notes = postgres::psql_restricted(conn, "postgres", false, &mut sql.as_slice())?;
    let mut failed = Vec::new();
    for line in notes.lines().filter(|l| l.contains("ERROR")) {
        if line.contains("already exists") {
            warn!("globals: {line}");
        } else {
            failed.push(line.trim().to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "applying the roles and tablespaces failed, so the database restore did not start: {}",
            failed.join("; ")
        );
    }
    Ok(())
}
