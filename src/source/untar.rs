//! Reading tar archives back: one set of rules for `verify` and for
//! `restore --to-dir`, so verify passes exactly when a restore into an
//! empty folder would.
//!
//! Every entry is checked against a model of the tree built so far, before
//! anything is written:
//!
//! - its name is relative, without `..`, NUL or a component over 255 bytes;
//! - it appears once (a folder may follow entries inside it);
//! - every folder above it is a folder of the archive (or made for it), never
//!   a symlink, file or device of the archive: nothing is written through a
//!   link, whatever the link points to;
//! - a hard link names a regular file earlier in the archive;
//! - its type is a file, folder, symlink, hard link, FIFO or device, and its
//!   mode, mtime, owner and device fields parse.
//!
//! Extraction then writes only into the private folder it was given, which
//! holds nothing but what it created: files with `O_EXCL | O_NOFOLLOW`,
//! folders as 0700 until the end. Modes, owners (as root) and mtimes of
//! folders are applied last, deepest first; then the whole file system is
//! flushed (`syncfs`) before the caller renames the folder into place.
//! setuid and setgid bits are kept only when run as root (as GNU tar does
//! for ordinary users); devices are made only by root and skipped with a
//! warning otherwise. An mtime the file system cannot hold is a warning.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use tar::EntryType;
use tracing::warn;

#[derive(Debug, Default)]
pub struct Summary {
    pub entries: u64,
    /// Device entries not made (not root).
    pub devices_skipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A folder; `explicit` when the archive has an entry for it.
    Dir {
        explicit: bool,
    },
    File,
    Symlink,
    Special,
}

/// A folder's metadata, applied after everything inside it is written.
struct DirMeta {
    name: PathBuf,
    mode: u32,
    mtime: u64,
    owner: Option<(u64, u64)>,
}

struct Reader<'d> {
    /// `None`: check only (verify).
    dest: Option<&'d Path>,
    root_user: bool,
    tree: HashMap<PathBuf, Node>,
    dirs: Vec<DirMeta>,
    summary: Summary,
    buf: Vec<u8>,
}

/// Reads every entry and its content and applies the rules, writing
/// nothing: what `verify` runs.
pub fn check(input: &mut dyn Read) -> anyhow::Result<Summary> {
    Reader::new(None).run(input)
}

/// Extracts into `dest`, an empty folder only this process writes to.
pub fn extract(input: &mut dyn Read, dest: &Path) -> anyhow::Result<Summary> {
    let summary = Reader::new(Some(dest)).run(input)?;
    sync_fs(dest)?;
    Ok(summary)
}

fn archive(input: &mut dyn Read) -> tar::Archive<&mut dyn Read> {
    tar::Archive::new(input)
}

impl<'d> Reader<'d> {
    fn new(dest: Option<&'d Path>) -> Self {
        Reader {
            dest,
            root_user: unsafe { libc::geteuid() } == 0,
            tree: HashMap::new(),
            dirs: Vec::new(),
            summary: Summary::default(),
            buf: vec![0; 256 * 1024],
        }
    }

