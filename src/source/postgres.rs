//! PostgreSQL through its own client tools.
//!
//! The password never appears in argv: each invocation gets a private
//! 0600 passfile (PGPASSFILE) in a temporary folder that is removed when
//! the call returns. Connection parameters go in a conninfo string, so a
//! database name can hold any character.
//!
//! Restoring into a database runs the whole script inside one transaction
//! that cellar opens and closes itself: `BEGIN` goes first, and `COMMIT`
//! is sent only by [`PendingRestore::commit`], which the caller invokes once
//! the pipeline has proved the stream intact. Dropping a pending restore
//! kills psql, and the server rolls the transaction back.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::process::{self, Running};
use crate::profile::PgConn;

const HINT: &str = "install the PostgreSQL client tools (apt-get install postgresql-client) or set pg_bin_dir in [source]";

/// Quotes a value for a libpq conninfo string.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub fn conninfo(conn: &PgConn, database: &str) -> String {
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
    _dir: Option<tempfile::TempDir>,
    vars: Vec<(String, String)>,
}

fn client_env(conn: &PgConn) -> io::Result<ClientEnv> {
    let mut vars = vec![("PGCONNECT_TIMEOUT".to_string(), "15".to_string())];
    let Some(pw) = &conn.password else {
        return Ok(ClientEnv { _dir: None, vars });
    };
    let dir = tempfile::Builder::new().prefix("cellar-pg-").tempdir()?;
    let path = dir.path().join("pgpass");
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(f, "*:*:*:*:{}", escape(pw.expose()))?;
    }
    vars.push(("PGPASSFILE".into(), path.to_string_lossy().into_owned()));
    Ok(ClientEnv {
        _dir: Some(dir),
        vars,
    })
}

fn command(conn: &PgConn, tool: &str, env: &ClientEnv) -> Command {
    let mut cmd = Command::new(conn.tool(tool));
    cmd.envs(env.vars.iter().map(|(k, v)| (k, v)));
    // A password from the caller's environment must not override ours.
    cmd.env_remove("PGPASSWORD");
    cmd
}

/// Runs an SQL script through psql and returns its unaligned output.
/// `vars` become psql variables (`:'name'` in the script).
pub fn query(
    conn: &PgConn,
    database: &str,
    sql: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<String> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "psql", &env);
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
    stdout.read_to_string(&mut out)?;
    let _ = writer.join();
    child
        .wait()
        .with_context(|| format!("on {} database {database}", conn.describe()))?;
    Ok(out)
}

pub fn ping(conn: &PgConn, database: &str) -> anyhow::Result<String> {
    let v = query(conn, database, "SELECT 1; SHOW server_version;", &[])?;
    Ok(v.lines().nth(1).unwrap_or("").trim().to_string())
}

pub fn server_version(conn: &PgConn) -> anyhow::Result<String> {
    Ok(query(conn, "postgres", "SHOW server_version;", &[])?
        .trim()
        .to_string())
}

/// The databases `all = true` backs up: every one that accepts connections
/// except the templates.
pub fn list_databases(conn: &PgConn) -> anyhow::Result<Vec<String>> {
    let out = query(
        conn,
        "postgres",
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1;",
        &[],
    )?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Streams `pg_dump` of one database into `out`.
pub fn dump(
    conn: &PgConn,
    database: &str,
    custom: bool,
    extra: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "pg_dump", &env);
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
pub fn dump_globals(conn: &PgConn, out: &mut dyn Write) -> anyhow::Result<()> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "pg_dumpall", &env);
    cmd.args(["--globals-only", "--no-password"]);
    cmd.arg(format!("--dbname={}", conninfo(conn, "postgres")));
    run_into(cmd, "pg_dumpall", out).context("dumping roles and tablespaces")
}

fn run_into(mut cmd: Command, tool: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = process::spawn(&mut cmd, tool, HINT)?;
    let mut stdout = child.child.stdout.take().unwrap();
    let copied = io::copy(&mut stdout, out);
    drop(stdout);
    match copied {
        // The child's own failure explains more than our broken pipe.
        Ok(_) => {
            child.wait()?;
            Ok(())
        }
        Err(e) => {
            child.kill();
            Err(e.into())
        }
    }
}

