//! `cellar check [PROFILE...]`: validate every profile (all problems at
//! once), then reach each source, store and key, one line per item.
//! Exit 2 when a profile is invalid, 1 when something cannot be reached.

use crate::logging::one_line;
use std::path::Path;

use crate::keys;
use crate::profile::{self, Databases, Profile, Source};
use crate::restore::database;
use crate::source::{mariadb, postgres};
use crate::Failure;

pub fn run(dir: &Path, names: &[String]) -> Result<i32, Failure> {
    let files = profile::discover(dir).map_err(Failure::config)?;
    let files = profile::select(dir, files, names).map_err(Failure::config)?;
    let mut invalid = 0;
    let mut unreachable = 0;
    for file in &files {
        match profile::load(dir, file) {
            Err(problems) => {
                invalid += 1;
                println!("{}: invalid ({} problem(s))", file.name, problems.len());
                for p in problems {
                    println!("  {}", crate::logging::log_text(&p.to_string()));
                }
            }
            Ok(p) => {
                for w in &p.warnings {
                    println!("{}: warning: {}", p.name, one_line(w));
                }
                for (item, result) in reach(dir, &p) {
                    match result {
                        Ok(detail) => println!("{}: {item}: ok ({})", p.name, one_line(&detail)),
                        Err(e) => {
                            unreachable += 1;
                            println!(
                                "{}: {item}: FAILED: {}",
                                p.name,
                                one_line(&format!("{e:#}"))
                            );
                        }
                    }
                }
            }
        }
    }
    if files.is_empty() {
        println!(
            "no profiles in {}; create one with `cellar init postgres NAME`",
            dir.join("profiles").display()
        );
    }
    Ok(if invalid > 0 {
        2
    } else if unreachable > 0 {
        1
    } else {
        0
    })
}

/// Every valid profile; invalid ones are reported on stderr and counted.
pub fn valid_profiles(dir: &Path) -> Result<(Vec<Profile>, usize), Failure> {
    let files = profile::discover(dir).map_err(Failure::config)?;
    let mut valid = Vec::new();
    let mut invalid = 0;
    for file in &files {
        match profile::load(dir, file) {
            Ok(p) => valid.push(p),
            Err(problems) => {
                invalid += 1;
                tracing::error!(
                    "{} is invalid ({} problem(s)); `cellar check {}` shows them; its databases count as not backed up",
                    file.rel.display(),
                    problems.len(),
                    file.name
                );
            }
        }
    }
    Ok((valid, invalid))
}

/// Prints each server's coverage; returns how many databases are not
/// backed up (or servers could not be listed).
pub fn print_coverage(profiles: &[Profile]) -> usize {
    let mut bad = 0;
    for (server, result) in crate::coverage::of(profiles) {
        match result {
            Err(e) => {
                bad += 1;
                println!(
                    "coverage of {server}: FAILED: {}",
                    one_line(&format!("{e:#}"))
                );
            }
            Ok(s) if s.uncovered.is_empty() => println!(
                "coverage of {server}: ok ({} database(s), each backed up by a profile)",
                s.covered.len()
            ),
            Ok(s) => {
                bad += s.uncovered.len();
                println!(
                    "coverage of {server}: {} database(s) backed up, {} NOT: {}",
                    s.covered.len(),
                    s.uncovered.len(),
                    one_line(&s.uncovered.join(", "))
                );
                let kind = if server.starts_with("mariadb") {
                    "mariadb"
                } else {
                    "postgres"
                };
                println!(
                    "  fix: add each to a profile's `databases` (or set `all = true`), or make a profile for it (`cellar init {kind} NAME`)"
                );
            }
        }
    }
    bad
}

/// `cellar check --coverage`: the databases no profile backs up, on the
/// servers the database profiles name. Exit 2 with an invalid profile, 1
/// when a database is not covered or a server cannot be listed.
pub fn coverage(dir: &Path, roots: &[std::path::PathBuf]) -> Result<i32, Failure> {
    let (profiles, invalid) = valid_profiles(dir)?;
    if !profiles.iter().any(|p| p.source.database().is_some()) {
        println!("no database profiles: no servers to look at");
    }
    let mut bad = print_coverage(&profiles);
    for root in roots {
        match crate::coverage::folders(root, &profiles) {
            Err(e) => {
                bad += 1;
                println!(
                    "coverage of {}: FAILED: {}",
                    root.display(),
                    one_line(&format!("{e:#}"))
                );
            }
            Ok(f) => {
                let mut line = format!(
                    "coverage of {}: {} folder(s) backed up",
                    root.display(),
                    f.covered.len()
                );
                if !f.partly.is_empty() {
                    line += &format!(", {} in part: {}", f.partly.len(), f.partly.join(", "));
                }
                if f.uncovered.is_empty() {
                    line += ", none left out";
                } else {
                    line += &format!(", {} NOT: {}", f.uncovered.len(), f.uncovered.join(", "));
                }
                println!("{}", one_line(&line));
                if !f.uncovered.is_empty() {
                    bad += f.uncovered.len();
                    println!(
                        "  fix: add each to a files profile's `paths` (or list {} itself), or make a profile for it (`cellar init files NAME`)",
                        root.display()
                    );
                }
            }
        }
    }
    Ok(if invalid > 0 {
        2
    } else if bad > 0 {
        1
    } else {
        0
    })
}

