//! The restore engine's promises, attacked: a restore into a database
//! (and a mirror) never half-applies, large objects included, whatever the
//! dump does with transactions, whatever kills cellar, whatever the name.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cellar::restore::database::{previous_name, scratch_name};

use crate::harness::{db_name, fake_bin_dir, pg, TestEnv};

/// A source database with a large object, a comment and a grant to a role
/// of its own (dropped again after the backup, so the restore hits a
/// missing role).
fn source_with_large_object(test: &str, format: &str) -> (TestEnv, String, String) {
    let pg = pg();
    let src = db_name(&format!("{test}_src"));
    let role = format!("reporter_{test}");
    pg.create_db(&src);
    pg.psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role};"),
    );
    pg.psql(
        &src,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, doc oid, note text);
             INSERT INTO t SELECT g, NULL, 'row ' || g FROM generate_series(1, 500) g;
             UPDATE t SET doc = lo_from_bytea(0, convert_to(repeat('large object ', 5000), 'UTF8')) WHERE id = 1;
             CREATE INDEX t_note ON t (note);
             GRANT SELECT ON t TO {role};"
        ),
    );
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        &format!("globals = false\nformat = \"{format}\""),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    pg.psql(&src, &format!("REVOKE ALL ON t FROM {role};"));
    pg.psql("postgres", &format!("DROP ROLE {role};"));
    (env, src, role)
}

/// `t_<test>_src` holding `sql`, a profile "db" for it, and one backup.
pub(crate) fn backed_up(test: &str, sql: &str) -> (TestEnv, String) {
    let src = pg().filled_db(&format!("{test}_src"), sql);
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    (env, src)
}

fn victim(name: &str) {
    let pg = pg();
    pg.create_db(name);
    pg.psql(
        name,
        "CREATE TABLE keepme (v text); INSERT INTO keepme VALUES ('old content');
         SELECT lo_from_bytea(4242, 'old large object');",
    );
}

fn assert_victim_unchanged(name: &str) {
    let pg = pg();
    assert_eq!(pg.psql(name, "SELECT v FROM keepme").trim(), "old content");
    assert_eq!(
        pg.psql(name, "SELECT count(*) FROM pg_tables WHERE tablename = 't'")
            .trim(),
        "0"
    );
    assert_eq!(
        pg.psql(
            name,
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        )
        .trim(),
        "old large object"
    );
    assert_no_scratch(name);
}

fn assert_no_scratch(target: &str) {
    assert!(
        !pg().exists(&scratch_name(target)),
        "scratch database of {target} left behind"
    );
}

fn large_objects(db: &str) -> String {
    pg().psql(
        db,
        "SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1",
    )
}

fn large_object_and_missing_role(format: &str) {
    let pg = pg();
    let test = format!("lo_{format}");
    let (env, src, role) = source_with_large_object(&test, format);
    let dst = db_name(&format!("{test}_victim"));
    victim(&dst);

    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--clean"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("left as it was") && out.stderr.contains(&role),
        "{}",
        out.stderr
    );
    assert_victim_unchanged(&dst);

    // With the role back, the same restore succeeds and equals the source.
    pg.psql("postgres", &format!("CREATE ROLE {role};"));
    pg.psql(&src, &format!("GRANT SELECT ON t TO {role};"));
    env.cellar(&["restore", "db", "--to-database", &dst, "--clean"])
        .ok();
    assert_eq!(pg.dump(&dst), pg.dump(&src));
    assert_eq!(large_objects(&dst), large_objects(&src));
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'keepme'"
        )
        .trim(),
        "0"
    );
    assert_no_scratch(&dst);
    assert!(!pg.exists(&previous_name(&dst)));

    // --clean over a database that already holds (these same) large objects.
    env.cellar(&["restore", "db", "--to-database", &dst, "--clean"])
        .ok();
    assert_eq!(large_objects(&dst), large_objects(&src));
    for db in [&dst, &src] {
        pg.psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    }
    pg.psql("postgres", &format!("DROP ROLE {role}"));
}

