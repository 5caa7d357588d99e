//! Drills that compare, RTO/RPO, retention that protects good backups,
//! partial restores and coverage (issue 15), against the real server.

use cellar::restore::database::scratch_name;

use crate::harness::{db_name, fake_bin_dir, pg, TestEnv, PG_BIN};

/// A source database with a schema, three tables, a view and a function.
fn source(test: &str) -> String {
    let pg = pg();
    let src = db_name(test);
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id serial PRIMARY KEY, total numeric);
         INSERT INTO shop.orders (total) SELECT g FROM generate_series(1, 1000) g;
         CREATE TABLE shop.customers (id int PRIMARY KEY, name text);
         INSERT INTO shop.customers SELECT g, 'c' || g FROM generate_series(1, 20) g;
         CREATE TABLE audit (v int); INSERT INTO audit SELECT generate_series(1, 50);
         CREATE VIEW big_orders AS SELECT * FROM shop.orders WHERE total > 500;
         CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';",
    );
    src
}

fn state(env: &TestEnv, profile: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(env.path().join(format!("state/{profile}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn drill_scratch(env: &TestEnv, profile: &str) -> String {
    scratch_name(&cellar::drill::scratch_key(env.path(), profile))
}

/// A pg_restore that restores everything but the data of shop.orders.
fn lossy_pg_restore(env: &TestEnv) -> std::path::PathBuf {
    fake_bin_dir(
        env,
        &[(
            "pg_restore",
            &format!(
                "#!/bin/sh\ncase \"$*\" in *--list*|*\" -l \"*) exec {PG_BIN}/pg_restore \"$@\" ;; esac\nfor a; do last=\"$a\"; done\n{PG_BIN}/pg_restore -l \"$last\" | grep -v 'TABLE DATA shop orders' > \"$(dirname \"$0\")/list\"\nexec {PG_BIN}/pg_restore -L \"$(dirname \"$0\")/list\" \"$@\"\n"
            ),
        )],
    )
}

fn ids(env: &TestEnv, profile: &str) -> Vec<String> {
    env.manifests(profile)
        .iter()
        .map(|m| {
            let name = m.file_name().unwrap().to_string_lossy().into_owned();
            name.split('.').next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_drill_restores_compares_records_and_drops_its_scratch_database() {
    let pg = pg();
    let src = source("drill_ok");
    let env = TestEnv::new();
    env.pg_profile("drill_ok", &src, "globals = false", "");
    env.cellar(&["backup", "drill_ok"]).ok();
    let before: Vec<String> = pg
        .psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
        .lines()
        .map(str::to_string)
        .collect();

    let out = env.cellar(&["drill", "drill_ok"]);
    out.ok();
    assert!(
        out.stdout.contains("passed") && out.stdout.contains("3 table(s)"),
        "{}",
        out.all()
    );
    assert!(!pg.exists(&drill_scratch(&env, "drill_ok")));
    // The source is untouched, and the drill left no database behind.
    assert_eq!(
        pg.psql(&src, "SELECT count(*) FROM shop.orders").trim(),
        "1000"
    );
    let after = pg.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1");
    for db in after.lines() {
        assert!(
            before.iter().any(|b| b == db) || !db.starts_with("cellar_"),
            "left behind: {db}"
        );
    }

    let st = state(&env, "drill_ok");
    let drill = &st["last_drill"];
    let id = ids(&env, "drill_ok").pop().unwrap();
    assert_eq!(drill["passed"], true, "{st}");
    assert_eq!(drill["backup_id"], id.as_str(), "{st}");
    assert_eq!(drill["by"], "drill", "{st}");
    assert_eq!(drill["tables_compared"], 3, "{st}");
    assert!(drill["restore_seconds"].as_f64().unwrap() > 0.0, "{st}");
    assert!(drill["plain_bytes"].as_u64().unwrap() > 0, "{st}");
    assert!(drill["bytes_per_second"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(st["drills"][&id]["passed"], true, "{st}");

    // list shows the drill result next to the backup.
    let list = env.cellar(&["list", "drill_ok"]);
    list.ok();
    let line = list.stdout.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("passed"), "{}", list.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&env.cellar(&["list", "drill_ok", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["drill"]["passed"], true, "{json}");
}

#[test]
fn a_drill_whose_restore_misses_rows_fails_and_names_the_table() {
    let pg = pg();
    let src = source("drill_lossy");
    let env = TestEnv::new();
    env.pg_profile("drill_lossy", &src, "globals = false", "");
    env.cellar(&["backup", "drill_lossy"]).ok();
    let bin = lossy_pg_restore(&env);
    env.edit(
        "profiles/drill_lossy.toml",
        "globals = false",
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
    );
    let out = env.cellar(&["drill", "drill_lossy"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("table shop.orders: 1000 rows in the backup, 0 restored"),
        "{}",
        out.stderr
    );
    assert!(!pg.exists(&drill_scratch(&env, "drill_lossy")));
    let st = state(&env, "drill_lossy");
    assert_eq!(st["last_drill"]["passed"], false, "{st}");
    assert!(
        st["last_drill"]["error"]
            .as_str()
            .unwrap()
            .contains("shop.orders"),
        "{st}"
    );
    let list = env.cellar(&["list", "drill_lossy"]);
    assert!(list.stdout.contains("FAILED"), "{}", list.stdout);
    // A failed drill fails status.
    let status = env.cellar(&["status", "drill_lossy"]);
    assert_eq!(status.code, 1, "{}", status.all());
    assert!(status.stdout.contains("DRILL FAILED"), "{}", status.stdout);
}
