//! The command line as the user types it (clap derive). Nothing here does
//! I/O; `main` turns it into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cellar",
    version,
    about = "Declarative, streaming, encrypted backups of PostgreSQL databases and folders"
)]
pub struct Cli {
    /// Folder holding profiles/, secrets/ and templates/.
    #[arg(long, global = true, env = "CELLAR_CONFIG_DIR", default_value = ".")]
    pub config_dir: PathBuf,
    /// More output: -v for progress lines, -vv for debugging.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// When to draw a progress line per payload (on stderr): auto = on a terminal, unless -q.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ProgressWhen::Auto)]
    pub progress: ProgressWhen,
    /// After every backup, drill or mirror, write a Prometheus textfile with each profile's state here.
    #[arg(long, global = true, value_name = "PATH", env = "CELLAR_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// How long to wait for another cellar working on the same profile.
    #[arg(long, global = true, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub lock_wait: std::time::Duration,
    #[command(subcommand)]
    pub command: Command,
}

/// `--progress`: when to draw the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressWhen {
    /// Never: periodic log lines (shown with -v) instead.
    Never,
    /// On a terminal, unless -q.
    Auto,
    /// Always, also when stderr is a file or a pipe.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate profiles, then reach each source, store and key.
    Check {
        profiles: Vec<String>,
        /// Instead: list the databases on each configured database server that no
        /// profile backs up (exit 1 when there are any).
        #[arg(long, conflicts_with = "profiles")]
        coverage: bool,
        /// With --coverage: also list the folders directly under DIR that no files
        /// profile backs up (repeatable).
        #[arg(long, value_name = "DIR", requires = "coverage")]
        root: Vec<std::path::PathBuf>,
    },
    /// Back up every profile (or those named); one failure never stops the others.
    Run {
        profiles: Vec<String>,
        /// Only the profiles whose `schedule` fired since their last successful backup.
        #[arg(long)]
        due: bool,
        /// Do not apply the retention after a successful backup.
        #[arg(long)]
        no_prune: bool,
    },
    /// Apply the retention: keep the newest backup of each recent day, week and month,
    /// pinned backups and the newest one whose drill passed; nothing is deleted while
    /// the last run failed a canary.
    Prune {
        profile: String,
        /// Print what would be kept and deleted, and why; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete untrusted backups (unsigned, forged or damaged manifests).
        #[arg(long)]
        force: bool,
    },
    /// Restore the latest backup into the [mirror] database, swapping it in only on success.
    Mirror {
        profile: String,
        /// Backup id (default: the latest complete backup).
        #[arg(long)]
        id: Option<String>,
        /// With several databases in the backup: which one.
        #[arg(long)]
        database: Option<String>,
    },
    /// Restore a backup (default: the latest) into a scratch database, compare it
    /// with the manifest's inventory, drop it, and record the result and timings.
    Drill {
        profile: String,
        /// Backup id (default: the latest complete backup).
        id: Option<String>,
        /// With several databases in the backup: only this one (default: each in turn).
        #[arg(long)]
        database: Option<String>,
        /// Do not restore ownership and privileges (for a server without the source's roles).
        #[arg(long)]
        no_owner: bool,
    },
    /// Keep a backup out of the retention (a marker object next to it in the store;
    /// on S3 with object lock, also a legal hold on its objects).
    Pin {
        profile: String,
        /// Backup id, as `list` prints it.
        id: String,
    },
    /// Release a pinned backup: the retention decides about it again.
    Unpin {
        profile: String,
        /// Backup id, as `list` prints it.
        id: String,
    },
    /// One backup of one profile, now.
    Backup { profile: String },
    /// The complete backups in the store, with their retention tier, pin and last drill.
    List {
        profile: String,
        #[arg(long)]
        json: bool,
    },
    /// Fetch, check size and BLAKE2, decrypt, decompress and check structure, without restoring.
    Verify {
        profile: String,
        /// Backup id (default: the latest).
        id: Option<String>,
        /// Verify every complete backup.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Restore a backup into a folder, a database or a file.
    Restore(Box<RestoreArgs>),
    /// Write an OpenPGP key pair to secrets/NAME.pub.asc and secrets/NAME.key.asc.
    Keygen {
        name: String,
        /// User id of the key (default: "cellar NAME").
        #[arg(long)]
        user_id: Option<String>,
        /// Protect the secret key: "file:PATH" or "env:VAR" (never the passphrase itself).
        #[arg(long)]
        passphrase: Option<String>,
        /// Write a signing key pair instead (NAME.sign.key.asc, NAME.sign.pub.asc):
        /// the backup host signs every manifest with it.
        #[arg(long, conflicts_with = "passphrase")]
        sign: bool,
    },
    /// Write profiles/NAME.toml from templates/KIND.toml.
    Init {
        #[arg(value_enum)]
        kind: InitKind,
        name: String,
    },
    /// Last success, failure and drill of each profile; exit 1 when one is stale or
    /// failed, its last drill failed, or it misses its rto or rpo.
    Status {
        profiles: Vec<String>,
        /// A profile whose last success is older than this is stale, e.g. 26h, 2d.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_age: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
        /// Also exit 1 when a configured database server has databases that no
        /// profile backs up (as `check --coverage` lists them).
        #[arg(long)]
        fail_on_uncovered: bool,
    },
    /// Print a profile as cellar resolved it, with secrets redacted.
    Show { profile: String },
    /// Stay in the foreground and run each profile on its own `schedule`.
    Daemon {
        /// Seconds between looks at the schedules.
        #[arg(long, default_value_t = 30, hide = true)]
        tick: u64,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Debug commands against a profile's PostgreSQL server.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

impl Command {
    /// Commands that change nothing: a closed stdout may simply end them.
    pub fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::List { .. }
                | Command::Show { .. }
                | Command::Status { .. }
                | Command::Completions { .. }
                | Command::Man
                | Command::Db { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitKind {
    Postgres,
    Mariadb,
    Files,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// List the databases on the server.
    List {
        profile: String,
        /// Use the [mirror] server instead of the source.
        #[arg(long)]
        mirror: bool,
    },
    /// Run SELECT 1 on the server.
    Ping {
        profile: String,
        #[arg(long)]
        mirror: bool,
    },
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
pub struct RestoreArgs {
    pub profile: String,
    /// Backup id (default: the latest complete backup).
    pub id: Option<String>,
    /// Files profile: restore the tree into DIR (must not exist or be empty).
    #[arg(long, value_name = "DIR", group = "target")]
    pub to_dir: Option<PathBuf>,
    /// Database profile: restore into database NAME.
    #[arg(long, value_name = "NAME", group = "target")]
    pub to_database: Option<String>,
    /// Write the decrypted, decompressed dump or tar to FILE.
    #[arg(long, value_name = "FILE", group = "target")]
    pub to_file: Option<PathBuf>,
    /// With several databases in the backup: which one.
    #[arg(long)]
    pub database: Option<String>,
    /// Replace a non-empty target database: the backup is restored into a
    /// scratch database that is swapped in only when the restore succeeded.
    #[arg(long)]
    pub clean: bool,
    /// With --clean: keep the old content as database cellar_previous_<hash>.
    #[arg(long)]
    pub keep_previous: bool,
    /// pg_restore workers for a custom-format backup (default: [restore] jobs, or one per core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Also restore roles and tablespaces (pg_dumpall --globals-only) first.
    #[arg(long)]
    pub globals: bool,
    /// Do not restore ownership and privileges (for a server without the source's roles).
    #[arg(long)]
    pub no_owner: bool,
    /// Restore only this table (SCHEMA.TABLE, or TABLE in public), with its data,
    /// into a new database (--to-database); repeatable. Custom-format backups only.
    #[arg(long, value_name = "TABLE")]
    pub table: Vec<String>,
    /// Restore only the objects of this schema, with their data, into a new
    /// database (--to-database); repeatable. Custom-format backups only.
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Vec<String>,
    /// Restore on another server. The profile's password is not sent to
    /// it: give the other server's with --password.
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long)]
    pub user: Option<String>,
    /// The password for --host/--port/--user: "file:PATH" or "env:VAR"
    /// (never the password itself: it would be in the process list).
    #[arg(long, value_name = "file:PATH|env:VAR")]
    pub password: Option<String>,
}