#[test]
fn custom_dump_with_large_object_and_missing_role_never_half_applies() {
    large_object_and_missing_role("custom");
}

#[test]
fn plain_dump_with_large_object_and_missing_role_never_half_applies() {
    large_object_and_missing_role("plain");
}

#[test]
fn database_level_properties_come_back() {
    let pg = pg();
    let src = db_name("dbprops_src");
    let dst = db_name("dbprops_dst");
    pg.create_db(&src);
    pg.psql(
        "postgres",
        &format!(
            "COMMENT ON DATABASE {src} IS 'the shop''s data';
             ALTER DATABASE {src} SET work_mem = '7MB';
             REVOKE TEMPORARY ON DATABASE {src} FROM PUBLIC;"
        ),
    );
    pg.psql(&src, "CREATE TABLE a (v int); INSERT INTO a VALUES (1);");
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    let props = |db: &str| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT shobj_description(d.oid, 'pg_database'), s.setconfig, array(SELECT unnest(d.datacl)::text ORDER BY 1), d.encoding
                 FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
                 WHERE datname = '{db}'"
            ),
        )
    };
    let want = props(&src).replace(&src, &dst);
    assert!(
        want.contains("the shop's data") && want.contains("work_mem=7MB"),
        "{want}"
    );
    assert_eq!(props(&dst), want);
    assert_eq!(pg.psql(&dst, "SELECT v FROM a").trim(), "1");
}

/// A bin dir whose pg_restore records its arguments, the others real.
fn recording_bin_dir(env: &TestEnv) -> std::path::PathBuf {
    let log = env.path().join("pg_restore.args");
    fake_bin_dir(
        env,
        &[(
            "pg_restore",
            &format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec {}/pg_restore \"$@\"\n",
                log.display(),
                crate::harness::PG_BIN
            ),
        )],
    )
}

#[test]
fn parallel_pg_restore_is_used_with_the_chosen_jobs() {
    let pg = pg();
    let src = db_name("jobs_src");
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE a AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
         CREATE TABLE b AS SELECT g AS id FROM generate_series(1, 20000) g;
         ALTER TABLE a ADD PRIMARY KEY (id); ALTER TABLE b ADD PRIMARY KEY (id);",
    );
    let env = TestEnv::new();
    let bin = recording_bin_dir(&env);
    env.pg_profile(
        "db",
        &src,
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
        "[restore]\njobs = 3\n",
    );
    env.cellar(&["backup", "db"]).ok();
    let dst = db_name("jobs_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    env.cellar(&[
        "restore",
        "db",
        "--to-database",
        &dst,
        "--clean",
        "--jobs",
        "2",
    ])
    .ok();
    let args = std::fs::read_to_string(env.path().join("pg_restore.args")).unwrap();
    let runs: Vec<&str> = args.lines().filter(|l| l.contains("--dbname")).collect();
    assert_eq!(runs.len(), 2, "{args}");
    assert!(runs[0].contains("--jobs=3"), "{args}");
    assert!(runs[1].contains("--jobs=2"), "{args}");
    assert_eq!(pg.dump(&dst), pg.dump(&src));
}

#[test]
fn target_names_of_60_and_63_bytes() {
    let pg = pg();
    let (env, _src) = backed_up(
        "longname",
        "CREATE TABLE a (v text); INSERT INTO a VALUES ('new');",
    );
    for len in [60, 63] {
        let target = format!("{}_{}", db_name("ln"), "x".repeat(len));
        let target = target[..len].to_string();
        victim(&target);
        env.cellar(&["restore", "db", "--to-database", &target, "--clean"])
            .ok();
        assert_eq!(pg.psql(&target, "SELECT v FROM a").trim(), "new");
        assert_eq!(
            pg.psql(
                &target,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'keepme'"
            )
            .trim(),
            "0"
        );
        assert_no_scratch(&target);
        assert!(!pg.exists(&previous_name(&target)));
        pg.psql("postgres", &format!("DROP DATABASE \"{target}\""));
    }
    // 64 bytes would be truncated by PostgreSQL: refused before any work.
    let out = env.cellar(&["restore", "db", "--to-database", &"y".repeat(64)]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("63"), "{}", out.stderr);
}

