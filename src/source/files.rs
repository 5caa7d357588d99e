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
//!   swapped for a FIFO cannot hang the backup; below a listed folder,
//!   from that folder with no symlink followed on the way), and its header takes the
//!   size `fstat` reports on the open file. Exactly that many bytes follow:
//!   a file that grew is cut there, one that shrank is padded with zeros.
//!   Either, or an mtime or ctime that moved while it was read, makes the
//!   file "changed during the backup": a warning naming it, counted in
//!   [`TarStats::changed`]. The archive stays valid in every case.
//! - FIFOs and sockets are skipped with a warning and never read.
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
    /// Paths longer than a restore accepts, left out.
    pub too_long: u64,
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
        if self.too_long > 0 {
            out.push(format!(
                "{} path(s) longer than {MAX_NAME} bytes skipped",
                self.too_long
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
    /// content was archived under, and the file's state then. Later names
    /// become hard link entries.
    links: std::collections::HashMap<(u64, u64), (PathBuf, Stamp)>,
    /// The listed folder being walked, open: files below it are opened
    /// relative to it without following any symlink.
    dir: Option<(File, PathBuf)>,
}

/// What says a file is still the one archived: an inode number freed by a
/// delete and given to a new file during the backup has another ctime.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: u64,
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp {
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
            size: m.len(),
        }
    }
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
        dir: None,
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
        // A symlink's target over 100 bytes goes in a long-link entry.
        let target = if ft.is_symlink() {
            std::fs::read_link(path).map_or(0, |t| long(t.as_os_str().len() as u64))
        } else {
            0
        };
        512 + long(name) + data + target
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
        self.dir = File::open(root)
            .ok()
            .filter(|f| {
                f.metadata()
                    .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
            })
            .map(|f| (f, root.to_path_buf()));
        let result = self.walk(root, &meta);
        self.dir = None;
        result
    }

    fn walk(&mut self, root: &Path, meta: &Metadata) -> anyhow::Result<()> {
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
                        if entry.file_type().is_dir() {
                            walker.skip_current_dir();
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        self.unreadable(path, e)?;
                        if entry.file_type().is_dir() {
                            walker.skip_current_dir();
                        }
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                        self.replaced(path.parent().unwrap_or(root));
                        if entry.file_type().is_dir() {
                            walker.skip_current_dir();
                        }
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
        self.stats.too_long += 1;
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
                // No longer a symlink.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.replaced(path);
                    return Ok(());
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            header.set_entry_type(tar::EntryType::Symlink);
            // The target byte for byte (`set_link_name` would tidy `a//b`
            // and `./a`); a long one goes in a GNU long-link entry as is.
            use std::os::unix::ffi::OsStrExt;
            let bytes = target.as_os_str().as_bytes();
            let appended = if bytes.len() <= 100 {
                header
                    .set_link_name_literal(bytes)
                    .and_then(|()| self.builder.append_data(&mut header, &name, io::empty()))
            } else {
                self.builder.append_link(&mut header, &name, &target)
            };
            appended.with_context(|| format!("archiving {}", path.display()))?;
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
        let mut file = match self.open(path, root) {
            Ok(f) => f,
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::NotFound => {
                        self.vanished(path);
                        Ok(())
                    }
                    io::ErrorKind::PermissionDenied => self.unreadable(path, e),
                    // It, or a folder on its way, became a symlink (ELOOP,
                    // EXDEV) or something else (ENOTDIR; ENXIO: a socket)
                    // since the listing.
                    _ if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR | libc::ENXIO)
                    ) =>
                    {
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
            if let Some((first, _)) = self
                .links
                .get(&id)
                .filter(|(_, then)| *then == Stamp::of(&before))
            {
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
            self.links
                .insert(id, (name.to_path_buf(), Stamp::of(&before)));
        }
        self.stats.entries += 1;
        self.stats.files += 1;
        Ok(())
    }

    /// Opens a regular file for reading. Below a listed folder, the name
    /// is resolved from that folder without following any symlink
    /// (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`), so a folder
    /// on the way swapped for a symlink cannot lead out of the tree; on
    /// kernels without `openat2`, the last component only is not followed.
    /// `O_NONBLOCK` keeps a file swapped for a FIFO from hanging the
    /// backup; a file under a lease (EWOULDBLOCK) is opened again without
    /// it once it is known to be a regular file, which waits for the
    /// lease to be broken, as GNU tar does.
    fn open(&self, path: &Path, root: bool) -> io::Result<File> {
        let flags = libc::O_NONBLOCK | libc::O_NOCTTY | if root { 0 } else { libc::O_NOFOLLOW };
        let beneath = |flags: i32| -> Option<io::Result<File>> {
            let (dir, base) = self.dir.as_ref().filter(|_| !root)?;
            open_beneath(dir, path.strip_prefix(base).ok()?, flags)
        };
        let plain = |flags: i32| File::options().read(true).custom_flags(flags).open(path);
        match beneath(flags).unwrap_or_else(|| plain(flags)) {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                // A listed path is followed, as above.
                let path_flags = libc::O_PATH | if root { 0 } else { libc::O_NOFOLLOW };
                let at = beneath(path_flags).unwrap_or_else(|| plain(path_flags))?;
                if !at.metadata()?.is_file() {
                    return Err(io::Error::from_raw_os_error(libc::ENXIO));
                }
                let fd = std::os::fd::AsRawFd::as_raw_fd(&at);
                File::options()
                    .read(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(format!("/proc/self/fd/{fd}"))
            }
            other => other,
        }
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

/// `rel` opened below the folder `dir` with `flags` (read only), never
/// through a symlink and never outside it; `None` when the kernel has no
/// `openat2` (before Linux 5.6, or a sandbox that forbids it).
fn open_beneath(dir: &File, rel: &Path, flags: i32) -> Option<io::Result<File>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    static MISSING: AtomicBool = AtomicBool::new(false);
    if MISSING.load(Ordering::Relaxed) {
        return None;
    }
    let Ok(name) = std::ffi::CString::new(rel.as_os_str().as_bytes()) else {
        return Some(Err(io::Error::from_raw_os_error(libc::EINVAL)));
    };
    // SAFETY: open_how is plain data; zero is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid descriptor, a NUL-terminated name and a live open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            MISSING.store(true, Ordering::Relaxed);
            return None;
        }
        return Some(Err(e));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Some(Ok(unsafe { File::from_raw_fd(fd as i32) }))
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

    fn source(root: PathBuf) -> FilesSource {
        FilesSource {
            paths: vec![root],
            exclude: Vec::new(),
            fail_on_change: false,
            skip_unreadable: false,
        }
    }

    /// A tar sink that runs `hook` once, when a write equal to `when`
    /// comes by (a file's content, written in one piece).
    struct Hooked<F: FnMut()> {
        tar: Vec<u8>,
        when: &'static [u8],
        hook: Option<F>,
    }

    impl<F: FnMut()> Write for Hooked<F> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.tar.extend_from_slice(buf);
            if buf == self.when {
                if let Some(mut hook) = self.hook.take() {
                    hook();
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn contents(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut out = Vec::new();
        for e in tar::Archive::new(tar).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut text = String::new();
            e.read_to_string(&mut text).unwrap();
            out.push((name, kind, text));
        }
        out
    }

    /// A file's second name links to the first only while the file is
    /// the one archived then: one changed in between (or an inode number
    /// given to a new file) is archived in full under its second name.
    #[test]
    fn a_second_name_links_only_to_the_same_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("a/x"), b"first").unwrap();
        std::fs::hard_link(root.join("a/x"), root.join("b/x")).unwrap();
        let b = root.join("b/x");
        let mut out = Hooked {
            tar: Vec::new(),
            when: b"first",
            hook: Some(|| {
                let mut f = std::fs::OpenOptions::new().append(true).open(&b).unwrap();
                f.write_all(b" and more").unwrap();
            }),
        };
        write_tar(&source(root.clone()), &mut out).unwrap();
        let got = contents(&out.tar);
        let x = |n: &str| got.iter().find(|e| e.0.ends_with(n)).unwrap().clone();
        assert_eq!(x("a/x").1, tar::EntryType::Regular);
        assert_eq!(x("a/x").2, "first");
        assert_eq!(x("b/x").1, tar::EntryType::Regular);
        assert_eq!(x("b/x").2, "first and more");

        // Unchanged: a link, as before.
        let mut tar = Vec::new();
        write_tar(&source(root), &mut tar).unwrap();
        let got = contents(&tar);
        let b = got.iter().find(|e| e.0.ends_with("b/x")).unwrap();
        assert_eq!(b.1, tar::EntryType::Link);
    }

    /// A folder on the way to a file swapped for a symlink between the
    /// walk's checks and the open: the file is opened from the listed
    /// folder without following it, so nothing outside is read.
    #[test]
    fn files_below_a_listed_folder_are_never_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"inside").unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/f"), b"SECRET").unwrap();
        std::fs::rename(root.join("d"), dir.path().join("d.real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("d")).unwrap();
        let folder = File::open(&root).unwrap();
        let Some(r) = open_beneath(&folder, Path::new("d/f"), libc::O_NOFOLLOW) else {
            eprintln!("no openat2 on this kernel: nothing to test");
            return;
        };
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ELOOP));
        // The writer maps it to "replaced": left out, never read.
        let mut sink = io::sink();
        let src = source(root.clone());
        let mut w = Writer {
            builder: tar::Builder::new(&mut sink as &mut dyn Write),
            source: &src,
            stats: TarStats::default(),
            root_user: false,
            buf: vec![0; 64],
            links: std::collections::HashMap::new(),
            dir: Some((folder, root.clone())),
        };
        let listed = std::fs::metadata(root.join("d/f")).unwrap();
        w.file(
            &root.join("d/f"),
            Path::new("t/d/f"),
            false,
            (listed.dev(), listed.ino()),
        )
        .unwrap();
        assert_eq!((w.stats.files, w.stats.vanished), (0, 1));
        // `..` cannot climb out either.
        let folder = File::open(&root).unwrap();
        let e = open_beneath(&folder, Path::new("../outside/f"), 0).unwrap();
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EXDEV));
    }

    /// Symlink targets are kept byte for byte, short and long.
    #[test]
    fn symlink_targets_are_archived_as_they_are() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(&root).unwrap();
        let long = format!("./{}//x/./", "d".repeat(120));
        let hundred = "e".repeat(100);
        let targets = ["./x//y/./z", "/", "a/", &long, &hundred];
        for (i, t) in targets.iter().enumerate() {
            std::os::unix::fs::symlink(t, root.join(format!("l{i}"))).unwrap();
        }
        let mut tar = Vec::new();
        write_tar(&source(root.clone()), &mut tar).unwrap();
        let mut got = std::collections::BTreeMap::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let e = e.unwrap();
            if let Some(l) = e.link_name_bytes() {
                let name = e.path().unwrap().file_name().unwrap().as_bytes().to_vec();
                got.insert(name, l.into_owned());
            }
        }
        for (i, t) in targets.iter().enumerate() {
            assert_eq!(got[format!("l{i}").as_bytes()], t.as_bytes(), "l{i}");
        }
        let stop = AtomicBool::new(false);
        assert_eq!(tar_size(&source(root), &stop), Some(tar.len() as u64));
    }
}