/// Whether `database` exists, and how many user objects it holds.
pub fn database_state(conn: &PgConn, database: &str) -> anyhow::Result<Option<u64>> {
    let exists = query(
        conn,
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = :'name';",
        &[("name", database)],
    )?;
    if exists.trim() == "0" {
        return Ok(None);
    }
    let n = query(
        conn,
        database,
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')
              + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
              + (SELECT count(*) FROM pg_namespace
                 WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
                   AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%');",
        &[],
    )?;
    Ok(Some(n.trim().parse().unwrap_or(0)))
}

/// How many user tables `database` has (0: the dump would be empty).
pub fn count_tables(conn: &PgConn, database: &str) -> anyhow::Result<u64> {
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

pub fn create_database(conn: &PgConn, database: &str) -> anyhow::Result<()> {
    query(
        conn,
        "postgres",
        "CREATE DATABASE :\"name\" TEMPLATE template0;",
        &[("name", database)],
    )
    .map(|_| ())
    .with_context(|| format!("creating database {database}"))
}

pub fn drop_database(conn: &PgConn, database: &str) -> anyhow::Result<()> {
    query(
        conn,
        "postgres",
        "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);",
        &[("name", database)],
    )
    .map(|_| ())
}

/// Drops every user schema (and what is in it) and recreates `public` as
/// PostgreSQL 15 makes it; runs inside the restore's transaction, so a
/// failed restore leaves the old content in place.
const CLEAN_SQL: &str = r#"
DO $cellar$
DECLARE s record;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema')
             AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%'
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s.nspname);
  END LOOP;
END
$cellar$;
CREATE SCHEMA public;
ALTER SCHEMA public OWNER TO pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"#;

/// A restore whose transaction is open, waiting for `commit`.
pub struct PendingRestore {
    psql: Running,
    stdin: std::process::ChildStdin,
}

impl PendingRestore {
    pub fn commit(mut self) -> anyhow::Result<()> {
        self.stdin
            .write_all(b"\nCOMMIT;\n")
            .and_then(|_| self.stdin.flush())
            .context("sending COMMIT to psql")?;
        drop(self.stdin);
        self.psql.wait().context("committing the restore")?;
        Ok(())
    }
}

/// Applies a dump (custom archive through pg_restore, or plain SQL) to
/// `database` inside one open transaction. Returns once the whole stream
/// went in; nothing is committed until [`PendingRestore::commit`].
pub fn restore_into(
    conn: &PgConn,
    database: &str,
    custom: bool,
    clean: bool,
    no_owner: bool,
    input: &mut dyn Read,
) -> anyhow::Result<PendingRestore> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "psql", &env);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut psql = process::spawn(&mut cmd, "psql", HINT)?;
    let mut stdin = psql.child.stdin.take().unwrap();

    let mut head = String::from("BEGIN;\n");
    if clean {
        head.push_str(CLEAN_SQL);
    }
    let fed: io::Result<()> = (|| {
        stdin.write_all(head.as_bytes())?;
        if custom {
            let mut cmd = command(conn, "pg_restore", &env);
            cmd.args(["--file=-", "--exit-on-error"]);
            if no_owner {
                cmd.args(["--no-owner", "--no-privileges"]);
            }
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
            let mut pg_restore =
                process::spawn(&mut cmd, "pg_restore", HINT).map_err(io::Error::other)?;
            let mut to_restore = pg_restore.child.stdin.take().unwrap();
            let mut from_restore = pg_restore.child.stdout.take().unwrap();
            let forwarded = std::thread::scope(|s| {
                let fwd = s.spawn(|| {
                    let r = io::copy(&mut from_restore, &mut stdin);
                    if r.is_err() {
                        // psql stopped: keep pg_restore moving so the
                        // feeding side cannot block, then report.
                        let _ = io::copy(&mut from_restore, &mut io::sink());
                    }
                    r
                });
                let fed = io::copy(input, &mut to_restore);
                drop(to_restore);
                let fwd = fwd.join().expect("forwarding thread panicked");
                fed.and(fwd)
            });
            match forwarded {
                Ok(_) => pg_restore.wait().map(|_| ()).map_err(io::Error::other),
                Err(e) => {
                    pg_restore.kill();
                    Err(e)
                }
            }
        } else {
            io::copy(input, &mut stdin).map(|_| ())
        }
    })();
    if let Err(e) = fed {
        // If psql stopped on an SQL error, its message is the real cause.
        drop(stdin);
        return match psql.wait() {
            Err(p) => Err(anyhow::Error::new(p).context(format!("restoring into {database}"))),
            Ok(_) => Err(anyhow::Error::new(e).context(format!("restoring into {database}"))),
        };
    }
    Ok(PendingRestore { psql, stdin })
}

/// Runs a plain SQL script (e.g. globals) outside a transaction, carrying
/// on past errors such as "role already exists"; returns psql's messages.
pub fn run_script(
    conn: &PgConn,
    database: &str,
    script: &std::path::Path,
) -> anyhow::Result<String> {
    let env = client_env(conn)?;
    let mut cmd = command(conn, "psql", &env);
    cmd.args(["-X", "-q", "-f"]).arg(script);
    cmd.arg(format!("--dbname={}", conninfo(conn, database)));
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    Ok(process::spawn(&mut cmd, "psql", HINT)?.wait()?)
}

/// Checks a custom archive by converting it to SQL without applying it.
pub fn check_archive(conn: &PgConn, input: &mut dyn Read) -> anyhow::Result<()> {
    let mut cmd = Command::new(conn.tool("pg_restore"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_odd_names() {
        let c = PgConn {
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