/// A database big enough that a restore takes a few seconds.
fn big_source(test: &str) -> (TestEnv, String) {
    let pg = pg();
    let src = db_name(&format!("{test}_src"));
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('z', 200) AS v
           FROM generate_series(1, 400000) g;
         ALTER TABLE big ADD PRIMARY KEY (id);
         CREATE INDEX big_v ON big (v);
         SELECT lo_from_bytea(0, 'a large object');",
    );
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false",
        &format!(
            "[mirror]\ndatabase = \"{}\"\nchecks = [\"SELECT count(*) = 400000 FROM big\"]\n",
            db_name(&format!("{test}_mirror"))
        ),
    );
    env.cellar(&["backup", "db"]).ok();
    (env, src)
}

/// Starts cellar, waits until `ready()` (or 60 s), then sends `signal`;
/// returns the exit code (128 + signal when killed) and how long cellar
/// took to end after the signal.
fn interrupt_when(
    env: &TestEnv,
    args: &[&str],
    ready: impl Fn(u32) -> bool,
    signal: i32,
) -> (i32, Duration) {
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready(child.id()) && started.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, signal) };
    let sent = Instant::now();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    (
        status.code().or(status.signal().map(|s| 128 + s)).unwrap(),
        sent.elapsed(),
    )
}

/// Sessions connected to `db`.
fn sessions(db: &str) -> u32 {
    pg().psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
    )
    .trim()
    .parse()
    .unwrap()
}

/// Whether `pid` holds an unnamed (O_TMPFILE) file open: the spool.
fn spooling(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|l| l.to_string_lossy().contains("/#"))
        })
        .unwrap_or(false)
}

type Moment = (&'static str, Box<dyn Fn(u32) -> bool>);

/// The moments a kill lands at: while spooling, once the scratch database
/// exists, and while pg_restore writes into it.
fn moments(target: &str) -> Vec<Moment> {
    let scratch = scratch_name(target);
    let s2 = scratch.clone();
    vec![
        ("spooling", Box::new(spooling)),
        ("scratch created", Box::new(move |_| pg().exists(&scratch))),
        ("pg_restore running", Box::new(move |_| sessions(&s2) > 0)),
    ]
}

#[test]
fn kill_9_at_several_moments_then_the_same_command_succeeds() {
    let pg = pg();
    let (env, src) = big_source("kill9");
    let dst = db_name("kill9_dst");
    let mirror = db_name("kill9_mirror");
    victim(&dst);
    victim(&mirror);
    let restore = ["restore", "db", "--to-database", &dst, "--clean"];
    let mut saw_leftover = false;
    for args in [&restore[..], &["mirror", "db"][..]] {
        let target = if args[0] == "mirror" { &mirror } else { &dst };
        for (moment, ready) in moments(target) {
            let (code, _) = interrupt_when(&env, args, ready, libc::SIGKILL);
            eprintln!("kill -9 of {} when {moment}: exit {code}", args[0]);
            if code == 0 {
                // Finished before the kill: put the victim back.
                victim(target);
                continue;
            }
            assert_eq!(code, 128 + libc::SIGKILL, "{moment}");
            assert_victim_unchanged_but_scratch(target);
            if pg.exists(&scratch_name(target)) {
                saw_leftover = true;
                let st = env.cellar(&["status", "db"]);
                assert!(
                    st.stdout.contains(&scratch_name(target)),
                    "status does not flag the leftover after a kill when {moment}: {}",
                    st.stdout
                );
                assert_eq!(st.code, 1);
                let ck = env.cellar(&["check", "db"]);
                assert!(ck.stdout.contains(&scratch_name(target)), "{}", ck.stdout);
            }
        }
    }
    assert!(
        saw_leftover,
        "no kill landed while a scratch database existed"
    );
    env.cellar(&restore).ok();
    env.cellar(&["mirror", "db"]).ok();
    for target in [&dst, &mirror] {
        assert_no_scratch(target);
        assert_eq!(pg.psql(target, "SELECT count(*) FROM big").trim(), "400000");
    }
    assert_eq!(pg.dump(&dst), pg.dump(&src));
    let st = env.cellar(&["status", "db"]);
    assert!(!st.stdout.contains("scratch"), "{}", st.stdout);
}

/// The target after a killed run: its old content, whatever the scratch
/// database holds.
fn assert_victim_unchanged_but_scratch(name: &str) {
    let pg = pg();
    assert_eq!(pg.psql(name, "SELECT v FROM keepme").trim(), "old content");
    assert_eq!(
        pg.psql(
            name,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'big'"
        )
        .trim(),
        "0"
    );
}

#[test]
fn sigterm_during_the_spool_and_during_pg_restore_stops_cleanly() {
    let pg = pg();
    let (env, _src) = big_source("term");
    let dst = db_name("term_dst");
    victim(&dst);
    let args = ["restore", "db", "--to-database", &dst, "--clean"];
    let mut stopped = 0;
    for (moment, ready) in moments(&dst) {
        let (code, took) = interrupt_when(&env, &args, ready, libc::SIGTERM);
        eprintln!("SIGTERM when {moment}: exit {code} after {took:?}");
        if code == 0 {
            victim(&dst);
            continue;
        }
        stopped += 1;
        assert_eq!(code, 1, "SIGTERM when {moment}");
        assert!(took < Duration::from_secs(5), "took {took:?} to stop");
        assert_victim_unchanged_but_scratch(&dst);
        assert_no_scratch(&dst);
        assert!(
            pg.psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
                    scratch_name(&dst)
                )
            )
            .trim()
                == "0"
        );
    }
    assert!(stopped > 0, "every run finished before its SIGTERM");
}

