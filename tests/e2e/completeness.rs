//! Proof that a backup is complete: the manifest records what the database
//! held in the dump's own snapshot, and a restore that does not hold the
//! same is never swapped in.

use crate::harness::{db_name, fake_bin_dir, pg, TestEnv, PG_BIN};

fn source(test: &str) -> String {
    pg().filled_db(
        test,
        "CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id serial PRIMARY KEY, total numeric);
         INSERT INTO shop.orders (total) SELECT g FROM generate_series(1, 1000) g;
         CREATE TABLE \"Odd Name\" (v int); INSERT INTO \"Odd Name\" VALUES (1), (2);
         CREATE TABLE audit (v int); INSERT INTO audit SELECT generate_series(1, 50);
         CREATE VIEW big_orders AS SELECT * FROM shop.orders WHERE total > 500;
         CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';
         CREATE TYPE mood AS ENUM ('ok', 'sad');
         SELECT lo_from_bytea(0, 'large');",
    )
}

/// A profile `db` of `src` (no globals) whose pg_dump is `script`.
fn profile_with_pg_dump(env: &TestEnv, src: &str, script: &str) {
    let bin = fake_bin_dir(env, &[("pg_dump", script)]);
    env.pg_profile(
        "db",
        src,
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
        "",
    );
}

fn manifest(env: &TestEnv) -> serde_json::Value {
    let m = env.manifests("db");
    serde_json::from_slice(&std::fs::read(m.last().unwrap()).unwrap()).unwrap()
}

