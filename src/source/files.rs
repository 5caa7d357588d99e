//! Folders as tar archives: the writing side. [`untar`](super::untar)
//! reads them back.
//!
//! Archiving walks each listed path (walkdir, not following symlinks below
//! the listed path) and appends every entry with its mode, owner and mtime;
//! symlinks stay symlinks and empty folders are kept. Entry names are the
//! absolute paths without the leading `/`, as GNU tar writes them, so
//! `tar -x` puts the tree back under any folder.
//!
//! The system is live while it is read, so nothing here trusts a `stat`
//! to still hold a moment later:
//!
//! - A regular file is opened first (`O_NOFOLLOW | O_NONBLOCK`, so a file
//!   swapped for a FIFO cannot hang the backup), and its header takes the
//!   size `fstat` reports on the open file. Exactly that many bytes follow:
//!   a file that grew is cut there, one that shrank is padded with zeros.
//!   Either, or an mtime or ctime that moved while it was read, makes the
//!   file "changed during the backup": a warning naming it, counted in
//!   [`TarStats::changed`]. The archive stays valid in every case.
//! - FIFOs and sockets are skipped with a warning and never opened.
//!   Character and block devices are archived as device entries when run
//!   as root, else skipped with a warning.
//! - A file or folder that vanishes during the walk is a warning. An
//!   unreadable one fails the backup, or is a warning with
//!   `skip_unreadable = true`.
//! - A listed path that is a symlink is archived as its target (the
//!   target's tree, or its content) under the link's own name.

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tracing::warn;

use crate::profile::{Exclude, FilesSource};

#[derive(Debug, Default, Clone)]
pub struct TarStats {
    pub entries: u64,
    /// Regular files among the entries.
    pub files: u64,
    /// FIFOs, sockets, and devices when not root: not archived.
    pub special: u64,
    /// Files and folders that disappeared between the listing and the read.
    pub vanished: u64,
    /// Unreadable files skipped (`skip_unreadable = true`).
    pub unreadable: u64,
    /// Files that changed while they were read, by path (the first 100).
    pub changed_names: Vec<String>,
    pub changed: u64,
}

impl TarStats {
    /// One line per kind of entry left out, for the manifest's `skipped`.
    /// Counts only: the manifest sits unencrypted in the store, and file
    /// names can be private. The log names each file.
    pub fn skipped(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.vanished > 0 {
            out.push(format!(
                "{} file(s) or folder(s) vanished during the backup",
                self.vanished
            ));
        }
        if self.special > 0 {
            out.push(format!(
                "{} FIFO(s), socket(s) or device(s) skipped",
                self.special
            ));
        }
        if self.unreadable > 0 {
            out.push(format!(
                "{} unreadable file(s) skipped (skip_unreadable = true)",
                self.unreadable
            ));
        }
        out
    }
}

const COPY_BUFFER: usize = 256 * 1024;

/// The longest path archived; [`super::untar`] refuses longer names.
pub const MAX_NAME: usize = 3840;

struct Writer<'a, 'o> {
    builder: tar::Builder<&'o mut dyn Write>,
    source: &'a FilesSource,
    stats: TarStats,
    root_user: bool,
    buf: Vec<u8>,
    /// Files with more than one name: (device, inode) → the name their
    /// content was archived under. Later names become hard link entries.
    links: std::collections::HashMap<(u64, u64), PathBuf>,
}

/// Writes a tar stream of the profile's paths to `out`.
pub fn write_tar(source: &FilesSource, out: &mut dyn Write) -> anyhow::Result<TarStats> {
    let mut w = Writer {
        builder: tar::Builder::new(out),
        source,
        stats: TarStats::default(),
        root_user: unsafe { libc::geteuid() } == 0,
        buf: vec![0; COPY_BUFFER],
        links: std::collections::HashMap::new(),
    };
    for root in &source.paths {
        w.root(root)?;
    }
    let stats = std::mem::take(&mut w.stats);
    w.builder.into_inner()?.flush()?;
    Ok(stats)
}

