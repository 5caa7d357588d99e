//! Profiles: discovery, parsing and validation.
//!
//! Two layers, as in rustic and vector: [`raw`] is what the user wrote
//! (serde, no I/O); [`parse`] turns it into a [`Profile`] with secrets read,
//! paths resolved against the config dir, recipient certificates loaded
//! and the cron expression compiled. Every problem found on the way is
//! collected as a [`Problem`] with file, line, key and fix, so the user
//! sees all of them at once.

mod crontab;
mod discover;
mod global;
pub mod problem;
pub mod raw;
mod validate;

pub use crontab::{parse_cron, Schedule};
pub use discover::{
    discover, objectives, select, valid_profile_name, LoadError, ProblemList, ProfileFile,
};
pub use global::{load_global, Global};
pub use validate::parse;

use std::path::{Path, PathBuf};

pub use problem::{Locator, Problem};
pub use raw::{Algorithm, DumpFormat};

use crate::keys::{self, RecipientCert};
use crate::secret::{Secret, SecretSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Postgres,
    Mariadb,
    Files,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Mariadb => "mariadb",
            Kind::Files => "files",
        }
    }

    /// A database kind (dumps, restores into a database, mirrors, drills).
    pub fn is_database(self) -> bool {
        self != Kind::Files
    }
}

/// A validated profile, ready to run.
#[derive(Debug)]
pub struct Profile {
    pub name: String,
    /// The file relative to the config dir, for messages.
    pub file: PathBuf,
    pub kind: Kind,
    pub schedule: Option<Schedule>,
    /// After a failed run, `run --due` waits this long before trying again.
    pub retry_after: std::time::Duration,
    /// Recovery time objective: `status` fails when the last drill's
    /// restore time, projected to the newest backup's size, exceeds it.
    pub rto: Option<std::time::Duration>,
    /// Recovery point objective: `status` fails when the newest good
    /// backup started longer ago than this.
    pub rpo: Option<std::time::Duration>,
    pub source: Source,
    pub store: StoreConfig,
    pub encryption: Encryption,
    pub compression: Compression,
    pub retention: Retention,
    pub restore: RestoreConfig,
    pub mirror: Option<Mirror>,
    pub hooks: Hooks,
    pub canary: Canary,
    /// Non-fatal findings, e.g. a secret file readable by others.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum Source {
    Postgres(DbSource),
    Mariadb(DbSource),
    Files(FilesSource),
}

impl Source {
    /// The database source of a postgres or mariadb profile.
    pub fn database(&self) -> Option<&DbSource> {
        match self {
            Source::Postgres(d) | Source::Mariadb(d) => Some(d),
            Source::Files(_) => None,
        }
    }
}

/// How to reach a database server (PostgreSQL or MariaDB). A `host` that
/// starts with `/` is a socket: PostgreSQL's socket folder, or MariaDB's
/// socket file.
#[derive(Debug, Clone)]
pub struct DbConn {
    /// A MariaDB (or MySQL) server, not PostgreSQL.
    pub mariadb: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub password_source: Option<SecretSource>,
    /// Where the client tools live (pg_dump, psql...; mariadb-dump,
    /// mariadb); None means PATH.
    pub bin_dir: Option<PathBuf>,
}

impl DbConn {
    /// The server for messages: `postgresql://user@host:port` or
    /// `mariadb://user@host:port` (`mariadb://user@/path/to/socket`).
    pub fn describe(&self) -> String {
        if !self.mariadb {
            format!("postgresql://{}@{}:{}", self.user, self.host, self.port)
        } else if self.host.starts_with('/') {
            format!("mariadb://{}@{}", self.user, self.host)
        } else {
            format!("mariadb://{}@{}:{}", self.user, self.host, self.port)
        }
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(name),
            None => path_tool(name),
        }
    }
}

/// `name` as PATH finds it, except that Debian's `pg_wrapper` (the Perl
/// script behind /usr/bin/psql, pg_dump and the others) is skipped: it
/// costs 60–100 ms a start, and a backup starts half a dozen tools. For a
/// server named by host and port the wrapper runs the newest installed
/// version, so that is what runs instead. `pg_bin_dir` chooses otherwise.
fn path_tool(name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static FOUND: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    if let Some(p) = found.lock().ok().and_then(|m| m.get(name).cloned()) {
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    let wrapped = on_path
        .as_ref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .is_some_and(|p| p.ends_with("postgresql-common/pg_wrapper"));
    let newest = || {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let tool = e.path().join("bin").join(name);
                tool.is_file().then_some((v, tool))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, tool)| tool)
    };
    let chosen = match wrapped.then(newest).flatten() {
        Some(direct) => direct,
        None => PathBuf::from(name),
    };
    if let Ok(mut m) = found.lock() {
        m.insert(name.to_string(), chosen.clone());
    }
    chosen
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    One(String),
    Many(Vec<String>),
    All,
}