#[test]
fn a_spool_folder_without_room_is_a_clear_error() {
    let mnt = tempfile::Builder::new()
        .prefix("cellar-small-")
        .tempdir()
        .unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mnt.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let pg = pg();
    let (env, _src) = big_source("spoolfull");
    env.write(
        "profiles/db.toml",
        &std::fs::read_to_string(env.path().join("profiles/db.toml"))
            .unwrap()
            .replace(
                "[mirror]",
                &format!(
                    "[restore]\nspool_dir = {:?}\n[mirror]",
                    mnt.path().to_str().unwrap()
                ),
            ),
    );
    let dst = db_name("spoolfull_dst");
    victim(&dst);
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--clean"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains(mnt.path().to_str().unwrap())
            && out.stderr.contains("spool_dir")
            && out.stderr.contains("needs"),
        "{}",
        out.stderr
    );
    assert_victim_unchanged_but_scratch(&dst);
    assert_no_scratch(&dst);
    assert!(!pg.exists(&scratch_name(&dst)));
}

#[test]
fn psql_meta_commands_in_a_plain_dump_do_not_run() {
    let pg = pg();
    let env = TestEnv::new();
    // A pg_dump that writes SQL with a shell escape in it, as a forged or
    // hostile dump would.
    let marker = env.path().join("pwned");
    let bin = fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!(
                "#!/bin/sh\ncat <<'EOF'\n\\restrict abc\nCREATE TABLE t (v int);\n\\! touch {m}\nINSERT INTO t VALUES (1);\n\\unrestrict abc\n-- PostgreSQL database dump complete\nEOF\n",
                m = marker.display()
            ),
        )],
    );
    let src = db_name("metacmd_src");
    pg.create_db(&src);
    pg.psql(&src, "CREATE TABLE t (v int);");
    env.pg_profile(
        "db",
        &src,
        &format!(
            "globals = false\nformat = \"plain\"\npg_bin_dir = {:?}",
            bin.to_str().unwrap()
        ),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    let dst = db_name("metacmd_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("restricted"), "{}", out.stderr);
    assert!(!marker.exists(), "the shell command ran");
    assert!(!pg.exists(&dst));
    assert_no_scratch(&dst);
}

/// Findings of a hostile review, each a way the promise broke once.
#[test]
fn plain_dump_odd_shapes_restore_exactly_and_create_database_is_refused() {
    let pg = pg();
    let src = db_name("odd_plain_src");
    pg.create_db(&src);
    // A COPY header over two lines (a newline in the table name) with a
    // data line that starts like pg_dump's \restrict, and a function body
    // with such a line too.
    pg.psql(
        &src,
        "CREATE TABLE \"odd\nname\" (v text);
         INSERT INTO \"odd\nname\" VALUES (E'\\\\restrict foo'), ('normal'), (E'\\\\unrestrict bar');
         CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$SELECT '
\\restrict inside a body'$$;",
    );
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false\nformat = \"plain\"", "");
    env.cellar(&["backup", "db"]).ok();
    let dst = db_name("odd_plain_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(pg.dump(&dst), pg.dump(&src));
    assert_eq!(
        pg.psql(&dst, "SELECT count(*) FROM \"odd\nname\"").trim(),
        "3"
    );

    // A plain dump that creates and drops databases never reaches them.
    let other = db_name("odd_plain_other");
    pg.create_db(&other);
    pg.psql(
        &other,
        "CREATE TABLE precious (v int); INSERT INTO precious VALUES (1);",
    );
    let bin = fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!(
                "#!/bin/sh\ncat <<'EOF'\nDROP DATABASE {other};\nCREATE DATABASE {other};\n-- PostgreSQL database dump complete\nEOF\n"
            ),
        )],
    );
    env.edit(
        "profiles/db.toml",
        "globals = false",
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
    );
    env.cellar(&["backup", "db"]).ok();
    let dst2 = db_name("odd_plain_dst2");
    let out = env.cellar(&["restore", "db", "--to-database", &dst2]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("creates or drops databases"),
        "{}",
        out.stderr
    );
    assert_eq!(pg.psql(&other, "SELECT v FROM precious").trim(), "1");
    assert_no_scratch(&dst2);
}

