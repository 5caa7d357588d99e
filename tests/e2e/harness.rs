//! The test harness: one throwaway PostgreSQL 15 cluster per test binary
//! (started on first use, on a free port, and stopped by a watchdog when
//! the test process exits, even if it is killed) and a `TestEnv` per test:
//! a config dir with its own key, profiles and store, driving the real
//! `cellar` binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A user that must log in with a password (scram), for password tests.
pub const PW_USER: &str = "pwuser";
pub const PW_PASSWORD: &str = "c0rrect horse:battery\\staple";

pub struct Pg {
    pub port: u16,
}

static PG: OnceLock<Pg> = OnceLock::new();

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a server program as the cluster owner (postgres when we are root:
/// initdb refuses root).
fn as_owner(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cluster the tests of this binary share; each test uses databases
/// with names of its own.
pub fn pg() -> &'static Pg {
    PG.get_or_init(start_cluster)
}

/// A cluster of its own, for a test that must see every database on its
/// server (`all = true`) without seeing other tests'. Stopped when the test
/// process ends.
pub fn private_pg() -> Pg {
    start_cluster()
}

fn start_cluster() -> Pg {
    {
        let dir = tempfile::Builder::new()
            .prefix("cellar-test-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let data = dir.join("data");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        run_ok(
            as_owner("initdb")
                .current_dir(&dir)
                .args(["-D", data.to_str().unwrap()])
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"]),
            "initdb",
        );
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!("host all {PW_USER} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .unwrap();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.display()
        );
        run_ok(
            as_owner("pg_ctl")
                .current_dir(&dir)
                .args(["-D", data.to_str().unwrap(), "-w", "-o", &opts])
                .args(["-l", dir.join("log").to_str().unwrap(), "start"]),
            "pg_ctl start",
        );
        // Stop the cluster and remove it once this test process is gone.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {owner} {PG_BIN}/pg_ctl -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            owner = if is_root() { "runuser -u postgres --" } else { "" },
            data = data.display(),
            dir = dir.display(),
        );
        // `setsid -f` forks: the watchdog outlives this process by design.
        let watchdog = Command::new("setsid")
            .args(["-f", "sh", "-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("watchdog");
        assert!(watchdog.success());
        let _ = &dir;
        let pg = Pg { port };
        pg.psql(
            "postgres",
            &format!(
                "CREATE ROLE {PW_USER} LOGIN SUPERUSER PASSWORD '{}';",
                PW_PASSWORD.replace('\'', "''")
            ),
        );
        pg
    }
}

impl Pg {
    /// Runs SQL as the superuser; panics on error; returns unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn create_db(&self, db: &str) {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// A new database for `test` (named by [`db_name`]) holding what `sql`
    /// makes.
    pub fn filled_db(&self, test: &str, sql: &str) -> String {
        let db = db_name(test);
        self.create_db(&db);
        self.psql(&db, sql);
        db
    }

    pub fn exists(&self, db: &str) -> bool {
        self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
        )
        .trim()
            == "1"
    }

    /// Schema and data of `db` as plain SQL, minus the lines that differ
    /// between two dumps of equal databases (pg_dump's random \restrict key).
    pub fn dump(&self, db: &str) -> String {
        let out = Command::new("pg_dump")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["--no-owner", "-d", db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A database with many types, a view, a sequence, odd identifiers and
/// non-ASCII data.
pub const RICH_SCHEMA: &str = r#"
CREATE SCHEMA "Schéma ""odd""";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE "Schéma ""odd"""."Table With Spaces" (
    id bigserial PRIMARY KEY,
    "naïve column" text,
    "select" integer,
    j jsonb,
    n numeric(12,3),
    ts timestamptz,
    d date,
    iv interval,
    b bytea,
    arr text[],
    m mood,
    p posint,
    u uuid,
    f double precision,
    flag boolean
);
INSERT INTO "Schéma ""odd"""."Table With Spaces"
    ("naïve column", "select", j, n, ts, d, iv, b, arr, m, p, u, f, flag)
SELECT
    CASE WHEN g % 7 = 0 THEN NULL ELSE 'héllo ' || g || E' 日本語 \t tab ''quote'' "dq" \\ back\nnewline 🎉' END,
    g,
    jsonb_build_object('k', g, 'nested', jsonb_build_array(g, 'ü', null)),
    g * 1.125,
    '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
    '2026-01-01'::date + g,
    g * interval '1 minute',
    decode(lpad(to_hex(g), 8, '0'), 'hex'),
    ARRAY['a', 'b,c', 'd"e', NULL],
    (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood,
    g,
    md5(g::text)::uuid,
    g / 3.0,
    g % 2 = 0
FROM generate_series(1, 2000) g;
CREATE TABLE parent (id int PRIMARY KEY, label text UNIQUE);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent(id) ON DELETE CASCADE, note text);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 50) g;
INSERT INTO child SELECT g, 1 + g % 50, repeat('x', g % 100) FROM generate_series(1, 500) g;
CREATE INDEX child_note_idx ON child (note);
CREATE VIEW "Schéma ""odd""".recent AS SELECT id, "naïve column" FROM "Schéma ""odd"""."Table With Spaces" WHERE id > 1990;
CREATE SEQUENCE invoice_seq START 1000 INCREMENT 7;
SELECT nextval('invoice_seq'); SELECT nextval('invoice_seq');
CREATE FUNCTION add_one(i integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT i + 1';
COMMENT ON TABLE parent IS 'Parents — with a comment';
"#;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A config dir of its own: profiles/, secrets/ with key `k`, store/.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cellar-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        cellar::keys::keygen(&dir.path().join("secrets"), "k", "test key", None).unwrap();
        cellar::keys::keygen_signing(&dir.path().join("secrets"), "host", "test host").unwrap();
        TestEnv { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self, profile: &str) -> PathBuf {
        self.path().join("store").join(profile)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A postgres profile on the test cluster for one database, with
    /// `source_extra` appended inside [source] and `rest` after the tables
    /// (a `[compression]` in `rest` replaces the default level 1).
    pub fn pg_profile(&self, name: &str, database: &str, source_extra: &str, rest: &str) {
        self.pg_profile_with(
            name,
            &format!("database = \"{database}\"\n{source_extra}"),
            rest,
        );
    }

    /// Points profile `name` (made by [`TestEnv::pg_profile`] or
    /// [`TestEnv::pg_profile_with`]) at `cluster` instead of the shared one.
    pub fn move_to(&self, name: &str, cluster: &Pg) {
        self.edit(
            &format!("profiles/{name}.toml"),
            &format!("port = {}", pg().port),
            &format!("port = {}", cluster.port),
        );
    }

    /// A postgres profile on the test cluster; `source` chooses the
    /// database(s) and anything else in [source].
    pub fn pg_profile_with(&self, name: &str, source: &str, rest: &str) {
        let pg = pg();
        self.write(
            &format!("profiles/{name}.toml"),
            &format!(
                r#"kind = "postgres"
[source]
host = "127.0.0.1"
port = {port}
{source}
[store]
url = "file://store"
[encryption]
recipients = ["secrets/k.pub.asc"]
identity = "secrets/k.key.asc"
signer = "secrets/host.sign.key.asc"
{compression}
{rest}
"#,
                port = pg.port,
                compression = if rest.contains("[compression]") {
                    ""
                } else {
                    "[compression]\nlevel = 1"
                },
            ),
        );
    }

    /// A folder `data` holding the given files, as (name, content).
    pub fn data_dir(&self, files: &[(&str, &[u8])]) -> PathBuf {
        let data = self.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        for (name, content) in files {
            std::fs::write(data.join(name), content).unwrap();
        }
        data
    }

    /// Replaces `from` with `to` in a file under the config dir.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.path().join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} has no `{from}`");
        std::fs::write(&p, text.replace(from, to)).unwrap();
    }

    pub fn files_profile(&self, name: &str, paths: &[&Path], rest: &str) {
        let list: Vec<String> = paths
            .iter()
            .map(|p| format!("{:?}", p.to_str().unwrap()))
            .collect();
        self.write(
            &format!("profiles/{name}.toml"),
            &format!(
                r#"kind = "files"
[source]
paths = [{}]
[store]
url = "file://store"
[encryption]
recipients = ["secrets/k.pub.asc"]
identity = "secrets/k.key.asc"
signer = "secrets/host.sign.key.asc"
[compression]
level = 1
{rest}
"#,
                list.join(", ")
            ),
        );
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cellar"));
        c.env("CELLAR_CONFIG_DIR", self.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs cellar with its clock set to `now` (RFC 3339).
    pub fn at(&self, now: &str, args: &[&str]) -> Out {
        self.cmd()
            .env("CELLAR_NOW", now)
            .args(args)
            .output()
            .unwrap()
            .into()
    }

    pub fn cellar(&self, args: &[&str]) -> Out {
        self.cmd().args(args).output().unwrap().into()
    }

    /// The payload files (not manifests) stored for `profile`.
    pub fn payloads(&self, profile: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.store(profile))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.to_string_lossy().ends_with(".pgp"));
        v.sort();
        v
    }

    /// The payloads' file names.
    pub fn payload_names(&self, profile: &str) -> Vec<String> {
        self.payloads(profile)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Temporary files or folders a restore left in the config dir.
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cellar"))
            .collect()
    }

    pub fn manifests(&self, profile: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.store(profile))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.to_string_lossy().ends_with(".manifest.json"));
        v.sort();
        v
    }

    /// Every entry in the store folder, hidden temporaries included.
    pub fn store_entries(&self, profile: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.store(profile))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// `n` bytes that do not compress (a fixed pseudo-random sequence), for
/// payloads that must take a while or span several parts.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            (x >> 24) as u8
        })
        .collect()
}

/// Flips one byte in the middle of a file.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// A unique database name for one test.
pub fn db_name(test: &str) -> String {
    format!("t_{test}")
}

/// A pg_bin_dir for a test: the real client tools, except those given as
/// (tool, shell script) which replace them.
pub fn fake_bin_dir(env: &TestEnv, scripts: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = env.path().join("pgbin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        let path = bin.join(tool);
        match scripts.iter().find(|(t, _)| *t == tool) {
            Some((_, script)) => {
                std::fs::write(&path, script).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            None => std::os::unix::fs::symlink(format!("{PG_BIN}/{tool}"), &path).unwrap(),
        }
    }
    bin
}
