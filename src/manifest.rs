//! The manifest: the record that makes a backup exist.
//!
//! It is written last, after every payload is safely stored, and read
//! first on verify and restore. Versioned JSON, readable with `jq`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::profile::{Compression, Kind};

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The detached OpenPGP signature beside each manifest.
pub const SIGNATURE_SUFFIX: &str = ".manifest.json.sig";

/// Unknown fields are refused: a manifest is either exactly what cellar
/// writes or untrusted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub profile: String,
    pub kind: Kind,
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tool_version: String,
    pub source: SourceInfo,
    pub compression: Compression,
    /// Fingerprints of the certificates every payload is encrypted to.
    pub recipients: Vec<String>,
    pub payloads: Vec<Payload>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// e.g. `postgresql://backup@db1:5432` or `files on host`.
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Files archived, or user tables dumped: 0 means an empty backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// What is not in the backup, with the reason: databases listed by
    /// `all = true` that were dropped before pg_dump reached them; counts
    /// of files that vanished, special files, unreadable files skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Files that changed while they were read: each archived with exactly
    /// the size it had when opened (cut or zero-padded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed_during_backup: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// `pg_dump -Fc` archive (pg_restore).
    Pgdump,
    /// Plain SQL of one database (psql).
    Sql,
    /// `pg_dumpall --globals-only` (psql).
    Globals,
    /// A tar archive of folders.
    Tar,
    /// `mariadb-dump` of one database (SQL for the `mariadb` client).
    Mariadb,
    /// `mariadb-dump --system=users`: users, roles and grants.
    #[serde(rename = "mariadb-users")]
    MariadbUsers,
}

impl Content {
    /// A database dump that restores into a database.
    pub fn is_database(self) -> bool {
        matches!(self, Content::Pgdump | Content::Sql | Content::Mariadb)
    }

    /// Roles, users and grants beside the databases.
    pub fn is_globals(self) -> bool {
        matches!(self, Content::Globals | Content::MariadbUsers)
    }

    /// What it holds, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Content::Pgdump => "pg_dump archive",
            Content::Sql => "SQL",
            Content::Globals => "roles and tablespaces",
            Content::Tar => "tar",
            Content::Mariadb => "mariadb-dump SQL",
            Content::MariadbUsers => "users and grants",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// File name in the profile's folder, e.g. `20261121T020000Z.pgdump.xz.pgp`.
    pub name: String,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub stored_size: u64,
    pub stored_blake2b: String,
    pub plain_size: u64,
    pub plain_blake2b: String,
    /// What the database held, read in the dump's own snapshot: a restore
    /// is compared with it before it is swapped in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
}

/// A database's contents at dump time: exact rows per table and counts of
/// objects by kind. Extension members and cellar-invisible catalogs are
/// left out on both sides of a comparison.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Rows per table (`schema.table`, quoted as SQL needs it).
    pub tables: std::collections::BTreeMap<String, u64>,
    /// Tables the backup role may not read: not counted (pg_dump fails on
    /// them unless they are excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Objects by kind: views, materialized views, sequences, functions,
    /// triggers, types, indexes, schemas, extensions, large objects.
    pub objects: std::collections::BTreeMap<String, u64>,
    /// `pg_dump_args` chose what to dump (tables, schemas, data only...):
    /// the inventory is the database's, not the dump's, and a restore is
    /// not compared with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filtered: bool,
}

impl Inventory {
    /// Every difference between this (the backup's) and `restored`, as
    /// one line each; empty when they agree.
    pub fn differences(&self, restored: &Inventory) -> Vec<String> {
        let mut out = Vec::new();
        for (table, rows) in &self.tables {
            match restored.tables.get(table) {
                None => out.push(format!(
                    "table {table} ({rows} rows in the backup) is missing"
                )),
                Some(r) if r != rows => out.push(format!(
                    "table {table}: {rows} rows in the backup, {r} restored"
                )),
                Some(_) => {}
            }
        }
        for table in restored.tables.keys() {
            if !self.tables.contains_key(table) && !self.unreadable.contains(table) {
                out.push(format!(
                    "table {table} is restored but was not in the backup's database"
                ));
            }
        }
        for (kind, n) in &self.objects {
            let r = restored.objects.get(kind).copied().unwrap_or(0);
            if r != *n {
                out.push(format!("{kind}: {n} in the backup, {r} restored"));
            }
        }
        out
    }
}

impl Manifest {
    pub fn key(profile: &str, id: &str) -> String {
        format!("{profile}/{id}{MANIFEST_SUFFIX}")
    }

    pub fn sig_key(profile: &str, id: &str) -> String {
        format!("{profile}/{id}{SIGNATURE_SUFFIX}")
    }

    pub fn stored_size(&self) -> u64 {
        self.payloads.iter().map(|p| p.stored_size).sum()
    }
}

/// The id of a backup started at `t`: `20261121T020000Z`.
pub fn id_for(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A name from outside (a database name) as a safe part of a file name:
/// bytes other than ASCII letters, digits, `_` and `-` become `%XX`, so
/// `a/../x` can never leave the profile's folder and the name round-trips
/// exactly ([`decode_name`]).
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode_name(encoded: &str) -> Option<String> {
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The time of a backup id: `20261121T020000Z`, or with the suffix a
/// writer adds when another one took the same second
/// (`20261121T020000Z-3fa9`).
pub fn parse_id(id: &str) -> Option<DateTime<Utc>> {
    let (stamp, suffix) = match id.split_once('-') {
        Some((s, x)) => (s, Some(x)),
        None => (id, None),
    };
    if suffix.is_some_and(|x| {
        x.len() != 4
            || !x
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| n.and_utc())
}

/// The payload's file name: `<id>[.<database>].<ext>.<xz|zst>.pgp`.
pub fn payload_name(
    id: &str,
    database: Option<&str>,
    ext: &str,
    compression: &Compression,
) -> String {
    match database {
        Some(db) => format!(
            "{id}.{}.{ext}.{}.pgp",
            encode_name(db),
            compression.extension()
        ),
        None => format!("{id}.{ext}.{}.pgp", compression.extension()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_database_names_are_encoded_and_round_trip() {
        for db in [
            "shop",
            "a/../../../../x",
            "..",
            ".hidden",
            "tab\there",
            "ünï cödé",
            "a%b.c",
        ] {
            let e = encode_name(db);
            assert!(
                !e.contains('/') && !e.contains('.') && !e.contains('\\'),
                "{e}"
            );
            assert_eq!(decode_name(&e).as_deref(), Some(db));
            crate::store::check_key(&format!("p/20261121T020000Z.{e}.pgdump.xz.pgp")).unwrap();
        }
        assert_eq!(encode_name("shop_2-a"), "shop_2-a");
        for key in ["../x", "/etc/x", "p/../x", "p//x", "p/./x", "p/a\\b", ""] {
            assert!(crate::store::check_key(key).is_err(), "{key}");
        }
    }

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let t = parse_id("20261121T020000Z").unwrap();
        assert_eq!(id_for(t), "20261121T020000Z");
        assert!(parse_id("2026-11-21").is_none());
        assert!(id_for(t) < id_for(t + chrono::Duration::seconds(1)));
    }
}
