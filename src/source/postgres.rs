//! PostgreSQL through its own client tools.
//!
//! The password never appears in argv, in the environment, or on disk:
//! each invocation gets a private passfile in memory (a 0600 memfd that
//! the child sees as `PGPASSFILE=/dev/fd/255`), which is gone with the
//! processes however cellar ends, even on a second signal or kill -9. Connection parameters go in a conninfo string, so a
//! database name can hold any character.
//!
//! Restores only ever write into a scratch database (see
//! `restore::database`): custom archives go through `pg_restore -d -j N`,
//! which never involves psql; SQL from a backup (plain dumps, globals, the
//! database-level statements) goes through [`psql_restricted`], where a
//! `\restrict` key that only cellar knows blocks every psql meta-command.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::process;
use crate::profile::DbConn;

const HINT: &str = "install the PostgreSQL client tools (apt-get install postgresql-client) or set pg_bin_dir in [source]";

/// Quotes a value for a libpq conninfo string.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub fn conninfo(conn: &DbConn, database: &str) -> String {
    format!(
        "host={} port={} user={} dbname={} application_name=cellar",
        quote(&conn.host),
        conn.port,
        quote(&conn.user),
        quote(database)
    )
}

/// Environment for one client invocation; holds the passfile alive.
struct ClientEnv {
    passfile: Option<std::os::fd::OwnedFd>,
    vars: Vec<(String, String)>,
}

/// The descriptor the passfile has in the child (high, clear of the spool
/// that `pg_restore` reads as fd 3).
const PASSFILE_FD: i32 = 255;

fn client_env(conn: &DbConn) -> io::Result<ClientEnv> {
    let mut vars = vec![("PGCONNECT_TIMEOUT".to_string(), "15".to_string())];
    let Some(pw) = &conn.password else {
        return Ok(ClientEnv {
            passfile: None,
            vars,
        });
    };
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let f = process::secret_file(
        c"cellar-pgpass",
        &format!("*:*:*:*:{}\n", escape(pw.expose())),
    )?;
    vars.push(("PGPASSFILE".into(), format!("/dev/fd/{PASSFILE_FD}")));
    Ok(ClientEnv {
        passfile: Some(f.into()),
        vars,
    })
}

/// cellar's own statements find only the system catalog's functions and
/// operators: a database owner who puts a `count(*)` of their own ahead of
/// `pg_catalog` (`ALTER DATABASE ... SET search_path`) must not have it run
/// by cellar's session, which is often a superuser's. A setting given at
/// connection time overrides the database's and the role's.
///
/// A server's `statement_timeout` or `idle_in_transaction_session_timeout`
/// (set for the application's sessions) would end the row counts or the
/// snapshot pg_dump shares, which stays idle for the whole dump; pg_dump
/// lifts both for its own session the same way.
fn catalog_only(cmd: &mut Command) {
    let mut options = std::env::var("PGOPTIONS").unwrap_or_default();
    options.push_str(" -c search_path=pg_catalog,pg_temp");
    options.push_str(" -c statement_timeout=0 -c idle_in_transaction_session_timeout=0");
    cmd.env("PGOPTIONS", options.trim_start());
}

/// psql for cellar's own statements on `database`, read from stdin:
/// catalog-only search path, unaligned rows only, stop at the first error.
fn own_psql(conn: &DbConn, env: &ClientEnv, database: &str) -> Command {
    let mut cmd = command(conn, "psql", env);
    catalog_only(&mut cmd);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    cmd
}

fn command(conn: &DbConn, tool: &str, env: &ClientEnv) -> Command {
    // A password from the caller's environment must not override ours,
    // and secrets read from cellar's environment (`env:VAR`) stay there.
    let mut cmd = process::tool(conn.tool(tool));
    cmd.envs(env.vars.iter().map(|(k, v)| (k, v)));
    if let Some(f) = &env.passfile {
        use std::os::fd::AsRawFd;
        process::pass_fd(&mut cmd, f.as_raw_fd(), PASSFILE_FD);
    }
    cmd
}

/// Runs an SQL script through psql and returns its unaligned output.
/// `vars` become psql variables (`:'name'` in the script).
pub fn query(
    conn: &DbConn,
    database: &str,
    sql: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<String> {
    if database == MAINTENANCE_DB {
        if let Some(out) = session::query(conn, sql, vars) {
            return out.with_context(|| format!("on {} database {database}", conn.describe()));
        }
    }
    query_once(conn, database, sql, vars, true)
}

/// Runs the operator's own SQL (the mirror's `after_restore` and
/// `checks`) on `database` with that database's own `search_path`.
pub fn user_query(conn: &DbConn, database: &str, sql: &str) -> anyhow::Result<String> {
    query_once(conn, database, sql, &[], false)
}

/// The database cellar's own statements about databases (exists, create,
/// drop, swap) run on; it never restores into it.
const MAINTENANCE_DB: &str = "postgres";

/// [`query`] in a psql started for it alone.
fn query_once(
    conn: &DbConn,
    database: &str,
    sql: &str,
    vars: &[(&str, &str)],
    catalog: bool,
) -> anyhow::Result<String> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "psql", &env);
    if catalog {
        catalog_only(&mut cmd);
    }
    // Waited for below, on this thread: it ends with cellar.
    process::die_with_parent(&mut cmd);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = process::spawn(&mut cmd, "psql", HINT)?;
    let mut stdin = child.child.stdin.take().unwrap();
    let mut stdout = child.child.stdout.take().unwrap();
    let script = sql.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let mut out = String::new();
    if catalog {
        stdout.read_to_string(&mut out)?;
    } else {
        // The operator's own statements (after_restore, checks) may run
        // for long: a SIGTERM stops them (psql is killed on the way out).
        process::Cancellable(stdout).read_to_string(&mut out)?;
    }
    let _ = writer.join();
    child
        .wait()
        .with_context(|| format!("on {} database {database}", conn.describe()))?;
    Ok(out)
}

/// A session-level advisory lock held on the server for as long as this
/// value lives (a psql session kept open); any cellar on any host that
/// asks for the same name waits or gives up.
pub struct ServerLock {
    _psql: process::Running,
    _stdin: std::process::ChildStdin,
    _env: ClientEnv,
}

/// Takes the advisory lock `name` on the server, or `None` when another
/// session holds it.
pub fn try_server_lock(conn: &DbConn, name: &str) -> anyhow::Result<Option<ServerLock>> {
    let env = client_env(conn)?;
    let mut cmd = own_psql(conn, &env, "postgres");
    cmd.arg("-v").arg(format!("lockname={name}"));
    let mut psql = process::spawn(&mut cmd, "psql", HINT)?;
    let mut stdin = psql.child.stdin.take().unwrap();
    let stdout = psql.child.stdout.take().unwrap();
    stdin.write_all(b"SELECT pg_try_advisory_lock(hashtextextended(:'lockname', 0));\n")?;
    stdin.flush()?;
    let mut answer = String::new();
    io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut answer)?;
    match answer.trim() {
        "t" => Ok(Some(ServerLock {
            _psql: psql,
            _stdin: stdin,
            _env: env,
        })),
        "f" => Ok(None),
        _ => {
            drop(stdin);
            psql.wait()?;
            bail!("could not take a lock on {}", conn.describe())
        }
    }
}

pub fn ping(conn: &DbConn, database: &str) -> anyhow::Result<String> {
    let v = query(conn, database, "SELECT 1; SHOW server_version;", &[])?;
    Ok(v.lines().nth(1).unwrap_or("").trim().to_string())
}

pub fn server_version(conn: &DbConn) -> anyhow::Result<String> {
    Ok(query(conn, "postgres", "SHOW server_version;", &[])?
        .trim()
        .to_string())
}

