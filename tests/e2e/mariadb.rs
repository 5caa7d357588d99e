//! MariaDB profiles against a real private MariaDB server: round trips
//! compared table by table, the password's path, damaged and cut-short
//! dumps, the swap, the mirror, `all = true` and users.

use cellar::restore::database::{previous_name, scratch_name};

use crate::harness::{flip_byte, TestEnv};
use crate::myharness::{mariadb, my_bin_dir, my_db, private_mariadb, My, MY_PASSWORD, RICH_SCHEMA};

/// A source database filled with [`RICH_SCHEMA`], and a profile `db` for it.
fn rich(test: &str, rest: &str) -> (TestEnv, &'static My, String) {
    let my = mariadb();
    let src = my_db(test);
    my.create_db(&src);
    my.sql(&src, RICH_SCHEMA);
    let env = TestEnv::new();
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nglobals = false"),
        rest,
    );
    (env, my, src)
}

#[test]
fn round_trip_keeps_every_table_view_routine_trigger_and_event() {
    let (env, my, src) = rich("round_trip", "");
    let out = env.cellar(&["backup", "db"]);
    out.ok();
    // The MyISAM table is named: it is not in the snapshot.
    assert!(
        out.stderr.contains("legacy (MyISAM)"),
        "no warning about the MyISAM table: {}",
        out.stderr
    );
    let names = env.payload_names("db");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".mariadb.sql.xz.pgp"), "{names:?}");
    env.cellar(&["verify", "db"]).ok();

    let copy = my_db("round_trip_copy");
    my.sql("", &format!("DROP DATABASE IF EXISTS {copy}"));
    let out = env.cellar(&["restore", "db", "--to-database", &copy]);
    out.ok();
    let want = my.fingerprint(&src);
    assert!(
        want.contains("view a_top") && want.contains("event nightly"),
        "{want}"
    );
    assert!(want.contains("routine PROCEDURE bump") && want.contains("trigger stamp"));
    assert!(
        want.contains("foreign key order's \"book\" x -> customers"),
        "{want}"
    );
    assert!(
        want.contains("sequence invoice_no") && want.contains("view doubled"),
        "{want}"
    );
    assert_eq!(my.fingerprint(&copy), want);
    // The restored objects work: the view over a view, the trigger, the
    // function.
    assert_eq!(
        my.sql(&copy, "SELECT COUNT(*) FROM a_top").trim(),
        my.sql(&src, "SELECT COUNT(*) FROM a_top").trim()
    );
    my.sql(&copy, "INSERT INTO customers (id, note) VALUES (9999, 'x')");
    assert_eq!(
        my.sql(&copy, "SELECT note FROM customers WHERE id = 9999")
            .trim(),
        "new: x"
    );
    assert_eq!(my.sql(&copy, "SELECT twice(21)").trim(), "42");
    assert_eq!(
        my.sql(&copy, "SELECT note FROM customers WHERE id = 7")
            .trim(),
        "😀 ünïcödé 7"
    );
    assert!(!my.exists(&scratch_name(&copy)));
    assert!(!my.exists(&previous_name(&copy)));
}

#[test]
fn clean_restore_swaps_the_tables_and_keeps_the_old_ones_on_request() {
    let (env, my, _src) = rich("clean", "");
    env.cellar(&["backup", "db"]).ok();
    let target = my_db("clean_target");
    my.create_db(&target);
    my.sql(
        &target,
        "CREATE TABLE keepme (v TEXT); INSERT INTO keepme VALUES ('old');
         CREATE TABLE customers (id INT);
         CREATE VIEW old_view AS SELECT * FROM keepme;
         CREATE TRIGGER old_trg BEFORE INSERT ON keepme FOR EACH ROW SET NEW.v = 'x';
         CREATE FUNCTION old_fn() RETURNS INT RETURN 1;",
    );
    // Without --clean: refused, exit 2, nothing touched.
    let out = env.cellar(&["restore", "db", "--to-database", &target]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    assert_eq!(my.sql(&target, "SELECT v FROM keepme").trim(), "old");

    let out = env.cellar(&[
        "restore",
        "db",
        "--to-database",
        &target,
        "--clean",
        "--keep-previous",
    ]);
    out.ok();
    let previous = previous_name(&target);
    assert!(out.stdout.contains(&previous), "{}", out.stdout);
    assert_eq!(my.fingerprint(&target), my.fingerprint(&my_db("clean")));
    // The old tables are in the previous copy; the old routine is gone.
    assert_eq!(my.sql(&previous, "SELECT v FROM keepme").trim(), "old");
    assert!(!my.fingerprint(&target).contains("old_fn"));
    // A second restore refuses while the kept copy exists.
    let out = env.cellar(&["restore", "db", "--to-database", &target, "--clean"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains(&previous), "{}", out.stderr);
    my.sql("", &format!("DROP DATABASE {previous}"));
    env.cellar(&["restore", "db", "--to-database", &target, "--clean"])
        .ok();
    assert!(!my.exists(&previous));
}

#[test]
fn password_reaches_the_tools_through_a_private_option_file_only() {
    let my = mariadb();
    let src = my_db("password");
    my.create_db(&src);
    my.sql(&src, "CREATE TABLE t (x INT); INSERT INTO t VALUES (5);");
    let env = TestEnv::new();
    // A mariadb-dump that records what it was given, then runs the real one.
    let seen = env.path().join("seen");
    let bin = my_bin_dir(
        &env,
        Some(&format!(
            "#!/bin/sh\ntr '\\0' ' ' < /proc/$$/cmdline >> {seen}\necho >> {seen}\nenv >> {seen}\nexec /usr/bin/mariadb-dump \"$@\"\n",
            seen = seen.display()
        )),
    );
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nbin_dir = \"{}\"", bin.display()),
        "",
    );
    // A password in the caller's environment is not used, nor shown.
    let out: crate::harness::Out = env
        .cmd()
        .env("MYSQL_PWD", "from-the-environment")
        .args(["backup", "db", "-v"])
        .output()
        .unwrap()
        .into();
    out.ok();
    let seen_path = seen;
    let seen = std::fs::read_to_string(&seen_path).unwrap();
    assert!(seen.contains("--defaults-file=/dev/fd/255"), "{seen}");
    assert!(
        !seen.contains("r00t"),
        "the password reached argv or env: {seen}"
    );
    assert!(!seen.contains("from-the-environment"), "{seen}");
    assert!(!out.all().contains("r00t"));
    // A password from cellar's environment stays there.
    std::fs::write(&seen_path, "").unwrap();
    env.edit(
        "profiles/db.toml",
        "file:secrets/my.password",
        "env:CELLAR_TEST_MY_PW",
    );
    let out: crate::harness::Out = env
        .cmd()
        .env("CELLAR_TEST_MY_PW", MY_PASSWORD)
        .args(["backup", "db"])
        .output()
        .unwrap()
        .into();
    out.ok();
    let seen = std::fs::read_to_string(&seen_path).unwrap();
    assert!(!seen.contains("CELLAR_TEST_MY_PW"), "{seen}");
    assert!(!seen.contains("r00t"), "{seen}");
    env.edit(
        "profiles/db.toml",
        "env:CELLAR_TEST_MY_PW",
        "file:secrets/my.password",
    );
    env.cellar(&["db", "ping", "db"]).ok();
    let list = env.cellar(&["db", "list", "db"]);
    list.ok();
    assert!(list.stdout.lines().any(|l| l == src), "{}", list.stdout);
    assert!(!list.stdout.contains("performance_schema"));

    // A wrong password fails with the server's words, and stores nothing.
    env.write("secrets/my.password", "wrong");
    let out = env.cellar(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("Access denied"), "{}", out.stderr);
    assert_eq!(env.manifests("db").len(), 2);
    assert!(!out.all().contains(MY_PASSWORD));
}

