//! Stores: where payloads and manifests live.
//!
//! A store is a flat namespace of keys (`<profile>/<id>.<ext>`) with five
//! operations. Every backend must make `put` atomic: a reader sees the whole
//! object or none of it, and a failed `put` leaves nothing under the key.
//! Everything above this trait (backup, list, verify, restore) is written
//! once for all backends.

mod bridge;
mod local;
pub mod s3;
pub mod sftp;
pub mod swift;

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub use local::LocalStore;

use toml::Spanned;

use crate::profile::StoreConfig;
use crate::secret::{Secret, SecretError};

/// A problem in the store url or its `[store.*]` table, found by the store
/// module that resolves it, for the profile's validation to report.
#[derive(Debug)]
pub struct ConfigProblem {
    pub span: Option<Range<usize>>,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl<T> Resolved<T> {
    /// The options `build` makes, unless there are `problems`.
    pub(crate) fn unless(
        problems: Vec<ConfigProblem>,
        warnings: Vec<String>,
        build: impl FnOnce() -> T,
    ) -> Result<Self, Vec<ConfigProblem>> {
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Resolved {
            options: build(),
            warnings,
        })
    }
}

/// Resolves the secret `spec` of the `[store.*]` key `key` (files relative
/// to `base`): a warning such as a file others may read goes to
/// `warnings`, an error to `problems` with the fix `fix` gives.
pub(crate) fn secret(
    spec: &Spanned<String>,
    key: &str,
    base: &Path,
    fix: fn(&SecretError) -> &'static str,
    problems: &mut Vec<ConfigProblem>,
    warnings: &mut Vec<String>,
) -> Option<Secret> {
    match crate::secret::resolve(spec.get_ref(), base) {
        Ok(r) => {
            if let Some(w) = r.warning {
                warnings.push(format!("{key}: {w}"));
            }
            Some(r.secret)
        }
        Err(e) => {
            problems.push(ConfigProblem {
                span: Some(spec.span()),
                key: key.to_string(),
                message: e.to_string(),
                fix: fix(&e).to_string(),
            });
            None
        }
    }
}

/// A size in MiB of a `[store.*]` table: its key, its name in messages,
/// the fix, the least MiB allowed (the most is 5120) and the default in
/// bytes.
pub(crate) type SizeKey = (&'static str, &'static str, &'static str, u32, usize);

/// The size `v` in bytes; `default` when absent or invalid.
pub(crate) fn size_mib(
    v: Option<&Spanned<u32>>,
    (key, what, fix, min, default): SizeKey,
    problems: &mut Vec<ConfigProblem>,
) -> usize {
    let Some(v) = v else { return default };
    if (min..=5120).contains(v.get_ref()) {
        return *v.get_ref() as usize * 1024 * 1024;
    }
    problems.push(ConfigProblem {
        span: Some(v.span()),
        key: key.to_string(),
        message: format!("{} MiB is not a valid {what}", v.get_ref()),
        fix: fix.to_string(),
    });
    default
}

/// The `timeout` key of a `[store.*]` table (`key`): 2 minutes when absent.
pub(crate) fn timeout(
    t: Option<&Spanned<String>>,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> std::time::Duration {
    let default = std::time::Duration::from_secs(120);
    let Some(t) = t else { return default };
    humantime::parse_duration(t.get_ref()).unwrap_or_else(|e| {
        problems.push(ConfigProblem {
            span: Some(t.span()),
            key: key.to_string(),
            message: format!("invalid duration {:?}: {e}", t.get_ref()),
            fix: "write a duration such as \"90s\" or \"2m\"".into(),
        });
        default
    })
}

/// What a store module resolved from the url and its `[store.*]` table.
#[derive(Debug)]
pub struct Resolved<T> {
    pub options: T,
    /// Secret files that others may read, and the like.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
    /// The MD5 of the object's bytes as the store's listing reports it
    /// (an S3 ETag or a Swift hash of a plain upload), lower-case hex; None
    /// where the store does not say, or says something else (a multipart
    /// or encrypted object's ETag). Reported by the store, so never proof
    /// of anything: the catalog's cache only uses it to find bytes it has
    /// verified before (see `catalog`).
    pub md5: Option<String>,
}

/// `text` as an MD5 in lower-case hex, when it is one (quotes removed).
pub fn md5_hex(text: &str) -> Option<String> {
    let t = text.trim_matches('"');
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} is not in the store {store}")]
    NotFound { store: String, key: String },
    #[error("{op} {key} in {store}: {cause}")]
    Io {
        op: &'static str,
        store: String,
        key: String,
        cause: std::io::Error,
    },
    /// A remote store refused or failed; `message` says why and what to do.
    #[error("{op} {key} in {store}: {message}")]
    Remote {
        op: &'static str,
        store: String,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Unsupported(String),
    /// A write found an object under its key: cellar never replaces one.
    #[error("{key} already exists in {store}; cellar never replaces an object")]
    Exists { store: String, key: String },
}

impl StoreError {
    /// The exit code this error stands for: a store that is misconfigured
    /// is bad configuration (2); one that cannot be reached or answers with
    /// an error is a failed job (1), as it may work on the next try.
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::Unsupported(_) => 2,
            _ => 1,
        }
    }

    /// True when the error came from the data being written, not from the
    /// store (the pipeline feeding `put` failed first).
    pub fn is_upstream(&self) -> bool {
        matches!(self, StoreError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::Other
            && cause.get_ref().is_some_and(|e| e.is::<crate::pipeline::channel::Aborted>()))
    }
}

pub type Reader = Box<dyn Read + Send + Sync>;