/// The databases `all = true` backs up: every one that accepts connections
/// except the templates and cellar's own scratch and previous copies
/// (exactly `cellar_scratch_` or `cellar_previous_` and 12 hex digits: a
/// database of the user's named `cellar_scratch_payroll` is backed up).
pub fn list_databases(conn: &DbConn) -> anyhow::Result<Vec<String>> {
    let out = query(
        conn,
        "postgres",
        // In hex: a name may hold a line break or end in a carriage
        // return, and a list read line by line would lose or split it.
        "SELECT encode(convert_to(datname::text, 'UTF8'), 'hex') FROM pg_database
           WHERE datallowconn AND NOT datistemplate
           AND datname !~ '^cellar_(scratch|previous)_[0-9a-f]{12}$'
         ORDER BY datname;",
        &[],
    )?;
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            hex::decode(l.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("psql listed a database name that does not read: {l}")
                })
        })
        .collect()
}

/// The inventory of the database psql is connected to, as one line of
/// JSON: exact rows per table (tables it may not read: -1), and objects by
/// kind. Extension members are left out.
const INVENTORY_SQL: &str = r#"
SELECT json_build_object(
 'tables', COALESCE((
   SELECT json_object_agg(format('%I.%I', n.nspname, c.relname),
     CASE WHEN has_table_privilege(c.oid, 'SELECT') THEN
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint
     ELSE -1 END)
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ), '{}'::json),
 'objects', (
   WITH rel AS (
     SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'))
   SELECT json_build_object(
     'views', (SELECT count(*) FROM rel WHERE relkind = 'v'),
     'materialized views', (SELECT count(*) FROM rel WHERE relkind = 'm'),
     'sequences', (SELECT count(*) FROM rel WHERE relkind = 'S'),
     'indexes', (SELECT count(*) FROM rel WHERE relkind IN ('i', 'I')),
     'functions', (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')),
     'triggers', (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND n.nspname NOT IN ('pg_catalog', 'information_schema')),
     'types', (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('d', 'e', 'r') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')),
     'schemas', (SELECT count(*) FROM pg_namespace n WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
        AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')),
     'extensions', (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'),
     'large objects', (SELECT count(*) FROM pg_largeobject_metadata)
   )
 )
);
"#;

fn parse_inventory(json: &str) -> anyhow::Result<crate::manifest::Inventory> {
    #[derive(serde::Deserialize)]
    struct Raw {
        tables: std::collections::BTreeMap<String, i64>,
        objects: std::collections::BTreeMap<String, u64>,
    }
    let raw: Raw = serde_json::from_str(json.trim())
        .with_context(|| format!("reading the inventory ({:.200})", json.trim()))?;
    let mut inv = crate::manifest::Inventory {
        objects: raw.objects,
        ..Default::default()
    };
    for (t, n) in raw.tables {
        match u64::try_from(n) {
            Ok(n) => {
                inv.tables.insert(t, n);
            }
            Err(_) => inv.unreadable.push(t),
        }
    }
    Ok(inv)
}

/// The inventory of `database` now (a restored scratch database).
pub fn inventory(conn: &DbConn, database: &str) -> anyhow::Result<crate::manifest::Inventory> {
    parse_inventory(&query(conn, database, INVENTORY_SQL, &[])?)
}

/// pg_dump's long options (PostgreSQL 13 to 18) and whether each takes a
/// value.
const PG_DUMP_LONG: &[(&str, bool)] = &[
    ("attribute-inserts", false),
    ("binary-upgrade", false),
    ("blobs", false),
    ("clean", false),
    ("column-inserts", false),
    ("compress", true),
    ("create", false),
    ("data-only", false),
    ("dbname", true),
    ("disable-dollar-quoting", false),
    ("disable-triggers", false),
    ("enable-row-security", false),
    ("encoding", true),
    ("exclude-extension", true),
    ("exclude-schema", true),
    ("exclude-table", true),
    ("exclude-table-and-children", true),
    ("exclude-table-data", true),
    ("exclude-table-data-and-children", true),
    ("extension", true),
    ("extra-float-digits", true),
    ("file", true),
    ("filter", true),
    ("format", true),
    ("help", false),
    ("host", true),
    ("if-exists", false),
    ("include-foreign-data", true),
    ("inserts", false),
    ("jobs", true),
    ("large-objects", false),
    ("load-via-partition-root", false),
    ("lock-wait-timeout", true),
    ("no-acl", false),
    ("no-blobs", false),
    ("no-comments", false),
    ("no-data", false),
    ("no-large-objects", false),
    ("no-owner", false),
    ("no-password", false),
    ("no-policies", false),
    ("no-privileges", false),
    ("no-publications", false),
    ("no-reconnect", false),
    ("no-schema", false),
    ("no-security-labels", false),
    ("no-statistics", false),
    ("no-subscriptions", false),
    ("no-sync", false),
    ("no-synchronized-snapshots", false),
    ("no-table-access-method", false),
    ("no-tablespaces", false),
    ("no-toast-compression", false),
    ("no-unlogged-table-data", false),
    ("password", false),
    ("port", true),
    ("quote-all-identifiers", false),
    ("restrict-key", true),
    ("role", true),
    ("rows-per-insert", true),
    ("schema", true),
    ("schema-only", false),
    ("section", true),
    ("sequence-data", false),
    ("serializable-deferrable", false),
    ("snapshot", true),
    ("statistics-only", false),
    ("strict-names", false),
    ("superuser", true),
    ("sync-method", true),
    ("table", true),
    ("table-and-children", true),
    ("use-set-session-authorization", false),
    ("username", true),
    ("verbose", false),
    ("version", false),
    ("with-data", false),
    ("with-schema", false),
    ("with-statistics", false),
];

/// pg_dump's short options as the long ones they stand for, and whether
/// each takes a value.
const PG_DUMP_SHORT: &[(char, &str, bool)] = &[
    ('a', "data-only", false),
    ('b', "large-objects", false),
    ('B', "no-large-objects", false),
    ('c', "clean", false),
    ('C', "create", false),
    ('d', "dbname", true),
    ('e', "extension", true),
    ('E', "encoding", true),
    ('f', "file", true),
    ('F', "format", true),
    ('h', "host", true),
    ('j', "jobs", true),
    ('n', "schema", true),
    ('N', "exclude-schema", true),
    ('O', "no-owner", false),
    ('p', "port", true),
    ('R', "no-reconnect", false),
    ('s', "schema-only", false),
    ('S', "superuser", true),
    ('t', "table", true),
    ('T', "exclude-table", true),
    ('U', "username", true),
    ('v', "verbose", false),
    ('w', "no-password", false),
    ('W', "password", false),
    ('x', "no-privileges", false),
    ('Z', "compress", true),
];

/// The options `pg_dump_args` give pg_dump, by their long names, read as
/// pg_dump's getopt reads them: short options bundled (`-vf/x` is
/// `--verbose --file /x`), values glued on or in the next argument. Long
/// options must be spelled out in full (pg_dump would take any unique
/// prefix, `--fil=/x`), and every argument must be an option (a bare word
/// is a database name to pg_dump). `Err` says what is wrong.
pub fn dump_options(args: &[String]) -> Result<Vec<(&'static str, &String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(long) = a.strip_prefix("--") {
            let (name, glued) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            let Some(&(known, takes)) = PG_DUMP_LONG.iter().find(|(n, _)| *n == name) else {
                return Err(format!("`{a}` is not a pg_dump option spelled out in full"));
            };
            if takes && !glued && it.next().is_none() {
                return Err(format!("`{a}` needs a value"));
            }
            if !takes && glued {
                return Err(format!("`{a}` takes no value"));
            }
            out.push((known, a));
        } else if let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (i, c) in cluster.char_indices() {
                let Some(&(_, known, takes)) = PG_DUMP_SHORT.iter().find(|(s, _, _)| *s == c)
                else {
                    return Err(format!("`{a}`: -{c} is not a pg_dump option"));
                };
                out.push((known, a));
                if takes {
                    // The rest of the argument is the value, or the next one.
                    if i + c.len_utf8() == cluster.len() && it.next().is_none() {
                        return Err(format!("`{a}` needs a value"));
                    }
                    break;
                }
            }
        } else {
            return Err(format!(
                "`{a}` is not an option (pg_dump would take it as a database name)"
            ));
        }
    }
    Ok(out)
}

/// `pg_dump_args` that choose what is dumped: with any of them, the dump
/// is not the whole database and is not compared with its inventory.
pub fn filters_dump(args: &[String]) -> bool {
    const FILTERS: &[&str] = &[
        "table",
        "exclude-table",
        "exclude-table-data",
        "table-and-children",
        "exclude-table-and-children",
        "exclude-table-data-and-children",
        "schema",
        "exclude-schema",
        "schema-only",
        "data-only",
        "no-data",
        "no-schema",
        "statistics-only",
        "no-unlogged-table-data",
        "no-large-objects",
        "no-blobs",
        "extension",
        "exclude-extension",
        "section",
        "filter",
    ];
    // Arguments that do not read are refused before any backup.
    dump_options(args).map_or(true, |o| o.iter().any(|(n, _)| FILTERS.contains(n)))
}

/// A transaction held open on `database` whose snapshot pg_dump shares
/// (`--snapshot`), so the inventory counts exactly what the dump holds. It
/// takes no lock on any table: the counts run in a transaction of their
/// own that imports the snapshot and ends as soon as they are done.
/// Counting in this one kept every counted table's lock until pg_dump
/// ended, so a `TRUNCATE` queued behind it and pg_dump queued behind the
/// `TRUNCATE`: a wait through cellar that the server cannot see as a
/// deadlock, which hung the backup and the application's queries.
pub struct Snapshot {
    pub id: String,
    psql: process::Running,
    stdin: std::process::ChildStdin,
    _env: ClientEnv,
}

/// The inventory being counted by a psql of its own.
pub struct Counting {
    /// psql's pid: killing it ends a count that is no longer wanted.
    pub pid: u32,
    psql: process::Running,
    stdout: std::process::ChildStdout,
    _env: ClientEnv,
}

impl Counting {
    pub fn result(mut self) -> anyhow::Result<crate::manifest::Inventory> {
        let mut out = String::new();
        self.stdout.read_to_string(&mut out)?;
        self.psql.wait()?;
        match out.lines().find(|l| !l.trim().is_empty()) {
            Some(line) => parse_inventory(line),
            None => bail!("psql ended without the inventory"),
        }
    }
}

impl Snapshot {
    pub fn open(conn: &DbConn, database: &str) -> anyhow::Result<Snapshot> {
        let env = client_env(conn)?;
        let mut cmd = own_psql(conn, &env, database);
        process::die_with_parent(&mut cmd);
        let mut psql = process::spawn(&mut cmd, "psql", HINT)?;
        let mut stdin = psql.child.stdin.take().unwrap();
        let mut stdout = io::BufReader::new(psql.child.stdout.take().unwrap());
        stdin.write_all(
            b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n",
        )?;
        stdin.flush()?;
        let mut id = String::new();
        io::BufRead::read_line(&mut stdout, &mut id)?;
        let id = id.trim().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            drop(stdin);
            psql.wait()?;
            bail!("could not export a snapshot of {database}");
        }
        Ok(Snapshot {
            id,
            psql,
            stdin,
            _env: env,
        })
    }

    /// Starts counting the inventory in this snapshot, in a transaction
    /// of its own that ends (and lets go of the tables) once counted.
    pub fn count(&self, conn: &DbConn, database: &str) -> anyhow::Result<Counting> {
        let env = client_env(conn)?;
        let mut cmd = own_psql(conn, &env, database);
        process::die_with_parent(&mut cmd);
        let mut psql = process::spawn(&mut cmd, "psql", HINT)?;
        let mut stdin = psql.child.stdin.take().unwrap();
        let stdout = psql.child.stdout.take().unwrap();
        let script = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT '{}';\n{INVENTORY_SQL}\nCOMMIT;\n",
            self.id
        );
        // Smaller than a pipe's buffer; closing stdin ends psql after it.
        stdin.write_all(script.as_bytes())?;
        drop(stdin);
        Ok(Counting {
            pid: psql.child.id(),
            psql,
            stdout,
            _env: env,
        })
    }

    /// Ends the transaction (after pg_dump has taken the snapshot).
    pub fn close(mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"COMMIT;\n")?;
        drop(self.stdin);
        self.psql.wait()?;
        Ok(())
    }
}