#[derive(Debug)]
pub struct DbSource {
    pub conn: DbConn,
    pub databases: Databases,
    /// Always `Plain` for mariadb (mariadb-dump writes SQL).
    pub format: DumpFormat,
    pub globals: bool,
    /// Extra arguments for pg_dump or mariadb-dump (checked).
    pub dump_args: Vec<String>,
}

impl DbSource {
    /// Whether `database` on the server `conn` is one this profile backs
    /// up (with `all = true`, every database on the source server is).
    pub fn backs_up(&self, conn: &DbConn, database: &str) -> bool {
        let local =
            |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1" | "") || h.starts_with('/');
        let same_host =
            conn.host == self.conn.host || (local(&conn.host) && local(&self.conn.host));
        if !same_host || conn.port != self.conn.port {
            return false;
        }
        match &self.databases {
            Databases::One(d) => d == database,
            Databases::Many(ds) => ds.iter().any(|d| d == database),
            Databases::All => true,
        }
    }
}

#[derive(Debug)]
pub struct FilesSource {
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<Exclude>,
    /// A file that changes while it is read fails the backup (no backup is
    /// kept), instead of a warning.
    pub fail_on_change: bool,
    /// An unreadable file is a warning and left out, instead of a failure.
    pub skip_unreadable: bool,
}

/// One `exclude` entry. `*.tmp` matches a name anywhere; `cache/` matches
/// only folders; a pattern with a `/` inside matches the path relative to
/// the backed-up root.
#[derive(Debug, Clone)]
pub struct Exclude {
    pub text: String,
    pub pattern: glob::Pattern,
    pub dir_only: bool,
    pub anchored: bool,
}

impl Exclude {
    pub fn parse(text: &str) -> Result<Exclude, glob::PatternError> {
        let dir_only = text.ends_with('/');
        let trimmed = text.trim_end_matches('/');
        let anchored = trimmed.contains('/');
        let pattern = glob::Pattern::new(trimmed.trim_start_matches('/'))?;
        Ok(Exclude {
            text: text.to_string(),
            pattern,
            dir_only,
            anchored,
        })
    }

    /// `rel` is the entry's path relative to the root being archived.
    pub fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored {
            self.pattern.matches_path(rel)
        } else {
            rel.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| self.pattern.matches(n))
        }
    }
}

#[derive(Debug)]
pub struct StoreConfig {
    pub url: String,
    /// Resolved for every s3:// url (defaults when [store.s3] is absent).
    pub s3: Option<crate::store::s3::S3Options>,
    /// Resolved for every sftp:// url: the url parsed once, with [store.sftp].
    pub sftp: Option<crate::store::sftp::SftpTarget>,
    /// Resolved for every swift:// url by `store::swift::resolve`.
    pub swift: Option<crate::store::swift::SwiftOptions>,
}

#[derive(Debug)]
pub struct Encryption {
    pub recipients: Vec<RecipientCert>,
    pub identity: Option<PathBuf>,
    pub passphrase: Option<Secret>,
    /// Signs each manifest; `None` on a host that only reads.
    pub signer: Option<keys::SigningKey>,
    /// Whose signatures the read paths accept.
    pub trusted_signers: Vec<sequoia_openpgp::Cert>,
    /// Ids up to this one may be unsigned (older backups).
    pub allow_unsigned_before: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub algorithm: Algorithm,
    pub level: u32,
    /// 0 = all cores.
    pub threads: u32,
}

impl Compression {
    pub fn extension(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Xz => "xz",
            Algorithm::Zstd => "zst",
        }
    }

    pub fn effective_threads(&self) -> u32 {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            algorithm: Algorithm::Xz,
            level: 6,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// One hook command, split into words; `shell` runs the text with `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    pub text: String,
    pub argv: Vec<String>,
    pub shell: bool,
    /// Killed (with its process group) after this long.
    pub timeout: std::time::Duration,
    /// Variables of cellar's environment passed on beyond the safe base.
    pub pass_env: Vec<String>,
}

