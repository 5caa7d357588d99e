//! One backup, prune or mirror of a profile at a time.
//!
//! An exclusive `flock` on `DIR/state/locks/<profile>.lock`. The kernel
//! drops it when the process ends, however it ends, so a killed cellar
//! never leaves a stale lock. A second cellar (an overlapping cron entry)
//! waits up to `--lock-wait`, then gives up with a message naming the
//! holder.
//!
//! The holder writes `cellar pid N (what) since TIME` into the file and empties it
//! when it lets go, however it ends short of being killed: a line left in
//! a file nobody holds is a run that was killed (or a host that went down),
//! which `status` reports ([`holder`]).

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Takes the exclusive `flock` of an open file or folder without waiting;
/// false when another process holds it.
pub fn try_exclusive(f: &File) -> std::io::Result<bool> {
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("profile {profile} is busy: {holder} holds {path}; waited {waited:?} (--lock-wait); try again later")]
    Busy {
        profile: String,
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("cannot open the lock file {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Held while alive; dropping it releases the lock.
pub struct ProfileLock {
    file: File,
}

impl Drop for ProfileLock {
    fn drop(&mut self) {
        // Emptied before the descriptor closes (which releases the lock).
        let _ = self.file.set_len(0);
    }
}

/// Who holds a profile's lock, or held it when killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// `pid N (what) since TIME`, running now.
    Running(String),
    /// `pid N (what) since TIME`, which never let go: killed, or the host
    /// went down. The next backup, prune or mirror of the profile clears it.
    Killed(String),
    /// The lock file cannot be read by this user (a monitoring account:
    /// the folder is the owner's alone), so neither can be told.
    Unknown(String),
}

/// At most this much of a lock file is read (its line is ~80 bytes).
const LINE_MAX: u64 = 4096;

/// How a holder's line begins. cellar before this mark neither emptied the
/// file when done nor took the byte-range lock: a line without it says
/// nothing about how that run ended.
const MARK: &str = "cellar ";

/// What the lock file of `profile` says, checked against the locks the
/// kernel holds on it; `None` when nobody holds it and the last holder
/// ended, or when it is not a lock file cellar would use.
pub fn holder(config_dir: &Path, profile: &str) -> Option<Holder> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = lock_path(config_dir, profile);
    // Non-blocking, so a FIFO planted there cannot hold `status` up; a
    // symlink is refused as `acquire` refuses it.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Some(Holder::Unknown(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
        Err(_) => return None,
    };
    let meta = file.metadata().ok().filter(|m| m.is_file())?;
    let held = || match (lock_held(&file), flock_held(meta.dev(), meta.ino())) {
        (Ok(true), _) | (_, Some(true)) => Some(true),
        (Ok(false), _) | (_, Some(false)) => Some(false),
        (Err(_), None) => None,
    };
    let text = || -> Option<String> {
        let mut bytes = Vec::new();
        (&file).rewind().ok()?;
        (&file).take(LINE_MAX).read_to_end(&mut bytes).ok()?;
        let s = String::from_utf8_lossy(&bytes).trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let shown = |line: String| line.strip_prefix(MARK).map(str::to_string).unwrap_or(line);
    if held()? {
        return text().map(shown).map(Holder::Running);
    }
    // Read after the lock was seen free. A holder empties the file before
    // it lets go, so a line that is still there, the same, after the lock
    // was seen free once more was left by one that was killed; a run that
    // started and ended meanwhile leaves the file empty.
    let left = text()?;
    if held()? {
        return Some(Holder::Running(shown(left)));
    }
    (left.starts_with(MARK) && text()? == left).then(|| Holder::Killed(shown(left)))
}

/// The byte-range lock a holder also takes (an open file description
/// lock, `F_OFD_SETLK`, on the whole file): unlike the `flock`, another
/// process can ask about it without taking it (`F_OFD_GETLK`), from any
/// pid namespace, and over NFS.
fn ofd_lock(file: &File) -> std::io::Result<()> {
    ofd_fcntl(file, libc::F_OFD_SETLK).map(|_| ())
}

/// Whether another open file description holds the holder's lock.
fn lock_held(file: &File) -> std::io::Result<bool> {
    ofd_fcntl(file, libc::F_OFD_GETLK).map(|l_type| l_type != libc::F_UNLCK as libc::c_short)
}

/// `fcntl(cmd)` for a write lock on the whole file; the `l_type` it leaves.
fn ofd_fcntl(file: &File, cmd: libc::c_int) -> std::io::Result<libc::c_short> {
    // SAFETY: a plain C struct; all zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on a descriptor we own, with a valid flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type)
}

/// `DIR/state/locks`.
fn lock_dir(config_dir: &Path) -> std::path::PathBuf {
    crate::state::dir(config_dir).join("locks")
}

/// `DIR/state/locks/<profile>.lock`.
fn lock_path(config_dir: &Path, profile: &str) -> std::path::PathBuf {
    lock_dir(config_dir).join(format!("{profile}.lock"))
}

