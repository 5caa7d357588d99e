//! What a hostile review of the restore engine, the files restore and the
//! id scheme found (2026-12-07), each as the attack that found it.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cellar::restore::database::{marker_path, previous_name, scratch_name};

use crate::harness::{db_name, fake_bin_dir, pg, TestEnv, PG_BIN};

/// Writes at `path` the marker a restore of profile `db` into `dst` on
/// `server` leaves when it is killed (its pid is gone).
fn killed_run_marker(path: &std::path::Path, server: &str, dst: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        serde_json::json!({
            "profile": "db",
            "server": server,
            "target": dst,
            "scratch": scratch_name(dst),
            "pid": 999_999_999u32,
            "started_at": "2026-12-01T00:00:00Z",
        })
        .to_string(),
    )
    .unwrap();
}

/// `--globals` creates the roles a backup needs and leaves every role
/// that exists exactly as it is: a password rotated since the backup, an
/// account locked after a compromise, rights granted or taken away.
#[test]
fn globals_never_change_a_role_that_exists() {
    let own = crate::harness::private_pg();
    own.psql(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'old secret'; CREATE ROLE reader NOLOGIN;
         CREATE ROLE owner_new NOLOGIN; GRANT reader TO owner_new;",
    );
    own.psql("postgres", "CREATE DATABASE shop");
    own.psql(
        "shop",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (7); ALTER TABLE t OWNER TO owner_new;",
    );
    let env = TestEnv::new();
    env.pg_profile("g", "shop", "globals = true", "");
    env.move_to("g", &own);
    env.cellar(&["backup", "g"]).ok();
    // Since the backup: app's password rotated and the account locked,
    // reader made a superuser, owner_new gone.
    own.psql(
        "postgres",
        "ALTER ROLE app PASSWORD 'new secret' NOLOGIN CREATEDB; ALTER ROLE reader SUPERUSER;",
    );
    own.psql("postgres", "DROP DATABASE shop");
    own.psql("postgres", "DROP ROLE owner_new");
    let roles = || {
        own.psql(
            "postgres",
            "SELECT rolname, rolcanlogin, rolcreatedb, rolsuper, md5(coalesce(rolpassword, ''))
               FROM pg_authid WHERE rolname IN ('app', 'reader', 'postgres') ORDER BY 1",
        )
    };
    let before = roles();
    let out = env.cellar(&["restore", "g", "--to-database", "shop", "--globals"]);
    out.ok();
    assert_eq!(roles(), before, "an existing role was changed");
    assert!(
        out.stderr
            .contains("role app exists on the server and was left as it is"),
        "{}",
        out.stderr
    );
    // The missing role came back, with its membership, and owns its table.
    assert_eq!(
        own.psql(
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 't'"
        )
        .trim(),
        "owner_new"
    );
    assert_eq!(
        own.psql(
            "postgres",
            "SELECT pg_has_role('owner_new', 'reader', 'MEMBER')"
        )
        .trim(),
        "t"
    );
}

/// A database that subscribes to a publication brings its subscription
/// along in the dump; a database holding one cannot be dropped until the
/// subscription is. Neither the scratch database of a failed mirror nor the
/// previous copy after a swap may be stranded by it.
#[test]
fn a_subscription_in_the_dump_strands_no_database() {
    let pg = pg();
    let src = pg.filled_db(
        "subscribed_src",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1);
         CREATE SUBSCRIPTION sub_review CONNECTION 'host=127.0.0.1 port=1 dbname=x'
           PUBLICATION p WITH (connect = false, slot_name = 'sub_review', enabled = false);",
    );
    let target = db_name("subscribed_mirror");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {target}"));
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false",
        &format!("[mirror]\ndatabase = \"{target}\"\nchecks = [\"SELECT false\"]\n"),
    );
    env.cellar(&["backup", "db"]).ok();
    // A failing check: the scratch database goes, subscription and all.
    let out = env.cellar(&["mirror", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!pg.exists(&scratch_name(&target)), "{}", out.all());
    // Two restores in a row: the second drops the first's copy.
    let dst = db_name("subscribed_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--clean"]);
    out.ok();
    assert!(
        !out.stderr.contains("could not be dropped"),
        "{}",
        out.all()
    );
    assert!(!pg.exists(&previous_name(&dst)));
    assert!(!pg.exists(&scratch_name(&dst)));
    assert_eq!(
        pg.psql(&dst, "SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = current_database()")
            .trim(),
        "1"
    );
    pg.psql(
        &dst,
        "ALTER SUBSCRIPTION sub_review SET (slot_name = NONE); DROP SUBSCRIPTION sub_review;",
    );
    pg.psql(
        &src,
        "ALTER SUBSCRIPTION sub_review SET (slot_name = NONE); DROP SUBSCRIPTION sub_review;",
    );
}