#[test]
fn database_comment_template_flag_and_read_only_default_come_back() {
    let pg = pg();
    let src = db_name("props2_src");
    pg.create_db(&src);
    pg.psql(&src, "CREATE TABLE a (v int); INSERT INTO a VALUES (1);");
    pg.psql(
        "postgres",
        &format!(
            "COMMENT ON DATABASE {src} IS E'Step 1;\\nStep 2';
             ALTER DATABASE {src} SET default_transaction_read_only = on;
             ALTER DATABASE {src} IS_TEMPLATE true;"
        ),
    );
    let mirror = db_name("props2_mirror");
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false",
        &format!("[mirror]\ndatabase = \"{mirror}\"\nafter_restore = [\"UPDATE a SET v = 2\"]\nchecks = [\"SELECT v = 2 FROM a\"]\n"),
    );
    env.cellar(&["backup", "db"]).ok();
    // The mirror's statements run before the read-only default applies.
    env.cellar(&["mirror", "db"]).ok();
    env.cellar(&["mirror", "db"]).ok();
    assert_no_scratch(&mirror);
    let dst = db_name("props2_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    let props = |db: &str| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT shobj_description(d.oid, 'pg_database'), s.setconfig, d.datistemplate
                 FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
                 WHERE datname = '{db}'"
            ),
        )
    };
    // Everything but the template flag: a restored copy is never a template.
    assert_eq!(props(&dst), props(&src).replace("|t\n", "|f\n"));
    // A template target is refused (exit 2), as are PostgreSQL's own.
    for target in [src.as_str(), "postgres", "template1"] {
        let out = env.cellar(&["restore", "db", "--to-database", target, "--clean"]);
        assert_eq!(out.code, 2, "{target}: {}", out.all());
    }
    pg.psql(
        "postgres",
        &format!("ALTER DATABASE {src} IS_TEMPLATE false"),
    );
    for db in [&src, &dst, &mirror] {
        pg.psql("postgres", &format!("DROP DATABASE {db}"));
    }
}

