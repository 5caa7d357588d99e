//! MariaDB (and MySQL) through its own client tools: `mariadb-dump` and
//! `mariadb` (`mysqldump` and `mysql` where only those exist).
//!
//! Every invocation reads its connection from a private option file
//! passed as `--defaults-file=/dev/fd/255`: a 0600 memfd that never
//! reaches the disk and is gone with the processes however cellar ends.
//! So the password is never in argv, the environment (an inherited
//! `MYSQL_PWD` is removed) or a file, and no `~/.my.cnf` or
//! `/etc/mysql/*.cnf` can send a backup to another server.
//!
//! A dump is one database, without `CREATE DATABASE` or `USE`, so it can
//! be restored under any name: `mariadb NAME < dump`.

use std::io::{self, BufRead, Read, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::process;
use crate::profile::DbConn;

const HINT: &str =
    "install the MariaDB client tools (apt-get install mariadb-client) or set bin_dir in [source]";

/// The descriptor the option file has in the child.
const DEFAULTS_FD: i32 = 255;

/// Databases the server itself keeps; never backed up with `all = true`,
/// never a restore target.
pub const SYSTEM_DATABASES: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// A value for an option file: double-quoted, with `\` and `"` escaped.
fn option_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The option file of one invocation: where the server is, who connects,
/// the password.
fn options(conn: &DbConn) -> io::Result<std::fs::File> {
    let mut text = String::from("[client]\n");
    if conn.host.starts_with('/') {
        text.push_str(&format!("socket={}\n", option_value(&conn.host)));
    } else {
        text.push_str(&format!(
            "host={}\nport={}\n",
            option_value(&conn.host),
            conn.port
        ));
        text.push_str("protocol=TCP\n");
    }
    text.push_str(&format!("user={}\n", option_value(&conn.user)));
    if let Some(pw) = &conn.password {
        text.push_str(&format!("password={}\n", option_value(pw.expose())));
    }
    text.push_str("default-character-set=utf8mb4\n");
    // Read by the mariadb (mysql) client only: mariadb-dump has no such
    // option.
    // No `LOAD DATA LOCAL INFILE`: SQL from a backup must not make the
    // client read a file on this host (cellar's secret key, /etc/shadow).
    text.push_str("[mysql]\nconnect-timeout=15\nlocal-infile=0\n");
    process::secret_file(c"cellar-mariadb", &text)
}

/// A client command with its option file; `options` must live until the
/// child is spawned.
fn command(conn: &DbConn, tool: &str, options: &std::fs::File) -> Command {
    use std::os::fd::AsRawFd;
    let mut cmd = crate::process::tool(tool_path(conn, tool));
    // Must be the first argument.
    cmd.arg(format!("--defaults-file=/dev/fd/{DEFAULTS_FD}"));
    for var in [
        "MYSQL_PWD",
        "MYSQL_HOST",
        "MYSQL_TCP_PORT",
        "MYSQL_UNIX_PORT",
    ] {
        cmd.env_remove(var);
    }
    process::pass_fd(&mut cmd, options.as_raw_fd(), DEFAULTS_FD);
    // A client left running after cellar was killed would go on: a
    // restore's client holds its table locks (the dump's LOCK TABLES) until
    // it is done, and a swap's statement would run after its undo could.
    // It dies with the thread that started it.
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// `mariadb-dump` or `mariadb`, falling back to MySQL's `mysqldump` and
/// `mysql` when only those are installed.
fn tool_path(conn: &DbConn, tool: &str) -> std::path::PathBuf {
    let mysql = match tool {
        "mariadb-dump" => "mysqldump",
        "mariadb" => "mysql",
        other => other,
    };
    let found = |name: &str| -> Option<std::path::PathBuf> {
        match &conn.bin_dir {
            Some(d) => Some(d.join(name)).filter(|p| p.is_file()),
            None => std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            }),
        }
    };
    found(tool)
        .or_else(|| found(mysql))
        .unwrap_or_else(|| match &conn.bin_dir {
            Some(d) => d.join(tool),
            None => tool.into(),
        })
}

