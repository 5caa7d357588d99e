//! PostgreSQL backups: exact round trips, the restore's refusals, and
//! pg_dump failing.

use crate::harness::{db_name, pg, TestEnv, PW_PASSWORD, PW_USER, RICH_SCHEMA};

fn round_trip(test: &str, source_extra: &str, rest: &str) {
    let pg = pg();
    let src = db_name(test);
    let dst = format!("{src}_restored");
    pg.create_db(&src);
    pg.psql(&src, RICH_SCHEMA);
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let env = TestEnv::new();
    env.pg_profile("db", &src, source_extra, rest);
    let out = env.cellar(&["backup", "db"]);
    out.ok();
    assert!(out.stdout.contains("backup 2"), "{}", out.stdout);
    env.cellar(&["verify", "db"]).ok();
    // The target does not exist: restore creates it.
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(
        pg.dump(&src),
        pg.dump(&dst),
        "schema and data differ after the round trip"
    );
    assert_eq!(
        pg.psql(&dst, "SELECT last_value FROM invoice_seq").trim(),
        "1007"
    );
    pg.psql("postgres", &format!("DROP DATABASE {dst} WITH (FORCE)"));
    pg.psql("postgres", &format!("DROP DATABASE {src} WITH (FORCE)"));
}

#[test]
fn custom_format_round_trip_is_exact() {
    round_trip("custom_rt", "", "");
}

#[test]
fn plain_format_round_trip_is_exact() {
    round_trip("plain_rt", "format = \"plain\"", "");
}

#[test]
fn zstd_round_trip_is_exact_and_named_zst() {
    round_trip(
        "zstd_rt",
        "",
        "[compression]\nalgorithm = \"zstd\"\nlevel = 1",
    );
    let pg = pg();
    let src = db_name("zstd_names");
    pg.create_db(&src);
    pg.psql(&src, "CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
    let env = TestEnv::new();
    env.pg_profile("z", &src, "", "[compression]\nalgorithm = \"zstd\"");
    env.cellar(&["backup", "z"]).ok();
    let names = env.payload_names("z");
    assert!(
        names.iter().any(|n| n.ends_with(".pgdump.zst.pgp")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".globals.sql.zst.pgp")),
        "{names:?}"
    );
    let manifest = std::fs::read_to_string(&env.manifests("z")[0]).unwrap();
    assert!(manifest.contains("\"algorithm\": \"zstd\""), "{manifest}");
    env.cellar(&["verify", "z"]).ok();
}

#[test]
fn several_databases_get_one_payload_each() {
    let pg = pg();
    let a = db_name("multi_a");
    let b = db_name("multi_b");
    for (db, n) in [(&a, 1), (&b, 2)] {
        pg.create_db(db);
        pg.psql(
            db,
            &format!("CREATE TABLE t (x int); INSERT INTO t VALUES ({n});"),
        );
    }
    let env = TestEnv::new();
    env.pg_profile_with(
        "m",
        &format!("databases = [\"{a}\", \"{b}\"]\nglobals = false"),
        "",
    );
    env.cellar(&["backup", "m"]).ok();
    let names = env.payload_names("m");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names
        .iter()
        .any(|n| n.ends_with(&format!(".{b}.pgdump.xz.pgp"))));
    let out = env.cellar(&["restore", "m", "--to-database", "t_multi_x"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--database"), "{}", out.stderr);
    pg.psql("postgres", "DROP DATABASE IF EXISTS t_multi_x");
    env.cellar(&[
        "restore",
        "m",
        "--database",
        &b,
        "--to-database",
        "t_multi_x",
    ])
    .ok();
    assert_eq!(pg.psql("t_multi_x", "SELECT x FROM t").trim(), "2");
    pg.psql("postgres", "DROP DATABASE t_multi_x WITH (FORCE)");
}

#[test]
fn non_empty_target_is_refused_without_clean_and_replaced_with_it() {
    let pg = pg();
    let src = db_name("clean_src");
    let dst = db_name("clean_dst");
    pg.create_db(&src);
    pg.psql(&src, "CREATE TABLE t (x int); INSERT INTO t VALUES (42);");
    pg.create_db(&dst);
    pg.psql(
        &dst,
        "CREATE TABLE other (y int); INSERT INTO other VALUES (7);",
    );
    let env = TestEnv::new();
    env.pg_profile("db", &src, "", "");
    env.cellar(&["backup", "db"]).ok();
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("is not empty") && out.stderr.contains("--clean"),
        "{}",
        out.stderr
    );
    assert_eq!(pg.psql(&dst, "SELECT y FROM other").trim(), "7");
    env.cellar(&["restore", "db", "--to-database", &dst, "--clean"])
        .ok();
    assert_eq!(pg.psql(&dst, "SELECT x FROM t").trim(), "42");
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'other'"
        )
        .trim(),
        "0"
    );
}

#[test]
fn missing_database_fails_with_pg_dump_stderr_and_leaves_nothing() {
    let env = TestEnv::new();
    env.pg_profile("db", "t_no_such_database", "", "");
    let out = env.cellar(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("pg_dump failed") && out.stderr.contains("does not exist"),
        "{}",
        out.stderr
    );
    assert!(
        env.store_entries("db").is_empty(),
        "{:?}",
        env.store_entries("db")
    );
    let list = env.cellar(&["list", "db"]);
    list.ok();
    assert!(list.stdout.contains("no complete backups"));
}