#[test]
fn a_dump_cut_short_is_never_stored_and_a_damaged_one_never_restored() {
    let my = mariadb();
    let src = my_db("cut");
    my.create_db(&src);
    my.sql(
        &src,
        "CREATE TABLE t (x INT); INSERT INTO t SELECT seq FROM seq_1_to_100;",
    );
    let env = TestEnv::new();
    // A dump that stops early but exits 0.
    let bin = my_bin_dir(
        &env,
        Some("#!/bin/sh\n/usr/bin/mariadb-dump \"$@\" | head -n 20\nexit 0\n"),
    );
    env.my_profile(
        "cut",
        my,
        &format!(
            "database = \"{src}\"\nglobals = false\nbin_dir = \"{}\"",
            bin.display()
        ),
        "",
    );
    let out = env.cellar(&["backup", "cut"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("completion line"), "{}", out.stderr);
    assert!(env.manifests("cut").is_empty());
    assert!(env.payloads("cut").is_empty());

    // A mariadb-dump that writes `USE db` (as with --databases): a restore
    // of it would write into the live database, so it is not stored.
    std::fs::remove_dir_all(env.path().join("mybin")).unwrap();
    let bin = my_bin_dir(
        &env,
        Some("#!/bin/sh\nfirst=$1\nshift\nexec /usr/bin/mariadb-dump \"$first\" --databases \"$@\"\n"),
    );
    env.my_profile(
        "uses",
        my,
        &format!(
            "database = \"{src}\"\nglobals = false\nbin_dir = \"{}\"",
            bin.display()
        ),
        "",
    );
    let out = env.cellar(&["backup", "uses"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("`USE`") || out.stderr.contains("`CREATE DATABASE`"),
        "{}",
        out.stderr
    );
    assert!(env.manifests("uses").is_empty());

    // A good backup, damaged in the store: verify and restore refuse it,
    // and the target is untouched.
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nglobals = false"),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    flip_byte(&env.payloads("db")[0]);
    let out = env.cellar(&["verify", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let target = my_db("cut_target");
    my.create_db(&target);
    my.sql(
        &target,
        "CREATE TABLE keepme (v INT); INSERT INTO keepme VALUES (1);",
    );
    let out = env.cellar(&["restore", "db", "--to-database", &target, "--clean"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("left as it was"), "{}", out.stderr);
    assert_eq!(my.sql(&target, "SELECT v FROM keepme").trim(), "1");
    assert!(!my.exists(&scratch_name(&target)));
}

/// A mirror profile: customers anonymized, two checks.
fn mirror_setup(test: &str, checks: &str) -> (TestEnv, &'static My, String) {
    let (env, my, _src) = rich(
        test,
        &format!(
            "[mirror]\ndatabase = \"{}\"\nafter_restore = [\"UPDATE customers SET email = CONCAT('user', id, '@example.invalid')\"]\nchecks = [{checks}]\n",
            my_db(&format!("{test}_test"))
        ),
    );
    let target = my_db(&format!("{test}_test"));
    my.create_db(&target);
    my.sql(
        &target,
        "CREATE TABLE old_content (v TEXT); INSERT INTO old_content VALUES ('previous test data');",
    );
    env.cellar(&["backup", "db"]).ok();
    (env, my, target)
}

fn unchanged(my: &My, target: &str) {
    assert_eq!(
        my.sql(target, "SELECT v FROM old_content").trim(),
        "previous test data"
    );
    assert!(!my.exists(&scratch_name(target)));
}

#[test]
fn mirror_swaps_in_the_anonymized_copy_and_each_failure_leaves_the_test_database() {
    // Success.
    let (env, my, target) = mirror_setup(
        "mirror_ok",
        "\"SELECT COUNT(*) = 500 FROM customers\", \"SELECT COUNT(*) = 0 FROM customers WHERE email LIKE '%example.com'\"",
    );
    let out = env.cellar(&["mirror", "db"]);
    out.ok();
    assert_eq!(
        my.sql(&target, "SELECT email FROM customers WHERE id = 3")
            .trim(),
        "user3@example.invalid"
    );
    assert!(!my.fingerprint(&target).contains("old_content"));
    assert!(my.fingerprint(&target).contains("trigger stamp"));
    assert!(!my.exists(&scratch_name(&target)));
    assert!(!my.exists(&previous_name(&target)));

    // A check that is false.
    let (env, my, target) = mirror_setup("mirror_check", "\"SELECT COUNT(*) = 1 FROM customers\"");
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("check #1"), "{}", out.stderr);
    unchanged(my, &target);

    // An anonymization that fails.
    env.edit(
        "profiles/db.toml",
        "UPDATE customers SET email",
        "UPDATE no_such_table SET email",
    );
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("after_restore #1"), "{}", out.stderr);
    unchanged(my, &target);

    // A damaged backup.
    env.edit(
        "profiles/db.toml",
        "UPDATE no_such_table SET email",
        "UPDATE customers SET email",
    );
    flip_byte(&env.payloads("db")[0]);
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    unchanged(my, &target);
}

#[test]
fn all_databases_and_users_round_trip_on_a_server_of_its_own() {
    let my = private_mariadb();
    for db in ["alpha", "we ird'name"] {
        my.create_db(db);
        my.sql(db, "CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2);");
    }
    // A leftover scratch copy is not backed up.
    my.create_db(&scratch_name("whatever"));
    my.sql(
        "",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT ON alpha.* TO 'app'@'%';
         CREATE ROLE 'rol\"e'; GRANT SELECT ON alpha.t TO 'rol\"e'; GRANT 'rol\"e' TO 'app'@'%';
         GRANT INSERT (x) ON alpha.t TO 'app'@'%';",
    );
    my.create_db("gone");
    let env = TestEnv::new();
    // A mariadb-dump that finds `gone` dropped just before it dumps it, as
    // a database dropped between the listing and its dump would be.
    let bin = my_bin_dir(
        &env,
        Some(&format!(
            "#!/bin/sh\nfor a; do last=$a; done\n[ \"$last\" = gone ] && /usr/bin/mariadb --no-defaults --socket={} -uroot -e 'DROP DATABASE gone'\nexec /usr/bin/mariadb-dump \"$@\"\n",
            my.sock().display()
        )),
    );
    env.my_profile(
        "all",
        &my,
        &format!(
            "all = true\nglobals = true\nbin_dir = {:?}",
            bin.to_str().unwrap()
        ),
        "",
    );
    let out = env.cellar(&["backup", "all"]);
    out.ok();
    assert!(
        out.stderr
            .contains("database gone was dropped during the backup"),
        "{}",
        out.stderr
    );
    let manifest = std::fs::read_to_string(&env.manifests("all")[0]).unwrap();
    assert!(
        manifest.contains("gone: dropped during the backup"),
        "{manifest}"
    );
    let names = env.payload_names("all");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with(".users.sql.xz.pgp")),
        "{names:?}"
    );
    let list = env.cellar(&["list", "all", "--json"]);
    list.ok();
    assert!(
        list.stdout.contains(".we%20ird%27name.mariadb.sql"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(".alpha.mariadb.sql"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains("cellar_scratch_"), "{}", list.stdout);
    assert!(!list.stdout.contains("performance_schema"));
    env.cellar(&["verify", "all"]).ok();

    // Coverage: `all = true` covers both; a profile of one leaves the
    // other out (the server's own schemas and cellar's copies never count).
    let out = env.cellar(&["check", "--coverage"]);
    out.ok();
    assert!(
        out.stdout
            .contains("ok (2 database(s), each backed up by a profile)"),
        "{}",
        out.stdout
    );
    let one = TestEnv::new();
    one.my_profile("one", &my, "database = \"alpha\"", "");
    let out = one.cellar(&["check", "--coverage"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "coverage of mariadb://root@127.0.0.1:{}: 1 database(s) backed up, 1 NOT: we ird'name",
            my.port
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("cellar init mariadb NAME"),
        "{}",
        out.stdout
    );
    let out = one.cellar(&["status", "--fail-on-uncovered"]);
    assert_eq!(out.code, 1, "{}", out.all());

    // The user is gone, and root's password changed since the backup: a
    // restore with --globals brings the user back and leaves root alone.
    my.sql("", "DROP USER 'app'@'%'; DROP ROLE 'rol\"e'");
    my.sql(
        "",
        "ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY 'changed-since'",
    );
    env.write("secrets/my.password", "changed-since");
    env.cellar(&[
        "restore",
        "all",
        "--database",
        "we ird'name",
        "--to-database",
        "copy",
        "--globals",
    ])
    .ok();
    assert_eq!(my.sql("copy", "SELECT COUNT(*) FROM t").trim(), "2");
    let grants = my.sql("", "SHOW GRANTS FOR 'app'@'%'");
    assert!(grants.contains("GRANT SELECT ON `alpha`.*"), "{grants}");
    // root still logs in with its new password.
    env.cellar(&["db", "ping", "all"]).ok();

    // Disaster recovery: the database and its accounts are gone. Grants on
    // single tables and columns need their table: given after the swap.
    my.sql(
        "",
        "DROP USER 'app'@'%'; DROP ROLE 'rol\"e'; DROP DATABASE alpha;",
    );
    let out = env.cellar(&[
        "restore",
        "all",
        "--database",
        "alpha",
        "--to-database",
        "alpha",
        "--globals",
    ]);
    out.ok();
    assert!(!out.stderr.contains("could not be given"), "{}", out.stderr);
    let grants = my.sql("", "SHOW GRANTS FOR 'app'@'%'");
    assert!(
        grants.contains("GRANT INSERT (`x`) ON `alpha`.`t`"),
        "{grants}"
    );
    assert!(grants.contains("GRANT `rol\"e` TO"), "{grants}");
    let grants = my.sql("", "SHOW GRANTS FOR 'rol\"e'");
    assert!(grants.contains("GRANT SELECT ON `alpha`.`t`"), "{grants}");

    // An account whose name holds a line break could not be told apart
    // from the backup's statements line by line: nothing is applied.
    my.sql("", "CREATE USER 'two\nlines'@'%' IDENTIFIED BY 'x'");
    let out = env.cellar(&[
        "restore",
        "all",
        "--database",
        "we ird'name",
        "--to-database",
        "copy2",
        "--globals",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("line break"), "{}", out.stderr);
    assert!(!my.exists("copy2"));
}

#[test]
fn mariadb_profiles_are_checked_like_the_others() {
    let my = mariadb();
    let env = TestEnv::new();
    for bad in [
        "--databases",
        "--loose-databases",
        "--enable-no-data",
        "--wher=1",
        "-vd",
        "--loose-result-file=/tmp/x",
    ] {
        env.my_profile(
            "db",
            my,
            &format!("database = \"x\"\ndump_args = [\"{bad}\"]"),
            "",
        );
        let out = env.cellar(&["check", "db"]);
        assert_eq!(out.code, 2, "{bad}: {}", out.all());
        assert!(out.all().contains("source.dump_args"), "{}", out.all());
    }
    env.my_profile("db", my, "database = \"x\"\npg_dump_args = []", "");
    let out = env.cellar(&["check", "db"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("pg_dump_args"), "{}", out.all());
    // `cellar init mariadb` writes a template that only needs its paths.
    let out = env.cellar(&["init", "mariadb", "fresh"]);
    out.ok();
    let text = std::fs::read_to_string(env.path().join("profiles/fresh.toml")).unwrap();
    assert!(text.starts_with("# cellar profile: a MariaDB"), "{text}");
    assert!(text.contains("kind = \"mariadb\""));
}

/// Starts cellar, waits until `ready()` (or 60 s), then kills it with -9;
/// returns its exit code (137 when killed).
fn kill_when(env: &TestEnv, args: &[&str], ready: impl Fn() -> bool) -> i32 {
    use std::time::{Duration, Instant};
    let mut child = env
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready() && started.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    status.code().or(status.signal().map(|s| 128 + s)).unwrap()
}

#[test]
fn kill_9_during_the_restore_leaves_the_target_and_the_next_run_succeeds() {
    let my = mariadb();
    let src = my_db("kill9");
    my.create_db(&src);
    my.sql(
        &src,
        "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(255)) ENGINE=InnoDB;
         INSERT INTO big SELECT seq, CONCAT(MD5(seq), REPEAT('z', 150)) FROM seq_1_to_150000;
         CREATE TRIGGER big_t BEFORE INSERT ON big FOR EACH ROW SET NEW.v = UPPER(NEW.v);",
    );
    let dst = my_db("kill9_dst");
    let mirror = my_db("kill9_mirror");
    let env = TestEnv::new();
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nglobals = false"),
        &format!(
            "[mirror]\ndatabase = \"{mirror}\"\nchecks = [\"SELECT COUNT(*) = 150000 FROM big\"]\n"
        ),
    );
    let t0 = std::time::Instant::now();
    env.cellar(&["backup", "db"]).ok();
    eprintln!("backup {:?}", t0.elapsed());
    let victim = |db: &str| {
        my.create_db(db);
        my.sql(db, "CREATE TABLE keepme (v TEXT); INSERT INTO keepme VALUES ('old content'); CREATE VIEW kv AS SELECT * FROM keepme;");
    };
    victim(&dst);
    victim(&mirror);
    let restore = ["restore", "db", "--to-database", &dst, "--clean"];
    let mut saw_leftover = false;
    for args in [&restore[..], &["mirror", "db"][..]] {
        let target = if args[0] == "mirror" { &mirror } else { &dst };
        let scratch = scratch_name(target);
        let rows_in_scratch = || {
            my.exists(&scratch)
                && my
                    .sql(
                        "",
                        &format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{scratch}'"),
                    )
                    .trim()
                    != "0"
        };
        let moments: [(&str, &dyn Fn() -> bool); 2] = [
            ("scratch created", &|| my.exists(&scratch)),
            ("mariadb loading", &rows_in_scratch),
        ];
        for (moment, ready) in moments {
            let t0 = std::time::Instant::now();
            let code = kill_when(&env, args, ready);
            eprintln!(
                "kill -9 of {} when {moment}: exit {code} after {:?}",
                args[0],
                t0.elapsed()
            );
            if code == 0 {
                victim(target);
                continue;
            }
            assert_eq!(code, 137, "{moment}");
            assert_eq!(
                my.sql(target, "SELECT v FROM kv").trim(),
                "old content",
                "{moment}"
            );
            if my.exists(&scratch) {
                saw_leftover = true;
                let st = env.cellar(&["status", "db"]);
                assert!(st.stdout.contains(&scratch), "{moment}: {}", st.stdout);
                let ck = env.cellar(&["check", "db"]);
                assert!(ck.stdout.contains(&scratch), "{moment}: {}", ck.stdout);
            }
        }
    }
    assert!(
        saw_leftover,
        "no kill landed while a scratch database existed"
    );
    let t0 = std::time::Instant::now();
    env.cellar(&restore).ok();
    eprintln!("restore {:?}", t0.elapsed());
    env.cellar(&["mirror", "db"]).ok();
    eprintln!("mirror {:?}", t0.elapsed());
    for target in [&dst, &mirror] {
        assert!(!my.exists(&scratch_name(target)));
        assert_eq!(my.sql(target, "SELECT COUNT(*) FROM big").trim(), "150000");
        assert!(my.fingerprint(target).contains("trigger big_t"));
        assert!(!my.fingerprint(target).contains("keepme"));
    }
    assert_eq!(
        my.fingerprint(&dst).replace(&dst, "X"),
        my.fingerprint(&src).replace(&src, "X")
    );
}

#[test]
fn a_swap_that_fails_late_is_undone_and_foreign_keys_from_elsewhere_are_refused() {
    let (env, my, _src) = rich("late", "");
    let other = my_db("late_other");
    my.create_db(&other);
    my.sql(
        &other,
        "CREATE TABLE ext (x INT); INSERT INTO ext VALUES (1);",
    );
    let target = my_db("late_test");
    my.create_db(&target);
    // The target shares table names with the backup and has views,
    // triggers, routines and events of its own.
    my.sql(
        &target,
        "CREATE TABLE customers (id INT PRIMARY KEY, v TEXT); INSERT INTO customers VALUES (1, 'old');
         CREATE TABLE keepme (v TEXT); INSERT INTO keepme VALUES ('old content');
         CREATE VIEW kv AS SELECT * FROM keepme;
         CREATE TRIGGER kt BEFORE INSERT ON keepme FOR EACH ROW SET NEW.v = UPPER(NEW.v);
         CREATE FUNCTION old_fn() RETURNS INT RETURN 7;
         CREATE FUNCTION twice(x INT) RETURNS INT RETURN x;
         CREATE EVENT old_ev ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM keepme;",
    );
    // Grants on its routines, which a dropped routine loses.
    let user = format!("'g_{}'@'%'", target.len());
    my.sql(
        "",
        &format!(
            "CREATE USER IF NOT EXISTS {user}; GRANT EXECUTE ON FUNCTION `{target}`.old_fn TO {user}; GRANT EXECUTE, ALTER ROUTINE ON FUNCTION `{target}`.twice TO {user} WITH GRANT OPTION;"
        ),
    );
    let grants = || {
        let mut g: Vec<String> = my
            .sql("", &format!("SHOW GRANTS FOR {user}"))
            .lines()
            .filter(|l| l.contains(" ON FUNCTION "))
            .map(String::from)
            .collect();
        g.sort();
        g
    };
    let granted = grants();
    assert_eq!(granted.len(), 2, "{granted:?}");
    let before = my.fingerprint(&target);
    // The mirror's after_restore makes a view on a table elsewhere and
    // then drops that table: the view is made in the scratch database, but
    // cannot be made again in the target, after the tables moved.
    let profile = std::fs::read_to_string(env.path().join("profiles/db.toml")).unwrap();
    env.write(
        "profiles/db.toml",
        &profile.replace(
            "[compression]",
            &format!(
                "[mirror]\ndatabase = \"{target}\"\nafter_restore = [\"CREATE VIEW late_view AS SELECT x FROM {other}.ext\", \"DROP TABLE {other}.ext\"]\n[compression]"
            ),
        ),
    );
    env.cellar(&["backup", "db"]).ok();
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("was undone"), "{}", out.stderr);
    assert!(out.stderr.contains("left as it was"), "{}", out.stderr);
    assert_eq!(my.fingerprint(&target), before);
    assert_eq!(grants(), granted, "the undo lost grants on the routines");
    assert_eq!(my.sql(&target, "SELECT v FROM kv").trim(), "old content");
    assert_eq!(my.sql(&target, "SELECT v FROM customers").trim(), "old");
    assert!(!my.exists(&scratch_name(&target)));
    assert!(!my.exists(&previous_name(&target)));
    let st = env.cellar(&["status", "db"]);
    assert!(!st.stdout.contains("scratch"), "{}", st.stdout);

    // A table elsewhere with a foreign key into the target: refused.
    my.sql(
        &other,
        &format!("CREATE TABLE child (id INT, k INT, FOREIGN KEY (k) REFERENCES `{target}`.customers(id)) ENGINE=InnoDB;"),
    );
    let out = env.cellar(&["restore", "db", "--to-database", &target, "--clean"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("foreign keys into"), "{}", out.stderr);
    assert_eq!(my.fingerprint(&target), before);

    // A swap that succeeds gives the target's grants back to the routines
    // the backup has too (`twice`); `old_fn` is gone, and its grant too.
    my.sql(&other, "DROP TABLE child");
    env.cellar(&["restore", "db", "--to-database", &target, "--clean"])
        .ok();
    let now = grants();
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        now[0].contains("`twice`") && now[0].contains("WITH GRANT OPTION"),
        "{now:?}"
    );
    assert_eq!(my.sql(&target, "SELECT twice(2)").trim(), "4");
    my.sql("", &format!("DROP USER {user}"));
}

/// A session that holds a lock until dropped: `sql` runs in an open
/// transaction, so the metadata locks it took stay held.
struct Holder(std::process::Child);

impl Holder {
    fn new(my: &My, db: &str, sql: &str) -> Holder {
        use std::io::{BufRead, Write};
        let mut child = my
            .client()
            .args(["--batch", "--skip-column-names", "--unbuffered"])
            .arg(format!("--database={db}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "BEGIN; {sql}; SELECT 'held';").unwrap();
        // Kept open: the session lives until the process is killed.
        std::mem::forget(stdin);
        for l in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            if l.unwrap() == "held" {
                break;
            }
        }
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Does what the journal's first lines tell an operator to do.
fn put_back_by_journal(my: &My, target: &str, path: &std::path::Path) {
    let journal = std::fs::read_to_string(path).unwrap();
    let previous = previous_name(target);
    let moved = my.exists(&previous)
        && my
            .sql(
                "",
                &format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{previous}'"),
            )
            .trim()
            != "0";
    if moved {
        for prefix in ["-- CREATE DATABASE IF NOT EXISTS", "-- RENAME TABLE"] {
            let line = journal
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in the journal:\n{journal}"));
            my.sql("", line.trim_start_matches("-- "));
        }
    }
    let out = my
        .client()
        .arg("--binary-mode")
        .arg(target)
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    my.sql(
        "",
        &format!(
            "DROP DATABASE IF EXISTS `{previous}`; DROP DATABASE IF EXISTS `{}`",
            scratch_name(target)
        ),
    );
}

#[test]
fn a_swap_cut_short_blocks_the_target_until_it_is_put_back_by_its_journal() {
    let my = mariadb();
    let src = my_db("swapcut");
    my.create_db(&src);
    my.sql(
        &src,
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'new');
         CREATE VIEW tv AS SELECT v FROM t;
         CREATE FUNCTION f() RETURNS TEXT DETERMINISTIC RETURN 'new';",
    );
    let env = TestEnv::new();
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nglobals = false"),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    let dst = my_db("swapcut_dst");
    let scratch = scratch_name(&dst);
    let marker = cellar::restore::database::marker_path(
        env.path(),
        &format!("mariadb://root@127.0.0.1:{}", my.port),
        &dst,
    );
    let journal = marker.with_extension("undo.sql");
    let restore = ["restore", "db", "--to-database", &dst, "--clean"];
    let count = |stmt: &str, state: &str| {
        my.sql(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE (DB = '{dst}' OR INFO LIKE '%{dst}%') AND INFO LIKE '{stmt}%' AND STATE LIKE '{state}'"
            ),
        )
        .trim()
            != "0"
    };
    let waiting = |stmt: &str| count(stmt, "Waiting for%");
    let running = |stmt: &str| count(stmt, "%");
    // Cut short before the RENAME TABLE (a session holds a table of the
    // target), then after it (a session holds the old function, which
    // step 4 drops).
    for (moment, stmt, hold) in [
        (
            "before the rename",
            "RENAME TABLE",
            "SELECT COUNT(*) FROM plain",
        ),
        ("after the rename", "DROP FUNCTION", "SELECT f()"),
    ] {
        my.sql("", &format!("DROP DATABASE IF EXISTS `{dst}`"));
        my.create_db(&dst);
        my.sql(
            &dst,
            "CREATE TABLE keepme (v TEXT); INSERT INTO keepme VALUES ('old'); CREATE TABLE plain (v INT);
             CREATE VIEW kv AS SELECT * FROM keepme;
             CREATE TRIGGER kt BEFORE INSERT ON keepme FOR EACH ROW SET NEW.v = UPPER(NEW.v);
             CREATE FUNCTION f() RETURNS TEXT DETERMINISTIC RETURN 'old';",
        );
        let before = my.fingerprint(&dst);
        let holder = Holder::new(my, &dst, hold);
        let code = kill_when(&env, &restore, || waiting(stmt));
        assert_eq!(code, 137, "{moment}");
        drop(holder);
        // The server may still run the statement its killed client sent
        // (a RENAME TABLE that was waiting for the lock can complete
        // now): the journal says to wait until it is gone.
        let started = std::time::Instant::now();
        while running(stmt) {
            assert!(started.elapsed().as_secs() < 60, "{stmt} still running");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if moment == "after the rename" {
            let moved = my.sql(
                "",
                &format!(
                    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}'",
                    previous_name(&dst)
                ),
            );
            assert_eq!(moved.trim(), "2", "{moment}");
        }
        let text = std::fs::read_to_string(&journal).expect("the journal stays");
        assert!(
            std::fs::read_to_string(&marker).unwrap().contains("undo"),
            "{moment}"
        );

        // Nothing runs into the target now: not a restore, not a mirror
        // of it; the journal is left as it was.
        let out = env.cellar(&restore);
        assert_eq!(out.code, 2, "{moment}: {}", out.all());
        assert!(out.stderr.contains("was cut short"), "{}", out.stderr);
        assert!(
            out.stderr.contains(journal.to_str().unwrap()),
            "{}",
            out.stderr
        );
        assert_eq!(std::fs::read_to_string(&journal).unwrap(), text);
        let out = env.cellar(&["check", "db"]);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(out.all().contains("was cut short"), "{}", out.all());
        let out = env.cellar(&["status", "db"]);
        assert!(out.stdout.contains("was cut short"), "{}", out.stdout);
        // `check` keeps the marker even with the scratch database gone.
        my.sql("", &format!("DROP DATABASE IF EXISTS `{scratch}`"));
        env.cellar(&["check", "db"]);
        assert!(marker.exists(), "{moment}");

        // The journal's steps put the target back exactly.
        put_back_by_journal(my, &dst, &journal);
        assert_eq!(my.fingerprint(&dst), before, "{moment}:\n{text}");
        assert_eq!(my.sql(&dst, "SELECT f()").trim(), "old", "{moment}");
        std::fs::remove_file(&marker).unwrap();
        std::fs::remove_file(&journal).unwrap();
        env.cellar(&restore).ok();
        assert_eq!(my.sql(&dst, "SELECT f()").trim(), "new", "{moment}");
        assert_eq!(my.sql(&dst, "SELECT v FROM tv").trim(), "new", "{moment}");
    }
    my.sql(
        "",
        &format!("DROP DATABASE IF EXISTS `{dst}`; DROP DATABASE IF EXISTS `{src}`"),
    );
}

/// Backs up `db` with the real client tools, then restores it into
/// `target` without `--clean` through a `mariadb` wrapper (`script`, a
/// shell script) that makes or fills the target at some moment: the
/// restore must exit 1 naming `--clean`, the table `precious` the wrapper
/// made must stay, and no scratch or previous copy may be left.
fn another_session_fills_the_target(env: &TestEnv, my: &My, target: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let bin = my_bin_dir(env, None);
    let mariadb = bin.join("mariadb");
    std::fs::remove_file(&mariadb).unwrap();
    std::fs::write(&mariadb, script).unwrap();
    std::fs::set_permissions(&mariadb, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.cellar(&["backup", "db"]).ok();
    env.edit(
        "profiles/db.toml",
        "globals = false",
        &format!("globals = false\nbin_dir = \"{}\"", bin.display()),
    );
    let out = env.cellar(&["restore", "db", "--to-database", target]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("--clean"), "{}", out.stderr);
    assert_eq!(my.sql(target, "SELECT v FROM precious").trim(), "x");
    assert!(!my.exists(&scratch_name(target)));
    assert!(!my.exists(&previous_name(target)));
}

/// Without `--clean`, a target that someone creates and fills while the
/// restore runs is not swapped out (and dropped) at the end.
#[test]
fn a_target_made_during_the_restore_is_not_replaced_without_clean() {
    let (env, my, _src) = rich("appeared_src", "");
    let target = my_db("appeared_dst");
    my.sql("", &format!("DROP DATABASE IF EXISTS `{target}`"));
    // The first client that works in the scratch database first makes the
    // target, with a table in it, as another user at work would.
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *--database={scratch}*) if mkdir {once} 2>/dev/null; then\n  /usr/bin/mariadb --no-defaults --socket={sock} -uroot -e \"CREATE DATABASE \\`{target}\\`; CREATE TABLE \\`{target}\\`.precious (v TEXT); INSERT INTO \\`{target}\\`.precious VALUES ('x');\" || exit 9; fi ;;\nesac\nexec /usr/bin/mariadb \"$@\"\n",
        scratch = scratch_name(&target),
        sock = my.sock().display(),
        once = env.path().join("made-once").display(),
    );
    another_session_fills_the_target(&env, my, &target, &script);
}

/// SQL in a dump cannot make the `mariadb` client read a file on the
/// cellar host (`LOAD DATA LOCAL INFILE`): the dump here comes from a
/// wrapped mariadb-dump, as a hostile server could shape it.
#[test]
fn a_dump_cannot_read_files_of_the_restoring_host() {
    let my = mariadb();
    let src = my_db("infile_src");
    my.create_db(&src);
    my.sql(&src, "CREATE TABLE loot (line TEXT);");
    let env = TestEnv::new();
    let secret = env.path().join("secrets/k.key.asc");
    assert!(secret.exists());
    let bin = my_bin_dir(
        &env,
        Some(&format!(
            "#!/bin/sh\n/usr/bin/mariadb-dump \"$@\" | sed \"s|^-- Dump completed|LOAD DATA LOCAL INFILE '{}' INTO TABLE loot;\\n-- Dump completed|\"\n",
            secret.display()
        )),
    );
    env.my_profile(
        "db",
        my,
        &format!(
            "database = \"{src}\"\nglobals = false\nbin_dir = \"{}\"",
            bin.display()
        ),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    let target = my_db("infile_dst");
    my.sql("", &format!("DROP DATABASE IF EXISTS `{target}`"));
    let out = env.cellar(&["restore", "db", "--to-database", &target]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!my.exists(&target), "{}", out.all());
    assert!(!my.exists(&scratch_name(&target)));
}

/// A view whose definer is an ordinary account, with rights on its own
/// database only: MariaDB shows such a view with names qualified by the
/// scratch database, which must not follow it into the target.
#[test]
fn a_view_made_by_an_ordinary_account_restores() {
    let my = mariadb();
    let src = my_db("definer");
    my.create_db(&src);
    let user = format!("u_{}", src.len());
    my.sql(
        "",
        &format!(
            "CREATE USER IF NOT EXISTS '{user}'@'localhost'; GRANT ALL ON `{src}`.* TO '{user}'@'localhost';"
        ),
    );
    my.sql(
        &src,
        &format!(
            "CREATE TABLE t (id INT); INSERT INTO t VALUES (1);
             CREATE DEFINER = '{user}'@'localhost' VIEW v AS SELECT id FROM t;"
        ),
    );
    let env = TestEnv::new();
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nglobals = false"),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    let copy = my_db("definer_copy");
    my.sql("", &format!("DROP DATABASE IF EXISTS `{copy}`"));
    env.cellar(&["restore", "db", "--to-database", &copy]).ok();
    let shown = my.sql(&copy, "SHOW CREATE VIEW v");
    assert!(!shown.contains("cellar_scratch"), "{shown}");
    // Over itself, where the definer has its rights: the view reads.
    env.cellar(&["restore", "db", "--to-database", &src, "--clean"])
        .ok();
    assert_eq!(my.sql(&src, "SELECT id FROM v").trim(), "1");
    my.sql("", &format!("DROP USER '{user}'@'localhost'"));
}

/// Without `--clean`, an empty target that someone fills just after the
/// swap asked whether it is still empty: what it holds then is not moved
/// out and dropped. (A wrapped client fills it at the next question.)
#[test]
fn a_target_filled_just_after_the_last_question_is_not_replaced_without_clean() {
    let (env, my, _src) = rich("late_src", "");
    let target = my_db("late_dst");
    my.create_db(&target);
    let script = format!(
        "#!/bin/bash\ncase \"$*\" in *--skip-column-names\\ --binary-mode*)\n  sql=$(cat)\n  case \"$sql\" in *\"information_schema.VIEWS WHERE TABLE_SCHEMA = '{target}'\"*)\n    /usr/bin/mariadb --no-defaults --socket={sock} -uroot -e \"CREATE TABLE \\`{target}\\`.precious (v TEXT); INSERT INTO \\`{target}\\`.precious VALUES ('x');\" || exit 9 ;;\n  esac\n  printf '%s\\n' \"$sql\" | exec /usr/bin/mariadb \"$@\" ;;\nesac\nexec /usr/bin/mariadb \"$@\"\n",
        sock = my.sock().display(),
    );
    another_session_fills_the_target(&env, my, &target, &script);
}

/// A swap into a new name that fails (InnoDB compares foreign key names
/// without regard to case, so the source's name in capitals collides)
/// leaves no empty database behind.
#[test]
fn a_failed_swap_into_a_new_name_leaves_no_database() {
    let (env, my, src) = rich("fk_case", "");
    env.cellar(&["backup", "db"]).ok();
    let target = src.to_uppercase();
    assert_ne!(target, src);
    my.sql("", &format!("DROP DATABASE IF EXISTS `{target}`"));
    let out = env.cellar(&["restore", "db", "--to-database", &target]);
    if out.code == 0 {
        // This server tells foreign key names apart by case: nothing to see.
        my.sql("", &format!("DROP DATABASE `{target}`"));
        return;
    }
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("undone"), "{}", out.stderr);
    assert!(!my.exists(&target), "{}", out.all());
    assert!(!my.exists(&scratch_name(&target)));
    assert!(!my.exists(&previous_name(&target)));
}

/// A table moved to an engine without transactions while the dump ran is
/// named in a warning, as one that had such an engine from the start is.
/// A procedure whose body has a line `DROP DATABASE ...` backs up and
/// restores (the body's lines are not statements of the dump).
#[test]
fn a_table_changed_to_myisam_during_the_dump_is_named() {
    let my = mariadb();
    let src = my_db("engine");
    my.create_db(&src);
    my.sql(
        &src,
        "CREATE TABLE e_trunc (x INT) ENGINE=InnoDB; INSERT INTO e_trunc SELECT seq FROM seq_1_to_500;
         DELIMITER ;;
         CREATE PROCEDURE cleanup()
         BEGIN
         DROP DATABASE IF EXISTS scratch_tmp;
         END;;
         DELIMITER ;",
    );
    let env = TestEnv::new();
    // The change lands after mariadb-dump read the table, before cellar
    // looks again.
    let bin = my_bin_dir(
        &env,
        Some(&format!(
            "#!/bin/sh\n/usr/bin/mariadb-dump \"$@\"\nrc=$?\n/usr/bin/mariadb --no-defaults --socket={} -uroot {src} -e 'ALTER TABLE e_trunc ENGINE=MyISAM; INSERT INTO e_trunc VALUES (9999)'\nexit $rc\n",
            my.sock().display()
        )),
    );
    env.my_profile(
        "engine",
        my,
        &format!(
            "database = \"{src}\"\nglobals = false\nbin_dir = \"{}\"",
            bin.display()
        ),
        "",
    );
    let out = env.cellar(&["backup", "engine"]);
    out.ok();
    assert!(
        out.stderr
            .contains("changed to an engine without transactions while the dump ran")
            && out.stderr.contains("e_trunc (MyISAM)"),
        "{}",
        out.stderr
    );
    env.cellar(&["verify", "engine"]).ok();
    let copy = format!("{src}_copy");
    env.cellar(&["restore", "engine", "--to-database", &copy])
        .ok();
    let body = my.sql(
        "",
        &format!("SELECT ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{copy}'"),
    );
    assert!(
        body.contains("DROP DATABASE IF EXISTS scratch_tmp"),
        "{body}"
    );
    my.sql(
        "",
        &format!("DROP DATABASE `{src}`; DROP DATABASE `{copy}`"),
    );
}