/// About the size the tar of `source` will have, from a walk of its own
/// that opens nothing (headers, long names, contents padded to blocks);
/// `None` once `stop` is set. Files that change meanwhile make it off by
/// as much: it feeds the progress line and nothing else.
pub fn tar_size(source: &FilesSource, stop: &AtomicBool) -> Option<u64> {
    let block = |n: u64| n.div_ceil(512) * 512;
    // A name over 100 bytes goes before its header as a GNU long name.
    let long = |n: u64| if n > 100 { 512 + block(n + 1) } else { 0 };
    let mut links: std::collections::HashMap<(u64, u64), u64> = std::collections::HashMap::new();
    let mut entry = |path: &Path, meta: &Metadata| -> u64 {
        let name = archive_name(path).as_os_str().len() as u64;
        let ft = meta.file_type();
        if name == 0 || !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
            return 0;
        }
        if ft.is_file() && meta.nlink() > 1 {
            match links.entry((meta.dev(), meta.ino())) {
                // A hard link entry: its name and its target's.
                std::collections::hash_map::Entry::Occupied(first) => {
                    return 512 + long(name) + long(*first.get());
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(name);
                }
            }
        }
        let data = if ft.is_file() { block(meta.len()) } else { 0 };
        512 + long(name) + data
    };
    // The two zero blocks that end the archive.
    let mut total = 1024;
    for root in &source.paths {
        let Ok(meta) = std::fs::metadata(root) else {
            continue;
        };
        if !meta.is_dir() {
            total += entry(root, &meta);
            continue;
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0 || !excluded(&source.exclude, root, e.path(), e.file_type().is_dir())
            });
        for e in walker.flatten() {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let meta = if e.depth() == 0 {
                meta.clone()
            } else {
                match e.metadata() {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            };
            total += entry(e.path(), &meta);
        }
    }
    Some(total)
}

