//! Coverage: the databases on each configured PostgreSQL or MariaDB server
//! that no profile backs up (`cellar check --coverage`,
//! `status --fail-on-uncovered`).
//!
//! The servers are those of the database profiles' `[source]`. A database
//! counts as covered when a profile backs it up on that server
//! (`database`, `databases`, or `all = true`). Left out of the report:
//! template databases and those that refuse connections, cellar's own
//! scratch and previous copies, the `[mirror]` targets of profiles (copies
//! refreshed from a backup), and `postgres` unless it holds tables of its
//! own (it exists on every server and usually holds nothing). On MariaDB,
//! the server's own schemas (`mysql`, `information_schema`,
//! `performance_schema`, `sys`) are left out, as `all = true` leaves them.
//!
//! Folders: `check --coverage --root DIR` looks at the folders directly
//! under DIR. One is backed up when a files profile lists it or a folder
//! above it; "in part" when a profile lists only something inside it; not
//! backed up otherwise. Paths are compared after resolving symlinks;
//! `exclude` patterns are not taken into account.

use crate::profile::{DbConn, Profile, Source};
use crate::source::{mariadb, postgres};

/// One server's coverage.
#[derive(Debug, serde::Serialize)]
pub struct Server {
    pub server: String,
    pub covered: Vec<String>,
    pub uncovered: Vec<String>,
}

/// The coverage of every source server of `profiles`; a server that
/// cannot be listed is an error that names it.
pub fn of(profiles: &[Profile]) -> Vec<(String, anyhow::Result<Server>)> {
    let mut servers: Vec<&DbConn> = Vec::new();
    for p in profiles {
        if let Some(db) = p.source.database() {
            if !servers.iter().any(|c| same_server(c, &db.conn)) {
                servers.push(&db.conn);
            }
        }
    }
    servers
        .into_iter()
        .map(|conn| (conn.describe(), server(conn, profiles)))
        .collect()
}

fn same_server(a: &DbConn, b: &DbConn) -> bool {
    let local = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1" | "") || h.starts_with('/');
    a.mariadb == b.mariadb
        && a.port == b.port
        && (a.host == b.host || (local(&a.host) && local(&b.host)))
}

fn server(conn: &DbConn, profiles: &[Profile]) -> anyhow::Result<Server> {
    let mut out = Server {
        server: conn.describe(),
        covered: Vec::new(),
        uncovered: Vec::new(),
    };
    let databases = if conn.mariadb {
        mariadb::list_databases(conn)?
    } else {
        postgres::list_databases(conn)?
    };
    for db in databases {
        let backed_up = profiles.iter().any(|p| match &p.source {
            Source::Postgres(s) => !conn.mariadb && s.backs_up(conn, &db),
            Source::Mariadb(s) => conn.mariadb && s.backs_up(conn, &db),
            Source::Files(_) => false,
        });
        let mirror = profiles.iter().any(|p| {
            p.mirror
                .as_ref()
                .is_some_and(|m| m.database == db && same_server(&m.conn, conn))
        });
        if backed_up {
            out.covered.push(db);
        } else if mirror
            || (!conn.mariadb && db == "postgres" && postgres::count_tables(conn, &db)? == 0)
        {
            continue;
        } else {
            out.uncovered.push(db);
        }
    }
    Ok(out)
}

/// The folders directly under one root, by coverage.
#[derive(Debug, Default)]
pub struct Folders {
    pub covered: Vec<String>,
    pub partly: Vec<String>,
    pub uncovered: Vec<String>,
}

/// Which folders directly under `root` the files profiles back up.
pub fn folders(root: &std::path::Path, profiles: &[Profile]) -> anyhow::Result<Folders> {
    use anyhow::Context;
    let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let listed: Vec<std::path::PathBuf> = profiles
        .iter()
        .filter_map(|p| match &p.source {
            Source::Files(f) => Some(f.paths.iter().map(|p| real(p)).collect::<Vec<_>>()),
            Source::Postgres(_) | Source::Mariadb(_) => None,
        })
        .flatten()
        .collect();
    let root_real =
        std::fs::canonicalize(root).with_context(|| format!("reading {}", root.display()))?;
    let mut names: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&root_real)
        .with_context(|| format!("reading {}", root.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    let mut out = Folders::default();
    for (name, path) in names {
        if listed.iter().any(|l| path.starts_with(l)) {
            out.covered.push(name);
        } else if listed.iter().any(|l| l.starts_with(&path)) {
            out.partly.push(name);
        } else {
            out.uncovered.push(name);
        }
    }
    Ok(out)
}