/// A profile "db" for `src` whose pg_restore runs `shell` (as a shell
/// command) before it restores into a database, and one backup.
fn backed_up_with_pg_restore_doing(env: &TestEnv, src: &str, shell: &str) {
    let wrapper = format!(
        "#!/bin/sh\ncase \"$*\" in *--dbname*) {shell} ;; esac\nexec {PG_BIN}/pg_restore \"$@\"\n"
    );
    let bin = fake_bin_dir(env, &[("pg_restore", &wrapper)]);
    env.pg_profile(
        "db",
        src,
        &format!("globals = false\npg_bin_dir = {:?}", bin.to_str().unwrap()),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
}

/// Without `--clean`, a target that someone creates and fills while the
/// restore runs is not swapped out (and dropped) at the end.
#[test]
fn a_target_made_during_the_restore_is_not_replaced_without_clean() {
    let pg = pg();
    let (env, dst) = (TestEnv::new(), db_name("appeared_dst"));
    let src = pg.filled_db(
        "appeared_src",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1);",
    );
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    // pg_restore into the scratch database first makes the target, with
    // a table in it, as another user at work would.
    backed_up_with_pg_restore_doing(
        &env,
        &src,
        &format!(
            "{PG_BIN}/psql -X -q -h 127.0.0.1 -p {port} -U postgres -d postgres -c 'CREATE DATABASE {dst}' && {PG_BIN}/psql -X -q -h 127.0.0.1 -p {port} -U postgres -d {dst} -c 'CREATE TABLE precious (v text); INSERT INTO precious VALUES ($$x$$)'",
            port = pg.port
        ),
    );
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("--clean"), "{}", out.stderr);
    assert_eq!(pg.psql(&dst, "SELECT v FROM precious").trim(), "x");
    assert!(!pg.exists(&scratch_name(&dst)));
    assert!(!pg.exists(&previous_name(&dst)));
}