/// Quotes an identifier: `` `a``b` ``.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal (backslash escapes on, as by default).
pub fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Undoes the escaping of `mariadb --batch` output (`\n`, `\t`, `\\`, `\0`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Runs SQL (from stdin, never argv) and returns its rows, each a list of
/// fields. `database`: the default database, if any.
pub fn rows(conn: &DbConn, database: Option<&str>, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let out = query(conn, database, sql)?;
    Ok(out
        .lines()
        .map(|l| l.split('\t').map(unescape).collect())
        .collect())
}

/// Runs SQL and returns the raw batch output (tab-separated rows).
pub fn query(conn: &DbConn, database: Option<&str>, sql: &str) -> anyhow::Result<String> {
    let opts = options(conn)?;
    let mut cmd = command(conn, "mariadb", &opts);
    cmd.args(["--batch", "--skip-column-names", "--binary-mode"]);
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = process::spawn(&mut cmd, "mariadb", HINT)?;
    drop(opts);
    let mut stdin = child.child.stdin.take().expect("stdin was piped");
    let mut stdout = child.child.stdout.take().expect("stdout was piped");
    let script = sql.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let mut out = String::new();
    stdout.read_to_string(&mut out)?;
    let _ = writer.join();
    child.wait().with_context(|| match database {
        Some(db) => format!("on {} database {db}", conn.describe()),
        None => format!("on {}", conn.describe()),
    })?;
    Ok(out)
}

/// The first field of the first row.
fn scalar(conn: &DbConn, database: Option<&str>, sql: &str) -> anyhow::Result<String> {
    Ok(rows(conn, database, sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .unwrap_or_default())
}

pub fn server_version(conn: &DbConn) -> anyhow::Result<String> {
    scalar(conn, None, "SELECT VERSION();")
}

/// Connects to `database` and returns the server's version.
pub fn ping(conn: &DbConn, database: Option<&str>) -> anyhow::Result<String> {
    scalar(conn, database, "SELECT VERSION();")
}

/// The databases `all = true` backs up: every one but the server's own
/// and cellar's scratch and previous copies.
pub fn list_databases(conn: &DbConn) -> anyhow::Result<Vec<String>> {
    let mut dbs: Vec<String> = rows(conn, None, "SHOW DATABASES;")?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
        .filter(|d| !crate::restore::database::is_cellar_copy(d))
        .collect();
    dbs.sort();
    Ok(dbs)
}

/// Whether `database` exists.
pub fn exists(conn: &DbConn, database: &str) -> anyhow::Result<bool> {
    let n = scalar(
        conn,
        None,
        &format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
            literal(database)
        ),
    )?;
    Ok(n.trim() != "0")
}

/// How many objects `database` holds (tables, views, routines, events),
/// or None when it does not exist.
pub fn database_state(conn: &DbConn, database: &str) -> anyhow::Result<Option<u64>> {
    if !exists(conn, database)? {
        return Ok(None);
    }
    let l = literal(database);
    let n = scalar(
        conn,
        None,
        &format!(
            "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {l})
                  + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {l})
                  + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {l});"
        ),
    )?;
    Ok(Some(n.trim().parse().unwrap_or(0)))
}

/// How many tables (and sequences) `database` has.
pub fn count_tables(conn: &DbConn, database: &str) -> anyhow::Result<u64> {
    let n = scalar(
        conn,
        None,
        &format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE <> 'VIEW';",
            literal(database)
        ),
    )?;
    Ok(n.trim().parse().unwrap_or(0))
}

/// Tables whose engine has no transactions (MyISAM, Aria, MEMORY...):
/// `--single-transaction` does not make their dump consistent.
pub fn non_transactional_tables(conn: &DbConn, database: &str) -> anyhow::Result<Vec<String>> {
    Ok(rows(
        conn,
        None,
        &format!(
            "SELECT CONCAT(t.TABLE_NAME, ' (', t.ENGINE, ')') FROM information_schema.TABLES t
               JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE
             WHERE t.TABLE_SCHEMA = {} AND t.TABLE_TYPE = 'BASE TABLE'
               AND COALESCE(e.TRANSACTIONS, 'NO') <> 'YES'
             ORDER BY t.TABLE_NAME;",
            literal(database)
        ),
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next())
    .collect())
}