/// Whether some process holds a `flock` on the file `dev`/`ino`, from
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`;
/// waiters are listed with `->` and hold nothing). Only locks of processes
/// in this pid namespace are listed there: it is the fallback for a holder
/// that took no byte-range lock (cellar before it did).
fn flock_held(dev: u64, ino: u64) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    let wanted = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    Some(table.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some("FLOCK") && fields.nth(3) == Some(wanted.as_str())
    }))
}

pub fn acquire(
    config_dir: &Path,
    profile: &str,
    what: &str,
    wait: Duration,
) -> Result<ProfileLock, LockError> {
    let dir = lock_dir(config_dir);
    let path = lock_path(config_dir, profile);
    // Only the owner may open a lock: `flock` needs nothing but a read
    // descriptor, so a lock file others can read is one any local user
    // can hold to stop the profile's backups.
    let open = || -> std::io::Result<File> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        // Folders and files made by earlier versions (0755, 0644).
        for (p, mode) in [(dir.as_path(), 0o700), (path.as_path(), 0o600)] {
            let meta = std::fs::metadata(p)?;
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(file)
    };
    let mut file = open().map_err(|cause| LockError::Open {
        path: path.clone(),
        cause,
    })?;
    let started = Instant::now();
    loop {
        // SAFETY: flock on a file descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            // For `holder`'s question; the flock above is what excludes.
            if let Err(e) = ofd_lock(&file) {
                tracing::debug!("byte-range lock on {}: {e}", path.display());
            }
            // One write over the old text, then cut to it: the file is
            // never empty or half written while held (a killed run's line
            // stays until this one replaces it).
            let line = format!(
                "{MARK}pid {} ({what}) since {}\n",
                std::process::id(),
                chrono::Utc::now().to_rfc3339()
            );
            use std::os::unix::fs::FileExt;
            let _ = file.write_all_at(line.as_bytes(), 0);
            let _ = file.set_len(line.len() as u64);
            return Ok(ProfileLock { file });
        }
        if started.elapsed() >= wait {
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            return Err(LockError::Busy {
                profile: profile.to_string(),
                path,
                holder: match holder.trim() {
                    "" => "another cellar".into(),
                    h => crate::logging::one_line(h).into_owned(),
                },
                waited: wait,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        if crate::cancel::requested() {
            return Err(LockError::Busy {
                profile: profile.to_string(),
                path,
                holder: "(interrupted while waiting)".into(),
                waited: started.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn second_holder_waits_then_gives_up_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "p", "backup", Duration::ZERO).unwrap();
        let t = Instant::now();
        let e = acquire(dir.path(), "p", "backup", Duration::from_millis(500))
            .err()
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(500));
        assert!(
            e.to_string().contains("is busy") && e.to_string().contains("(backup)"),
            "{e}"
        );
        // Another profile is independent.
        acquire(dir.path(), "q", "backup", Duration::ZERO).unwrap();
        drop(first);
        acquire(dir.path(), "p", "prune", Duration::ZERO).unwrap();
    }

    #[test]
    fn the_holder_is_running_then_gone_and_a_line_nobody_holds_is_a_killed_run() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path(), "p"), None);
        let lock = acquire(dir.path(), "p", "backup", Duration::ZERO).unwrap();
        let me = format!("pid {} (backup) since ", std::process::id());
        assert!(
            matches!(holder(dir.path(), "p"), Some(Holder::Running(h)) if h.starts_with(&me)),
            "{:?}",
            holder(dir.path(), "p")
        );
        drop(lock);
        assert_eq!(holder(dir.path(), "p"), None);
        // What a holder killed before it let go leaves.
        let path = crate::state::dir(dir.path()).join("locks/p.lock");
        std::fs::write(&path, "cellar pid 1 (prune) since then\n").unwrap();
        assert_eq!(
            holder(dir.path(), "p"),
            Some(Holder::Killed("pid 1 (prune) since then".into()))
        );
        // The line of a cellar from before the mark, which left it after
        // every run: nothing to tell from it.
        std::fs::write(&path, "pid 1 (backup) since then").unwrap();
        assert_eq!(holder(dir.path(), "p"), None);
        // Bytes that are not UTF-8 are still a line.
        std::fs::write(&path, b"cellar pid 1 (backup) since \xff").unwrap();
        assert!(
            matches!(holder(dir.path(), "p"), Some(Holder::Killed(h)) if h.starts_with("pid 1 (backup)"))
        );
        // The next run clears it.
        drop(acquire(dir.path(), "p", "backup", Duration::ZERO).unwrap());
        assert_eq!(holder(dir.path(), "p"), None);
    }

    #[test]
    fn a_fifo_or_a_huge_file_at_the_lock_path_holds_nothing_up() {
        let dir = tempfile::tempdir().unwrap();
        let locks = crate::state::dir(dir.path()).join("locks");
        std::fs::create_dir_all(&locks).unwrap();
        let fifo = std::ffi::CString::new(locks.join("f.lock").to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let t = Instant::now();
        assert_eq!(holder(dir.path(), "f"), None);
        let mut big = File::create(locks.join("b.lock")).unwrap();
        big.write_all(MARK.as_bytes()).unwrap();
        big.set_len(1 << 30).unwrap();
        // Its first 4 KiB, zeros, on one line: a "killed run" to report,
        // read quickly.
        assert!(matches!(holder(dir.path(), "b"), Some(Holder::Killed(h)) if h.len() <= 4096 * 3));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn only_the_owner_can_open_a_lock() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locks = crate::state::dir(dir.path()).join("locks");
        std::fs::create_dir_all(&locks).unwrap();
        std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(locks.join("p.lock"), "").unwrap();
        std::fs::set_permissions(locks.join("p.lock"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        drop(acquire(dir.path(), "p", "backup", Duration::ZERO).unwrap());
        acquire(dir.path(), "q", "backup", Duration::ZERO).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&locks), 0o700);
        assert_eq!(mode(&locks.join("p.lock")), 0o600);
        assert_eq!(mode(&locks.join("q.lock")), 0o600);
    }
}
