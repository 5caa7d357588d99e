//! A private MariaDB server for the tests: Debian's `mariadbd`, its own
//! datadir, socket and port on 127.0.0.1 (never the system's), started on
//! first use and stopped by a watchdog when the test process exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::harness::TestEnv;

/// root's password over TCP: quotes, a backslash and a space, so quoting
/// mistakes show.
pub const MY_PASSWORD: &str = "r00t \"pw\\ 'x";

pub struct My {
    pub port: u16,
    pub dir: PathBuf,
}

static MY: OnceLock<My> = OnceLock::new();

/// The server the tests of this binary share; each test uses databases of
/// its own (`m_<test>`).
pub fn mariadb() -> &'static My {
    MY.get_or_init(start)
}

/// A server of its own, for a test that must see every database on it.
pub fn private_mariadb() -> My {
    start()
}

fn start() -> My {
    let dir = tempfile::Builder::new()
        .prefix("cellar-test-my-")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    // Its own temporary folder (for the bootstrap too): nothing else in
    // the suite can touch the server's temporary tables.
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let ok = Command::new("chown")
        .args(["mysql:mysql"])
        .arg(&dir)
        .arg(dir.join("tmp"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = Command::new("mariadb-install-db")
        .args(["--user=mysql", "--auth-root-authentication-method=normal"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .args(["--skip-test-db", "--skip-name-resolve"])
        .output()
        .expect("mariadb-install-db (apt-get install mariadb-server)");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chown = Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(chown.success());
    let port = crate::harness::free_port();
    let sock = dir.join("sock");
    let status = Command::new("setsid")
        .arg("-f")
        .arg("/usr/sbin/mariadbd")
        .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--log-error={}", dir.join("err.log").display()))
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .args([
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=256M",
            "--innodb-log-file-size=32M",
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-log-bin",
            "--max-connections=300",
            "--max-allowed-packet=256M",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $(cat {dir}/pid) 2>/dev/null; sleep 3; kill -9 $(cat {dir}/pid) 2>/dev/null; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display(),
    );
    let watchdog = Command::new("setsid")
        .args(["-f", "sh", "-c", &stop])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("watchdog");
    assert!(watchdog.success());
    let started = std::time::Instant::now();
    loop {
        let ok = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", sock.display()))
            .args(["-uroot", "-e", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "mariadbd did not start: {}",
            std::fs::read_to_string(dir.join("err.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let my = My { port, dir };
    let pw = MY_PASSWORD.replace('\\', "\\\\").replace('\'', "\\'");
    my.sql(
        "",
        &format!(
            "DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
             FLUSH PRIVILEGES;
             CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';
             GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
        ),
    );
    my
}

impl My {
    pub fn sock(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Runs SQL as root over the socket; panics on error; returns the
    /// batch output (tab-separated, no column names).
    /// The `mariadb` client as root over the socket, no defaults read.
    pub fn client(&self) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.sock().display()))
            .arg("-uroot");
        cmd
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        use std::io::Write;
        let mut cmd = self.client();
        cmd.args(["--batch", "--skip-column-names"])
            .arg("--default-character-set=utf8mb4");
        if !db.is_empty() {
            cmd.arg(format!("--database={db}"));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mariadb {db}: {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn create_db(&self, db: &str) {
        self.sql(
            "",
            &format!(
                "DROP DATABASE IF EXISTS `{0}`; CREATE DATABASE `{0}` CHARACTER SET utf8mb4;",
                db.replace('`', "``")
            ),
        );
    }

    pub fn exists(&self, db: &str) -> bool {
        self.sql(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}';",
                db.replace('\'', "\\'")
            ),
        )
        .trim()
            == "1"
    }

    /// What a database holds, to compare two: every table's `CHECKSUM
    /// TABLE ... EXTENDED` and row count, and the names of its views,
    /// triggers, routines and events.
    pub fn fingerprint(&self, db: &str) -> String {
        let q = db.replace('\'', "\\'");
        let tables = self.sql(
            "",
            &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{q}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1;"),
        );
        let sequences = self.sql(
            "",
            &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{q}' AND TABLE_TYPE = 'SEQUENCE' ORDER BY 1;"),
        );
        let mut out = String::new();
        for t in tables.lines() {
            let ident = format!("`{}`.`{}`", db.replace('`', "``"), t.replace('`', "``"));
            let sum = self.sql("", &format!("CHECKSUM TABLE {ident} EXTENDED;"));
            let rows = self.sql("", &format!("SELECT COUNT(*) FROM {ident};"));
            out += &format!(
                "table {t}: {} rows {}\n",
                sum.split('\t').nth(1).unwrap_or("").trim(),
                rows.trim()
            );
        }
        for name in sequences.lines() {
            out += &format!("sequence {name}\n");
        }
        for (what, sql) in [
            ("view", format!("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{q}' ORDER BY 1;")),
            ("trigger", format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{q}' ORDER BY 1;")),
            ("routine", format!("SELECT CONCAT(ROUTINE_TYPE, ' ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{q}' ORDER BY 1;")),
            ("event", format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{q}' ORDER BY 1;")),
            ("foreign key", format!("SELECT CONCAT(TABLE_NAME, ' -> ', REFERENCED_TABLE_NAME) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = '{q}' ORDER BY 1;")),
        ] {
            for name in self.sql("", &sql).lines() {
                out += &format!("{what} {name}\n");
            }
        }
        out
    }
}

/// Every kind of thing a dump must carry: JSON, DECIMAL, BLOB, utf8mb4
/// (emoji), a table whose name has quotes and spaces, a view over a view,
/// a view calling a function, a trigger, a function, a procedure, an
/// event, a sequence, a foreign key, and a MyISAM table.
pub const RICH_SCHEMA: &str = r#"
CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(200), doc JSON, balance DECIMAL(20,6), photo BLOB, note TEXT) ENGINE=InnoDB;
CREATE TABLE `order's "book" x` (id INT PRIMARY KEY AUTO_INCREMENT, customer INT NOT NULL, total DECIMAL(12,2),
  FOREIGN KEY (customer) REFERENCES customers(id)) ENGINE=InnoDB;
CREATE TABLE legacy (x INT) ENGINE=MyISAM;
INSERT INTO customers SELECT seq, CONCAT('c', seq, '@example.com'), JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', 'b')),
  seq * 1.123456, UNHEX(REPEAT('00FF7F', seq % 50)), CONCAT('😀 ünïcödé ', seq) FROM seq_1_to_500;
INSERT INTO `order's "book" x` (customer, total) SELECT (seq % 500) + 1, seq / 7 FROM seq_1_to_2000;
INSERT INTO legacy SELECT seq FROM seq_1_to_10;
CREATE VIEW big_spenders AS SELECT customer, SUM(total) AS spent FROM `order's "book" x` GROUP BY customer;
CREATE VIEW a_top AS SELECT * FROM big_spenders WHERE spent > 100;
CREATE TRIGGER stamp BEFORE INSERT ON customers FOR EACH ROW SET NEW.note = CONCAT('new: ', COALESCE(NEW.note, ''));
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
DELIMITER //
CREATE PROCEDURE bump(IN n INT) BEGIN UPDATE customers SET balance = balance + n; SELECT 1; END //
DELIMITER ;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM legacy;
CREATE SEQUENCE invoice_no START WITH 1000;
CREATE VIEW doubled AS SELECT id, twice(id) AS d FROM customers;
"#;

/// A unique database name for one test.
pub fn my_db(test: &str) -> String {
    format!("m_{test}")
}

impl TestEnv {
    /// A mariadb profile on the test server as root over TCP, with the
    /// password in a 0600 file; `source` chooses the database(s).
    pub fn my_profile(&self, name: &str, my: &My, source: &str, rest: &str) {
        let pw = self.path().join("secrets/my.password");
        if !pw.exists() {
            std::fs::write(&pw, MY_PASSWORD).unwrap();
            std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
        self.write(
            &format!("profiles/{name}.toml"),
            &format!(
                r#"kind = "mariadb"
[source]
host = "127.0.0.1"
port = {port}
user = "root"
password = "file:secrets/my.password"
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
                port = my.port,
                compression = if rest.contains("[compression]") {
                    ""
                } else {
                    "[compression]\nlevel = 1"
                },
            ),
        );
    }
}

/// A bin_dir of the real MariaDB client tools, with `mariadb-dump`
/// replaced by `script` when given.
pub fn my_bin_dir(env: &TestEnv, dump_script: Option<&str>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = env.path().join("mybin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["mariadb", "mariadb-dump"] {
        let path = bin.join(tool);
        match dump_script.filter(|_| tool == "mariadb-dump") {
            Some(script) => {
                std::fs::write(&path, script).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            None => std::os::unix::fs::symlink(Path::new("/usr/bin").join(tool), &path).unwrap(),
        }
    }
    bin
}
