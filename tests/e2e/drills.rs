//! Drills that compare, RTO/RPO, retention that protects good backups,
//! partial restores and coverage (issue 15), against the real server.

use cellar::restore::database::scratch_name;

use crate::harness::{db_name, fake_bin_dir, pg, TestEnv, PG_BIN};

/// A source database with a schema, three tables, a view and a function.
fn source(test: &str) -> String {
    pg().filled_db(
        test,
        "CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id serial PRIMARY KEY, total numeric);
         INSERT INTO shop.orders (total) SELECT g FROM generate_series(1, 1000) g;
         CREATE TABLE shop.customers (id int PRIMARY KEY, name text);
         INSERT INTO shop.customers SELECT g, 'c' || g FROM generate_series(1, 20) g;
         CREATE TABLE audit (v int); INSERT INTO audit SELECT generate_series(1, 50);
         CREATE VIEW big_orders AS SELECT * FROM shop.orders WHERE total > 500;
         CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';",
    )
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
    // Every database there before is still there (other tests' come and
    // go on this shared server, so only this direction is checked).
    let after = pg.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1");
    for db in before.iter().filter(|d| !d.starts_with("cellar_")) {
        assert!(after.lines().any(|a| a == db), "{db} is gone");
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

/// Reads a Prometheus textfile into (series name → value) for one profile.
fn gauges(path: &std::path::Path) -> std::collections::HashMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let name = series.split_once('{').unwrap().0;
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// A pg_bin_dir whose pg_restore sleeps `secs` before restoring (listing
/// a dump's contents stays quick).
fn slow_pg_restore(env: &TestEnv, secs: u32) -> std::path::PathBuf {
    fake_bin_dir(
        env,
        &[(
            "pg_restore",
            &format!(
                "#!/bin/sh\ncase \"$*\" in *--list*|*\" -l \"*) exec {PG_BIN}/pg_restore \"$@\" ;; esac\nsleep {secs}\nexec {PG_BIN}/pg_restore \"$@\"\n"
            ),
        )],
    )
}

#[test]
fn rto_exceeded_by_a_slowed_restore_fails_status_and_shows_in_the_metrics() {
    let src = source("drill_rto");
    let env = TestEnv::new();
    // A pg_restore that takes 3 s longer than it should.
    let bin = slow_pg_restore(&env, 3);
    env.pg_profile(
        "drill_rto",
        &src,
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
        "",
    );
    env.edit(
        "profiles/drill_rto.toml",
        "kind = \"postgres\"",
        "kind = \"postgres\"\nrto = \"2s\"\nrpo = \"26h\"",
    );
    let metrics = env.path().join("cellar.prom");
    let m = metrics.to_str().unwrap();
    env.cellar(&["--metrics-file", m, "backup", "drill_rto"])
        .ok();
    // No drill yet: the rto is not proven.
    let out = env.cellar(&["status", "drill_rto"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("RTO UNMEASURED"), "{}", out.stdout);

    env.cellar(&["--metrics-file", m, "drill", "drill_rto"])
        .ok();
    let out = env.cellar(&["status", "drill_rto"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("drill_rto: OBJECTIVE MISSED")
            && out.stdout.contains("RTO MISSED")
            && out.stdout.contains("more than rto = 2s"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rpo 1day 2h"), "{}", out.stdout);
    let g = gauges(&metrics);
    assert_eq!(g["cellar_rto_seconds"], 2.0, "{g:?}");
    assert_eq!(g["cellar_rpo_seconds"], 26.0 * 3600.0, "{g:?}");
    assert!(g["cellar_last_drill_seconds"] > 3.0, "{g:?}");
    assert_eq!(g["cellar_last_drill_success"], 1.0, "{g:?}");
    assert!(g["cellar_projected_restore_seconds"] > 3.0, "{g:?}");
    assert!(g["cellar_newest_backup_age_seconds"] < 600.0, "{g:?}");

    // A generous rto passes; the same backup 27 hours later misses the rpo.
    env.edit("profiles/drill_rto.toml", "rto = \"2s\"", "rto = \"30m\"");
    env.cellar(&["status", "drill_rto"]).ok();
    let later = (chrono::Utc::now() + chrono::Duration::hours(27)).to_rfc3339();
    let out = env.at(&later, &["status", "drill_rto"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("RPO MISSED"), "{}", out.stdout);
    let out = env.at(&later, &["status", "drill_rto", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["status"], "objective_missed", "{rows}");
    assert!(rows[0]["newest_backup_age_seconds"].as_f64().unwrap() > 26.0 * 3600.0);
}

/// The last drill's time is projected by the database's growth since.
#[test]
fn the_restore_time_is_projected_by_growth_since_the_drill() {
    let pg = pg();
    let src = source("drill_growth");
    let env = TestEnv::new();
    env.pg_profile("drill_growth", &src, "globals = false", "");
    env.cellar(&["backup", "drill_growth"]).ok();
    env.cellar(&["drill", "drill_growth"]).ok();
    pg.psql(&src, "INSERT INTO audit SELECT generate_series(1, 300000)");
    env.cellar(&["backup", "drill_growth"]).ok();
    let out = env.cellar(&["status", "drill_growth", "--json"]);
    out.ok();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let measured = rows[0]["last_drill"]["restore_seconds"].as_f64().unwrap();
    let drilled = rows[0]["last_drill"]["backup_plain_bytes"]
        .as_f64()
        .unwrap();
    let newest = rows[0]["last_success"]["plain_bytes"].as_f64().unwrap();
    let projected = rows[0]["projected_restore_seconds"].as_f64().unwrap();
    assert!(newest > drilled * 5.0, "{rows}");
    assert!(
        (projected - measured * newest / drilled).abs() < 1e-6 * projected,
        "{rows}"
    );
}

#[test]
fn rto_and_rpo_that_are_not_durations_are_refused_with_their_line() {
    let env = TestEnv::new();
    env.pg_profile("bad_rto", "x", "", "");
    env.edit(
        "profiles/bad_rto.toml",
        "kind = \"postgres\"",
        "kind = \"postgres\"\nrto = \"soon\"\nrpo = \"0s\"",
    );
    let out = env.cellar(&["check", "bad_rto"]);
    assert_eq!(out.code, 2, "{}", out.all());
    let all = out.all();
    assert!(
        all.contains("bad_rto.toml:2") && all.contains("`soon` is not a duration"),
        "{all}"
    );
    assert!(
        all.contains("bad_rto.toml:3") && all.contains("is zero"),
        "{all}"
    );
}

/// Retention protects good backups: a canary failure holds prune off, the
/// newest drilled backup and pinned ones are kept, unpin releases.
#[test]
fn prune_holds_after_a_canary_failure_and_keeps_drilled_and_pinned_backups() {
    let src = source("drill_keep");
    let env = TestEnv::new();
    env.pg_profile(
        "keep",
        &src,
        "globals = false",
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    for day in 1..=4 {
        env.at(&format!("2026-03-{day:02}T02:00:00Z"), &["backup", "keep"])
            .ok();
    }
    let all = ids(&env, "keep");
    assert_eq!(all.len(), 4);

    // A pg_dump that leaves a table's data out: the dump canary fails the
    // run, and prune then deletes nothing, saying why.
    let bin = fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!("#!/bin/sh\nexec {PG_BIN}/pg_dump --exclude-table-data=audit \"$@\"\n"),
        )],
    );
    let bin_line = format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap());
    env.edit("profiles/keep.toml", "globals = false", &bin_line);
    let out = env.at("2026-03-05T02:00:00Z", &["backup", "keep"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let out = env.at("2026-03-05T03:00:00Z", &["prune", "keep"]);
    out.ok();
    assert!(
        out.stdout.contains("nothing is deleted")
            && out.stdout.contains("failed a canary")
            && out.stdout.contains("public.audit"),
        "{}",
        out.stdout
    );
    assert_eq!(ids(&env, "keep"), all, "prune deleted during a canary hold");
    // `run` after a failed canary: the run fails, nothing is pruned.
    let out = env.at("2026-03-05T04:00:00Z", &["run", "keep"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(ids(&env, "keep"), all);
    // A failure of another kind (pg_dump cannot run) does not end the hold.
    let dump = bin.join("pg_dump");
    let canary_dump = std::fs::read_to_string(&dump).unwrap();
    std::fs::write(
        &dump,
        "#!/bin/sh
echo 'connection refused' >&2
exit 1
",
    )
    .unwrap();
    let out = env.at("2026-03-05T04:10:00Z", &["backup", "keep"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let out = env.at("2026-03-05T04:20:00Z", &["prune", "keep"]);
    out.ok();
    assert!(out.stdout.contains("failed a canary"), "{}", out.stdout);
    assert_eq!(
        ids(&env, "keep"),
        all,
        "prune deleted after a later failure"
    );
    std::fs::write(&dump, canary_dump).unwrap();

    // Drill the second backup and pin the first.
    env.edit("profiles/keep.toml", &bin_line, "globals = false");
    env.at("2026-03-05T05:00:00Z", &["drill", "keep", &all[1]])
        .ok();
    let out = env.cellar(&["pin", "keep", &all[0]]);
    out.ok();
    assert!(out.stdout.contains("pinned"), "{}", out.stdout);
    assert!(env
        .store_entries("keep")
        .contains(&format!("{}.pin", all[0])));
    env.cellar(&["pin", "keep", &all[0]]).ok();
    // Pinning what is not a trusted backup fails.
    let out = env.cellar(&["pin", "keep", "20200101T000000Z"]);
    assert_eq!(out.code, 1, "{}", out.all());

    let list = env.at("2026-03-05T05:30:00Z", &["list", "keep"]);
    let line = |id: &str| {
        list.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .to_string()
    };
    assert!(line(&all[0]).contains("pinned"), "{}", list.stdout);
    assert!(
        line(&all[1]).contains("drilled") && line(&all[1]).contains("passed"),
        "{}",
        list.stdout
    );

    // A clean backup ends the hold: prune keeps the newest, the drilled
    // and the pinned backups, and deletes the rest.
    env.at("2026-03-06T02:00:00Z", &["backup", "keep"]).ok();
    let out = env.at("2026-03-06T03:00:00Z", &["prune", "keep"]);
    out.ok();
    assert!(
        out.stdout
            .contains("the newest backup whose restore drill passed"),
        "{}",
        out.stdout
    );
    let kept = ids(&env, "keep");
    assert_eq!(kept.len(), 3, "{kept:?}\n{}", out.stdout);
    assert!(kept.contains(&all[0]) && kept.contains(&all[1]), "{kept:?}");
    assert!(
        !kept.contains(&all[2]) && !kept.contains(&all[3]),
        "{kept:?}"
    );

    // Unpin releases it to the retention.
    let out = env.cellar(&["unpin", "keep", &all[0]]);
    out.ok();
    assert!(out.stdout.contains("unpinned"), "{}", out.stdout);
    env.cellar(&["unpin", "keep", &all[0]]).ok();
    env.at("2026-03-06T04:00:00Z", &["prune", "keep"]).ok();
    let kept = ids(&env, "keep");
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(!kept.contains(&all[0]), "{kept:?}");
    assert!(!env
        .store_entries("keep")
        .iter()
        .any(|n| n.starts_with(&all[0])));
}

/// A strict canary failure (a dump much smaller than the last) holds the
/// retention; without `strict` the finding is a warning and prune runs.
#[test]
fn a_strict_canary_failure_holds_prune_and_a_warning_does_not() {
    let pg = pg();
    let src = source("drill_shrink");
    pg.psql(&src, "INSERT INTO audit SELECT generate_series(1, 200000)");
    let env = TestEnv::new();
    env.pg_profile(
        "shrink",
        &src,
        "globals = false",
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n[canary]\nstrict = true\n",
    );
    for day in 1..=3 {
        env.at(
            &format!("2026-03-{day:02}T02:00:00Z"),
            &["backup", "shrink"],
        )
        .ok();
    }
    pg.psql(&src, "TRUNCATE audit");
    let out = env.at("2026-03-04T02:00:00Z", &["run", "shrink"]);
    assert_eq!(out.code, 1, "{}", out.all());
    // The suspicious backup is kept for inspection; nothing was pruned.
    assert_eq!(ids(&env, "shrink").len(), 4);
    let out = env.at("2026-03-04T03:00:00Z", &["prune", "shrink"]);
    out.ok();
    assert!(
        out.stdout.contains("nothing is deleted") && out.stdout.contains("smaller than"),
        "{}",
        out.stdout
    );
    assert_eq!(ids(&env, "shrink").len(), 4);

    // The same finding without strict: a warning, and run prunes.
    env.edit("profiles/shrink.toml", "strict = true", "strict = false");
    pg.psql(&src, "INSERT INTO audit SELECT generate_series(1, 200000)");
    env.at("2026-03-05T02:00:00Z", &["backup", "shrink"]).ok();
    pg.psql(&src, "TRUNCATE audit");
    let out = env.at("2026-03-06T02:00:00Z", &["run", "shrink"]);
    out.ok();
    assert!(out.stderr.contains("canary"), "{}", out.stderr);
    assert_eq!(ids(&env, "shrink"), vec!["20260306T020000Z"]);
}

fn tables_of(db: &str) -> Vec<String> {
    pg().psql(
        db,
        "SELECT schemaname || '.' || tablename FROM pg_tables
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn one_table_or_one_schema_is_restored_from_a_multi_table_backup() {
    let pg = pg();
    let src = source("part_src");
    let env = TestEnv::new();
    env.pg_profile("part", &src, "globals = false", "");
    env.cellar(&["backup", "part"]).ok();
    // Someone deletes rows after the backup.
    pg.psql(&src, "DELETE FROM shop.orders WHERE id > 10");

    let one = db_name("part_one");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {one}"));
    let out = env.cellar(&[
        "restore",
        "part",
        "--table",
        "shop.orders",
        "--to-database",
        &one,
        "-v",
    ]);
    out.ok();
    assert!(
        out.stderr.contains("1 chosen table(s) match"),
        "{}",
        out.stderr
    );
    assert_eq!(tables_of(&one), vec!["shop.orders"]);
    assert_eq!(
        pg.psql(&one, "SELECT count(*), sum(total) FROM shop.orders")
            .trim(),
        "1000|500500"
    );
    // The rows can go back with standard tools (the README's recipe).
    let copied = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "psql -X -q -h 127.0.0.1 -p {p} -U postgres -d {one} -c \"\\copy (SELECT * FROM shop.orders WHERE id > 10) TO STDOUT\" | psql -X -q -h 127.0.0.1 -p {p} -U postgres -d {src} -c \"\\copy shop.orders FROM STDIN\"",
            p = pg.port
        ))
        .status()
        .unwrap();
    assert!(copied.success());
    assert_eq!(
        pg.psql(&src, "SELECT count(*) FROM shop.orders").trim(),
        "1000"
    );

    // A schema, and a table named without a schema (public), together.
    let two = db_name("part_two");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {two}"));
    env.cellar(&[
        "restore",
        "part",
        "--schema",
        "shop",
        "--table",
        "audit",
        "--to-database",
        &two,
    ])
    .ok();
    assert_eq!(
        tables_of(&two),
        vec!["public.audit", "shop.customers", "shop.orders"]
    );
    assert_eq!(
        pg.psql(&two, "SELECT count(*) FROM shop.customers").trim(),
        "20"
    );
    assert!(
        pg.psql(
            &two,
            "SELECT count(*) FROM pg_views WHERE viewname = 'big_orders'"
        )
        .trim()
            == "0"
    );

    // What the backup does not hold, --clean, and a plain dump: exit 2,
    // nothing made.
    let three = db_name("part_three");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {three}"));
    let out = env.cellar(&[
        "restore",
        "part",
        "--table",
        "shop.nosuch",
        "--to-database",
        &three,
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("holds no table shop.nosuch"),
        "{}",
        out.stderr
    );
    let out = env.cellar(&[
        "restore",
        "part",
        "--table",
        "audit",
        "--to-database",
        &one,
        "--clean",
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("--clean would replace"),
        "{}",
        out.stderr
    );
    assert_eq!(tables_of(&one), vec!["shop.orders"]);
    // Into a database that is not empty: refused as any restore is.
    let out = env.cellar(&["restore", "part", "--table", "audit", "--to-database", &one]);
    assert_eq!(out.code, 2, "{}", out.all());
    let file = env.path().join("part.dump");
    let out = env.cellar(&[
        "restore",
        "part",
        "--table",
        "audit",
        "--to-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(!file.exists());
    assert!(!pg.exists(&three));

    env.pg_profile("plain", &src, "globals = false\nformat = \"plain\"", "");
    env.cellar(&["backup", "plain"]).ok();
    let out = env.cellar(&[
        "restore",
        "plain",
        "--table",
        "audit",
        "--to-database",
        &three,
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("plain SQL dump"), "{}", out.stderr);
    assert!(!pg.exists(&three));
    for db in [&one, &two] {
        pg.psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    }
}

#[test]
fn coverage_lists_the_databases_no_profile_backs_up() {
    let own = crate::harness::private_pg();
    for db in ["cov_a", "cov_b", "cov_test"] {
        own.create_db(db);
    }
    own.psql("cov_a", "CREATE TABLE t (v int)");
    own.psql("cov_b", "CREATE TABLE t (v int)");
    let env = TestEnv::new();
    let on_own = |name: &str, db: &str, rest: &str| {
        env.pg_profile(name, db, "globals = false", rest);
        env.move_to(name, &own);
    };
    on_own("cov_a", "cov_a", "[mirror]\ndatabase = \"cov_test\"");
    env.cellar(&["backup", "cov_a"]).ok();

    let out = env.cellar(&["check", "--coverage"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("1 database(s) backed up, 1 NOT: cov_b"),
        "{}",
        out.stdout
    );
    // The mirror target and an empty `postgres` are not reported.
    assert!(!out.stdout.contains("cov_test"), "{}", out.stdout);
    assert!(!out.stdout.contains("postgres,"), "{}", out.stdout);
    env.cellar(&["status"]).ok();
    let out = env.cellar(&["status", "--fail-on-uncovered"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("NOT: cov_b"), "{}", out.stdout);

    // `postgres` with tables of its own needs a backup too.
    own.psql("postgres", "CREATE TABLE kept_here (v int)");
    let out = env.cellar(&["check", "--coverage"]);
    assert!(
        out.stdout.contains("2 NOT: cov_b, postgres"),
        "{}",
        out.stdout
    );
    own.psql("postgres", "DROP TABLE kept_here");

    on_own("cov_b", "cov_b", "");
    env.cellar(&["backup", "cov_b"]).ok();
    let out = env.cellar(&["check", "--coverage"]);
    out.ok();
    assert!(
        out.stdout
            .contains("ok (2 database(s), each backed up by a profile)"),
        "{}",
        out.stdout
    );
    env.cellar(&["status", "--fail-on-uncovered"]).ok();

    // Only cellar's own copies are left out, not a database of the user's
    // that merely starts like one.
    own.create_db("cellar_scratch_payroll");
    own.psql("cellar_scratch_payroll", "CREATE TABLE t (v int)");
    let out = env.cellar(&["check", "--coverage"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("NOT: cellar_scratch_payroll"),
        "{}",
        out.stdout
    );
}

/// A mirror run is a drill too: recorded passed or failed, per backup.
#[test]
fn mirror_runs_are_recorded_as_drills() {
    let pg = pg();
    let src = source("drill_mirror");
    let target = db_name("drill_mirror_test");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {target}"));
    let env = TestEnv::new();
    env.pg_profile(
        "dm",
        &src,
        "globals = false",
        &format!("[mirror]\ndatabase = \"{target}\"\nchecks = [\"SELECT count(*) = 1000 FROM shop.orders\"]"),
    );
    env.cellar(&["backup", "dm"]).ok();
    let id = ids(&env, "dm").pop().unwrap();
    env.cellar(&["mirror", "dm"]).ok();
    let st = state(&env, "dm");
    assert_eq!(st["last_drill"]["by"], "mirror", "{st}");
    assert_eq!(st["last_drill"]["passed"], true, "{st}");
    assert_eq!(st["last_drill"]["tables_compared"], 3, "{st}");
    assert_eq!(st["drills"][&id]["passed"], true, "{st}");

    env.edit("profiles/dm.toml", "= 1000", "= 999");
    let out = env.cellar(&["mirror", "dm"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let st = state(&env, "dm");
    assert_eq!(st["last_drill"]["passed"], false, "{st}");
    assert!(
        st["last_drill"]["error"]
            .as_str()
            .unwrap()
            .contains("check #1"),
        "{st}"
    );
    let out = env.cellar(&["status", "dm"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("dm: DRILL FAILED"), "{}", out.stdout);
    pg.psql("postgres", &format!("DROP DATABASE {target} WITH (FORCE)"));
}

/// A backup of several databases is drilled database by database.
#[test]
fn a_drill_of_several_databases_drills_each() {
    let pg = pg();
    let a = source("drill_many_a");
    let b = db_name("drill_many_b");
    pg.create_db(&b);
    pg.psql(&b, "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)");
    let env = TestEnv::new();
    env.pg_profile_with(
        "many",
        &format!("databases = [\"{a}\", \"{b}\"]\nglobals = false"),
        "",
    );
    env.cellar(&["backup", "many"]).ok();
    let out = env.cellar(&["drill", "many"]);
    out.ok();
    assert!(
        out.stdout.contains(&format!("  {a}: passed")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("  {b}: passed")),
        "{}",
        out.stdout
    );
    let st = state(&env, "many");
    assert_eq!(st["last_drill"]["tables_compared"], 4, "{st}");
    let out = env.cellar(&["drill", "many", "--database", &b, "--no-owner"]);
    out.ok();
    assert_eq!(state(&env, "many")["last_drill"]["tables_compared"], 1);
}

#[test]
fn coverage_lists_the_folders_no_files_profile_backs_up() {
    let env = TestEnv::new();
    let root = env.path().join("srv");
    for d in ["app", "logs", "media/photos", "media/video"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("loose-file"), b"x").unwrap();
    env.files_profile("app", &[&root.join("app"), &root.join("media/photos")], "");
    let out = env.cellar(&["check", "--coverage", "--root", root.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("1 folder(s) backed up, 1 in part: media, 1 NOT: logs"),
        "{}",
        out.stdout
    );
    // Listing the root itself covers everything under it.
    env.files_profile("all", &[&root], "");
    let out = env.cellar(&["check", "--coverage", "--root", root.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("3 folder(s) backed up, none left out"),
        "{}",
        out.stdout
    );
    // --root needs --coverage.
    let out = env.cellar(&["check", "--root", root.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.all());
}

#[test]
fn a_second_drill_waits_and_a_failed_drill_keeps_a_passed_backup_protected() {
    let src = source("drill_twice");
    let env = TestEnv::new();
    let bin = slow_pg_restore(&env, 3);
    env.pg_profile(
        "twice",
        &src,
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    env.at("2026-03-01T02:00:00Z", &["backup", "twice"]).ok();
    let first = ids(&env, "twice")[0].clone();
    let mut running = env.cmd().args(["drill", "twice", &first]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Another drill of the profile gives up without touching the record.
    let out = env.cellar(&["--lock-wait", "0s", "drill", "twice", &first]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("another drill of twice is running"),
        "{}",
        out.stderr
    );
    assert!(running.wait().unwrap().success());
    let list = env.cellar(&["list", "twice"]);
    assert!(list.stdout.contains("passed"), "{}", list.stdout);

    // A later drill of the same backup fails (the server is "down"): the
    // backup proved it restores once, so it stays protected.
    let restore = bin.join("pg_restore");
    std::fs::remove_file(&restore).unwrap();
    std::fs::write(
        &restore,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--list*|*\" -l \"*) exec {PG_BIN}/pg_restore \"$@\" ;; esac\necho 'server closed the connection' >&2\nexit 1\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.cellar(&["drill", "twice", &first]);
    assert_eq!(out.code, 1, "{}", out.all());
    env.at("2026-03-02T02:00:00Z", &["backup", "twice"]).ok();
    env.at("2026-03-03T02:00:00Z", &["backup", "twice"]).ok();
    let out = env.at("2026-03-03T03:00:00Z", &["prune", "twice"]);
    out.ok();
    let kept = ids(&env, "twice");
    assert!(kept.contains(&first), "{kept:?}\n{}", out.stdout);
    assert_eq!(kept.len(), 2, "{kept:?}\n{}", out.stdout);
}

#[test]
fn status_fails_a_profile_that_run_skips_as_invalid() {
    let src = source("drill_badrpo");
    let env = TestEnv::new();
    env.pg_profile("badrpo", &src, "globals = false", "");
    env.cellar(&["backup", "badrpo"]).ok();
    env.cellar(&["status", "badrpo"]).ok();
    env.edit(
        "profiles/badrpo.toml",
        "kind = \"postgres\"",
        "kind = \"postgres\"\nrpo = \"26hrs x\"",
    );
    let out = env.cellar(&["run", "badrpo"]);
    assert_eq!(out.code, 2, "{}", out.all());
    let out = env.cellar(&["status", "badrpo"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("badrpo: INVALID") && out.stdout.contains("rpo"),
        "{}",
        out.stdout
    );
    let out = env.cellar(&["status", "badrpo", "--json"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["status"], "invalid", "{rows}");
}
