//! Mirror: swap on success, and in every failing case the test database
//! is exactly as it was.

use cellar::restore::database::{previous_name, scratch_name};

use crate::harness::{db_name, flip_byte, pg, TestEnv};

fn setup(test: &str, mirror_extra: &str) -> (TestEnv, String, String) {
    let pg = pg();
    let src = db_name(&format!("{test}_src"));
    let target = db_name(&format!("{test}_test"));
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE customers (id int PRIMARY KEY, email text, token text);
         INSERT INTO customers SELECT g, 'real' || g || '@example.org', md5(g::text) FROM generate_series(1, 100) g;",
    );
    pg.create_db(&target);
    pg.psql(
        &target,
        "CREATE TABLE old_content (v text); INSERT INTO old_content VALUES ('previous test data');",
    );
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false",
        &format!(
            "[mirror]\ndatabase = \"{target}\"\nafter_restore = [\"UPDATE customers SET email = 'user' || id || '@example.com', token = NULL\"]\nchecks = [\"SELECT count(*) = 100 FROM customers\", \"SELECT bool_and(token IS NULL) FROM customers\"]\n{mirror_extra}"
        ),
    );
    env.cellar(&["backup", "db"]).ok();
    (env, src, target)
}

fn unchanged(target: &str) {
    let pg = pg();
    assert_eq!(
        pg.psql(target, "SELECT v FROM old_content").trim(),
        "previous test data"
    );
    assert!(!pg.exists(&scratch_name(target)));
}

#[test]
fn mirror_swaps_in_the_anonymized_copy_while_a_client_is_connected() {
    let pg = pg();
    let (env, _src, target) = setup("mirror_ok", "");
    // A client sitting in the old test database.
    let mut client = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            &target,
        ])
        .args(["-c", "SELECT pg_sleep(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = env.cellar(&["mirror", "db"]);
    out.ok();
    assert!(out.stdout.contains("2 check(s) passed"), "{}", out.stdout);
    assert_eq!(
        pg.psql(
            &target,
            "SELECT count(*) FROM customers WHERE email LIKE '%@example.com'"
        )
        .trim(),
        "100"
    );
    assert_eq!(
        pg.psql(
            &target,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'old_content'"
        )
        .trim(),
        "0"
    );
    assert!(!pg.exists(&previous_name(&target)));
    assert!(!pg.exists(&scratch_name(&target)));
    let status = client.wait().unwrap();
    assert!(!status.success(), "the old session was not ended");
    // The drill is recorded for `status`.
    let st = env.cellar(&["status", "db"]);
    assert!(st.stdout.contains("last mirror:  2"), "{}", st.stdout);
}

#[test]
fn damaged_backup_leaves_the_test_database_as_it_was() {
    let (env, _src, target) = setup("mirror_damaged", "");
    flip_byte(&env.payloads("db")[0]);
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("`restore`") && out.stderr.contains("is damaged"),
        "{}",
        out.stderr
    );
    unchanged(&target);
}

#[test]
fn failing_after_restore_or_check_leaves_the_test_database_and_a_later_run_works() {
    let (env, _src, target) = setup("mirror_fail", "");
    env.edit(
        "profiles/db.toml",
        "token = NULL\"]",
        "token = NULL\", \"UPDATE no_such_table SET x = 1\"]",
    );
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("`after_restore #2`") && out.stderr.contains("no_such_table"),
        "{}",
        out.stderr
    );
    unchanged(&target);

    env.edit(
        "profiles/db.toml",
        ", \"UPDATE no_such_table SET x = 1\"]",
        "]",
    );
    env.edit("profiles/db.toml", "count(*) = 100", "count(*) = 99");
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("`check #1`") && out.stderr.contains("not true"),
        "{}",
        out.stderr
    );
    unchanged(&target);

    // A leftover scratch database from a crashed run does not stop the next.
    pg().psql(
        "postgres",
        &format!("CREATE DATABASE \"{}\"", scratch_name(&target)),
    );
    env.edit("profiles/db.toml", "count(*) = 99", "count(*) = 100");
    env.cellar(&["mirror", "db"]).ok();
    assert_eq!(
        pg().psql(&target, "SELECT count(*) FROM customers").trim(),
        "100"
    );
}

#[test]
fn keep_previous_keeps_the_old_copy_and_db_commands_reach_the_mirror() {
    let (env, _src, target) = setup("mirror_keep", "keep_previous = true");
    env.cellar(&["mirror", "db"]).ok();
    let pg = pg();
    assert_eq!(
        pg.psql(&previous_name(&target), "SELECT v FROM old_content")
            .trim(),
        "previous test data"
    );
    let out = env.cellar(&["db", "list", "db", "--mirror"]);
    out.ok();
    assert!(out.stdout.lines().any(|l| l == target), "{}", out.stdout);
    env.cellar(&["db", "ping", "db", "--mirror"]).ok();
    pg.psql(
        "postgres",
        &format!("DROP DATABASE \"{}\"", previous_name(&target)),
    );
}