    fn run(mut self, input: &mut dyn Read) -> anyhow::Result<Summary> {
        let mut a = archive(input);
        for entry in a.entries().context("reading the archive")? {
            let mut entry = entry.context("reading the archive")?;
            let raw = entry
                .path()
                .context("reading an entry's name")?
                .into_owned();
            self.entry(&mut entry, &raw)
                .with_context(|| format!("archive entry {}", raw.display()))?;
        }
        self.finish_dirs()?;
        Ok(self.summary)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>, raw: &Path) -> anyhow::Result<()> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Archive-wide pax defaults (a comment, a charset): no file.
            return drain(entry, &mut self.buf);
        }
        let name = sanitize(raw)?;
        let h = entry.header();
        let mode = h.mode().context("reading its mode")?;
        let mtime = h.mtime().context("reading its mtime")?;
        let uid = h.uid().context("reading its owner")?;
        let gid = h.gid().context("reading its group")?;
        if name.as_os_str().is_empty() {
            // `./` itself, as `tar -C DIR .` writes it: the target folder.
            if kind.is_dir() {
                return Ok(());
            }
            bail!("an entry without a name that is not a folder");
        }
        self.parents(&name)?;
        let owner = self.root_user.then_some((uid, gid));
        let mode = if self.root_user {
            mode & 0o7777
        } else {
            mode & 0o1777
        };
        match kind {
            EntryType::Directory => {
                match self.tree.get(&name) {
                    None => {
                        self.mkdir(&name, 0o700)?;
                    }
                    Some(Node::Dir { explicit: false }) => {}
                    Some(_) => bail!("it appears twice in the archive"),
                }
                self.tree.insert(name.clone(), Node::Dir { explicit: true });
                self.dirs.push(DirMeta {
                    name,
                    mode,
                    mtime,
                    owner,
                });
                self.summary.entries += 1;
                return Ok(());
            }
            EntryType::GNUSparse => {
                // cellar never writes them, and a small one can stand for
                // terabytes of zeros.
                bail!("a sparse file entry; cellar restores only the entries it writes")
            }
            EntryType::Regular | EntryType::Continuous => {
                self.fresh(&name)?;
                self.tree.insert(name.clone(), Node::File);
                self.write_file(entry, &name, mode, mtime, owner)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .context("reading its link target")?
                    .context("a symlink without a target")?
                    .into_owned();
                if target.as_os_str().as_bytes().contains(&0) {
                    bail!("its link target holds a NUL byte");
                }
                self.fresh(&name)?;
                self.tree.insert(name.clone(), Node::Symlink);
                if let Some(path) = self.path(&name) {
                    std::os::unix::fs::symlink(&target, &path)?;
                    if let Some((u, g)) = owner {
                        std::os::unix::fs::lchown(&path, Some(u as u32), Some(g as u32))?;
                    }
                    let t = filetime::FileTime::from_unix_time(clamp(mtime), 0);
                    if let Err(e) = filetime::set_symlink_file_times(&path, t, t) {
                        warn!("cannot set the mtime of {}: {e}", name.display());
                    }
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("reading its link target")?
                    .context("a hard link without a target")?
                    .into_owned();
                let target = sanitize(&target)
                    .with_context(|| format!("its link target {}", target.display()))?;
                if self.tree.get(&target) != Some(&Node::File) {
                    bail!(
                        "a hard link to {}, which is not a regular file earlier in the archive",
                        target.display()
                    );
                }
                self.fresh(&name)?;
                self.tree.insert(name.clone(), Node::File);
                if let (Some(path), Some(to)) = (self.path(&name), self.path(&target)) {
                    std::fs::hard_link(to, path)?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (major, minor) = if kind == EntryType::Fifo {
                    (None, None)
                } else {
                    let h = entry.header();
                    (
                        h.device_major().context("reading its device")?,
                        h.device_minor().context("reading its device")?,
                    )
                };
                self.fresh(&name)?;
                self.tree.insert(name.clone(), Node::Special);
                if let Some(path) = self.path(&name) {
                    let ftype = match kind {
                        EntryType::Char => libc::S_IFCHR,
                        EntryType::Block => libc::S_IFBLK,
                        _ => libc::S_IFIFO,
                    };
                    if ftype != libc::S_IFIFO && !self.root_user {
                        warn!("{}: only root can make a device; skipped", name.display());
                        self.summary.devices_skipped += 1;
                        return drain(entry, &mut self.buf);
                    }
                    let dev = libc::makedev(major.unwrap_or(0), minor.unwrap_or(0));
                    let c = CString::new(path.as_os_str().as_bytes())?;
                    // SAFETY: a valid C string; mknod reads nothing else.
                    if unsafe { libc::mknod(c.as_ptr(), ftype | (mode & 0o777), dev) } != 0 {
                        return Err(io::Error::last_os_error().into());
                    }
                    if let Some((u, g)) = owner {
                        std::os::unix::fs::lchown(&path, Some(u as u32), Some(g as u32))?;
                    }
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                    set_mtime_path(&path, &name, mtime);
                }
            }
            other => bail!("its type {other:?} is not one cellar restores"),
        }
        self.summary.entries += 1;
        drain(entry, &mut self.buf)
    }

    /// Every folder above `name` is a folder: made now if the archive has
    /// not had it yet, refused if the archive made it something else.
    fn parents(&mut self, name: &Path) -> anyhow::Result<()> {
        // Up from the nearest parent to the first one the tree knows: its
        // own parents were checked when it was added (linear in depth).
        let mut missing = Vec::new();
        let mut above = name.parent();
        while let Some(a) = above.filter(|a| !a.as_os_str().is_empty()) {
            match self.tree.get(a) {
                Some(Node::Dir { .. }) => break,
                Some(Node::Symlink) => bail!(
                    "it lies beyond the symlink {} of the archive; refusing to write through a link",
                    a.display()
                ),
                Some(_) => bail!("it lies inside {}, which the archive made a file", a.display()),
                None => missing.push(a.to_path_buf()),
            }
            above = a.parent();
        }
        for a in missing.into_iter().rev() {
            // Made like `mkdir -p` would; not in the archive, so it keeps
            // these permissions.
            self.mkdir(&a, 0o755)?;
            self.tree.insert(a, Node::Dir { explicit: false });
        }
        Ok(())
    }

    fn fresh(&self, name: &Path) -> anyhow::Result<()> {
        match self.tree.get(name) {
            None => Ok(()),
            Some(Node::Dir { .. }) => bail!("a folder of the archive has the same name"),
            Some(_) => bail!("it appears twice in the archive"),
        }
    }

    fn path(&self, name: &Path) -> Option<PathBuf> {
        self.dest.map(|d| d.join(name))
    }

    fn mkdir(&self, name: &Path, mode: u32) -> anyhow::Result<()> {
        if let Some(path) = self.path(name) {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        name: &Path,
        mode: u32,
        mtime: u64,
        owner: Option<(u64, u64)>,
    ) -> anyhow::Result<()> {
        let Some(path) = self.path(name) else {
            return drain(entry, &mut self.buf);
        };
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading its content"),
            };
            f.write_all(&self.buf[..n])
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some((u, g)) = owner {
            std::os::unix::fs::fchown(&f, Some(u as u32), Some(g as u32))?;
        }
        // After chown, which clears setuid.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Err(e) = f.set_modified(time(mtime)) {
            warn!("cannot set the mtime of {}: {e}", name.display());
        }
        Ok(())
    }

    /// Folder modes, owners and mtimes, deepest first: a read-only folder
    /// is made read-only only once everything inside it exists, and
    /// nothing written later moves a folder's mtime.
    fn finish_dirs(&mut self) -> anyhow::Result<()> {
        let Some(dest) = self.dest else {
            return Ok(());
        };
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.name.components().count()));
        for d in dirs {
            let path = dest.join(&d.name);
            if let Some((u, g)) = d.owner {
                std::os::unix::fs::lchown(&path, Some(u as u32), Some(g as u32))?;
            }
            set_mtime_path(&path, &d.name, d.mtime);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(d.mode))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
        }
        Ok(())
    }
}