/// What a dump of `database` would silently leave out, as warnings: stored
/// routines the backup user cannot read (mariadb-dump reads them from
/// `mysql.proc`), and the history of system-versioned tables without
/// `--dump-history`.
pub fn left_out(conn: &DbConn, database: &str, extra: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let l = literal(database);
    if query(
        conn,
        None,
        &format!("SELECT COUNT(*) FROM mysql.proc WHERE db = {l};"),
    )
    .is_err()
    {
        found.push(format!(
            "the backup user cannot read mysql.proc, so the dump of {database} holds no stored routines; GRANT SELECT ON mysql.proc TO it"
        ));
    }
    let versioned = rows(
        conn,
        None,
        &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {l} AND TABLE_TYPE = 'SYSTEM VERSIONED' ORDER BY 1;"),
    )
    .unwrap_or_default();
    if !versioned.is_empty() && !extra.iter().any(|a| a == "--dump-history") {
        found.push(format!(
            "{database}: system-versioned table(s) {} are dumped without their history; add \"--dump-history\" to dump_args to keep it",
            versioned.iter().filter_map(|r| r.first().cloned()).collect::<Vec<_>>().join(", ")
        ));
    }
    found
}

/// Streams a dump of `database` into `out`: a consistent InnoDB snapshot
/// (`--single-transaction`), routines, events and triggers, BLOBs in hex,
/// utf8mb4; no `CREATE DATABASE`/`USE`, so it restores under any name.
pub fn dump(
    conn: &DbConn,
    database: &str,
    extra: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let opts = options(conn)?;
    let mut cmd = command(conn, "mariadb-dump", &opts);
    cmd.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--no-tablespaces",
    ]);
    cmd.args(extra).arg("--").arg(database);
    let mut tail = Tail::new(out);
    process::stream_stdout(cmd, "mariadb-dump", HINT, &mut tail)
        .with_context(|| format!("dumping database {database}"))?;
    tail.completed()
        .with_context(|| format!("dumping database {database}"))
}

/// A statement that leaves the database a dump is restored into: `USE`,
/// `CREATE DATABASE`/`SCHEMA`, `DROP DATABASE`/`SCHEMA` at the start of a
/// line (after blanks and an executable comment's `/*!NNNNN `), as dumps
/// made with `--databases` or `--all-databases` hold them. A guard
/// against the wrong dump, not a sandbox: see the README.
fn leaves_database(line: &[u8]) -> Option<&'static str> {
    let blank = |l: &[u8]| -> usize { l.iter().take_while(|b| b.is_ascii_whitespace()).count() };
    let mut line = &line[blank(line)..];
    for open in [&b"/*!"[..], b"/*M!"] {
        if let Some(rest) = line.strip_prefix(open) {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            line = &rest[digits..];
            line = &line[blank(line)..];
        }
    }
    [
        ("USE ", "USE"),
        ("USE`", "USE"),
        ("CREATE DATABASE", "CREATE DATABASE"),
        ("CREATE SCHEMA", "CREATE DATABASE"),
        ("DROP DATABASE", "DROP DATABASE"),
        ("DROP SCHEMA", "DROP DATABASE"),
    ]
    .into_iter()
    .find(|(p, _)| {
        line.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
    })
    .map(|(_, what)| what)
}

/// Which lines of a dump start a statement: the first after one that ended
/// with the delimiter (`;`, or `;;` after `DELIMITER ;;`), blank lines and
/// comments aside. A routine's, trigger's or event's body goes on over
/// lines that start none (a line `DROP DATABASE IF EXISTS tmp;` in a
/// procedure is the procedure's, run when it is called).
struct Statements {
    delimiter: Vec<u8>,
    at_start: bool,
}

impl Statements {
    fn new() -> Self {
        Statements {
            delimiter: b";".to_vec(),
            at_start: true,
        }
    }