#[test]
fn kept_copies_are_never_dropped_silently_and_large_objects_count_as_content() {
    let pg = pg();
    let (env, _src) = backed_up("kept", "CREATE TABLE a (v int); INSERT INTO a VALUES (1);");

    // A target holding only a large object is not empty.
    let dst = db_name("kept_dst");
    pg.create_db(&dst);
    pg.psql(&dst, "SELECT lo_from_bytea(0, 'only this')");
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);

    env.cellar(&[
        "restore",
        "db",
        "--to-database",
        &dst,
        "--clean",
        "--keep-previous",
    ])
    .ok();
    let previous = previous_name(&dst);
    assert_eq!(
        pg.psql(&previous, "SELECT count(*) FROM pg_largeobject_metadata")
            .trim(),
        "1"
    );
    // The next restore refuses to drop that kept copy.
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--clean"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains(&previous), "{}", out.stderr);
    assert!(pg.exists(&previous));
    pg.psql("postgres", &format!("DROP DATABASE {previous}"));
    env.cellar(&["restore", "db", "--to-database", &dst, "--clean"])
        .ok();
}

#[test]
fn a_restore_running_elsewhere_into_the_same_target_is_refused() {
    let pg = pg();
    let (env, _src) = backed_up("busy", "CREATE TABLE a (v int);");
    let dst = db_name("busy_dst");
    // Another cellar (another config dir or host) holds the target's lock.
    let mut holder = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args(["-U", "postgres", "-d", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, Write};
        let stdin = holder.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "SELECT pg_advisory_lock(hashtextextended('{}', 0)); SELECT 'held';",
            scratch_name(&dst)
        )
        .unwrap();
        stdin.flush().unwrap();
        let mut out = std::io::BufReader::new(holder.stdout.as_mut().unwrap());
        let mut line = String::new();
        while !line.contains("held") {
            line.clear();
            out.read_line(&mut line).unwrap();
        }
    }
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("another cellar"), "{}", out.stderr);
    assert!(!pg.exists(&dst));
    drop(holder.stdin.take());
    holder.wait().unwrap();
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
}

#[test]
fn plain_sql_never_runs_before_the_whole_payload_checked_out() {
    let pg = pg();
    let env = TestEnv::new();
    // SQL with a side effect outside the scratch database (a server-side
    // file), then a damaged MDC at the very end of the payload.
    let open = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = open.path().join("ran");
    let bin = fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!(
                "#!/bin/sh\ncat <<'EOF'\nCOPY (SELECT 1) TO '{}';\n-- PostgreSQL database dump complete\nEOF\n",
                marker.display()
            ),
        )],
    );
    let src = db_name("mdc_src");
    pg.create_db(&src);
    env.pg_profile(
        "db",
        &src,
        &format!(
            "globals = false\nformat = \"plain\"\npg_bin_dir = {:?}",
            bin.to_str().unwrap()
        ),
        "",
    );
    env.at("2026-01-01T00:00:00Z", &["backup", "db"]).ok();
    // The control: an intact backup's SQL does run (in the scratch database).
    let dst0 = db_name("mdc_dst0");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst0}"));
    env.cellar(&["restore", "db", "--to-database", &dst0]).ok();
    assert!(marker.exists(), "the control restore did not run the SQL");
    std::fs::remove_file(&marker).unwrap();
    pg.psql("postgres", &format!("DROP DATABASE {dst0}"));
    let payload = &env.payloads("db")[0];
    let mut bytes = std::fs::read(payload).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(payload, bytes).unwrap();
    let dst = db_name("mdc_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("damaged"), "{}", out.stderr);
    assert!(!marker.exists(), "SQL ran before the payload was checked");
    assert!(!pg.exists(&dst));
    assert_no_scratch(&dst);
}

