//! One backup, prune or mirror of a profile at a time.
//!
//! An exclusive `flock` on `DIR/state/locks/<profile>.lock`. The kernel
//! drops it when the process ends, however it ends, so a killed cellar
//! never leaves a stale lock. A second cellar (an overlapping cron entry)
//! waits up to `--lock-wait`, then gives up with a message naming the
//! holder.

use std::fs::File;
use std::io::{Read, Seek, Write};
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
    _file: File,
}

pub fn acquire(
    config_dir: &Path,
    profile: &str,
    what: &str,
    wait: Duration,
) -> Result<ProfileLock, LockError> {
    let dir = crate::state::dir(config_dir).join("locks");
    let path = dir.join(format!("{profile}.lock"));
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
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(
                file,
                "pid {} ({what}) since {}",
                std::process::id(),
                chrono::Utc::now().to_rfc3339()
            );
            return Ok(ProfileLock { _file: file });
        }
        if started.elapsed() >= wait {
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            return Err(LockError::Busy {
                profile: profile.to_string(),
                path,
                holder: if holder.is_empty() {
                    "another cellar".into()
                } else {
                    holder
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