    /// Reads one line, given its first bytes and its last ones; says what
    /// it holds that leaves the database, when it starts a statement.
    fn line(&mut self, head: &[u8], end: &[u8]) -> Option<&'static str> {
        let trim = |l: &[u8]| -> usize { l.iter().take_while(|b| b.is_ascii_whitespace()).count() };
        let start = &head[trim(head)..];
        let end = end.trim_ascii_end();
        if start.is_empty() {
            return None;
        }
        if !self.at_start {
            self.at_start = end.ends_with(&self.delimiter);
            return None;
        }
        if start.starts_with(b"--") || start.starts_with(b"/*M!999999") {
            return None;
        }
        if start.len() > 10 && start[..10].eq_ignore_ascii_case(b"DELIMITER ") {
            self.delimiter = start[10..].trim_ascii().to_vec();
            return None;
        }
        let refused = leaves_database(start);
        self.at_start = end.ends_with(&self.delimiter);
        refused
    }
}

/// Passes a dump through, keeping its last bytes to see its completion
/// line (a dump cut short with exit 0 is never stored as complete) and
/// the start of each line (a dump that leaves its database is refused).
struct Tail<'w> {
    inner: &'w mut dyn Write,
    last: Vec<u8>,
    /// The first bytes of the current line.
    head: Vec<u8>,
    /// Its last bytes.
    end: Vec<u8>,
    statements: Statements,
    refused: Option<&'static str>,
}

impl<'w> Tail<'w> {
    const KEEP: usize = 512;

    fn new(inner: &'w mut dyn Write) -> Self {
        Tail {
            inner,
            last: Vec::with_capacity(2 * Self::KEEP),
            head: Vec::with_capacity(Self::HEAD),
            end: Vec::with_capacity(2 * Self::END),
            statements: Statements::new(),
            refused: None,
        }
    }

    const HEAD: usize = 64;
    const END: usize = 16;

    fn scan(&mut self, buf: &[u8]) {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            self.keep(&buf[start..end]);
            if let Some(what) = self.statements.line(&self.head, &self.end) {
                self.refused.get_or_insert(what);
            }
            self.head.clear();
            self.end.clear();
            start = end + 1;
        }
        self.keep(&buf[start..]);
    }

    /// Adds `part` to the current line's first and last bytes.
    fn keep(&mut self, part: &[u8]) {
        let room = Self::HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&part[..part.len().min(room)]);
        self.end
            .extend_from_slice(&part[part.len().saturating_sub(Self::END)..]);
        if self.end.len() > Self::END {
            self.end.drain(..self.end.len() - Self::END);
        }
    }

    fn completed(&self) -> anyhow::Result<()> {
        if let Some(what) = self.refused {
            bail!("the dump holds `{what}`: it would write outside the database it is restored into (check dump_args)");
        }
        let text = String::from_utf8_lossy(&self.last);
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) if l.starts_with("-- Dump completed") => Ok(()),
            _ => bail!("mariadb-dump ended without its completion line (`-- Dump completed`): the dump was cut short, or dump_args turned comments off"),
        }
    }
}

impl Write for Tail<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan(&buf[..n]);
        let kept = &buf[n.saturating_sub(Self::KEEP)..n];
        self.last.extend_from_slice(kept);
        if self.last.len() > Self::KEEP {
            self.last.drain(..self.last.len() - Self::KEEP);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the server's users, roles and grants (`--system=users`, as
/// `CREATE USER IF NOT EXISTS` so applying them twice is harmless).
pub fn dump_globals(conn: &DbConn, out: &mut dyn Write) -> anyhow::Result<()> {
    let opts = options(conn)?;
    let mut cmd = command(conn, "mariadb-dump", &opts);
    cmd.args(["--system=users", "--insert-ignore"]);
    let mut tail = Tail::new(out);
    process::stream_stdout(cmd, "mariadb-dump", HINT, &mut tail)
        .and_then(|()| tail.completed())
        .context("dumping users and grants (mariadb-dump --system=users; MySQL has no such option: set globals = false there)")
}

/// What [`check_dump`] read in a dump.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpFacts {
    /// Tables and sequences (mariadb-dump's `-- Table structure` and
    /// `-- Sequence structure` comments).
    pub tables: u64,
    /// Views (`-- Final view structure` comments).
    pub views: u64,
}

