//! What the user wrote, exactly: serde structures for one profile file,
//! with no I/O and no interpretation.
//!
//! Every table denies unknown keys. Scheme- or kind-specific options have
//! tables of their own (`[store.s3]`, `[store.sftp]`) rather than
//! `#[serde(flatten)]`, which would lose both `deny_unknown_fields` and line
//! numbers. Values that the validation layer checks further are wrapped in
//! [`Spanned`] so its messages can point at the line.
//!
//! The top-level tables are deserialized one by one (see `profile::parse`),
//! so a mistake in `[source]` does not hide another one in `[store]`.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The keys allowed at the top level of a profile, in the order the
/// templates use.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "kind",
    "schedule",
    "retry_after",
    "rto",
    "rpo",
    "source",
    "store",
    "encryption",
    "compression",
    "retention",
    "restore",
    "mirror",
    "hooks",
    "canary",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    pub password: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    pub databases: Option<Spanned<Vec<String>>>,
    pub all: Option<Spanned<bool>>,
    pub format: Option<DumpFormat>,
    pub globals: Option<bool>,
    #[serde(default)]
    pub pg_dump_args: Vec<String>,
    /// Folder holding pg_dump, pg_dumpall, pg_restore and psql; by default
    /// they are looked up on PATH.
    pub pg_bin_dir: Option<String>,
}

/// `[source]` of a mariadb profile (MariaDB 10.5+; MySQL 8 with `bin_dir`
/// pointing at its mysqldump and mysql).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbSource {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// A socket file instead of host and port.
    pub socket: Option<Spanned<String>>,
    pub user: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    pub password: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    pub databases: Option<Spanned<Vec<String>>>,
    pub all: Option<Spanned<bool>>,
    pub globals: Option<bool>,
    #[serde(default)]
    pub dump_args: Vec<String>,
    /// Folder holding mariadb-dump and mariadb; by default PATH.
    pub bin_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    Custom,
    Plain,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSource {
    pub paths: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub fail_on_change: Option<bool>,
    pub skip_unreadable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub url: Spanned<String>,
    pub s3: Option<Spanned<S3Config>>,
    pub sftp: Option<Spanned<SftpConfig>>,
    /// Parsed and resolved beside the store it builds.
    pub swift: Option<Spanned<crate::store::swift::SwiftConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "secret_text")]
    pub secret_access_key: Option<Spanned<String>>,
    pub storage_class: Option<String>,
    /// "AES256" or "aws:kms".
    pub server_side_encryption: Option<Spanned<String>>,
    pub object_lock: Option<Spanned<ObjectLock>>,
    /// First multipart part in MiB (default 16, at least 5).
    pub part_size_mib: Option<Spanned<u32>>,
    /// Per-request timeout, e.g. "2m" (default 2 minutes).
    pub timeout: Option<Spanned<String>>,
    /// Attempts per request, retries with backoff included (default 5).
    pub max_attempts: Option<u32>,
    pub tag_tiers: Option<bool>,
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    pub mode: String,
    pub days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    pub recipients: Spanned<Vec<Spanned<String>>>,
    pub identity: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "secret_text")]
    pub passphrase: Option<Spanned<String>>,
    /// Secret signing key that signs each manifest (backup hosts).
    pub signer: Option<Spanned<String>>,
    /// Certificates whose signatures read paths accept (default: the
    /// signer's public half).
    pub trusted_signers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Backups with ids up to this one may have no signature (made before
    /// manifests were signed).
    pub allow_unsigned_before: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Xz,
    Zstd,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub algorithm: Option<Algorithm>,
    pub level: Option<Spanned<u32>>,
    pub threads: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
}

/// How database restores (and mirrors) run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// pg_restore -j; 0 = the number of cores.
    pub jobs: Option<Spanned<u32>>,
    /// Where a custom-format restore spools the checked dump.
    pub spool_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub database: Spanned<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    pub password: Option<Spanned<String>>,
    #[serde(default)]
    pub after_restore: Vec<String>,
    #[serde(default)]
    pub checks: Vec<String>,
    #[serde(default)]
    pub keep_previous: bool,
}

/// Commands run around a backup. Each entry is one command line, split
/// into words like a shell would (quotes work) but run without a shell
/// unless `shell = true`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub before: Vec<Spanned<String>>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    #[serde(default)]
    pub on_failure: Vec<Spanned<String>>,
    #[serde(default)]
    pub shell: bool,
    /// How long each command may run, e.g. "5m" (default).
    pub timeout: Option<Spanned<String>>,
    /// Names of further environment variables passed to the commands.
    #[serde(default)]
    pub pass_env: Vec<String>,
}

/// Warnings about suspicious dumps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Warn when the dump is smaller than the previous one by more than
    /// this many percent (default 50; 0 turns the check off).
    pub shrink_warn: Option<Spanned<u32>>,
    /// Fail the run (exit 1) instead of warning.
    pub strict: Option<bool>,
}

/// The optional global `cellar.toml` in the config dir.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    pub hooks: Option<Hooks>,
}

/// A secret as written: a string. Anything else is refused without
/// showing it (serde's own message quotes the value: a password written
/// as a bare number would end up in logs and `status`).
struct SecretText(String);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretText, E> {
                Err(not_a_string())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretText, E> {
                Err(not_a_string())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretText, E> {
                Err(not_a_string())
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretText, E> {
                Err(not_a_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn not_a_string<E: serde::de::Error>() -> E {
    E::custom(
        "a secret must be a quoted string (\"file:PATH\", \"env:VAR\" or the secret itself); \
         the value written is not shown",
    )
}

pub fn secret_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Spanned<String>>, D::Error> {
    let v: Option<Spanned<SecretText>> = Option::deserialize(d)?;
    Ok(v.map(|s| {
        let span = s.span();
        Spanned::new(span, s.into_inner().0)
    }))
}