/// How long `run --due` waits after a failed run unless `retry_after` says.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long a hook command may run unless `[hooks] timeout` says otherwise.
pub const HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub before: Vec<HookCommand>,
    pub after: Vec<HookCommand>,
    pub on_failure: Vec<HookCommand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    /// Percent; 0 = off.
    pub shrink_warn: u32,
    pub strict: bool,
}

impl Default for Canary {
    fn default() -> Self {
        Canary {
            shrink_warn: 50,
            strict: false,
        }
    }
}

/// `[restore]`: how database restores and mirrors run.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// pg_restore workers (already resolved: never 0).
    pub jobs: usize,
    /// Where a custom-format restore spools the checked dump.
    pub spool_dir: PathBuf,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spool_dir: std::env::temp_dir(),
        }
    }
}

#[derive(Debug)]
pub struct Mirror {
    pub database: String,
    pub conn: DbConn,
    pub after_restore: Vec<String>,
    pub checks: Vec<String>,
    pub keep_previous: bool,
}

pub fn load(config_dir: &Path, file: &ProfileFile) -> Result<Profile, Vec<Problem>> {
    if let Some(p) = &file.problem {
        return Err(vec![p.clone()]);
    }
    let text = read_profile(&file.path).map_err(|e| {
        vec![Problem {
            file: file.rel.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the profile: {e}"),
            fix: match e.kind() {
                std::io::ErrorKind::InvalidData => {
                    "a profile is a UTF-8 TOML text file; templates/ holds examples".into()
                }
                std::io::ErrorKind::Other => {
                    "a profile is a small regular TOML file; move this one out of profiles/".into()
                }
                _ => "check the file's permissions".into(),
            },
        }]
    })?;
    parse(config_dir, &file.name, &file.rel, &text)
}

/// A profile's text. Only a regular file of at most 1 MiB is read: a FIFO
/// would hang every `run` (and the cron entry behind it), a device or a
/// huge file would fill memory.
fn read_profile(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MAX: u64 = 1 << 20;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "it is not a regular file (a FIFO, a device or a socket)",
        ));
    }
    if meta.len() > MAX {
        return Err(std::io::Error::other("it is larger than 1 MiB"));
    }
    let mut text = String::new();
    file.take(MAX + 1).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_is_converted() {
        let s = parse_cron("0 2 * * *").unwrap();
        let after = chrono::DateTime::parse_from_rfc3339("2026-11-21T03:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let next = s.after(&after).next().unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-22T02:00:00+00:00");
        assert!(parse_cron("0 0 2 * * *").is_err());
        assert!(parse_cron("61 2 * * *").is_err());
        // 2026-11-21 is a Saturday: Monday is the 23rd, Sunday the 22nd.
        let next = |e: &str| {
            parse_cron(e)
                .unwrap()
                .after(&after)
                .next()
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(next("30 4 * * 1"), "2026-11-23T04:30:00+00:00");
        assert_eq!(next("30 4 * * MON"), "2026-11-23T04:30:00+00:00");
        assert_eq!(next("30 4 * * 0"), "2026-11-22T04:30:00+00:00");
        assert_eq!(next("30 4 * * 7"), "2026-11-22T04:30:00+00:00");
        assert_eq!(next("30 4 * * 1-5"), "2026-11-23T04:30:00+00:00");
        assert_eq!(next("30 4 * * 5-7"), "2026-11-21T04:30:00+00:00");
        assert_eq!(next("30 4 * * 6"), "2026-11-21T04:30:00+00:00");
        assert_eq!(next("30 4 * * 0,3"), "2026-11-22T04:30:00+00:00");
        assert_eq!(next("30 4 * * 3"), "2026-11-25T04:30:00+00:00");
        assert!(parse_cron("0 2 * * 8").is_err());
    }

    #[test]
    fn excludes_match_names_folders_and_anchored_paths() {
        let tmp = Exclude::parse("*.tmp").unwrap();
        assert!(tmp.matches(Path::new("a/b/x.tmp"), false));
        assert!(!tmp.matches(Path::new("a/b/x.txt"), false));
        let cache = Exclude::parse("cache/").unwrap();
        assert!(cache.matches(Path::new("app/cache"), true));
        assert!(!cache.matches(Path::new("app/cache"), false));
        let anchored = Exclude::parse("app/logs").unwrap();
        assert!(anchored.matches(Path::new("app/logs"), true));
        assert!(!anchored.matches(Path::new("x/app/logs"), true));
    }
}