/// Streams `pg_dump` of one database into `out`; with `snapshot`, in the
/// snapshot another session exported.
pub fn dump(
    conn: &DbConn,
    database: &str,
    custom: bool,
    extra: &[String],
    snapshot: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "pg_dump", &env);
    if let Some(id) = snapshot {
        cmd.arg(format!("--snapshot={id}"));
    }
    // Custom format uncompressed: compression is the pipeline's job.
    if custom {
        cmd.args(["--format=custom", "--compress=0"]);
    } else {
        cmd.arg("--format=plain");
    }
    cmd.arg("--no-password").args(extra);
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    run_into(cmd, "pg_dump", out).with_context(|| format!("dumping database {database}"))
}

/// Streams `pg_dumpall --globals-only` (roles, tablespaces) into `out`.
pub fn dump_globals(conn: &DbConn, out: &mut dyn Write) -> anyhow::Result<()> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "pg_dumpall", &env);
    cmd.args(["--globals-only", "--no-password"]);
    cmd.arg(format!("--dbname={}", conninfo(conn, "postgres")));
    run_into(cmd, "pg_dumpall", out).context("dumping roles and tablespaces")
}

fn run_into(cmd: Command, tool: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    process::stream_stdout(cmd, tool, HINT, out)
}

/// Whether `database` exists, and how many user objects it holds.
/// Counts what users made in the current database: every object whose
/// oid is past initdb's (`FirstNormalObjectId`, 16384) in the catalogs of
/// things a dump can hold (relations, schemas, routines, types, large
/// objects, extensions, collations, operators, casts, languages, text
/// search, foreign servers and user mappings, publications, subscriptions,
/// event triggers, default privileges, statistics, policies), plus the
/// database's own settings (`ALTER DATABASE ... SET`) and comment. Other
/// sessions' temporary tables do not count.
const CONTENT_SQL: &str = r"
WITH temp_ns AS (
  SELECT oid FROM pg_namespace
  WHERE nspname LIKE 'pg\_temp\_%' OR nspname LIKE 'pg\_toast\_temp\_%'
), db AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT
   (SELECT count(*) FROM pg_class WHERE oid >= 16384 AND relnamespace NOT IN (SELECT oid FROM temp_ns))
 + (SELECT count(*) FROM pg_namespace WHERE oid >= 16384 AND oid NOT IN (SELECT oid FROM temp_ns))
 + (SELECT count(*) FROM pg_type WHERE oid >= 16384 AND typnamespace NOT IN (SELECT oid FROM temp_ns))
 + (SELECT count(*) FROM pg_proc WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_largeobject_metadata)
 + (SELECT count(*) FROM pg_extension WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_collation WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_conversion WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_operator WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_opfamily WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_opclass WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_cast WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_language WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_am WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_transform WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_ts_config WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_ts_dict WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_ts_parser WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_ts_template WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_foreign_data_wrapper WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_foreign_server WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_user_mappings WHERE umid >= 16384)
 + (SELECT count(*) FROM pg_publication WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM db))
 + (SELECT count(*) FROM pg_event_trigger WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_default_acl WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_statistic_ext WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_policy WHERE oid >= 16384)
 + (SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM db))
 + (SELECT count(*) FROM pg_shdescription
    WHERE classoid = 'pg_database'::regclass AND objoid = (SELECT oid FROM db));
";

pub fn database_state(conn: &DbConn, database: &str) -> anyhow::Result<Option<u64>> {
    if !database_exists(conn, database)? {
        return Ok(None);
    }
    let n = query(conn, database, CONTENT_SQL, &[])?;
    Ok(Some(n.trim().parse().unwrap_or(0)))
}

/// Whether `database` exists (one query, no session on it).
pub fn database_exists(conn: &DbConn, database: &str) -> anyhow::Result<bool> {
    let n = query(
        conn,
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = :'name';",
        &[("name", database)],
    )?;
    Ok(n.trim() != "0")
}