#[test]
fn a_target_holding_only_servers_settings_or_publications_is_not_empty() {
    let pg = pg();
    let (env, _src) = backed_up(
        "notempty",
        "CREATE TABLE a (v int); INSERT INTO a VALUES (1);",
    );
    let cases = [
        "CREATE FOREIGN DATA WRAPPER dummy; CREATE SERVER billing FOREIGN DATA WRAPPER dummy; \
         CREATE USER MAPPING FOR CURRENT_USER SERVER billing OPTIONS (password 'x')",
        "CREATE PUBLICATION everything",
        "CREATE COLLATION my_c (locale = 'C')",
        "CREATE TEXT SEARCH CONFIGURATION my_ts (COPY = simple)",
        "ALTER DATABASE {db} SET work_mem = '7MB'",
        "COMMENT ON DATABASE {db} IS 'kept'",
    ];
    for (i, sql) in cases.iter().enumerate() {
        let dst = db_name(&format!("notempty{i}"));
        pg.create_db(&dst);
        pg.psql(&dst, &sql.replace("{db}", &dst));
        for extra in [&[][..], &["--table", "a"][..]] {
            let mut args = vec!["restore", "db", "--to-database", dst.as_str()];
            args.extend_from_slice(extra);
            let out = env.cellar(&args);
            assert_eq!(out.code, 2, "{sql} {extra:?}: {}", out.all());
            assert!(out.stderr.contains("not empty"), "{}", out.stderr);
        }
        pg.psql("postgres", &format!("DROP DATABASE {dst}"));
    }
    // A database fresh from CREATE DATABASE is empty: the restore goes in.
    let dst = db_name("notempty_fresh");
    pg.create_db(&dst);
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(pg.psql(&dst, "SELECT v FROM a").trim(), "1");
    pg.psql("postgres", &format!("DROP DATABASE {dst}"));
}

/// SIGTERM while the mirror's own `after_restore` statement runs: the
/// statement is stopped and the mirror ends (exit 1) without its swap,
/// instead of finishing the statement, the checks and the swap (exit 0).
#[test]
fn sigterm_during_after_restore_stops_the_mirror_before_its_swap() {
    let pg = pg();
    let src = pg.filled_db(
        "term_after_src",
        "CREATE TABLE a (v int); INSERT INTO a VALUES (1);",
    );
    let mirror = db_name("term_after_mirror");
    victim(&mirror);
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false",
        &format!("[mirror]\ndatabase = \"{mirror}\"\nafter_restore = [\"SELECT pg_sleep(30)\"]\n"),
    );
    env.cellar(&["backup", "db"]).ok();
    let sleeping = || {
        pg.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep%'",
                scratch_name(&mirror)
            ),
        )
        .trim()
            != "0"
    };
    let (code, took) = interrupt_when(&env, &["mirror", "db"], |_| sleeping(), libc::SIGTERM);
    assert_eq!(code, 1, "the mirror went on after SIGTERM");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert_victim_unchanged(&mirror);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.exists(&scratch_name(&mirror)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_no_scratch(&mirror);
    for db in [&src, &mirror] {
        pg.psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    }
}

/// `--no-owner` is for a server without the source's roles: a setting of
/// a role in the database does not fail the restore there.
#[test]
fn no_owner_leaves_out_the_settings_of_roles_the_server_lacks() {
    let pg = pg();
    let role = db_name("noowner_role");
    let src = pg.filled_db(
        "noowner_src",
        "CREATE TABLE a (v int); INSERT INTO a VALUES (1);",
    );
    pg.psql("postgres", &format!("CREATE ROLE {role}"));
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {role} IN DATABASE {src} SET work_mem = '2MB'; ALTER DATABASE {src} SET work_mem = '3MB'"),
    );
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    // The role is gone, as on another server.
    pg.psql("postgres", &format!("DROP DATABASE {src} WITH (FORCE)"));
    pg.psql("postgres", &format!("DROP ROLE {role}"));
    let dst = db_name("noowner_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--no-owner"]);
    out.ok();
    assert!(
        out.stderr
            .contains("setting(s) of roles in the database were not applied"),
        "{}",
        out.stderr
    );
    assert_eq!(pg.psql(&dst, "SELECT v FROM a").trim(), "1");
    // The database's own setting is kept.
    let settings = pg.psql(
        "postgres",
        &format!("SELECT s.setrole, s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{dst}'"),
    );
    assert_eq!(settings.trim(), "0|{work_mem=3MB}");
    pg.psql("postgres", &format!("DROP DATABASE {dst}"));
}