impl Writer<'_, '_> {
    fn root(&mut self, root: &Path) -> anyhow::Result<()> {
        // The listed path itself is followed: a symlink stands for its target.
        let meta = std::fs::metadata(root)
            .with_context(|| format!("cannot read {}; fix `paths` in [source]", root.display()))?;
        if !meta.is_dir() {
            return self.entry(root, meta, true);
        }
        let exclude = &self.source.exclude;
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0 || !excluded(exclude, root, e.path(), e.file_type().is_dir())
            });
        // (dev, ino) of each folder on the way down, by depth: a folder
        // swapped for a symlink while it is walked is noticed, and never
        // followed out of the tree.
        let mut folders: Vec<(u64, u64)> = Vec::new();
        while let Some(item) = walker.next() {
            let entry = match item {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_owned();
                    let os = e.io_error().and_then(|io| io.raw_os_error());
                    match e.io_error().map(|io| io.kind()) {
                        Some(io::ErrorKind::NotFound) => self.vanished(&path),
                        Some(io::ErrorKind::PermissionDenied) => self.unreadable(&path, e)?,
                        // A folder replaced by a file or a link meanwhile.
                        _ if matches!(os, Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                            self.replaced(&path)
                        }
                        _ if os == Some(libc::ENAMETOOLONG) => self.too_long(&path),
                        _ => {
                            return Err(anyhow::Error::new(e))
                                .with_context(|| format!("walking {}", root.display()))
                        }
                    }
                    continue;
                }
            };
            let path = entry.path();
            let depth = entry.depth();
            if depth > 0 {
                let parent = path.parent().unwrap_or(root);
                // The listed root may be a symlink: it is followed.
                let now = if depth == 1 {
                    std::fs::metadata(parent)
                } else {
                    std::fs::symlink_metadata(parent)
                };
                let same = now.as_ref().is_ok_and(|m| {
                    m.is_dir() && folders.get(depth - 1) == Some(&(m.dev(), m.ino()))
                });
                if !same {
                    self.replaced(parent);
                    walker.skip_current_dir();
                    continue;
                }
            }
            let meta = if depth == 0 {
                meta.clone()
            } else {
                match std::fs::symlink_metadata(path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.vanished(path);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        self.unreadable(path, e)?;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                        self.replaced(path.parent().unwrap_or(root));
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                        self.too_long(path);
                        continue;
                    }
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            };
            if entry.file_type().is_dir() && !meta.is_dir() {
                // Listed as a folder, now something else: never descended.
                self.replaced(path);
                walker.skip_current_dir();
                continue;
            }
            if meta.is_dir() {
                folders.truncate(depth);
                folders.push((meta.dev(), meta.ino()));
            }
            if path.as_os_str().len() > MAX_NAME {
                self.too_long(path);
                if meta.is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            self.entry(path, meta, depth == 0)?;
        }
        Ok(())
    }

    /// A name longer than a restore accepts ([`MAX_NAME`]): left out, so
    /// the backup never holds what cannot come back.
    fn too_long(&mut self, path: &Path) {
        warn!(
            "{:.200}... has a path longer than {MAX_NAME} bytes, which no restore could write; it is not in this backup",
            path.display()
        );
        self.stats.special += 1;
    }

    fn vanished(&mut self, path: &Path) {
        warn!(
            "{} vanished during the backup; it is not in this backup",
            path.display()
        );
        self.stats.vanished += 1;
    }

    fn unreadable(&mut self, path: &Path, e: impl std::fmt::Display) -> anyhow::Result<()> {
        if !self.source.skip_unreadable {
            anyhow::bail!(
                "cannot read {}: {e}; give cellar read access, exclude it in [source] exclude, or set skip_unreadable = true",
                path.display()
            );
        }
        warn!(
            "skipping unreadable {} (skip_unreadable = true): {e}",
            path.display()
        );
        self.stats.unreadable += 1;
        Ok(())
    }

    fn entry(&mut self, path: &Path, meta: Metadata, root: bool) -> anyhow::Result<()> {
        let name = archive_name(path);
        if name.as_os_str().is_empty() {
            // The root "/" itself: its children carry the content.
            return Ok(());
        }
        let ft = meta.file_type();
        let mut header = header_for(&meta);
        if ft.is_file() {
            return self.file(path, &name, root, (meta.dev(), meta.ino()));
        } else if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            self.builder
                .append_data(&mut header, &name, io::empty())
                .with_context(|| format!("archiving {}", path.display()))?;
        } else if ft.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.vanished(path);
                    return Ok(());
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            header.set_entry_type(tar::EntryType::Symlink);
            self.builder
                .append_link(&mut header, &name, &target)
                .with_context(|| format!("archiving {}", path.display()))?;
        } else if (ft.is_char_device() || ft.is_block_device()) && self.root_user {
            header.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = meta.rdev();
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
            self.builder
                .append_data(&mut header, &name, io::empty())
                .with_context(|| format!("archiving {}", path.display()))?;
        } else {
            let what = if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else {
                "device (only root archives devices)"
            };
            warn!("skipping the {what} {}", path.display());
            self.stats.special += 1;
            return Ok(());
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A regular file, with exactly the size it had when it was opened.
    fn file(
        &mut self,
        path: &Path,
        name: &Path,
        root: bool,
        listed: (u64, u64),
    ) -> anyhow::Result<()> {
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if !root {
            flags |= libc::O_NOFOLLOW;
        }
        let mut file = match File::options().read(true).custom_flags(flags).open(path) {
            Ok(f) => f,
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::NotFound => {
                        self.vanished(path);
                        Ok(())
                    }
                    io::ErrorKind::PermissionDenied => self.unreadable(path, e),
                    // ELOOP: it became a symlink since the listing.
                    _ if e.raw_os_error() == Some(libc::ELOOP) => {
                        self.replaced(path);
                        Ok(())
                    }
                    _ => Err(e).with_context(|| format!("opening {}", path.display())),
                };
            }
        };
        let before = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        // Another file than the one listed (its folder was swapped
        // meanwhile): never archived under this name.
        if !before.is_file() || (before.dev(), before.ino()) != listed {
            self.replaced(path);
            return Ok(());
        }
        let id = (before.dev(), before.ino());
        if before.nlink() > 1 {
            if let Some(first) = self.links.get(&id) {
                // Another name of a file already in the archive.
                let mut header = header_for(&before);
                header.set_entry_type(tar::EntryType::Link);
                self.builder
                    .append_link(&mut header, name, first)
                    .with_context(|| format!("archiving {}", path.display()))?;
                self.stats.entries += 1;
                return Ok(());
            }
        }
        let size = before.len();
        let mut header = header_for(&before);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        // The header (and a long-name entry before it), then the content.
        self.builder
            .append_data(&mut header, name, io::empty())
            .with_context(|| format!("archiving {}", path.display()))?;
        let out = self.builder.get_mut();
        let mut left = size;
        let mut short = false;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = if short {
                0
            } else {
                match file.read(&mut self.buf[..want]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            };
            if n == 0 {
                // Shrank: pad with zeros up to the recorded size.
                short = true;
                self.buf[..want].fill(0);
                out.write_all(&self.buf[..want])?;
                left -= want as u64;
            } else {
                out.write_all(&self.buf[..n])?;
                left -= n as u64;
            }
        }
        let pad = (512 - size % 512) % 512;
        out.write_all(&[0u8; 512][..pad as usize])?;
        let grew = !short && matches!(file.read(&mut [0u8; 1]), Ok(1));
        let after = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        let moved = after.len() != before.len()
            || after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
            || after.ctime() != before.ctime()
            || after.ctime_nsec() != before.ctime_nsec();
        if short || grew || moved {
            let how = if short {
                format!("it shrank while it was read; padded with zeros to {size} bytes")
            } else if grew {
                format!("it grew while it was read; cut at {size} bytes")
            } else {
                "it was modified while it was read".to_string()
            };
            warn!("file changed as we read it: {}: {how}", path.display());
            self.stats.changed += 1;
            if self.stats.changed_names.len() < 100 {
                self.stats.changed_names.push(path.display().to_string());
            }
        }
        if before.nlink() > 1 {
            self.links.insert(id, name.to_path_buf());
        }
        self.stats.entries += 1;
        self.stats.files += 1;
        Ok(())
    }

    /// Replaced by something of another type between the listing and the open.
    fn replaced(&mut self, path: &Path) {
        warn!(
            "{} was replaced by something else during the backup; it is not in this backup",
            path.display()
        );
        self.stats.vanished += 1;
    }
}