/// A run killed right after its swap leaves the target's old content
/// under the previous name: `check` and `status` say so (instead of
/// forgetting it), and forget it once it is dropped.
#[test]
fn a_swap_cut_short_leaves_a_copy_that_check_and_status_name() {
    let pg = pg();
    let src = pg.filled_db("cutswap_src", "CREATE TABLE t (v int);");
    let dst = db_name("cutswap_dst");
    let previous = previous_name(&dst);
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {previous}"));
    pg.psql("postgres", &format!("CREATE DATABASE {previous}"));
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    // The marker a killed restore leaves (its pid is gone).
    let marker = marker_path(
        env.path(),
        &format!("postgresql://postgres@127.0.0.1:{}", pg.port),
        &dst,
    );
    killed_run_marker(
        &marker,
        &format!("postgresql://postgres@127.0.0.1:{}", pg.port),
        &dst,
    );
    let out = env.cellar(&["check", "db"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.all().contains(&previous), "{}", out.all());
    assert!(marker.exists());
    let out = env.cellar(&["status", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains(&previous), "{}", out.all());
    pg.psql("postgres", &format!("DROP DATABASE {previous}"));
    let out = env.cellar(&["check", "db"]);
    assert!(!out.all().contains(&previous), "{}", out.all());
    assert!(!marker.exists());
}

/// The folder a files restore writes into can be entered by no one else
/// until every byte is verified: a payload swapped in the store may hold a
/// setuid file or a device. After a failed restore nothing is left, not
/// the read-only folders, not the parents it made.
#[test]
fn a_files_restore_is_private_until_verified_and_leaves_nothing_on_failure() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("big.bin", &crate::harness::noise(40 << 20, 7))]);
    std::fs::create_dir(data.join("ro")).unwrap();
    std::fs::write(data.join("ro/f"), b"x").unwrap();
    std::fs::set_permissions(data.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    std::fs::set_permissions(data.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();

    // While the restore runs, the hidden folder is private.
    let parent = env.path().join("out");
    std::fs::create_dir(&parent).unwrap();
    let mut child = env
        .cmd()
        .args(["restore", "f", "--to-dir"])
        .arg(parent.join("dest"))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut seen = 0;
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
        for e in std::fs::read_dir(&parent).unwrap().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".cellar-incoming-")
            {
                if let Ok(md) = std::fs::symlink_metadata(e.path()) {
                    assert_eq!(md.permissions().mode() & 0o077, 0, "others can enter it");
                    seen += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(child.wait().unwrap().success());
    assert!(seen > 0, "the restore was over before it could be watched");
    let mode = std::fs::metadata(parent.join("dest"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o700, 0o700);

    // A damaged payload, read-only folders in it, parents to make.
    crate::harness::flip_byte(&env.payloads("f")[0]);
    let dest = env.path().join("made/a/b/dest");
    let out = env.cellar(&["restore", "f", "--to-dir", dest.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!env.path().join("made").exists(), "{}", out.all());
}

/// Objects anyone can write into the store, named like the coming
/// seconds' backups, cannot move a new backup's id (its date) ahead.
#[test]
fn objects_named_like_coming_backups_do_not_move_an_id_ahead() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("a.txt", b"a")]);
    env.files_profile("f", &[&data], "");
    let store = env.store("f");
    std::fs::create_dir_all(&store).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").unwrap();
    for s in 0..120 {
        let id = (start + chrono::Duration::seconds(s)).format("%Y%m%dT%H%M%SZ");
        std::fs::write(store.join(format!("{id}.junk")), b"").unwrap();
    }
    let out = env.at("2026-12-01T00:00:00Z", &["backup", "f"]);
    out.ok();
    let ids: Vec<String> = env
        .manifests("f")
        .iter()
        .map(|m| {
            m.file_name().unwrap().to_string_lossy()[..]
                .split('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].starts_with("20261201T000000Z-"), "{ids:?}");
    assert_eq!(ids[0].len(), "20261201T000000Z-abcd".len(), "{ids:?}");
}

/// Hard links come back as hard links (one content, several names), and
/// `verify` agrees with the restore.
#[test]
fn hard_links_come_back_as_hard_links() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new();
    let data = env.data_dir(&[("one", b"shared content")]);
    std::fs::create_dir(data.join("sub")).unwrap();
    std::fs::hard_link(data.join("one"), data.join("two")).unwrap();
    std::fs::hard_link(data.join("one"), data.join("sub/three")).unwrap();
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    env.cellar(&["verify", "f"]).ok();
    let dest = env.path().join("back");
    env.cellar(&["restore", "f", "--to-dir", dest.to_str().unwrap()])
        .ok();
    let inside = dest.join(data.strip_prefix("/").unwrap());
    let one = std::fs::metadata(inside.join("one")).unwrap();
    assert_eq!(one.nlink(), 3);
    for other in ["two", "sub/three"] {
        assert_eq!(
            std::fs::metadata(inside.join(other)).unwrap().ino(),
            one.ino()
        );
    }
    assert_eq!(
        std::fs::read(inside.join("sub/three")).unwrap(),
        b"shared content"
    );
}

/// pg_restore dies with cellar, even when cellar is killed with `kill -9`:
/// it must not keep the decrypted spool open and go on loading a scratch
/// database that no one will swap in.
#[test]
fn pg_restore_dies_with_a_killed_cellar() {
    let pg = pg();
    let src = db_name("orphan_src");
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('z', 200) AS v
           FROM generate_series(1, 300000) g;
         CREATE INDEX big_v ON big (v);",
    );
    let env = TestEnv::new();
    let pidfile = env.path().join("pg_restore.pid");
    backed_up_with_pg_restore_doing(&env, &src, &format!("echo $$ > '{}'", pidfile.display()));
    let dst = db_name("orphan_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let mut child = env
        .cmd()
        .args(["restore", "db", "--to-database", &dst])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended first"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // Gone (or a zombie waiting for init to reap it) at once: the kernel
    // kills it as cellar ends.
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    let killed = Instant::now();
    while !gone() && killed.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(), "pg_restore {pid} outlived cellar");
    // The next restore drops the leftover and succeeds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.cellar(&["restore", "db", "--to-database", &dst]);
        if out.code == 0 || Instant::now() > deadline {
            out.ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!pg.exists(&scratch_name(&dst)));
}

/// A database owner who puts a `count(*)` of their own ahead of
/// `pg_catalog` cannot have cellar's (superuser) session run it: not when
/// cellar asks whether a restore target is empty, not during a backup.
#[test]
fn a_database_owner_cannot_run_code_in_cellars_session() {
    let pg = pg();
    let evil_db = db_name("evil_owned");
    pg.psql("postgres", "DROP ROLE IF EXISTS evil_review");
    pg.psql("postgres", "CREATE ROLE evil_review LOGIN");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {evil_db}"));
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE {evil_db} OWNER evil_review"),
    );
    pg.psql(
        &evil_db,
        &format!(
            "SET ROLE evil_review;
             CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);
             CREATE FUNCTION public.f(s int8) RETURNS int8 LANGUAGE plpgsql AS $$
               BEGIN BEGIN EXECUTE 'ALTER ROLE evil_review SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
               RETURN 0; END $$;
             CREATE AGGREGATE public.count(*) (sfunc = public.f, stype = int8, initcond = '0');
             ALTER DATABASE {evil_db} SET search_path = public, pg_catalog;"
        ),
    );
    let superuser = || {
        pg.psql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'evil_review'",
        )
        .trim()
            == "t"
    };
    let (env, _src) = crate::restore_engine::backed_up("evil_src", "CREATE TABLE t (v int);");
    // The target holds a table: refused, whatever count(*) says.
    let out = env.cellar(&["restore", "db", "--to-database", &evil_db]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert_eq!(pg.psql(&evil_db, "SELECT x FROM precious").trim(), "42");
    assert!(!superuser(), "a restore ran the owner's count(*)");
    // A backup of that database neither runs it nor finds it empty.
    env.pg_profile("evil", &evil_db, "globals = false", "");
    let out = env.cellar(&["backup", "evil"]);
    out.ok();
    assert!(!out.stderr.contains("empty"), "{}", out.stderr);
    assert!(!superuser(), "a backup ran the owner's count(*)");
    pg.psql("postgres", &format!("DROP DATABASE {evil_db}"));
    pg.psql("postgres", "DROP ROLE evil_review");
}