/// Checks that a dump is whole: it starts as mariadb-dump's (or
/// mysqldump's) output and ends with its completion line, which is
/// written only after everything else. Returns what it holds.
pub fn check_dump(input: &mut dyn Read, globals: bool) -> anyhow::Result<DumpFacts> {
    let mut r = io::BufReader::with_capacity(1 << 20, input);
    let mut facts = DumpFacts::default();
    let mut line = Vec::new();
    let mut first = true;
    let mut last = Vec::new();
    let mut statements = Statements::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if first {
            first = false;
            let head = String::from_utf8_lossy(&line);
            let known = head.starts_with("/*M!999999\\- enable the sandbox mode */")
                || head.starts_with("-- MariaDB dump")
                || head.starts_with("-- MySQL dump");
            if !known {
                bail!(
                    "this is not a mariadb-dump or mysqldump dump (it starts with {:?})",
                    head.trim_end()
                );
            }
        }
        if line.starts_with(b"-- Table structure for table `")
            || line.starts_with(b"-- Sequence structure for `")
        {
            facts.tables += 1;
        } else if line.starts_with(b"-- Final view structure for view `") {
            facts.views += 1;
        } else if let Some(what) = statements.line(&line, &line) {
            bail!("the dump holds `{what}`: it would write outside the database it is restored into, so it is refused (was it made with --databases?)");
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            std::mem::swap(&mut last, &mut line);
        }
    }
    if first {
        bail!("the dump is empty");
    }
    if !last.starts_with(b"-- Dump completed") {
        bail!(
            "the {} ends without mariadb-dump's completion line: it was cut short",
            if globals {
                "users-and-grants dump"
            } else {
                "dump"
            }
        );
    }
    Ok(facts)
}

/// Whether this `mariadb` client has `--sandbox` (MariaDB 10.5.25,
/// 10.6.18, 10.11.8 and later), which refuses every client command that
/// touches the file system or runs a program.
fn has_sandbox(conn: &DbConn) -> bool {
    crate::process::tool(tool_path(conn, "mariadb"))
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--sandbox"))
}

/// Runs a checked dump (or any SQL from a backup) into `database`:
/// client commands off (`--binary-mode`, and `--sandbox` where the client
/// has it), stopping at the first error.
pub fn run_script(
    conn: &DbConn,
    database: Option<&str>,
    script: std::fs::File,
) -> anyhow::Result<()> {
    let opts = options(conn)?;
    let mut cmd = command(conn, "mariadb", &opts);
    cmd.args([
        "--batch",
        "--binary-mode",
        "--max-allowed-packet=1073741824",
    ]);
    if has_sandbox(conn) {
        cmd.arg("--sandbox");
    }
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    cmd.stdin(Stdio::from(script)).stdout(Stdio::null());
    let child = process::spawn_group(&mut cmd, "mariadb", HINT)?;
    drop(opts);
    child.wait_or_cancel()?;
    Ok(())
}

/// A named lock held on the server (`GET_LOCK`) for as long as this value
/// lives: cellars on other hosts or config dirs restoring into the same
/// target wait their turn.
pub struct ServerLock {
    _client: process::Running,
    _stdin: std::process::ChildStdin,
}

