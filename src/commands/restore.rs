//! `cellar restore PROFILE [ID] --to-dir DIR | --to-database NAME | --to-file FILE`.

use std::path::Path;

use super::SharedProgress;
use crate::catalog;
use crate::cli::RestoreArgs;
use crate::restore::database::{self, DbTarget};
use crate::restore::{self, Fetch};
use crate::Failure;

pub fn run(dir: &Path, args: &RestoreArgs, progress: SharedProgress) -> Result<i32, Failure> {
    let profile = super::load_one(dir, &args.profile)?;
    // Mistakes in the request are exit 2, before anything is fetched.
    if (!args.table.is_empty() || !args.schema.is_empty()) && args.to_database.is_none() {
        return Err(Failure::config(anyhow::anyhow!(
            "--table and --schema restore into a new database: add --to-database NAME (for a file, use --to-file and `pg_restore -t` on it)"
        )));
    }
    // `dir/`, `dir/.` and `dir` are one path: a trailing slash must not
    // make a symlink's target the one checked.
    let normal = |p: &std::path::PathBuf| p.components().collect::<std::path::PathBuf>();
    let to_file = args.to_file.as_ref().map(normal);
    let to_dir = args.to_dir.as_ref().map(normal);
    let args = &RestoreArgs {
        to_file,
        to_dir,
        ..args.clone()
    };
    if let Some(file) = &args.to_file {
        restore::check_file_target(file).map_err(Failure::config)?;
    }
    if let Some(target) = &args.to_dir {
        restore::check_dir_target(target).map_err(Failure::config)?;
    }
    let store = super::open_store(dir, &profile)?;
    let identity = super::identity(&profile)?;
    let m = catalog::manifest(store.as_ref(), &profile, args.id.as_deref())?;
    let fetch = Fetch {
        profile: &profile,
        store: store.as_ref(),
        identity: &identity,
        progress: progress.as_ref(),
    };
    let payload =
        restore::database_payload(&m, args.database.as_deref()).map_err(Failure::config)?;
    if let Some(file) = &args.to_file {
        restore::to_file(&fetch, &m, payload, file)?;
        println!(
            "{}: backup {} {} written to {}",
            profile.name,
            m.id,
            payload.name,
            file.display()
        );
    } else if let Some(target) = &args.to_dir {
        restore::to_dir(&fetch, &m, payload, target)?;
        println!(
            "{}: backup {} restored into {}",
            profile.name,
            m.id,
            target.display()
        );
    } else if let Some(db) = &args.to_database {
        let Some(pg) = profile.source.database() else {
            return Err(Failure::config(anyhow::anyhow!(
                "{} is a files profile; use --to-dir or --to-file",
                profile.name
            )));
        };
        let mut conn = pg.conn.clone();
        if let Some(h) = &args.host {
            conn.host = h.clone();
        }
        if let Some(p) = args.port {
            conn.port = p;
        }
        if let Some(u) = &args.user {
            conn.user = u.clone();
        }
        // The profile's password belongs to its server and user: never
        // sent to another (which may ask for it in cleartext).
        if conn.host != pg.conn.host || conn.port != pg.conn.port || conn.user != pg.conn.user {
            conn.password = None;
            conn.password_source = None;
        }
        if let Some(spec) = &args.password {
            if !(spec.starts_with("file:") || spec.starts_with("env:")) {
                return Err(Failure::config(anyhow::anyhow!(
                    "--password takes \"file:PATH\" or \"env:VAR\", never the password itself (it would show in the process list)"
                )));
            }
            let cwd =
                std::env::current_dir().map_err(|e| Failure::config(anyhow::Error::from(e)))?;
            let r = crate::secret::resolve(spec, &cwd)
                .map_err(|e| Failure::config(anyhow::anyhow!(e)))?;
            conn.password = Some(r.secret);
            conn.password_source = Some(r.source);
        }
        // A partial restore goes into a new database: replacing a whole
        // database with a few of its tables is never what anyone wants.
        let selection = database::Selection::new(&args.table, &args.schema)
            .map_err(|e| Failure::config(anyhow::anyhow!(e)))?;
        let partial = !selection.is_empty();
        if partial {
            if args.clean {
                return Err(Failure::config(anyhow::anyhow!(
                    "--table and --schema restore into a new (or empty) database; --clean would replace all of {db} with just those objects. Choose a new name, e.g. --to-database {db}_part"
                )));
            }
            if profile.kind == crate::profile::Kind::Mariadb {
                return Err(Failure::config(anyhow::anyhow!(
                    "--table and --schema work on PostgreSQL custom dumps; {} is a mariadb profile: restore the whole dump into a new database and copy the tables from there",
                    profile.name
                )));
            }
            if payload.content != crate::manifest::Content::Pgdump {
                return Err(Failure::config(anyhow::anyhow!(
                    "backup {} of {} is a plain SQL dump: --table and --schema need a custom-format dump (format = \"custom\"); restore the whole dump into a new database, or use --to-file and pick the statements by hand",
                    m.id,
                    profile.name
                )));
            }
            if let Some(inv) = &payload.inventory {
                let missing = selection.missing_from(inv);
                if !missing.is_empty() {
                    return Err(Failure::config(anyhow::anyhow!(
                        "backup {} of {} holds no {}; its tables are: {}",
                        m.id,
                        profile.name,
                        missing.join(", no "),
                        inv.tables.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
        let jobs = args.jobs.map_or(profile.restore.jobs, |j| j.max(1));
        let target = DbTarget {
            kind: profile.kind,
            globals: args.globals,
            conn: &conn,
            database: db,
            clean: args.clean,
            no_owner: args.no_owner,
            keep_previous: args.keep_previous,
            mirror: false,
            jobs,
            spool_dir: &profile.restore.spool_dir,
            config_dir: dir,
            only: partial.then_some(&selection),
        };
        // Mistakes in the request are exit 2, before anything is fetched.
        database::check_target(&target)?
            .map_err(|refused| Failure::config(anyhow::anyhow!(refused)))?;
        let kept = database::restore(&fetch, &m, payload, &target)?;
        if partial {
            println!(
                "{}: backup {} restored into database {db}: only {}",
                profile.name,
                m.id,
                args.table
                    .iter()
                    .map(|t| format!("table {t}"))
                    .chain(args.schema.iter().map(|s| format!("schema {s}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            println!(
                "{}: backup {} restored into database {db}",
                profile.name, m.id
            );
        }
        if let Some(previous) = kept {
            println!("  its previous content is kept as database {previous}");
        }
    } else {
        return Err(Failure::config(anyhow::anyhow!(
            "choose a target: --to-dir, --to-database or --to-file"
        )));
    }
    Ok(0)
}