/// The archive's name as a relative path: `./` dropped; absolute names,
/// `..`, NUL bytes and over-long components refused.
fn sanitize(raw: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => {
                if part.len() > 255 {
                    bail!("a name component is longer than 255 bytes");
                }
                out.push(part)
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("an absolute name; cellar restores only relative names")
            }
            Component::ParentDir => bail!("a name with `..`; it would land outside the target"),
        }
    }
    if out.as_os_str().as_bytes().contains(&0) {
        bail!("a name with a NUL byte");
    }
    if out.as_os_str().len() > super::files::MAX_NAME {
        bail!("a name longer than {} bytes", super::files::MAX_NAME);
    }
    Ok(out)
}

fn clamp(mtime: u64) -> i64 {
    // Far beyond what any file system stores; never overflows SystemTime.
    mtime.min(1 << 40) as i64
}

fn time(mtime: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(clamp(mtime) as u64)
}

fn set_mtime_path(path: &Path, name: &Path, mtime: u64) {
    let t = filetime::FileTime::from_unix_time(clamp(mtime), 0);
    if let Err(e) = filetime::set_symlink_file_times(path, t, t) {
        warn!("cannot set the mtime of {}: {e}", name.display());
    }
}

fn drain<R: Read>(entry: &mut tar::Entry<R>, buf: &mut [u8]) -> anyhow::Result<()> {
    loop {
        match entry.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading its content"),
        }
    }
}

/// Flushes the file system holding `dir`: every file and folder written
/// there, in one call.
/// Gives the owner full access to every folder under `dir` (restored
/// read-only ones included), so a failed restore's tree can be removed.
pub fn make_removable(dir: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_dir() {
            let mode = entry
                .metadata()
                .map_err(io::Error::other)?
                .permissions()
                .mode();
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode | 0o700))?;
        }
    }
    Ok(())
}

fn sync_fs(dir: &Path) -> anyhow::Result<()> {
    let f = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid, open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("flushing {} to disk", dir.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(sanitize(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert!(sanitize(Path::new("/etc/x")).is_err());
        assert!(sanitize(Path::new("a/../../x")).is_err());
        assert!(sanitize(Path::new(&"x".repeat(256))).is_err());
        assert_eq!(clamp(u64::MAX), 1 << 40);
        let _ = time(u64::MAX);
    }
}
