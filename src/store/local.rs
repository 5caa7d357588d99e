//! A store in a local folder (`file:///var/backups/cellar`).
//!
//! `put` writes to a hidden temporary file in the target folder, fsyncs it,
//! renames it over the key and fsyncs the folder, so a crash or a full disk
//! leaves either the old state or the complete object. The temporary file
//! is removed when the write fails; one left by a killed process is hidden
//! from `list` (its name starts with a dot).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{ObjectInfo, Reader, Store, StoreError};

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, op: &'static str, key: &str, cause: io::Error) -> StoreError {
        StoreError::Io {
            op,
            store: self.location(),
            key: key.to_string(),
            cause,
        }
    }
}

/// Removes the temporary file unless the write completed.
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(self.path);
        }
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).map_err(|e| self.err("create folder for", key, e))?;
        let name = target.file_name().unwrap().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut guard = TempGuard {
            path: &tmp,
            armed: true,
        };
        let mut file = File::create(&tmp).map_err(|e| self.err("create", key, e))?;
        // A large buffer keeps the syscall count low for multi-GB payloads.
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err("read data for", key, e)),
            };
            file.write_all(&buf[..n])
                .map_err(|e| self.err("write", key, e))?;
            written += n as u64;
        }
        file.sync_all().map_err(|e| self.err("fsync", key, e))?;
        drop(file);
        // A hard link never replaces an existing object (a rename would):
        // two writers of the same key cannot overwrite each other.
        fs::hard_link(&tmp, &target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                StoreError::Exists {
                    store: self.location(),
                    key: key.to_string(),
                }
            } else {
                self.err("link into place", key, e)
            }
        })?;
        let _ = fs::remove_file(&tmp);
        guard.armed = false;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err("fsync folder of", key, e))?;
        Ok(written)
    }

    fn get(&self, key: &str) -> Result<Reader, StoreError> {
        match File::open(self.path(key)) {
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
        let dir = self.root.join(super::folder_of(prefix));
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.err("list", prefix, e))?;
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
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path(key)) {
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