/// How many user tables `database` has (0: the dump would be empty).
pub fn count_tables(conn: &DbConn, database: &str) -> anyhow::Result<u64> {
    let n = query(
        conn,
        database,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'm')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%';",
        &[],
    )?;
    Ok(n.trim().parse().unwrap_or(0))
}

pub fn create_database(conn: &DbConn, database: &str) -> anyhow::Result<()> {
    query(
        conn,
        "postgres",
        "CREATE DATABASE :\"name\" TEMPLATE template0;",
        &[("name", database)],
    )
    .map(|_| ())
    .with_context(|| format!("creating database {database}"))
}

/// Drops a database cellar made (a scratch or previous copy), even one
/// that a restored `IS_TEMPLATE true` made a template.
pub fn drop_database(conn: &DbConn, database: &str) -> anyhow::Result<()> {
    // A logical-replication subscription (a dump carries them, disabled)
    // keeps a database from being dropped until it is dropped itself,
    // which can only be done from inside that database, and without its
    // replication slot, which lives on a publisher cellar has nothing to
    // do with.
    let subscriptions = query(
        conn,
        "postgres",
        "SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
           WHERE d.datname = :'name';",
        &[("name", database)],
    )?;
    if subscriptions.trim() != "0" {
        // Only from inside: a copy restored with ALLOW_CONNECTIONS false
        // is opened first (it is dropped right after).
        query(
            conn,
            "postgres",
            "SELECT format('ALTER DATABASE %I ALLOW_CONNECTIONS true', datname) FROM pg_database
               WHERE datname = :'name' AND NOT datallowconn \\gexec",
            &[("name", database)],
        )?;
        query_once(
            conn,
            database,
            "SELECT format('ALTER SUBSCRIPTION %I DISABLE', subname) FROM pg_subscription
               WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND subenabled \\gexec
             SELECT format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', subname) FROM pg_subscription
               WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \\gexec
             SELECT format('DROP SUBSCRIPTION %I', subname) FROM pg_subscription
               WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \\gexec",
            &[],
            true,
        )
        .with_context(|| format!("dropping the subscriptions of {database} before dropping it"))?;
    }
    query(
        conn,
        "postgres",
        "SELECT format('ALTER DATABASE %I IS_TEMPLATE false', datname) FROM pg_database
           WHERE datname = :'name' AND datistemplate \\gexec
         DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);",
        &[("name", database)],
    )
    .map(|_| ())
}

/// Makes `file` the child's descriptor 3 (and not close-on-exec), so a
/// child can open an unnamed spool file as `/dev/fd/3`.
fn pass_as_fd3(cmd: &mut Command, file: &std::fs::File) {
    use std::os::unix::io::AsRawFd;
    process::pass_fd(cmd, file.as_raw_fd(), 3);
}

/// Restores a spooled custom archive into `database` with `jobs` parallel
/// pg_restore workers, stopping at the first error. A SIGTERM kills
/// pg_restore and its workers.
pub fn restore_custom(
    conn: &DbConn,
    database: &str,
    spool: &std::fs::File,
    jobs: usize,
    no_owner: bool,
    use_list: Option<&Path>,
) -> anyhow::Result<()> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "pg_restore", &env);
    cmd.args(["--exit-on-error", "--no-password"]);
    cmd.arg(format!("--jobs={}", jobs.max(1)));
    if no_owner {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    if let Some(list) = use_list {
        cmd.arg("--use-list").arg(list);
    }
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    cmd.arg("/dev/fd/3");
    pass_as_fd3(&mut cmd, spool);
    process::die_with_parent(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    process::spawn_group(&mut cmd, "pg_restore", HINT)?
        .wait_or_cancel()
        .map(|_| ())
}

/// The table of contents of a spooled custom archive narrowed to some
/// tables (schema, table) and whole schemas, as pg_restore's own `-n`/`-t`
/// select them (a table brings its definition and data, not its indexes,
/// constraints or triggers; a schema brings every object in it), in the
/// archive's order, for `pg_restore --use-list`. Also returns what matched
/// nothing, by name.
pub fn selected_toc(
    conn: &DbConn,
    spool: &std::fs::File,
    tables: &[(String, String)],
    schemas: &[String],
) -> anyhow::Result<(tempfile::NamedTempFile, Vec<String>)> {
    let list = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = process::tool(conn.tool("pg_restore"));
        cmd.arg("--list").args(args).arg("/dev/fd/3");
        pass_as_fd3(&mut cmd, spool);
        output_of(cmd, "pg_restore").context("listing the archive")
    };
    let ids = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter(|l| !l.starts_with(';'))
            .filter_map(|l| l.split_once(';').map(|(id, _)| id.trim().to_string()))
            .filter(|id| !id.is_empty())
            .collect()
    };
    let mut chosen = std::collections::BTreeSet::new();
    let mut unmatched = Vec::new();
    for (schema, table) in tables {
        let found = ids(&list(&["--schema", schema, "--table", table])?);
        if found.is_empty() {
            unmatched.push(format!("table {schema}.{table}"));
        }
        chosen.extend(found);
    }
    for schema in schemas {
        let found = ids(&list(&["--schema", schema])?);
        if found.is_empty() {
            unmatched.push(format!("schema {schema}"));
        }
        chosen.extend(found);
    }
    let mut file = tempfile::Builder::new().prefix("cellar-toc-").tempfile()?;
    for line in list(&[])?.lines().filter(|l| !l.starts_with(';')) {
        if let Some((id, _)) = line.split_once(';') {
            if chosen.contains(id.trim()) {
                writeln!(file, "{line}")?;
            }
        }
    }
    file.flush()?;
    Ok((file, unmatched))
}

/// The database-level part of a spooled custom archive (CREATE DATABASE
/// with its encoding and locale, owner, comment, settings, grants), as
/// pg_restore --create would print it, with the database renamed to
/// `rename_to`. Returns (CREATE DATABASE statement, the other statements).
pub fn database_sql(
    conn: &DbConn,
    spool: &std::fs::File,
    rename_to: &str,
    no_owner: bool,
) -> anyhow::Result<(String, String)> {
    let mut cmd = process::tool(conn.tool("pg_restore"));
    // Without --create, the list leaves the database-level entries out.
    cmd.args(["--create", "--list", "/dev/fd/3"]);
    pass_as_fd3(&mut cmd, spool);
    let listing = match output_of(cmd, "pg_restore") {
        Err(e) if line_break_refused(&e) => return Ok(without_properties(&e)),
        r => r.context("listing the archive")?,
    };
    let mut list = tempfile::Builder::new().prefix("cellar-toc-").tempfile()?;
    for line in listing.lines().filter(|l| is_database_entry(l)) {
        writeln!(list, "{line}")?;
    }
    list.flush()?;

    let mut cmd = process::tool(conn.tool("pg_restore"));
    cmd.args(["--create", "--schema-only", "--file=-"]);
    if no_owner {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    cmd.arg("--use-list").arg(list.path()).arg("/dev/fd/3");
    pass_as_fd3(&mut cmd, spool);
    let sql = match output_of(cmd, "pg_restore") {
        Err(e) if line_break_refused(&e) => return Ok(without_properties(&e)),
        r => r.context("reading the database-level entries")?,
    };
    let (create, rest) = rename_database_sql(&sql, rename_to);
    Ok((
        create,
        if no_owner {
            without_role_settings(&rest)
        } else {
            rest
        },
    ))
}

/// `--no-owner` is for a server without the source's roles: the settings
/// of a role in the database (`ALTER ROLE app IN DATABASE ... SET`) go too.
fn without_role_settings(sql: &str) -> String {
    let (kept, left): (Vec<&str>, Vec<&str>) = sql
        .lines()
        .partition(|l| !l.starts_with("ALTER ROLE ") || !l.contains(" IN DATABASE "));
    if !left.is_empty() {
        tracing::warn!(
            "--no-owner: {} setting(s) of roles in the database were not applied: {}",
            left.len(),
            crate::logging::one_line(&left.join(" "))
        );
    }
    let mut out = kept.join("\n");
    out.push('\n');
    out
}

/// pg_restore (15.14, 16.10, 17.6 and later) refuses `--create` for a
/// database whose name holds a line break.
fn line_break_refused(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("name contains a newline")
}

/// No database-level properties, said in a warning: the database itself
/// still restores.
fn without_properties(e: &anyhow::Error) -> (String, String) {
    tracing::warn!(
        "the backed-up database's name holds a line break, for which pg_restore reads no database-level properties: the database is restored without its comment, settings and database grants ({})",
        crate::logging::one_line(&format!("{e:#}"))
    );
    (String::new(), String::new())
}

/// Runs a client tool to its end and returns what it printed.
fn output_of(mut cmd: Command, tool: &str) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = process::spawn(&mut cmd, tool, HINT)?;
    let mut out = String::new();
    child
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)?;
    child.wait()?;
    Ok(out)
}