/// Under a umask of 002 (common on desktops), the parent folders a files
/// restore makes for DIR pass its own check on folders others could change.
#[test]
fn parents_made_under_umask_002_pass_the_restore_check() {
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new();
    let data = env.data_dir(&[("a.txt", b"a")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let dest = env.path().join("made/u002/dest");
    let mut cmd = env.cmd();
    cmd.args(["restore", "f", "--to-dir", dest.to_str().unwrap()]);
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o002);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(env.path().join("made/u002"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o022, 0, "{mode:o}");
}

/// A files restore killed with `kill -9` leaves its hidden folder; the
/// next restore into the same parent removes it (its process is gone)
/// and leaves a running restore's folder alone.
#[test]
fn a_killed_files_restore_is_cleaned_up_by_the_next_one() {
    let env = TestEnv::new();
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("big"), crate::harness::noise(40 << 20, 9)).unwrap();
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let parent = env.path().join("out");
    std::fs::create_dir(&parent).unwrap();
    let hidden = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".cellar-incoming-")
            })
            .map(|e| e.path())
            .collect()
    };
    let mut child = env
        .cmd()
        .args(["restore", "f", "--to-dir"])
        .arg(parent.join("first"))
        .spawn()
        .unwrap();
    let started = Instant::now();
    while hidden().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(
            child.try_wait().unwrap().is_none(),
            "over before it was killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = hidden();
    assert_eq!(left.len(), 1);
    // A folder of a restore still running (this test's own pid) stays;
    // so does one whose pid is gone here but whose lock is held, as by a
    // restore in another PID namespace (a container on a shared volume).
    let alive = parent.join(format!(".cellar-incoming-{}-x", std::process::id()));
    std::fs::create_dir(&alive).unwrap();
    std::fs::set_permissions(&alive, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gone_pid = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let elsewhere = parent.join(format!(".cellar-incoming-{gone_pid}-ns"));
    std::fs::create_dir(&elsewhere).unwrap();
    let held = std::fs::File::open(&elsewhere).unwrap();
    // SAFETY: a valid descriptor.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    // One killed after it was verified (its usual mode already) goes too.
    let verified = parent.join(format!(".cellar-incoming-{gone_pid}-verified"));
    std::fs::create_dir(&verified).unwrap();
    std::fs::write(verified.join("f"), "x").unwrap();
    let out = env.cellar(&[
        "restore",
        "f",
        "--to-dir",
        parent.join("second").to_str().unwrap(),
    ]);
    out.ok();
    assert!(
        out.stderr.contains("left by a restore that was killed"),
        "{}",
        out.stderr
    );
    assert!(!left[0].exists());
    assert!(!verified.exists());
    assert!(alive.exists());
    assert!(elsewhere.exists());
    assert!(!parent.join("first").exists());
    drop(held);
    // cellar's own hidden names are no target.
    let out = env.cellar(&[
        "restore",
        "f",
        "--to-dir",
        parent.join(".cellar-incoming-1-mine").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
}

/// `kill -9` of cellar while its swap waits on a lock: the psql session
/// that holds the swap dies with cellar, so the swap is never carried out
/// later, when the lock is given up (it was: 14 s after cellar was gone).
#[test]
fn a_swap_waiting_on_a_lock_is_not_carried_out_after_cellar_is_killed() {
    use std::io::Write;
    let pg = pg();
    let src = pg.filled_db("late_src", "CREATE TABLE t AS SELECT 1 AS x;");
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    let dst = db_name("late_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    pg.create_db(&dst);
    pg.psql(&dst, "CREATE TABLE marker (x int);");
    // A transaction that changed the target's catalog row: renaming the
    // target waits for it.
    let mut blocker = std::process::Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args(["-U", "postgres", "-d", "postgres"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut to_blocker = blocker.stdin.take().unwrap();
    writeln!(
        to_blocker,
        "BEGIN; GRANT CONNECT ON DATABASE {dst} TO PUBLIC;"
    )
    .unwrap();
    to_blocker.flush().unwrap();
    let mut child = env
        .cmd()
        .args(["restore", "db", "--to-database", &dst, "--clean"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%ALTER DATABASE%{dst}%RENAME%'"
    );
    let started = Instant::now();
    while pg.psql("postgres", &waiting).trim() == "0" {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before its swap waited"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the swap never waited: {}",
            pg.psql(
                "postgres",
                "SELECT wait_event_type, left(query, 300) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // The lock goes a moment later.
    std::thread::sleep(Duration::from_millis(500));
    writeln!(to_blocker, "ROLLBACK;").unwrap();
    drop(to_blocker);
    blocker.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        )
        .trim(),
        "1",
        "the swap was carried out after cellar was killed"
    );
    assert!(!pg.exists(&previous_name(&dst)));
    // The next restore drops the leftover and swaps.
    env.cellar(&["restore", "db", "--to-database", &dst, "--clean"])
        .ok();
    assert!(!pg.exists(&scratch_name(&dst)));
    assert_eq!(pg.psql(&dst, "SELECT x FROM t").trim(), "1");
}

/// The record of a leftover scratch database on the profile's server
/// outlives a restore of the same name on another server (`--host`): each
/// server's run has a marker of its own.
#[test]
fn a_restore_to_another_server_keeps_the_record_of_a_leftover_on_this_one() {
    let pg = pg();
    let src = pg.filled_db("twoserv_src", "CREATE TABLE t AS SELECT 1 AS x;");
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    let dst = db_name("twoserv_dst");
    let scratch = scratch_name(&dst);
    // What a restore into dst killed during pg_restore leaves.
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {scratch}"));
    pg.psql("postgres", &format!("CREATE DATABASE {scratch}"));
    let server = format!("postgresql://postgres@127.0.0.1:{}", pg.port);
    let marker = marker_path(env.path(), &server, &dst);
    killed_run_marker(&marker, &server, &dst);
    let out = env.cellar(&["check", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains(&scratch), "{}", out.all());

    let other = crate::harness::private_pg();
    let port = other.port.to_string();
    env.cellar(&[
        "restore",
        "db",
        "--to-database",
        &dst,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "postgres",
    ])
    .ok();
    assert_eq!(other.psql(&dst, "SELECT x FROM t").trim(), "1");
    let out = env.cellar(&["check", "db"]);
    assert_eq!(out.code, 1, "the leftover was forgotten: {}", out.all());
    assert!(out.stdout.contains(&scratch), "{}", out.all());
    let st = env.cellar(&["status", "db"]);
    assert_eq!(st.code, 1, "{}", st.all());
    assert!(st.stdout.contains(&scratch), "{}", st.all());
    // The next restore into dst on this server drops it.
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert!(!pg.exists(&scratch));
    env.cellar(&["check", "db"]).ok();

    // The same server under another name (`--host localhost`): check asks
    // the server about its leftover, and a restore through the profile's
    // name, which drops that same scratch database, forgets its marker.
    use std::net::ToSocketAddrs;
    if !("localhost", 0)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|s| s.ip() == std::net::Ipv4Addr::LOCALHOST))
    {
        return;
    }
    let local = format!("postgresql://postgres@localhost:{}", pg.port);
    let other_marker = marker_path(env.path(), &local, &dst);
    killed_run_marker(&other_marker, &local, &dst);
    pg.psql("postgres", &format!("CREATE DATABASE {scratch}"));
    let out = env.cellar(&["check", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains(&scratch), "{}", out.all());
    env.cellar(&["restore", "db", "--to-database", &dst, "--clean"])
        .ok();
    assert!(!pg.exists(&scratch));
    assert!(!other_marker.exists());
    env.cellar(&["status", "db"]).ok();
}