#[test]
fn the_manifest_records_exact_counts_and_a_restore_is_compared_with_them() {
    let pg = pg();
    let src = source("inv_src");
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    let m = manifest(&env);
    let inv = &m["payloads"][0]["inventory"];
    assert_eq!(inv["tables"]["shop.orders"], 1000, "{inv}");
    assert_eq!(inv["tables"]["public.\"Odd Name\""], 2, "{inv}");
    assert_eq!(inv["tables"]["public.audit"], 50, "{inv}");
    let objects = &inv["objects"];
    assert_eq!(objects["views"], 1, "{inv}");
    assert_eq!(objects["functions"], 1, "{inv}");
    assert_eq!(objects["types"], 1, "{inv}");
    assert_eq!(objects["large objects"], 1, "{inv}");
    assert_eq!(objects["schemas"], 1, "{inv}");
    assert_eq!(objects["sequences"], 1, "{inv}");

    // An intact restore matches it and is swapped in.
    let dst = db_name("inv_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "-v"]);
    out.ok();
    assert!(
        out.stderr.contains("match the backup's inventory"),
        "{}",
        out.stderr
    );

    // A restore that loses a table's rows (pg_restore skipping its data)
    // fails with the table and both numbers, and the target is untouched.
    let bin = fake_bin_dir(
        &env,
        &[(
            "pg_restore",
            &format!(
                "#!/bin/sh\ncase \"$*\" in *--list*|*\" -l \"*) exec {PG_BIN}/pg_restore \"$@\" ;; esac\nfor a; do last=\"$a\"; done\n{PG_BIN}/pg_restore -l \"$last\" | grep -v 'TABLE DATA shop orders' > \"$(dirname \"$0\")/list\"\nexec {PG_BIN}/pg_restore -L \"$(dirname \"$0\")/list\" \"$@\"\n"
            ),
        )],
    );
    env.edit(
        "profiles/db.toml",
        "globals = false",
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
    );
    pg.psql(&dst, "CREATE TABLE keepme (v int)");
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--clean"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("table shop.orders: 1000 rows in the backup, 0 restored"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("not swapped in"), "{}", out.stderr);
    assert_eq!(pg.psql(&dst, "SELECT count(*) FROM keepme").trim(), "0");
    pg.psql("postgres", &format!("DROP DATABASE {dst} WITH (FORCE)"));
}

#[test]
fn a_dump_narrowed_by_pg_dump_args_is_recorded_but_not_compared() {
    let pg = pg();
    let src = source("inv_filtered");
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false\npg_dump_args = [\"--exclude-table-data=audit\"]",
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    let inv = &manifest(&env)["payloads"][0]["inventory"];
    assert_eq!(inv["filtered"], true, "{inv}");
    assert_eq!(inv["tables"]["public.audit"], 50, "{inv}");
    let dst = db_name("inv_filtered_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(pg.psql(&dst, "SELECT count(*) FROM audit").trim(), "0");
    pg.psql("postgres", &format!("DROP DATABASE {dst} WITH (FORCE)"));
}

/// Rows committed while the backup runs: the counts and the dump come from
/// one snapshot, so the restore matches the inventory exactly.
#[test]
fn counts_and_dump_share_one_snapshot_while_rows_keep_arriving() {
    let pg = pg();
    let src = source("inv_busy");
    pg.psql(&src, "INSERT INTO audit SELECT generate_series(1, 200000)");
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    let script = env.path().join("inserts.sql");
    let mut sql = String::new();
    for i in 0..6000 {
        sql.push_str(&format!(
            "INSERT INTO audit VALUES ({i}); SELECT pg_sleep(0.005);\n"
        ));
    }
    std::fs::write(&script, sql).unwrap();
    let mut writer = std::process::Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &pg.port.to_string(), "-d", &src, "-f"])
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    env.cellar(&["backup", "db"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let still_writing = writer.try_wait().unwrap().is_none();
    let _ = writer.kill();
    let _ = writer.wait();
    let m = manifest(&env);
    let counted = m["payloads"][0]["inventory"]["tables"]["public.audit"]
        .as_u64()
        .unwrap();
    let now: u64 = pg
        .psql(&src, "SELECT count(*) FROM audit")
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "counted {counted}, now {now}, writer still running after the backup: {still_writing}"
    );
    // Rows arrived before the snapshot and after it.
    assert!(still_writing, "the writer ended before the backup did");
    assert!(counted > 200050 && counted < now, "{counted} {now}");
    let dst = db_name("inv_busy_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    let restored = pg.psql(&dst, "SELECT count(*) FROM audit");
    assert_eq!(restored.trim(), counted.to_string());
    pg.psql("postgres", &format!("DROP DATABASE {dst} WITH (FORCE)"));
}

/// The dump canary: a dump that silently lacks a table's data (here a
/// pg_dump that leaves it out on its own) fails the backup by name.
#[test]
fn a_dump_missing_a_table_fails_the_backup_and_names_it() {
    let src = source("inv_canary");
    let env = TestEnv::new();
    profile_with_pg_dump(
        &env,
        &src,
        &format!("#!/bin/sh\nexec {PG_BIN}/pg_dump --exclude-table-data=audit \"$@\"\n"),
    );
    let out = env.cellar(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("lacks the data of 1 table(s)") && out.stderr.contains("public.audit"),
        "{}",
        out.stderr
    );
    assert!(env.manifests("db").is_empty());
    assert!(env.payloads("db").is_empty());
}

/// The canary reads the table of contents from the archive's first bytes
/// as they stream by, and stops keeping them once it is complete: a table
/// of contents longer than the first look (256 KiB; here 1,500 tables,
/// about 1 MB) followed by more data than the later looks (4 MiB) still
/// has every table checked, and the table left out is still named.
#[test]
fn the_canary_reads_a_long_table_of_contents_while_the_dump_streams() {
    let pg = pg();
    let src = pg.filled_db(
        "inv_long_toc",
        "CREATE TABLE bulk (v text);
         INSERT INTO bulk SELECT md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 150000) g;
         CREATE TABLE audit (v int); INSERT INTO audit SELECT generate_series(1, 50);",
    );
    // 1,500 tables of five columns, 500 a transaction (each takes locks).
    for part in 0..3 {
        pg.psql(
            &src,
            &format!(
                "DO $$ BEGIN FOR i IN {}..{} LOOP EXECUTE format('CREATE TABLE t%s (id int, name text, note text, at timestamptz, n numeric)', i); END LOOP; END $$",
                part * 500 + 1,
                part * 500 + 500
            ),
        );
    }
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    let m = manifest(&env);
    let inv = &m["payloads"][0]["inventory"]["tables"];
    assert!(
        inv["public.t1500"].is_number() && inv["public.audit"].is_number(),
        "{inv}"
    );

    let bin = fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!("#!/bin/sh\nexec {PG_BIN}/pg_dump --exclude-table-data=audit \"$@\"\n"),
        )],
    );
    env.edit(
        "profiles/db.toml",
        "globals = false",
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
    );
    let out = env.cellar(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("lacks the data of 1 table(s)") && out.stderr.contains("public.audit"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not checked"), "{}", out.stderr);
}

/// The inventory is counted alongside pg_dump, in its snapshot; its
/// counts must not keep the tables locked until the dump ends. When they
/// did, a `TRUNCATE` queued behind them, pg_dump queued behind the
/// `TRUNCATE`, and the backup and every query on the table hung for good
/// (a wait through cellar the server cannot see as a deadlock). Here
/// pg_dump itself starts with such a statement: once another session holds
/// a lock on the table, it asks for an exclusive lock, giving up after 5 s.
#[test]
fn counting_the_rows_keeps_no_table_locked_while_pg_dump_runs() {
    let pg = pg();
    let src = pg.filled_db(
        "inv_locks",
        "CREATE TABLE victim (v int); INSERT INTO victim SELECT generate_series(1, 1000);",
    );
    let env = TestEnv::new();
    let seen = env.path().join("truncate.out");
    let psql = format!(
        "{PG_BIN}/psql -X -q -A -t -h 127.0.0.1 -p {} -U postgres -d {src}",
        pg.port
    );
    let script = format!(
        "#!/bin/sh
i=0
while [ $i -lt 50 ] && [ \"$({psql} -c \"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'victim' AND l.granted\")\" = 0 ]; do
  sleep 0.1; i=$((i + 1))
done
{psql} -v ON_ERROR_STOP=1 -c \"SET lock_timeout = '5s'\" -c 'BEGIN' -c 'LOCK TABLE victim IN ACCESS EXCLUSIVE MODE' -c 'COMMIT' > {seen} 2>&1 && echo locked >> {seen}
exec {PG_BIN}/pg_dump \"$@\"
",
        seen = seen.display()
    );
    profile_with_pg_dump(&env, &src, &script);
    env.cellar(&["backup", "db"]).ok();
    let text = std::fs::read_to_string(&seen).unwrap();
    assert!(text.contains("locked"), "{text}");
    let m = manifest(&env);
    assert_eq!(
        m["payloads"][0]["inventory"]["tables"]["public.victim"],
        1000
    );
}

/// Timeouts a server sets for the application's sessions do not end
/// cellar's: the snapshot pg_dump shares stays idle in its transaction for
/// the whole dump (here pg_dump starts 2 s late; the database ends idle
/// transactions after 1 s).
#[test]
fn server_timeouts_meant_for_the_application_do_not_end_the_backup() {
    let pg = pg();
    let src = pg.filled_db(
        "inv_timeouts",
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    pg.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {src} SET idle_in_transaction_session_timeout = '1s';
             ALTER DATABASE {src} SET statement_timeout = '500ms'"
        ),
    );
    let env = TestEnv::new();
    profile_with_pg_dump(
        &env,
        &src,
        &format!("#!/bin/sh\nsleep 2\nexec {PG_BIN}/pg_dump \"$@\"\n"),
    );
    env.cellar(&["backup", "db"]).ok();
    assert_eq!(
        manifest(&env)["payloads"][0]["inventory"]["tables"]["public.t"],
        100
    );
}

/// A table whose name holds a line break: pg_restore lists it with a
/// space instead, and the dump canary still finds its data (it used to fail every
/// backup of the database, saying the data was missing).
#[test]
fn a_table_named_with_a_line_break_passes_the_dump_canary() {
    let src = pg().filled_db(
        "inv_newline",
        "CREATE TABLE \"line\nbreak\" (v int); INSERT INTO \"line\nbreak\" SELECT generate_series(1, 5);",
    );
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    assert_eq!(
        manifest(&env)["payloads"][0]["inventory"]["tables"]["public.\"line\nbreak\""],
        5
    );
}