type Item = (&'static str, anyhow::Result<String>);

/// Scratch databases of this profile's restores and mirror that exist on
/// their server while no cellar is working on them: left by a killed run,
/// they may hold un-anonymized data. Markers of scratch databases that are
/// gone are removed.
fn leftovers(dir: &Path, p: &Profile) -> anyhow::Result<String> {
    let Some(pg) = p.source.database() else {
        return Ok("none".into());
    };
    let my = p.kind == crate::profile::Kind::Mariadb;
    let describe = |c: &crate::profile::DbConn| c.describe();
    let mut found: Vec<String> = Vec::new();
    let mut check = |conn: &crate::profile::DbConn,
                     target: &str,
                     marker: Option<&std::path::PathBuf>| {
        let name = database::scratch_name(target);
        let exists = if my {
            crate::source::mariadb::exists(conn, &name)
        } else {
            postgres::database_exists(conn, &name)
        };
        match exists {
            Ok(true) => found.push(format!(
                "{name} on {} (a killed restore or mirror into {target}; it may hold un-anonymized data: the next run into {target} drops it, or run DROP DATABASE {name})",
                describe(conn)
            )),
            Ok(false) => {
                // Killed right after its swap, a run leaves the target's
                // old content under the previous name instead.
                let previous = database::previous_name(target);
                match (my, marker) {
                    (false, Some(m)) => match postgres::database_exists(conn, &previous) {
                        Ok(true) => found.push(format!(
                            "{previous} on {} (the old content of {target}, left by a restore or mirror killed during its swap, or kept by --keep-previous; drop it with DROP DATABASE {previous} once it is not needed)",
                            describe(conn)
                        )),
                        Ok(false) => {
                            let _ = std::fs::remove_file(m);
                        }
                        Err(_) => {}
                    },
                    (_, Some(m)) => {
                        let _ = std::fs::remove_file(m);
                    }
                    (_, None) => {}
                }
            }
            Err(_) => {}
        }
    };
    let mut asked = Vec::new();
    let mut cut: Vec<String> = Vec::new();
    for (path, m) in database::markers(dir) {
        if m.profile != p.name || m.running() {
            continue;
        }
        // A swap cut short: its marker stays until the operator deletes
        // it (restores into the target refuse until then).
        if let Some(journal) = &m.undo {
            cut.push(format!(
                "the swap into {} on {} was cut short: it may lack its views, routines, triggers and events, and its old tables may be in {}; put it back as the first lines of {} say, then delete {}",
                m.target,
                m.server,
                database::previous_name(&m.target),
                journal.display(),
                path.display()
            ));
            continue;
        }
        // A restore may have gone to another server (--host); ask a
        // server of the profile's only when it is the one recorded.
        let conn = match &p.mirror {
            Some(mi) if database::same_server(&describe(&mi.conn), &m.server) => &mi.conn,
            _ if database::same_server(&describe(&pg.conn), &m.server) => &pg.conn,
            _ => continue,
        };
        check(conn, &m.target, Some(&path));
        asked.push((m.server.clone(), m.target.clone()));
    }
    if let Some(m) = &p.mirror {
        if !asked.contains(&(describe(&m.conn), m.database.clone())) {
            check(&m.conn, &m.database, None);
        }
    }
    found.extend(cut);
    if found.is_empty() {
        Ok("none".into())
    } else {
        anyhow::bail!("{}", found.join("; "))
    }
}

fn reach(dir: &Path, p: &Profile) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    match &p.source {
        Source::Postgres(db) | Source::Mariadb(db) => {
            let my = p.kind == crate::profile::Kind::Mariadb;
            let ping = |database: Option<&str>| {
                if my {
                    mariadb::ping(&db.conn, database)
                        .map(|v| format!("{} MariaDB {v}", db.conn.describe()))
                } else {
                    postgres::ping(&db.conn, database.unwrap_or("postgres"))
                        .map(|v| format!("{} PostgreSQL {v}", db.conn.describe()))
                }
            };
            let version = ping(None);
            let ok = version.is_ok();
            items.push(("source", version));
            if ok {
                let names = match &db.databases {
                    Databases::One(d) => vec![d.clone()],
                    Databases::Many(ds) => ds.clone(),
                    Databases::All => Vec::new(),
                };
                for name in names {
                    items.push(("database", ping(Some(&name)).map(|_| name.clone())));
                }
                items.push(("scratch databases", leftovers(dir, p)));
            }
        }
        Source::Files(fs) => {
            for path in &fs.paths {
                items.push((
                    "path",
                    std::fs::read_dir(path)
                        .map(|_| ())
                        .or_else(|_| {
                            // O_NONBLOCK: a FIFO must not hang the check.
                            use std::os::unix::fs::OpenOptionsExt;
                            std::fs::File::options()
                                .read(true)
                                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                                .open(path)
                                .map(|_| ())
                        })
                        .map(|_| path.display().to_string())
                        .map_err(|e| {
                            anyhow::anyhow!("{}: {e}; fix `paths` in [source]", path.display())
                        }),
                ));
            }
        }
    }
    items.push((
        "store",
        crate::store::open(&p.store, dir)
            .and_then(|s| s.check().map(|_| s.location()))
            .map_err(Into::into),
    ));
    items.push((
        "recipients",
        Ok(p.encryption
            .recipients
            .iter()
            .map(|r| format!("{} {}", r.path.display(), r.fingerprint()))
            .collect::<Vec<_>>()
            .join(", ")),
    ));
    if let Some(path) = &p.encryption.identity {
        items.push((
            "identity",
            keys::load_identity(path, p.encryption.passphrase.clone())
                .map(|i| format!("{} {}", path.display(), i.fingerprint()))
                .map_err(Into::into),
        ));
    }
    items
}