#[test]
fn password_reaches_pg_dump_through_a_passfile_and_a_wrong_one_fails() {
    let pg = pg();
    let src = db_name("password");
    pg.create_db(&src);
    pg.psql(&src, "CREATE TABLE t (x int); INSERT INTO t VALUES (5);");
    let env = TestEnv::new();
    env.write("secrets/db.password", &format!("{PW_PASSWORD}\n"));
    std::fs::set_permissions(
        env.path().join("secrets/db.password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let profile = |name: &str, password: &str| {
        env.pg_profile(
            name,
            &src,
            &format!("user = \"{PW_USER}\"\npassword = \"{password}\""),
            "",
        )
    };
    profile("good", "file:secrets/db.password");
    let out = env.cellar(&["backup", "good", "-v"]);
    out.ok();
    assert!(!out.all().contains(PW_PASSWORD));
    env.cellar(&["db", "ping", "good"]).ok();

    profile("bad", "wrong");
    let out = env.cellar(&["backup", "bad"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    assert!(env.manifests("bad").is_empty());
    assert!(!out.all().contains("wrong\""));
}

#[test]
fn failing_pg_dump_mid_stream_leaves_no_manifest_and_no_payload() {
    let pg = pg();
    let src = db_name("dump_dies");
    pg.create_db(&src);
    let env = TestEnv::new();
    // A pg_dump that writes part of a dump and then fails, like one whose
    // connection dropped; psql and pg_dumpall are the real ones.
    let bin = env.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("pg_dump"),
        "#!/bin/sh\nhead -c 3000000 /dev/urandom\necho 'pg_dump: error: connection to server lost' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("pg_dump"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for tool in ["psql", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{tool}"), bin.join(tool)).unwrap();
    }
    env.pg_profile("db", &src, "pg_bin_dir = \"fakebin\"", "");
    let out = env.cellar(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("connection to server lost"),
        "{}",
        out.stderr
    );
    assert!(
        env.store_entries("db").is_empty(),
        "{:?}",
        env.store_entries("db")
    );
}

#[test]
fn all_databases_and_globals_are_dumped() {
    // A cluster of its own: other tests create and drop databases on the
    // shared one all the time.
    let own = crate::harness::private_pg();
    own.psql("postgres", "CREATE DATABASE shop");
    own.psql("postgres", "CREATE DATABASE cellar_scratch_0123456789ab");
    own.psql("shop", "CREATE TABLE t (v int); INSERT INTO t VALUES (1);");
    own.psql("postgres", "CREATE DATABASE gone;");
    // Names a list read line by line loses or merges with `shop`.
    own.psql("postgres", "CREATE DATABASE \"line\nbreak\"");
    own.psql("postgres", "CREATE DATABASE \"shop\r\"");
    let env = TestEnv::new();
    // A pg_dump that finds `gone` dropped just before it dumps it, as a
    // database dropped between the listing and its dump would be.
    let bin = crate::harness::fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!(
                "#!/bin/sh\ncase \"$*\" in *\"dbname='gone'\"*) psql -X -q -h 127.0.0.1 -p {} -U postgres -d postgres -c 'DROP DATABASE gone WITH (FORCE)' ;; esac\nexec {}/pg_dump \"$@\"\n",
                own.port,
                crate::harness::PG_BIN
            ),
        )],
    );
    env.pg_profile_with(
        "every",
        &format!("all = true\npg_bin_dir = {:?}", bin.to_str().unwrap()),
        "",
    );
    env.move_to("every", &own);
    env.cellar(&["backup", "every"]).ok();
    let names = env.payload_names("every");
    assert!(
        names.iter().any(|n| n.ends_with(".postgres.pgdump.xz.pgp"))
            && names.iter().any(|n| n.ends_with(".shop.pgdump.xz.pgp")),
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.ends_with(".pgdump.xz.pgp"))
            .count(),
        4,
        "postgres, shop, line\\nbreak, shop\\r: {names:?}"
    );
    // cellar's own scratch databases are never backed up; the dropped
    // one is recorded in the manifest.
    assert!(
        !names
            .iter()
            .any(|n| n.contains("cellar_scratch") || n.contains(".gone.")),
        "{names:?}"
    );
    let manifest = std::fs::read_to_string(&env.manifests("every")[0]).unwrap();
    assert!(
        manifest.contains("gone: dropped during the backup"),
        "{manifest}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".globals.sql.xz.pgp")),
        "{names:?}"
    );
    env.cellar(&["verify", "every"]).ok();
    // pg_restore reads no database-level properties of a name with a line
    // break; the database restores without them.
    let out = env.cellar(&[
        "restore",
        "every",
        "--database",
        "line\nbreak",
        "--to-database",
        "from_line_break",
    ]);
    out.ok();
    assert!(out.stderr.contains("holds a line break"), "{}", out.stderr);
    let file = env.path().join("pg.dump");
    let out = env.cellar(&[
        "restore",
        "every",
        "--database",
        "postgres",
        "--to-file",
        file.to_str().unwrap(),
    ]);
    out.ok();
    let list = std::process::Command::new("pg_restore")
        .arg("-l")
        .arg(env.path().join("pg.dump"))
        .output()
        .unwrap();
    assert!(list.status.success());
    let db_list = env.cellar(&["db", "list", "every"]);
    db_list.ok();
    assert!(db_list.stdout.lines().any(|l| l == "postgres"));
}