fn header_for(meta: &Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    // Before 1970: tar's unsigned field cannot say so; the epoch is close.
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_for_the_progress_total_adds_up_to_the_tar() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        let deep = root.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(root.join("small"), b"hello").unwrap();
        std::fs::write(root.join("block"), vec![7u8; 512]).unwrap();
        std::fs::write(deep.join("long-name-file"), vec![1u8; 70_000]).unwrap();
        std::fs::write(root.join("skip.tmp"), vec![0u8; 9_000]).unwrap();
        std::os::unix::fs::symlink("small", root.join("link")).unwrap();
        // Hard links, one with long names on both ends.
        std::fs::hard_link(root.join("small"), root.join("again")).unwrap();
        std::fs::hard_link(deep.join("long-name-file"), deep.join("c".repeat(90))).unwrap();
        let source = FilesSource {
            paths: vec![root],
            exclude: vec![Exclude::parse("*.tmp").unwrap()],
            fail_on_change: false,
            skip_unreadable: false,
        };
        let mut tar = Vec::new();
        write_tar(&source, &mut tar).unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(tar_size(&source, &stop), Some(tar.len() as u64));
        // Each content once: two hard link entries.
        let links = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .filter(|e| e.as_ref().unwrap().header().entry_type() == tar::EntryType::Link)
            .count();
        assert_eq!(links, 2);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(tar_size(&source, &stop), None);
    }
}
