//! Folders as tar archives, and back.
//!
//! Archiving walks each listed path (walkdir, not following symlinks) and
//! appends every entry with its mode, owner and mtime; symlinks stay
//! symlinks and empty folders are kept. Entry names are the absolute paths
//! without the leading `/`, as GNU tar writes them, so `tar -x` puts the
//! tree back under any folder. Sockets cannot be archived and are skipped
//! with a warning.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::profile::{Exclude, FilesSource};

#[derive(Debug, Default, Clone)]
pub struct TarStats {
    pub entries: u64,
    /// Regular files among the entries.
    pub files: u64,
    pub skipped: u64,
}

/// Writes a tar stream of the profile's paths to `out`.
pub fn write_tar(source: &FilesSource, out: &mut dyn Write) -> anyhow::Result<TarStats> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let mut stats = TarStats::default();
    for root in &source.paths {
        let meta = std::fs::symlink_metadata(root)
            .with_context(|| format!("cannot read {}; fix `paths` in [source]", root.display()))?;
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !excluded(&source.exclude, root, e.path(), e.file_type().is_dir()));
        let _ = meta;
        for entry in walker {
            let entry = entry.with_context(|| format!("walking {}", root.display()))?;
            let path = entry.path();
            let name = archive_name(path);
            let ft = entry.file_type();
            use std::os::unix::fs::FileTypeExt;
            if ft.is_socket() {
                tracing::warn!("skipping socket {}", path.display());
                stats.skipped += 1;
                continue;
            }
            if name.as_os_str().is_empty() {
                // The root "/" itself: its children carry the content.
                continue;
            }
            builder
                .append_path_with_name(path, &name)
                .with_context(|| format!("archiving {}", path.display()))?;
            stats.entries += 1;
            if ft.is_file() {
                stats.files += 1;
            }
        }
    }
    builder.into_inner()?.flush()?;
    Ok(stats)
}

fn excluded(exclude: &[Exclude], root: &Path, path: &Path, is_dir: bool) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return false;
    }
    exclude.iter().any(|x| x.matches(rel, is_dir))
}

fn archive_name(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

fn archive(input: &mut dyn Read) -> tar::Archive<&mut dyn Read> {
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(false);
    // Owners can only be restored by root; others get their own.
    a.set_preserve_ownerships(unsafe { libc::geteuid() } == 0);
    a.set_overwrite(false);
    a
}

/// Extracts a tar stream into `dest`, which must exist and be empty.
///
/// Folders are created last (as tar's own `unpack` does, so a read-only
/// folder cannot block its content) and get their mtimes after everything
/// else, deepest first, since adding an entry changes its folder's mtime.
/// Entries that would land outside `dest` are refused.
pub fn extract(input: &mut dyn Read, dest: &Path) -> anyhow::Result<()> {
    let mut a = archive(input);
    let mut dirs = Vec::new();
    let mut times = Vec::new();
    for entry in a.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let path = entry
            .path()
            .context("reading an entry's name")?
            .into_owned();
        if entry.header().entry_type().is_dir() {
            if let Ok(mtime) = entry.header().mtime() {
                times.push((dest.join(&path), mtime));
            }
            dirs.push(entry);
            continue;
        }
        unpack_one(&mut entry, &path, dest)?;
    }
    for mut entry in dirs {
        let path = entry
            .path()
            .context("reading an entry's name")?
            .into_owned();
        unpack_one(&mut entry, &path, dest)?;
    }
    times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dir, mtime) in times {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        std::fs::File::open(&dir)
            .and_then(|f| f.set_modified(t))
            .with_context(|| format!("setting the mtime of {}", dir.display()))?;
    }
    Ok(())
}

fn unpack_one<R: Read>(entry: &mut tar::Entry<R>, path: &Path, dest: &Path) -> anyhow::Result<()> {
    let inside = entry
        .unpack_in(dest)
        .with_context(|| format!("extracting {}", path.display()))?;
    if !inside {
        anyhow::bail!(
            "the archive entry {} points outside the target folder; refusing it",
            path.display()
        );
    }
    Ok(())
}

/// Reads every entry and its content, proving the archive is whole.
pub fn check(input: &mut dyn Read) -> anyhow::Result<u64> {
    let mut a = archive(input);
    let mut n = 0;
    for entry in a.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        io::copy(&mut entry, &mut io::sink()).context("reading an archive member")?;
        n += 1;
    }
    Ok(n)
}
