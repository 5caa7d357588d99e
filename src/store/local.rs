//! A store in a local folder (`file:///var/backups/cellar`).
//!
//! `put` writes to a hidden temporary file in the target folder, fsyncs it,
//! renames it over the key and fsyncs the folder, so a crash or a full disk
//! leaves either the old state or the complete object. The temporary file
//! is removed when the write fails; one left by a killed process is hidden
//! from `list` (its name starts with a dot).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use super::{ObjectInfo, Reader, Store, StoreError};

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    /// The file of `key`, refusing a key whose folders (below the root)
    /// are symbolic links: whoever can write to the store must not be able
    /// to send cellar's writes and deletions elsewhere.
    fn checked(&self, key: &str) -> Result<PathBuf, StoreError> {
        let mut p = self.root.clone();
        let parts: Vec<&str> = key.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            p.push(part);
            if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(StoreError::Unsupported(format!(
                    "{} is a symbolic link inside the store {}; cellar follows no links there (someone with write access to the store may have planted it)",
                    p.display(),
                    self.location()
                )));
            }
        }
        Ok(self.root.join(key))
    }

    fn err(&self, op: &'static str, key: &str, cause: io::Error) -> StoreError {
        StoreError::Io {
            op,
            store: self.location(),
            key: key.to_string(),
            cause,
        }
    }

    /// The entries of the folder `prefix` names (none when it is missing);
    /// a folder reached through a symlink is refused like any key.
    fn read_folder(&self, prefix: &str) -> Result<Vec<fs::DirEntry>, StoreError> {
        let dir = self.checked(&format!("{}/x", super::folder_of(prefix)))?;
        let dir = dir.parent().expect("a key has a folder");
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        entries
            .map(|e| e.map_err(|e| self.err("list", prefix, e)))
            .collect()
    }
}

/// Removes the temporary file unless the write completed.
impl Store for LocalStore {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError> {
        let target = self.checked(key)?;
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).map_err(|e| self.err("create folder for", key, e))?;
        // Checked again now that the folders exist: none may be a link.
        self.checked(key)?;
        let name = target.file_name().unwrap().to_string_lossy();
        // A random name opened with O_EXCL: a link planted in the store can
        // never make the write land somewhere else.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempfile_in(&dir)
            .map_err(|e| self.err("create", key, e))?;
        // A large buffer keeps the syscall count low for multi-GB payloads.
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        // Write-out starts as the file grows, so the fsync below is short.
        let mut out = crate::pipeline::writeback::WriteBehind::new(tmp.as_file());
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err("read data for", key, e)),
            };
            out.write_all(&buf[..n])
                .map_err(|e| self.err("write", key, e))?;
            written += n as u64;
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| self.err("fsync", key, e))?;
        // Never replaces an existing object (or a link planted there).
        tmp.persist_noclobber(&target).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                StoreError::Exists {
                    store: self.location(),
                    key: key.to_string(),
                }
            } else {
                self.err("move into place", key, e.error)
            }
        })?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err("fsync folder of", key, e))?;
        Ok(written)
    }

    fn get(&self, key: &str) -> Result<Reader, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.checked(key)?;
        match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(1 << 20, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound {
                store: self.location(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.err("open", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Keys are "<folder>/<name>": list the folder the prefix names.
        let mut out = Vec::new();
        for entry in self.read_folder(prefix)? {
            let Some(key) = super::folder_key(prefix, &entry.file_name().to_string_lossy()) else {
                continue;
            };
            let meta = entry.metadata().map_err(|e| self.err("stat", &key, e))?;
            if !meta.is_file() {
                continue;
            }
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: meta.modified().ok().map(Into::into),
                md5: None,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn sweep(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        let folder = super::folder_of(prefix);
        let mut out = Vec::new();
        for entry in self.read_folder(prefix)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !super::is_temporary(&name) {
                continue;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let old = meta
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .is_ok_and(|t| t < older_than);
            if !meta.is_file() || !old {
                continue;
            }
            if !dry_run {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.err("delete", &format!("{folder}/{name}"), e)),
                }
            }
            out.push(format!(
                "temporary file {folder}/{name} ({} bytes)",
                meta.len()
            ));
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.checked(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_planted_in_the_store_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("precious"), b"keep").unwrap();
        let s = LocalStore::new(dir.path().to_owned());
        // A profile folder that is a link: no write, read, list or delete.
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("p")).unwrap();
        assert!(s.put("p/a.bin", &mut &b"x"[..]).is_err());
        assert!(s.list("p/").is_err());
        assert!(s.delete("p/precious").is_err());
        assert!(s.get("p/precious").is_err());
        assert_eq!(
            std::fs::read(elsewhere.path().join("precious")).unwrap(),
            b"keep"
        );
        // A key that is a link: never written through, never read.
        std::fs::create_dir(dir.path().join("q")).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("precious"),
            dir.path().join("q/a.bin"),
        )
        .unwrap();
        assert!(matches!(
            s.put("q/a.bin", &mut &b"x"[..]),
            Err(StoreError::Exists { .. })
        ));
        assert!(s.get("q/a.bin").is_err());
        assert_eq!(
            std::fs::read(elsewhere.path().join("precious")).unwrap(),
            b"keep"
        );
        assert!(s.list("q/").unwrap().is_empty());
    }

    #[test]
    fn put_is_atomic_and_failed_put_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_owned());
        s.put("p/a.bin", &mut &b"hello"[..]).unwrap();
        let mut back = String::new();
        s.get("p/a.bin").unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello");

        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("source died"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        assert!(s.put("p/b.bin", &mut Failing(3)).is_err());
        let keys: Vec<_> = s.list("p/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["p/a.bin"]);
        assert_eq!(fs::read_dir(dir.path().join("p")).unwrap().count(), 1);
        s.check().unwrap();
        s.delete("p/a.bin").unwrap();
        s.delete("p/a.bin").unwrap();
        assert!(matches!(s.get("p/a.bin"), Err(StoreError::NotFound { .. })));
    }
}