/// Whether a `pg_restore --list` line is a database-level entry: the
/// database itself, its properties, or a comment, ACL or security label
/// on it.
fn is_database_entry(line: &str) -> bool {
    let Some((_, rest)) = line.split_once("; ") else {
        return false;
    };
    // "<table oid> <oid> <desc> <schema> <tag> <owner>"
    let mut parts = rest.splitn(3, ' ');
    let (Some(_), Some(_), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    what.starts_with("DATABASE - ")
        || what.starts_with("DATABASE PROPERTIES - ")
        || what.contains(" - DATABASE ")
}

/// Rewrites pg_restore's database-level script for another database name:
/// keeps only statements about that database (CREATE, ALTER, COMMENT ON,
/// GRANT/REVOKE ON, SECURITY LABEL ON, ALTER ROLE ... IN DATABASE) and the
/// session settings, drops psql meta-commands. Returns (CREATE DATABASE,
/// the rest).
pub fn rename_database_sql(sql: &str, rename_to: &str) -> (String, String) {
    let original = sql.lines().find_map(|l| {
        let rest = l.strip_prefix("CREATE DATABASE ")?;
        Some(leading_identifier(rest))
    });
    let mut create = String::new();
    let mut rest = String::new();
    let Some(original) = original else {
        return (create, rest);
    };
    let from = format!("DATABASE {original}");
    let to = format!("DATABASE {rename_to}");
    let mut continuing = false;
    let mut in_quote = Quote::Out;
    for line in sql.lines() {
        if continuing {
            rest.push_str(line);
            rest.push('\n');
            in_quote = quote_state(line, in_quote);
            continuing = in_quote != Quote::Out || !line.trim_end().ends_with(';');
            continue;
        }
        if line.is_empty() || line.starts_with("--") || line.starts_with('\\') {
            continue;
        }
        if line.starts_with("SET ") || line.starts_with("SELECT pg_catalog.set_config(") {
            rest.push_str(line);
            rest.push('\n');
            continue;
        }
        let Some(at) = line.find(&from).filter(|&i| {
            let after = &line[i + from.len()..];
            after.starts_with(' ') || after.starts_with(';')
        }) else {
            continue;
        };
        let renamed = format!("{}{to}{}", &line[..at], &line[at + from.len()..]);
        let allowed = [
            "ALTER DATABASE ",
            "COMMENT ON DATABASE ",
            "GRANT ",
            "REVOKE ",
            "SECURITY LABEL ",
            "ALTER ROLE ",
        ];
        // A restored copy is never made a template: it could not be
        // replaced or dropped by the next restore.
        if renamed.starts_with("ALTER DATABASE ") && renamed.contains(" IS_TEMPLATE ") {
            continue;
        }
        if renamed.starts_with("CREATE DATABASE ") && create.is_empty() {
            create = renamed;
            create.push('\n');
        } else if allowed.iter().any(|a| renamed.starts_with(a)) {
            rest.push_str(&renamed);
            rest.push('\n');
            in_quote = quote_state(&renamed, Quote::Out);
            continuing = in_quote != Quote::Out || !renamed.trim_end().ends_with(';');
        }
    }
    (create, rest)
}

/// Roles and tablespaces that exist on the server now.
pub fn existing_globals(
    conn: &DbConn,
) -> anyhow::Result<(
    std::collections::HashSet<String>,
    std::collections::HashSet<String>,
)> {
    let out = query(
        conn,
        "postgres",
        "SELECT json_build_array(
           (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles),
           (SELECT coalesce(json_agg(spcname), '[]') FROM pg_tablespace));",
        &[],
    )?;
    let (roles, spaces): (Vec<String>, Vec<String>) =
        serde_json::from_str(out.trim()).context("reading the server's roles")?;
    Ok((roles.into_iter().collect(), spaces.into_iter().collect()))
}

/// `pg_dumpall --globals-only` output without the statements that would
/// change a role or tablespace that already exists (its password, its
/// attributes, its settings, comment or memberships, a tablespace's
/// options or grants): those are left exactly as they are. Returns the
/// SQL to run and the names left alone.
pub fn globals_for_new_only(
    sql: &[u8],
    roles: &std::collections::HashSet<String>,
    spaces: &std::collections::HashSet<String>,
) -> (Vec<u8>, std::collections::BTreeSet<String>) {
    let mut out = Vec::with_capacity(sql.len());
    let mut kept = std::collections::BTreeSet::new();
    let (mut continuing, mut in_quote, mut keep) = (false, Quote::Out, true);
    for raw in sql.split_inclusive(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let text = line.trim_end_matches('\n');
        if !continuing {
            keep = match touches_existing(text, roles, spaces) {
                Some(name) => {
                    kept.insert(name);
                    false
                }
                None => true,
            };
            if text.is_empty() || text.starts_with("--") || text.starts_with('\\') {
                if keep {
                    out.extend_from_slice(raw);
                }
                continue;
            }
        }
        if keep {
            out.extend_from_slice(raw);
        }
        in_quote = quote_state(text, in_quote);
        continuing = in_quote != Quote::Out || !text.trim_end().ends_with(';');
    }
    (out, kept)
}

/// The existing role or tablespace (as `role X` / `tablespace X`) that a
/// globals statement would change, if any.
fn touches_existing(
    line: &str,
    roles: &std::collections::HashSet<String>,
    spaces: &std::collections::HashSet<String>,
) -> Option<String> {
    let role = |rest: &str| {
        let name = unquote_ident(leading_identifier(rest));
        roles.contains(&name).then(|| format!("role {name}"))
    };
    let space = |rest: &str| {
        let name = unquote_ident(leading_identifier(rest));
        spaces.contains(&name).then(|| format!("tablespace {name}"))
    };
    for p in [
        "CREATE ROLE ",
        "ALTER ROLE ",
        "COMMENT ON ROLE ",
        "ALTER USER ",
    ] {
        if let Some(rest) = line.strip_prefix(p) {
            return role(rest);
        }
    }
    for p in [
        "CREATE TABLESPACE ",
        "ALTER TABLESPACE ",
        "COMMENT ON TABLESPACE ",
    ] {
        if let Some(rest) = line.strip_prefix(p) {
            return space(rest);
        }
    }
    if line.starts_with("SECURITY LABEL ") {
        if let Some(at) = line.find(" ON ROLE ") {
            return role(&line[at + " ON ROLE ".len()..]);
        }
        if let Some(at) = line.find(" ON TABLESPACE ") {
            return space(&line[at + " ON TABLESPACE ".len()..]);
        }
        return None;
    }
    let (grant, word) = match (line.strip_prefix("GRANT "), line.strip_prefix("REVOKE ")) {
        (Some(g), _) => (g, " TO "),
        (_, Some(r)) => (r, " FROM "),
        _ => return None,
    };
    if let Some(at) = find_outside_quotes(grant, " ON TABLESPACE ") {
        if let Some(t) = space(&grant[at + " ON TABLESPACE ".len()..]) {
            return Some(t);
        }
    }
    // Whoever receives (or loses) a membership or a privilege, on a
    // tablespace or a parameter (`GRANT SET ON PARAMETER work_mem TO r`),
    // is changed by it.
    let at = find_outside_quotes(grant, word)?;
    identifier_list(&grant[at + word.len()..])
        .into_iter()
        .find(|r| roles.contains(r))
        .map(|r| format!("role {r}"))
}