pub trait Store: Send + Sync {
    /// Where the store is, for messages (never contains credentials).
    fn location(&self) -> String;

    /// Writes `data` under `key`, atomically; returns the bytes written.
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError>;

    /// Streams the object under `key`.
    fn get(&self, key: &str) -> Result<Reader, StoreError>;

    /// Every complete object whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Until when the object may not be deleted (S3 object lock); None
    /// when it may be deleted now.
    fn locked_until(&self, _key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(None)
    }

    /// Sets or clears an S3 object-lock legal hold on the object (pins, on
    /// a bucket with object lock). Returns false where the store has no
    /// such thing (then nothing is done).
    fn set_legal_hold(&self, _key: &str, _on: bool) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Records the retention tier on the object, for lifecycle rules (S3
    /// `tag_tiers`); stores without tags ignore it.
    fn set_tier(&self, _key: &str, _tier: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Proves the store is reachable and writable: writes, reads back and
    /// deletes a small object.
    /// Removes what killed uploads left under `prefix` before `older_than`
    /// (hidden temporary files, incomplete multipart uploads); returns a
    /// description of each. With `dry_run`, only lists them.
    fn sweep(
        &self,
        _prefix: &str,
        _older_than: DateTime<Utc>,
        _dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    fn check(&self) -> Result<(), StoreError> {
        probe(self)
    }
}

/// For stores that keep keys as files in folders (local, SFTP): the
/// folder a listing of `prefix` reads, relative to the store's root.
/// The hidden temporary a folder or SFTP store writes before its rename:
/// `.<name>.tmp-<suffix>`.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

pub fn folder_of(prefix: &str) -> &str {
    prefix.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The key of the file `name` found in `folder_of(prefix)`, or None when
/// the listing must skip it: hidden names (temporaries, `.`, `..`) and
/// names outside the prefix.
pub fn folder_key(prefix: &str, name: &str) -> Option<String> {
    if name.starts_with('.') {
        return None;
    }
    let dir = folder_of(prefix);
    let key = if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    };
    key.starts_with(prefix).then_some(key)
}

/// Writes, reads back and deletes a small object: the proof that a store
/// is reachable and writable, with this store's own error messages.
pub fn probe<S: Store + ?Sized>(store: &S) -> Result<(), StoreError> {
    let key = format!(".cellar-check-{}", std::process::id());
    let probe = b"cellar store check";
    store.put(&key, &mut &probe[..])?;
    let mut back = Vec::new();
    let read = store
        .get(&key)
        .and_then(|mut r| {
            r.read_to_end(&mut back).map_err(|cause| StoreError::Io {
                op: "read back",
                store: store.location(),
                key: key.clone(),
                cause,
            })
        })
        .map(|_| ());
    let deleted = store.delete(&key);
    read?;
    deleted?;
    if back != probe {
        return Err(StoreError::Unsupported(format!(
            "{}: the probe object read back differently from what was written",
            store.location()
        )));
    }
    Ok(())
}

/// The last line of defence against names from outside (a database
/// called `a/../../x`): a key is relative, and none of its parts is
/// empty, `.` or `..`, or holds a control character or a backslash.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || key.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(StoreError::Unsupported(format!(
            "refusing the store key {key:?}: it could leave the profile's folder"
        )));
    }
    Ok(())
}

/// Checks every key before the backend sees it.
struct Guarded(Box<dyn Store>);

impl Store for Guarded {
    fn location(&self) -> String {
        self.0.location()
    }
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError> {
        check_key(key)?;
        self.0.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Reader, StoreError> {
        check_key(key)?;
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        check_key(prefix.trim_end_matches('/'))?;
        self.0.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.0.delete(key)
    }
    fn locked_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        check_key(key)?;
        self.0.locked_until(key)
    }
    fn set_legal_hold(&self, key: &str, on: bool) -> Result<bool, StoreError> {
        check_key(key)?;
        self.0.set_legal_hold(key, on)
    }
    fn set_tier(&self, key: &str, tier: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.0.set_tier(key, tier)
    }
    fn check(&self) -> Result<(), StoreError> {
        self.0.check()
    }
    fn sweep(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        check_key(prefix.trim_end_matches('/'))?;
        self.0.sweep(prefix, older_than, dry_run)
    }
}

/// Opens the store a profile names, every key checked by [`check_key`].
pub fn open(config: &StoreConfig, config_dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(Guarded(open_backend(config, config_dir)?)))
}

/// Relative `file://` paths are relative to the config dir.
fn open_backend(config: &StoreConfig, config_dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    let url = config.url.as_str();
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        let root = if path.is_absolute() {
            path
        } else {
            config_dir.join(path)
        };
        return Ok(Box::new(LocalStore::new(root)));
    }
    if url.starts_with("s3://") {
        let opts = config
            .s3
            .clone()
            .expect("validation resolves [store.s3] for every s3:// url");
        return Ok(Box::new(s3::S3Store::open(opts)?));
    }
    if url.starts_with("sftp://") {
        let target = config
            .sftp
            .clone()
            .expect("validation resolves [store.sftp] for every sftp:// url");
        return Ok(Box::new(sftp::SftpStore::open(target)?));
    }
    if url.starts_with("swift://") {
        let opts = config
            .swift
            .clone()
            .expect("validation resolves [store.swift] for every swift:// url");
        return Ok(Box::new(swift::SwiftStore::open(opts)?));
    }
    let scheme = url.split("://").next().unwrap_or(url);
    Err(StoreError::Unsupported(format!(
        "{scheme}:// stores are not available in this version of cellar yet; use a file:// store"
    )))
}
