//! One file per subcommand. Each builds its options and calls into
//! `job`, `backup`, `restore`, `catalog`, `store` or `source`; the shared
//! steps (load a profile, open its store, unlock its key) live here.

mod backup;
pub use backup::human_bytes;
mod check;
mod daemon;
mod db;
mod drill;
mod init;
mod keygen;
mod list;
mod meta;
mod mirror;
mod pin;
mod prune;
mod restore;
mod run;
mod show;
mod status;
mod verify;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tracing::warn;

use crate::cli::{Cli, Command};
use crate::job::BackupJob;
use crate::keys::{self, Identity};
use crate::profile::{self, Global, LoadError, ProblemList, Profile};
use crate::progress::{self, Progress};
use crate::store::{self, Store};
use crate::Failure;

pub fn dispatch(cli: &Cli) -> Result<i32, Failure> {
    // Canonical, so `dir`, `dir/` and a symlink to it are one config dir
    // (drills and restores name their scratch databases after it); a dir
    // that does not exist yet (`init`) is made absolute only.
    let abs = std::fs::canonicalize(&cli.config_dir)
        .or_else(|_| std::path::absolute(&cli.config_dir))
        .map_err(Failure::config)?;
    let dir = abs.as_path();
    let progress = progress::choose(cli.progress, cli.quiet);
    let metrics = cli.metrics_file.as_deref();
    let wait = cli.lock_wait;
    match &cli.command {
        Command::Check {
            profiles,
            coverage: false,
            ..
        } => check::run(dir, profiles),
        Command::Check {
            coverage: true,
            root,
            ..
        } => check::coverage(dir, root),
        Command::Run {
            profiles,
            due,
            no_prune,
        } => run::run(
            dir,
            profiles,
            *due,
            &Opts::new(metrics, wait, !no_prune),
            progress,
        ),
        Command::Backup { profile } => {
            backup::run(dir, profile, &Opts::new(metrics, wait, false), progress)
        }
        Command::Prune {
            profile,
            dry_run,
            force,
        } => prune::run(dir, profile, *dry_run, *force, wait),
        Command::Mirror {
            profile,
            id,
            database,
        } => mirror::run(
            dir,
            profile,
            id.as_deref(),
            database.as_deref(),
            wait,
            metrics,
            progress,
        ),
        Command::Drill {
            profile,
            id,
            database,
            no_owner,
        } => drill::run(
            dir,
            profile,
            id.as_deref(),
            database.as_deref(),
            *no_owner,
            metrics,
            progress,
            wait,
        ),
        Command::Pin { profile, id } => pin::run(dir, profile, id, true, wait),
        Command::Unpin { profile, id } => pin::run(dir, profile, id, false, wait),
        Command::List { profile, json } => list::run(dir, profile, *json),
        Command::Verify { profile, id, all } => {
            verify::run(dir, profile, id.as_deref(), *all, progress)
        }
        Command::Restore(args) => restore::run(dir, args, progress),
        Command::Keygen {
            name,
            user_id,
            passphrase,
            sign,
        } => keygen::run(dir, name, user_id.as_deref(), passphrase.as_deref(), *sign),
        Command::Init { kind, name } => init::run(dir, *kind, name),
        Command::Db { command } => db::run(dir, command),
        Command::Status {
            profiles,
            max_age,
            json,
            fail_on_uncovered,
        } => status::run(dir, profiles, *max_age, *json, *fail_on_uncovered),
        Command::Show { profile } => show::run(dir, profile),
        Command::Daemon { tick } => {
            daemon::run(dir, *tick, &Opts::new(metrics, wait, true), progress)
        }
        Command::Completions { shell } => meta::completions(*shell),
        Command::Man => meta::man(),
    }
}

/// Loads one profile by name; invalid configuration is exit 2.
pub fn load_one(dir: &Path, name: &str) -> Result<Profile, Failure> {
    let files = profile::discover(dir).map_err(Failure::config)?;
    let file = profile::select(dir, files, &[name.to_string()])
        .map_err(Failure::config)?
        .remove(0);
    let p = profile::load(dir, &file)
        .map_err(|ps| Failure::config(LoadError::Problems(ProblemList(ps))))?;
    for w in &p.warnings {
        warn!("{w}");
    }
    Ok(p)
}

/// `cellar.toml`, the settings shared by every profile.
pub fn load_global(dir: &Path) -> Result<Global, Failure> {
    profile::load_global(dir).map_err(|ps| Failure::config(LoadError::Problems(ProblemList(ps))))
}

/// What the backup-running commands share from the command line.
pub struct Opts<'a> {
    pub metrics: Option<&'a Path>,
    pub lock_wait: std::time::Duration,
    pub prune: bool,
}

impl<'a> Opts<'a> {
    pub fn new(metrics: Option<&'a Path>, lock_wait: std::time::Duration, prune: bool) -> Self {
        Opts {
            metrics,
            lock_wait,
            prune,
        }
    }
}

pub fn runner<'a>(
    dir: &'a Path,
    global: &'a Global,
    opts: &Opts<'_>,
    progress: &'a dyn Progress,
) -> BackupJob<'a> {
    BackupJob {
        config_dir: dir,
        global,
        metrics_file: opts.metrics.map(Path::to_path_buf),
        progress,
        lock_wait: opts.lock_wait,
        prune: opts.prune,
    }
}

pub fn open_store(dir: &Path, p: &Profile) -> Result<Box<dyn Store>, Failure> {
    store::open(&p.store, dir).map_err(|e| Failure {
        code: e.exit_code(),
        error: e.into(),
    })
}

/// The secret key named by `[encryption] identity`.
pub fn identity(p: &Profile) -> Result<Identity, Failure> {
    let path = p.encryption.identity.as_ref().ok_or_else(|| {
        Failure::config(anyhow::anyhow!(
            "{}: [encryption] has no `identity`; set it to the secret key file (e.g. \"secrets/ops.key.asc\") to verify or restore",
            p.file.display()
        ))
    })?;
    keys::load_identity(path, p.encryption.passphrase.clone())
        .with_context(|| format!("{}: [encryption] identity", p.file.display()))
        .map_err(Failure::config)
}

pub type SharedProgress = Arc<dyn Progress>;