/// Where `needle` first occurs in `s` outside quotes.
fn find_outside_quotes(s: &str, needle: &str) -> Option<usize> {
    let mut q = Quote::Out;
    for (i, c) in s.char_indices() {
        if q == Quote::Out && s[i..].starts_with(needle) {
            return Some(i);
        }
        q = quote_state(c.encode_utf8(&mut [0; 4]), q);
    }
    None
}

/// The comma-separated identifiers at the start of `s` (`a, "B c", d`),
/// unquoted.
fn identifier_list(mut s: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        let id = if s.starts_with('"') {
            leading_identifier(s)
        } else {
            s.split([' ', ';', ',']).next().unwrap_or("")
        };
        if id.is_empty() {
            break;
        }
        out.push(unquote_ident(id));
        s = s[id.len()..].trim_start();
        match s.strip_prefix(',') {
            Some(rest) => s = rest,
            None => break,
        }
    }
    out
}

/// What a line of SQL ends inside of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Quote {
    Out,
    /// A string literal: `'...'`.
    Literal,
    /// A quoted identifier: `"..."`, which may hold `'` (a role `a'b`).
    Ident,
}

/// What is still open after `line`, given what was open before it
/// (pg_dump doubles quotes inside literals and identifiers; `--` outside
/// them starts a comment).
fn quote_state(line: &str, mut q: Quote) -> Quote {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        q = match (q, b[i]) {
            (Quote::Out, b'-') if b.get(i + 1) == Some(&b'-') => return q,
            (Quote::Out, b'\'') => Quote::Literal,
            (Quote::Out, b'"') => Quote::Ident,
            (Quote::Literal, b'\'') | (Quote::Ident, b'"') => Quote::Out,
            (q, _) => q,
        };
        i += 1;
    }
    q
}

/// The identifier at the start of `s`, as written (quoted or not).
fn leading_identifier(s: &str) -> &str {
    if let Some(body) = s.strip_prefix('"') {
        let b = body.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return &s[..i + 2];
            }
            i += 1;
        }
        s
    } else {
        s.split([' ', ';']).next().unwrap_or(s)
    }
}

/// Whether this psql has `\restrict` (15.14+, 16.10+, 17.6+, 18+), the
/// only way to stop SQL from a backup running psql meta-commands.
pub fn psql_can_restrict(conn: &DbConn) -> anyhow::Result<bool> {
    // Asked twice by a plain restore; the answer is per psql binary.
    static KNOWN: std::sync::Mutex<Vec<(std::path::PathBuf, bool)>> =
        std::sync::Mutex::new(Vec::new());
    let psql = conn.tool("psql");
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, can)) = known.iter().find(|(p, _)| *p == psql) {
        return Ok(*can);
    }
    let can = psql_version_can_restrict(&psql)?;
    known.push((psql, can));
    Ok(can)
}

fn psql_version_can_restrict(psql: &Path) -> anyhow::Result<bool> {
    let out = process::tool(psql)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run psql: {e}; {HINT}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("");
    let mut nums = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    Ok(match major {
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        m => m >= 18,
    })
}

/// Copies SQL from a backup into psql behind a `\restrict` key that only
/// cellar knows, so no psql meta-command in the stream can run.
///
/// pg_dump (15.14+) writes `\restrict KEY` near the top and `\unrestrict
/// KEY` at the end; only those two lines are dropped (the first before any
/// SQL, the second only with that same key), so no data line is ever
/// touched. A line that creates or drops a database outside COPY data (a
/// dump made with `--create`/`--clean`) stops the stream: a restore only
/// ever writes into its scratch database.
pub struct Restricted<W: Write> {
    out: W,
    line: Vec<u8>,
    /// The dump's own restrict key, once seen in its header.
    dump_key: Option<Vec<u8>>,
    /// A line of SQL was seen: the header is over.
    past_header: bool,
    /// A `COPY ... FROM stdin;` statement has started / its data is flowing.
    copy_header: bool,
    in_copy: bool,
    /// `line` continues a line whose start was already passed on.
    partial: bool,
    /// CREATE DATABASE is expected (cellar's own scratch database).
    allow_create: bool,
}

impl<W: Write> Restricted<W> {
    pub fn new(mut out: W, allow_create: bool) -> io::Result<Self> {
        let mut key = [0u8; 16];
        sequoia_openpgp::crypto::random(&mut key).map_err(io::Error::other)?;
        writeln!(out, "\\restrict {}", hex::encode(key))?;
        Ok(Restricted {
            out,
            line: Vec::with_capacity(1 << 16),
            dump_key: None,
            past_header: false,
            copy_header: false,
            in_copy: false,
            partial: false,
            allow_create,
        })
    }