pub fn try_server_lock(conn: &DbConn, name: &str) -> anyhow::Result<Option<ServerLock>> {
    let opts = options(conn)?;
    let mut cmd = command(conn, "mariadb", &opts);
    cmd.args(["--batch", "--skip-column-names", "--unbuffered"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut client = process::spawn(&mut cmd, "mariadb", HINT)?;
    drop(opts);
    let mut stdin = client.child.stdin.take().expect("stdin was piped");
    let stdout = client.child.stdout.take().expect("stdout was piped");
    // Lock names are at most 64 characters.
    let key = format!("cellar:{}", &name[..name.len().min(57)]);
    writeln!(stdin, "SELECT GET_LOCK({}, 0);", literal(&key))?;
    stdin.flush()?;
    let mut answer = String::new();
    io::BufReader::new(stdout).read_line(&mut answer)?;
    match answer.trim() {
        "1" => Ok(Some(ServerLock {
            _client: client,
            _stdin: stdin,
        })),
        "0" => Ok(None),
        _ => {
            drop(stdin);
            client.wait()?;
            bail!("could not take a lock on {}", conn.describe())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_and_identifiers_are_quoted() {
        assert_eq!(option_value(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(ident("we`ird"), "`we``ird`");
        assert_eq!(literal("it's\\"), r"'it\'s\\'");
        assert_eq!(unescape(r"a\tb\nc\\d"), "a\tb\nc\\d");
    }

    #[test]
    fn a_dump_without_its_completion_line_is_refused() {
        let whole = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n-- Table structure for table `t`\nCREATE TABLE `t` (\n);\n-- Final view structure for view `v`\n/*!50001 VIEW `v` AS select 1 */;\n\n-- Dump completed on 2026-11-23 16:53:46\n\n";
        let facts = check_dump(&mut whole.as_bytes(), false).unwrap();
        assert_eq!(
            facts,
            DumpFacts {
                tables: 1,
                views: 1
            }
        );
        let cut = &whole[..whole.find("-- Dump").unwrap()];
        assert!(check_dump(&mut cut.as_bytes(), false).is_err());
        assert!(check_dump(&mut "SELECT 1;\n-- Dump completed\n".as_bytes(), false).is_err());
        assert!(check_dump(&mut "".as_bytes(), false).is_err());
        let used = whole.replace("CREATE TABLE", "USE `live`;\nCREATE TABLE");
        assert!(check_dump(&mut used.as_bytes(), false).is_err());
    }

    #[test]
    fn a_dump_that_leaves_its_database_is_refused_while_it_streams() {
        for bad in [
            "USE `shop`;\n",
            "use shop;\n",
            "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `x`;\n",
            "/*!40000 DROP DATABASE IF EXISTS `x`*/;\n",
            " USE shop;\n",
            "\t/*!50000 USE shop */;\n",
            "/*M!100101 use`shop`*/;\n",
            "DROP SCHEMA IF EXISTS victim;\n",
            "create schema x;\n",
        ] {
            let mut out = Vec::new();
            let mut tail = Tail::new(&mut out);
            let text = format!(
                "-- MariaDB dump\nCREATE TABLE `t` (a INT);\n{bad}-- Dump completed on x\n"
            );
            // In small pieces, so a line is split between writes.
            for piece in text.as_bytes().chunks(3) {
                tail.write_all(piece).unwrap();
            }
            assert!(tail.completed().is_err(), "{bad}");
        }
        let mut out = Vec::new();
        let mut tail = Tail::new(&mut out);
        tail.write_all(
            b"-- MariaDB dump\nINSERT INTO t VALUES ('USE x');\n-- Dump completed on x\n",
        )
        .unwrap();
        assert!(tail.completed().is_ok());
    }

    #[test]
    fn a_routine_body_is_not_read_as_statements_of_the_dump() {
        let routine = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n\nDELIMITER ;;\nCREATE DEFINER=`root`@`localhost` PROCEDURE `p`()\nBEGIN\nDROP DATABASE IF EXISTS scratch_tmp;\n  USE other;\nEND ;;\nDELIMITER ;\n";
        let end = "-- Dump completed on x\n";
        let whole = format!("{routine}{end}");
        let mut out = Vec::new();
        let mut tail = Tail::new(&mut out);
        for piece in whole.as_bytes().chunks(5) {
            tail.write_all(piece).unwrap();
        }
        assert!(tail.completed().is_ok());
        check_dump(&mut whole.as_bytes(), false).unwrap();
        // After the body, statements are read again, with either delimiter.
        for bad in [
            "USE `shop`;\n",
            "--\n-- Current Database\n--\n\nCREATE DATABASE `x`;\n",
            "DELIMITER ;;\nDROP DATABASE x;;\n",
        ] {
            let text = format!("{routine}{bad}{end}");
            let mut out = Vec::new();
            let mut tail = Tail::new(&mut out);
            tail.write_all(text.as_bytes()).unwrap();
            assert!(tail.completed().is_err(), "{bad}");
            assert!(check_dump(&mut text.as_bytes(), false).is_err(), "{bad}");
        }
    }
}