    fn emit_line(&mut self) -> io::Result<()> {
        let l = &self.line;
        let body = l.strip_suffix(b"\n").unwrap_or(l);
        if std::mem::take(&mut self.partial) {
            // The rest of a long line: its start was judged already.
        } else if self.in_copy {
            if body == b"\\." {
                self.in_copy = false;
            }
        } else if !self.past_header && self.dump_key.is_none() && body.starts_with(b"\\restrict ") {
            self.dump_key = Some(body[b"\\restrict ".len()..].to_vec());
            self.line.clear();
            return Ok(());
        } else if self
            .dump_key
            .as_ref()
            .is_some_and(|k| body.strip_prefix(b"\\unrestrict ") == Some(k.as_slice()))
        {
            self.line.clear();
            return Ok(());
        } else {
            if !body.is_empty() && !body.starts_with(b"--") {
                self.past_header = true;
            }
            let creates = body.starts_with(b"CREATE DATABASE ") && !self.allow_create;
            if creates || body.starts_with(b"DROP DATABASE ") {
                return Err(io::Error::other(
                    "the dump creates or drops databases (made with pg_dump --create or --clean?); cellar restores only into its scratch database, so it refuses this dump",
                ));
            }
            if body.starts_with(b"COPY ") {
                self.copy_header = true;
            }
            if self.copy_header && body.trim_ascii_end().ends_with(b"FROM stdin;") {
                self.copy_header = false;
                self.in_copy = true;
            }
        }
        self.out.write_all(&self.line)?;
        self.line.clear();
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        if !self.line.is_empty() {
            self.emit_line()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Restricted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=i]);
            self.emit_line()?;
            rest = &rest[i + 1..];
        }
        self.line.extend_from_slice(rest);
        // A very long line (a huge COPY row) is passed on in pieces; only
        // a line's start decides anything.
        if self.line.len() > 1 << 20 {
            self.emit_line()?;
            self.partial = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Feeds SQL from a backup into psql on `database`, restricted (see
/// [`Restricted`]). With `stop_on_error` the first error ends psql and the
/// call fails; without it psql carries on (globals: "role exists") and its
/// messages are returned.
pub fn psql_restricted(
    conn: &DbConn,
    database: &str,
    stop_on_error: bool,
    input: &mut dyn Read,
) -> anyhow::Result<String> {
    psql_restricted_with(conn, database, stop_on_error, false, input)
}

/// [`psql_restricted`] for cellar's own CREATE DATABASE of a scratch
/// database (rewritten from the archive's).
pub fn psql_create_database(conn: &DbConn, create: &str) -> anyhow::Result<()> {
    psql_restricted_with(conn, "postgres", true, true, &mut create.as_bytes()).map(|_| ())
}

fn psql_restricted_with(
    conn: &DbConn,
    database: &str,
    stop_on_error: bool,
    allow_create: bool,
    input: &mut dyn Read,
) -> anyhow::Result<String> {
    if !psql_can_restrict(conn)? {
        bail!(
            "{} is too old to block psql meta-commands in SQL from a backup (\\restrict needs \
             psql 15.14, 16.10, 17.6 or newer); upgrade the PostgreSQL client tools or point \
             pg_bin_dir at newer ones",
            conn.tool("psql").display()
        );
    }
    let env = client_env(conn)?;
    let mut cmd = command(conn, "psql", &env);
    cmd.args(["-X", "-q"]);
    if stop_on_error {
        cmd.args(["-v", "ON_ERROR_STOP=1"]);
    }
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut psql = process::spawn(&mut cmd, "psql", HINT)?;
    let stdin = psql.child.stdin.take().unwrap();
    let fed = Restricted::new(io::BufWriter::with_capacity(1 << 16, stdin), allow_create).and_then(
        |mut w| {
            io::copy(input, &mut w)?;
            w.finish()?.into_inner().map_err(|e| e.into_error())?;
            Ok(())
        },
    );
    match (psql.wait_or_cancel(), fed) {
        // If psql stopped on an SQL error, its message is the real cause.
        (Err(e), _) => Err(e.context(format!("restoring into {database}"))),
        (Ok(_), Err(e)) => Err(anyhow::Error::new(e).context(format!("restoring into {database}"))),
        (Ok(notes), Ok(())) => Ok(notes),
    }
}

/// Checks a custom archive by converting it to SQL without applying it.
pub fn check_archive(conn: &DbConn, input: &mut dyn Read) -> anyhow::Result<()> {
    let mut cmd = process::tool(conn.tool("pg_restore"));
    cmd.args(["--file=/dev/null", "--exit-on-error"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = process::spawn(&mut cmd, "pg_restore", HINT)?;
    let mut stdin = child.child.stdin.take().unwrap();
    let fed = io::copy(input, &mut stdin);
    drop(stdin);
    match (child.wait(), fed) {
        (Err(e), _) => Err(e).context("the archive does not parse"),
        (Ok(_), Err(e)) => Err(e.into()),
        (Ok(_), Ok(_)) => Ok(()),
    }
}

/// Passes a custom archive through while keeping its first bytes, up to
/// `limit`, until they hold the whole table of contents: pg_restore reads
/// it at a few sizes on the way (256 KiB, 1, 4 and 16 MiB, and the limit
/// at the end), and once it succeeds the bytes are dropped, so a dump holds
/// about as much memory as its table of contents needs, not the limit.
pub struct Head<'w> {
    pub inner: &'w mut dyn Write,
    conn: &'w DbConn,
    head: Vec<u8>,
    limit: usize,
    next_try: usize,
    toc: Option<String>,
}

impl<'w> Head<'w> {
    /// `limit` 0 keeps nothing (a plain dump has no table of contents).
    pub fn new(inner: &'w mut dyn Write, conn: &'w DbConn, limit: usize) -> Self {
        Head {
            inner,
            conn,
            head: Vec::new(),
            limit,
            next_try: 256 << 10,
            toc: None,
        }
    }

    /// The archive's table of contents (`pg_restore --list`), once the
    /// stream has ended; None when it did not fit in the limit.
    pub fn toc(mut self) -> anyhow::Result<Option<String>> {
        if self.toc.is_none() && self.limit > 0 {
            self.toc = toc_list(self.conn, &self.head)?;
        }
        Ok(self.toc)
    }
}

impl Write for Head<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.toc.is_none() && self.limit > 0 {
            let room = self.limit.saturating_sub(self.head.len());
            self.head.extend_from_slice(&buf[..n.min(room)]);
            if self.head.len() >= self.next_try && self.head.len() < self.limit {
                self.next_try = self.next_try.saturating_mul(4);
                self.toc = toc_list(self.conn, &self.head).map_err(io::Error::other)?;
                if self.toc.is_some() {
                    self.head = Vec::new();
                }
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `pg_restore --list` of an archive's first bytes; None when they do not
/// hold its whole table of contents.
fn toc_list(conn: &DbConn, head: &[u8]) -> anyhow::Result<Option<String>> {
    // In memory: the head holds table rows, which must not be left in a
    // temporary folder by a killed backup.
    let file = process::memory_file(c"cellar-dump-head", head)?;
    let mut cmd = process::tool(conn.tool("pg_restore"));
    cmd.args(["--list", "/dev/fd/3"]);
    pass_as_fd3(&mut cmd, &file);
    process::die_with_parent(&mut cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("pg_restore: {e}; {HINT}"))?;
    // A table of contents longer than the head cannot be read.
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `"a b"` / `shop` (as `%I` quotes) back to the name itself.
fn unquote_ident(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_string(),
    }
}

/// Splits `schema.table` as `format('%I.%I')` wrote it.
pub fn split_qualified(q: &str) -> (String, String) {
    let mut in_quotes = false;
    for (i, c) in q.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => return (unquote_ident(&q[..i]), unquote_ident(&q[i + 1..])),
            _ => {}
        }
    }
    (String::new(), unquote_ident(q))
}

/// The dump canary: every table of the inventory has its data in the
/// archive's table of contents (`toc`, as `pg_restore --list` prints it).
/// Returns the tables that are missing.
pub fn missing_from_toc(toc: &str, inventory: &crate::manifest::Inventory) -> Vec<String> {
    let data: Vec<&str> = toc
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains(" TABLE DATA "))
        .collect();
    inventory
        .tables
        .keys()
        .filter(|q| {
            let (schema, name) = split_qualified(q);
            // pg_restore --list prints line breaks in names as spaces.
            let needle = format!(" TABLE DATA {schema} {name} ").replace(['\n', '\r'], " ");
            !data.iter().any(|l| l.contains(&needle))
        })
        .cloned()
        .collect()
}

/// Checks that a plain SQL dump is complete: pg_dump ends it with a fixed
/// comment, which a truncated stream lacks.
pub fn check_sql(input: &mut dyn Read, globals: bool) -> anyhow::Result<()> {
    let marker: &[u8] = if globals {
        b"PostgreSQL database cluster dump complete"
    } else {
        b"PostgreSQL database dump complete"
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 8192 {
            tail.drain(..tail.len() - 4096);
        }
    }
    if !tail.windows(marker.len()).any(|w| w == marker) {
        bail!("the SQL dump does not end with pg_dump's completion comment; it is truncated");
    }
    Ok(())
}

/// psql sessions on each server's maintenance database, kept open for
/// the life of the process. A restore asks the server about a dozen short
/// questions (does this database exist, drop it, swap): each costs a round
/// trip on a session instead of a psql start and a backend start (30 to
/// 60 ms). Sessions on any other database are never kept: a session left
/// on a target would stop its rename.
mod session {
    use std::io::{self, BufRead, Write};
    use std::sync::{Arc, Mutex};

    use anyhow::bail;

    use super::{client_env, conninfo, own_psql, ClientEnv, DbConn, HINT, MAINTENANCE_DB};
    use crate::process;

    struct Session {
        psql: process::Running,
        stdin: std::process::ChildStdin,
        stdout: io::BufReader<std::process::ChildStdout>,
        /// The line psql echoes after each script: nothing a query prints
        /// can equal it.
        end: String,
        _env: ClientEnv,
    }

    type Key = (std::path::PathBuf, String, Option<[u8; 32]>);
    type Slot = Arc<Mutex<Option<Session>>>;
    static SESSIONS: Mutex<Vec<(Key, Slot)>> = Mutex::new(Vec::new());

    fn key(conn: &DbConn) -> Key {
        let pw = conn.password.as_ref().map(|p| {
            let h = blake2b_simd::Params::new()
                .hash_length(32)
                .hash(p.expose().as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(h.as_bytes());
            k
        });
        (conn.tool("psql"), conninfo(conn, MAINTENANCE_DB), pw)
    }

    /// Hex of `v`, for a literal no server setting can reinterpret.
    fn hex_literal(v: &str) -> String {
        format!("convert_from(decode('{}', 'hex'), 'UTF8')", hex::encode(v))
    }

    impl Session {
        fn open(conn: &DbConn) -> anyhow::Result<Session> {
            use std::os::unix::process::CommandExt;
            let env = client_env(conn)?;
            let mut cmd = own_psql(conn, &env, MAINTENANCE_DB);
            // A Ctrl-C at the terminal goes to cellar alone, which still
            // needs the session to drop what it made; a cellar that dies
            // takes it along.
            cmd.process_group(0);
            let mut psql = process::spawn_tied(cmd, "psql", HINT)?;
            let stdin = psql.child.stdin.take().expect("stdin was piped");
            let stdout = io::BufReader::new(psql.child.stdout.take().expect("stdout was piped"));
            let mut r = [0u8; 16];
            let _ = sequoia_openpgp::crypto::random(&mut r);
            let mut s = Session {
                psql,
                stdin,
                stdout,
                end: format!("cellar-end-{}", hex::encode(r)),
                _env: env,
            };
            // Notices of one statement must not read as part of a later
            // statement's error.
            match s.run("SET client_min_messages TO warning;", &[]) {
                Ok(_) => Ok(s),
                Err(e) => Err(s.end(e)),
            }
        }

        /// Ends a session whose script failed; psql's own message (a
        /// refused connection, an SQL error) is the better error.
        fn end(self, e: anyhow::Error) -> anyhow::Error {
            drop(self.stdin);
            match self.psql.wait() {
                Err(psql) => anyhow::Error::new(psql),
                Ok(_) => e,
            }
        }

        fn alive(&mut self) -> bool {
            matches!(self.psql.child.try_wait(), Ok(None))
        }

        /// Runs `sql` with psql variables `vars`; an error ends the session
        /// (ON_ERROR_STOP) and is returned with psql's message.
        fn run(&mut self, sql: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
            let mut script = String::new();
            for (k, v) in vars {
                // Set from a query, so no value is ever parsed by psql.
                script.push_str(&format!("SELECT {} AS \"{k}\" \\gset\n", hex_literal(v)));
            }
            script.push_str(sql);
            script.push_str("\n;\n");
            for (k, _) in vars {
                script.push_str(&format!("\\unset {k}\n"));
            }
            script.push_str(&format!("\\echo {}\n", self.end));
            let sent = self
                .stdin
                .write_all(script.as_bytes())
                .and_then(|()| self.stdin.flush());
            let mut out = String::new();
            if sent.is_ok() {
                let mut line = String::new();
                loop {
                    line.clear();
                    if self.stdout.read_line(&mut line)? == 0 {
                        break;
                    }
                    if line.trim_end_matches('\n') == self.end {
                        return Ok(out);
                    }
                    out.push_str(&line);
                }
            }
            bail!("psql ended")
        }
    }

    /// Whether psql's message says the connection, not the statement,
    /// failed (a server restarted since the session began).
    fn connection_lost(e: &anyhow::Error) -> bool {
        let text = format!("{e:#}");
        [
            "server closed the connection unexpectedly",
            "connection to server was lost",
            "no connection to the server",
            "terminating connection due to administrator command",
        ]
        .iter()
        .any(|m| text.contains(m))
    }

    /// Runs `sql` on the kept session for `conn`'s server, or returns
    /// `None` when the caller should start a psql of its own (the session
    /// is busy on another thread, cannot start, or its connection was lost
    /// before the statement ran).
    pub(super) fn query(
        conn: &DbConn,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> Option<anyhow::Result<String>> {
        let key = key(conn);
        let slot = {
            let mut all = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
            match all.iter().find(|(k, _)| *k == key) {
                Some((_, s)) => s.clone(),
                None => {
                    let s: Slot = Arc::default();
                    all.push((key, s.clone()));
                    s
                }
            }
        };
        let mut guard = slot.try_lock().ok()?;
        let fresh = !guard.as_mut().is_some_and(|s| s.alive());
        if fresh {
            // A server that cannot be reached fails here, once.
            match Session::open(conn) {
                Ok(s) => *guard = Some(s),
                Err(e) => return Some(Err(e)),
            }
        }
        let session = guard.as_mut().expect("opened above");
        match session.run(sql, vars) {
            Ok(out) => Some(Ok(out)),
            Err(e) => {
                let e = guard.take().expect("the session ran").end(e);
                // A kept session whose server restarted meanwhile: the
                // statement never ran, so a psql of its own may run it.
                if !fresh && connection_lost(&e) {
                    return None;
                }
                Some(Err(e))
            }
        }
    }

    /// Ends every kept session (psql sees the end of its input and quits).
    pub fn close_all() {
        let all = std::mem::take(&mut *SESSIONS.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, slot) in all {
            if let Some(s) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = s.end(anyhow::anyhow!("closed"));
            }
        }
    }
}

pub use session::close_all as close_sessions;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_options_are_read_as_pg_dump_reads_them() {
        let read = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            dump_options(&args).map(|o| o.iter().map(|(n, _)| *n).collect::<Vec<_>>())
        };
        assert_eq!(read(&["-vf/tmp/x"]).unwrap(), ["verbose", "file"]);
        assert_eq!(read(&["-vFp"]).unwrap(), ["verbose", "format"]);
        assert_eq!(read(&["-Oa"]).unwrap(), ["no-owner", "data-only"]);
        assert_eq!(read(&["-xc"]).unwrap(), ["no-privileges", "clean"]);
        assert_eq!(
            read(&["-T", "audit", "-Z0"]).unwrap(),
            ["exclude-table", "compress"]
        );
        assert_eq!(
            read(&["--lock-wait-timeout", "5000", "--exclude-table-data=a"]).unwrap(),
            ["lock-wait-timeout", "exclude-table-data"]
        );
        for bad in [
            &["--fil=/x"][..],
            &["--form=p"],
            &["--sect=data"],
            &["--no-blob"],
            &["otherdb"],
            &["-T"],
            &["-q"],
            &["--verbose=1"],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        let filtered =
            |args: &[&str]| filters_dump(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert!(filtered(&["-Oa"]));
        assert!(filtered(&["-vt", "x"]));
        assert!(filtered(&["--section=data"]));
        assert!(!filtered(&["-v", "-Z0", "--lock-wait-timeout=10"]));
    }

    #[test]
    fn globals_leave_existing_roles_and_tablespaces_alone() {
        let sql = "SET default_transaction_read_only = off;\n\
--\n-- Roles\n--\n\n\
CREATE ROLE \"a'b\";\n\
COMMENT ON ROLE \"a'b\" IS 'x';\n\
CREATE ROLE app;\n\
ALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$old';\n\
CREATE ROLE \"New \"\"one\";\n\
ALTER ROLE \"New \"\"one\" WITH LOGIN;\n\
COMMENT ON ROLE app IS 'two\nALTER ROLE app WITH SUPERUSER;\n still';\n\
GRANT SET ON PARAMETER work_mem TO app;\n\
GRANT ALTER SYSTEM ON PARAMETER shared_buffers TO \"New \"\"one\", app;\n\
ALTER ROLE app SET search_path TO x;\n\
GRANT reader TO app GRANTED BY postgres;\n\
GRANT app TO \"New \"\"one\" GRANTED BY postgres;\n\
CREATE TABLESPACE fast OWNER app LOCATION '/x';\n\
GRANT CREATE ON TABLESPACE fast TO \"New \"\"one\";\n\
CREATE TABLESPACE slow OWNER app LOCATION '/y';\n";
        let roles: std::collections::HashSet<String> = ["app", "reader", "postgres"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let spaces: std::collections::HashSet<String> = ["fast".to_string()].into();
        let (out, left) = globals_for_new_only(sql.as_bytes(), &roles, &spaces);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "SET default_transaction_read_only = off;\n--\n-- Roles\n--\n\n\
CREATE ROLE \"a'b\";\n\
COMMENT ON ROLE \"a'b\" IS 'x';\n\
CREATE ROLE \"New \"\"one\";\n\
ALTER ROLE \"New \"\"one\" WITH LOGIN;\n\
GRANT app TO \"New \"\"one\" GRANTED BY postgres;\n\
CREATE TABLESPACE slow OWNER app LOCATION '/y';\n"
        );
        assert_eq!(
            left.into_iter().collect::<Vec<_>>(),
            ["role app", "tablespace fast"]
        );
    }

    #[test]
    fn conninfo_quotes_odd_names() {
        let c = DbConn {
            mariadb: false,
            host: "db".into(),
            port: 5433,
            user: "o'neil".into(),
            password: None,
            password_source: None,
            bin_dir: None,
        };
        assert_eq!(
            conninfo(&c, r"we ird\db"),
            r"host='db' port=5433 user='o\'neil' dbname='we ird\\db' application_name=cellar"
        );
    }
}
