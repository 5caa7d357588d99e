//! Hardening (issue 11): mistakes, odd entries and closed pipes must not
//! cost data, leak a secret, or stop the other profiles.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::harness::TestEnv;

/// `cellar list P --json | head -1` with far more output than a pipe holds.
#[test]
fn a_closed_stdout_ends_list_quietly() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    // 2,000 planted manifests: each is listed (as untrusted).
    for i in 0..2000 {
        env.write(
            &format!("store/f/2025{:04}T000000Z.manifest.json", i % 10000),
            "{}",
        );
    }
    let mut child = env
        .cmd()
        .args(["list", "f", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "[");
    // The reading end is closed here; cellar must not panic.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}

#[test]
fn secrets_are_never_taken_on_the_command_line() {
    let env = TestEnv::new();
    let out = env.cellar(&["keygen", "pp", "--passphrase", "hunter2-literal"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("file:PATH or env:VAR"),
        "{}",
        out.stderr
    );
    assert!(!env.path().join("secrets/pp.key.asc").exists());
    // env: works.
    env.cmd()
        .args(["keygen", "pp", "--passphrase", "env:PP"])
        .env("PP", "hunter2")
        .output()
        .map(crate::harness::Out::from)
        .unwrap()
        .ok();

    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("s", &[&data], "");
    env.edit(
        "profiles/s.toml",
        "url = \"file://store\"",
        "url = \"sftp://backup:hunter2-in-url@127.0.0.1:22/srv\"",
    );
    for args in [
        &["check", "s"][..],
        &["backup", "s"][..],
        &["show", "s"][..],
    ] {
        let out = env.cellar(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(out.all().contains("password"), "{}", out.all());
        assert!(
            !out.all().contains("hunter2"),
            "{args:?} leaks: {}",
            out.all()
        );
    }
}

#[test]
fn restore_target_mistakes_are_exit_2_before_anything_is_fetched() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let existing = env.path().join("exists.tar");
    std::fs::write(&existing, "mine").unwrap();
    let out = env.cellar(&["restore", "f", "--to-file", existing.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(std::fs::read(&existing).unwrap(), b"mine");
    // A dangling symlink is a file that exists too: never written through.
    let link = env.path().join("link.tar");
    std::os::unix::fs::symlink(env.path().join("nowhere"), &link).unwrap();
    let out = env.cellar(&["restore", "f", "--to-file", link.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(!env.path().join("nowhere").exists());
}

#[test]
fn one_bad_entry_in_the_profiles_folder_does_not_stop_the_others() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("good", &[&data], "");
    let profiles = env.path().join("profiles");
    std::os::unix::fs::symlink(env.path().join("gone.toml"), profiles.join("dangling.toml"))
        .unwrap();
    std::fs::create_dir_all(profiles.join("loop")).unwrap();
    std::os::unix::fs::symlink(&profiles, profiles.join("loop/again")).unwrap();
    std::fs::create_dir_all(profiles.join("a")).unwrap();
    std::fs::create_dir_all(profiles.join("b")).unwrap();
    env.write("profiles/a/twice.toml", "kind = \"files\"\n");
    env.write("profiles/b/twice.toml", "kind = \"files\"\n");
    std::fs::write(profiles.join("binary.toml"), [0xff, 0xfe, 0x00, 0x01]).unwrap();

    let out = env.cellar(&["run", "--no-prune"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert_eq!(env.manifests("good").len(), 1, "{}", out.all());
    let all = out.all();
    for needle in [
        "dangling",
        "symlink loop",
        "is also used by",
        "UTF-8 TOML text file",
    ] {
        assert!(all.contains(needle), "{needle}: {all}");
    }
    // The valid profile alone works as before; check reports the rest.
    env.cellar(&["backup", "good"]).ok();
    let ck = env.cellar(&["check"]);
    assert_eq!(ck.code, 2, "{}", ck.all());
    assert!(ck.all().contains("dangling"), "{}", ck.all());
}

#[test]
fn validation_catches_what_used_to_fail_later_or_never() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    cellar::keys::keygen(&env.path().join("secrets"), "pubonly", "p", None).unwrap();
    std::fs::write(env.path().join("secrets/garbage.asc"), "not a key").unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "level = 1",
            "level = 1\nthreads = 4000000000",
            "more than any machine has",
        ),
        (
            "url = \"file://store\"",
            "url = \"file://\"",
            "names no folder",
        ),
        ("[store]", "schedule_placeholder", "never fires"),
        (
            "recipients = [\"secrets/k.pub.asc\"]",
            "recipients = [\"secrets/k.key.asc\"]",
            "is a secret key",
        ),
        (
            "identity = \"secrets/k.key.asc\"",
            "identity = \"secrets/pubonly.pub.asc\"",
            "secret key (NAME.key.asc), not the public one",
        ),
        (
            "identity = \"secrets/k.key.asc\"",
            "identity = \"secrets/garbage.asc\"",
            "encryption.identity",
        ),
    ];
    for (from, to, needle) in cases {
        env.files_profile("v", &[&data], "");
        if *to == "schedule_placeholder" {
            let p = env.path().join("profiles/v.toml");
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, format!("schedule = \"0 2 31 2 *\"\n{text}")).unwrap();
        } else {
            env.edit("profiles/v.toml", from, to);
        }
        let out = env.cellar(&["check", "v"]);
        assert_eq!(out.code, 2, "{to}: {}", out.all());
        assert!(out.all().contains(needle), "{to}: {}", out.all());
        assert!(
            out.all().contains("profiles/v.toml:"),
            "{to}: {}",
            out.all()
        );
    }
    // A secret key that others can read is a warning.
    env.files_profile("v", &[&data], "");
    use std::os::unix::fs::PermissionsExt;
    let key = env.path().join("secrets/k.key.asc");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.cellar(&["check", "v"]);
    assert!(out.all().contains("chmod 600"), "{}", out.all());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A missing identity is fine for a host that only makes backups.
    env.edit(
        "profiles/v.toml",
        "identity = \"secrets/k.key.asc\"",
        "identity = \"secrets/elsewhere.key.asc\"",
    );
    env.cellar(&["backup", "v"]).ok();

    // Postgres: an empty database name and pg_dump_args that break things.
    for (source, needle) in [
        ("database = \"\"", "the database name is empty"),
        (
            "database = \"x\"\npg_dump_args = [\"-f\", \"/tmp/x\"]",
            "`-f`",
        ),
        (
            "database = \"x\"\npg_dump_args = [\"--create\"]",
            "`--create`",
        ),
        (
            "database = \"x\"\npg_dump_args = [\"--format=plain\"]",
            "`--format=plain`",
        ),
        // Spellings pg_dump takes too: bundled, abbreviated, a bare word.
        (
            "database = \"x\"\npg_dump_args = [\"-vf/tmp/x\"]",
            "`-vf/tmp/x` (--file)",
        ),
        (
            "database = \"x\"\npg_dump_args = [\"--fil=/tmp/x\"]",
            "not a pg_dump option spelled out in full",
        ),
        (
            "database = \"x\"\npg_dump_args = [\"--sect=data\"]",
            "not a pg_dump option spelled out in full",
        ),
        (
            "database = \"x\"\npg_dump_args = [\"otherdb\"]",
            "as a database name",
        ),
        // A secret written as a number is refused without being shown.
        (
            "database = \"x\"\npassword = 98765432101",
            "the value written is not shown",
        ),
    ] {
        env.pg_profile_with("p", source, "");
        let out = env.cellar(&["check", "p"]);
        assert_eq!(out.code, 2, "{source}: {}", out.all());
        assert!(out.all().contains(needle), "{source}: {}", out.all());
        assert!(!out.all().contains("98765432101"), "{}", out.all());
    }
    env.pg_profile_with(
        "p",
        "database = \"x\"\npg_dump_args = [\"--exclude-table=audit\", \"-Z0\"]",
        "",
    );
    let out = env.cellar(&["show", "p"]);
    out.ok();

    // init takes only names a store can hold.
    let out = env.cellar(&["init", "files", "my shop"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(!env.path().join("profiles/my shop.toml").exists());
}

#[test]
fn an_unreachable_store_is_a_failed_job_not_bad_configuration() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("s", &[&data], "");
    // Nothing listens on port 1.
    env.edit(
        "profiles/s.toml",
        "url = \"file://store\"",
        "url = \"sftp://backup@127.0.0.1:1/srv\"",
    );
    for args in [
        &["list", "s"][..],
        &["verify", "s"][..],
        &["prune", "s"][..],
    ] {
        let out = env.cellar(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.all());
    }
}

#[test]
fn hooks_get_a_clean_environment_and_a_timeout() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    let seen = env.path().join("hook.env");
    let pidfile = env.path().join("hook.pid");
    env.files_profile(
        "h",
        &[&data],
        &format!(
            "[hooks]\nbefore = [\"sh -c 'env > {}'\"]\npass_env = [\"PASS_ME\"]\n",
            seen.display()
        ),
    );
    env.cmd()
        .args(["backup", "h"])
        .env("AWS_SECRET_ACCESS_KEY", "leaked-if-seen")
        .env("PASS_ME", "passed")
        .output()
        .map(crate::harness::Out::from)
        .unwrap()
        .ok();
    let text = std::fs::read_to_string(&seen).unwrap();
    assert!(text.contains("CELLAR_PROFILE=h"), "{text}");
    assert!(text.contains("PASS_ME=passed"), "{text}");
    assert!(text.contains("PATH="), "{text}");
    assert!(!text.contains("leaked-if-seen"), "{text}");

    // A hook that hangs is killed with everything it started.
    env.edit(
        "profiles/h.toml",
        &format!("before = [\"sh -c 'env > {}'\"]", seen.display()),
        &format!(
            "before = [\"sh -c 'sleep 600 & echo $! > {}; wait'\"]\ntimeout = \"2s\"",
            pidfile.display()
        ),
    );
    let started = std::time::Instant::now();
    let out = env.cellar(&["backup", "h"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        out.stderr.contains("did not finish within 2s"),
        "{}",
        out.stderr
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Gone, or a zombie waiting for init to reap it.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(')').next().unwrap_or("").trim().chars().next();
    assert!(
        matches!(state, None | Some('Z')),
        "the hook's sleep survived: {state:?}"
    );
    assert_eq!(env.manifests("h").len(), 1);
}

#[test]
fn a_failing_profile_is_retried_after_retry_after_not_on_every_tick() {
    let env = TestEnv::new();
    let count = env.path().join("failures");
    env.files_profile(
        "r",
        &[&env.path().join("missing")],
        &format!(
            "[hooks]\non_failure = [\"sh -c 'echo x >> {}'\"]\n",
            count.display()
        ),
    );
    env.edit(
        "profiles/r.toml",
        "kind = \"files\"",
        "kind = \"files\"\nschedule = \"0 2 * * *\"\nretry_after = \"30m\"",
    );
    let failures = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(env.at("2026-01-01T02:05:00Z", &["run", "--due"]).code, 1);
    assert_eq!(failures(), 1);
    // Every tick within retry_after: not tried again.
    for t in ["02:10", "02:20", "02:34"] {
        let out = env.at(&format!("2026-01-01T{t}:00Z"), &["run", "--due"]);
        assert_eq!(out.code, 0, "{t}: {}", out.all());
    }
    assert_eq!(failures(), 1);
    assert_eq!(env.at("2026-01-01T02:36:00Z", &["run", "--due"]).code, 1);
    assert_eq!(failures(), 2);
}

#[test]
fn strict_canary_failures_do_not_pile_up_backups() {
    let env = TestEnv::new();
    let empty = env.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    env.files_profile("c", &[&empty], "[canary]\nstrict = true\n");
    for t in [
        "2026-01-01T02:00:00Z",
        "2026-01-01T03:00:00Z",
        "2026-01-01T04:00:00Z",
    ] {
        let out = env.at(t, &["backup", "c"]);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(out.stderr.contains("strict = true"), "{}", out.stderr);
    }
    // Only the newest suspicious backup is kept.
    let kept = env.manifests("c");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].to_string_lossy().contains("20260101T040000Z"));
}

#[test]
fn a_backup_dated_in_the_future_is_never_the_latest() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"now")]);
    env.files_profile("t", &[&data], "");
    // Made while the clock was years ahead, then the clock was fixed.
    env.at("2031-06-01T00:00:00Z", &["backup", "t"]).ok();
    std::fs::write(data.join("x"), "later").unwrap();
    env.at("2026-03-01T00:00:00Z", &["backup", "t"]).ok();
    let list = env.at("2026-03-02T00:00:00Z", &["list", "t"]);
    assert!(list.stdout.contains("FUTURE"), "{}", list.stdout);
    assert!(list.stderr.contains("in the future"), "{}", list.stderr);
    let to = env.path().join("out");
    let out = env.at(
        "2026-03-02T00:00:00Z",
        &["restore", "t", "--to-dir", to.to_str().unwrap()],
    );
    out.ok();
    let back = to.join(data.strip_prefix("/").unwrap()).join("x");
    assert_eq!(std::fs::read(back).unwrap(), b"later");
    // By its id it still restores.
    let to2 = env.path().join("out2");
    env.at(
        "2026-03-02T00:00:00Z",
        &[
            "restore",
            "t",
            "20310601T000000Z",
            "--to-dir",
            to2.to_str().unwrap(),
        ],
    )
    .ok();
}

/// pg_dump waiting on a lock sends nothing: SIGTERM must still stop the
/// backup within seconds, end pg_dump, and leave nothing behind.
#[test]
fn sigterm_stops_a_backup_whose_pg_dump_waits_on_a_lock() {
    let pg = crate::harness::pg();
    let src = crate::harness::db_name("locked_src");
    pg.create_db(&src);
    pg.psql(&src, "CREATE TABLE t (v int); INSERT INTO t VALUES (1);");
    // Another session holds the table until its stdin closes.
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &pg.port.to_string(), "-d", &src])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = holder.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    let mut child = env
        .cmd()
        .args(["backup", "db"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until pg_dump (and the inventory's count) are blocked on the lock.
    let waiting = || {
        pg.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{src}' AND application_name = 'cellar' AND wait_event_type = 'Lock'"
            ),
        )
        .trim()
        .parse::<u32>()
        .unwrap_or(0)
            >= 1
    };
    let started = std::time::Instant::now();
    while !waiting() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "pg_dump never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Twice, as `timeout` and process managers do (the process, then its
    // group): one request, still a clean stop.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_millis(50));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let sent = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(5),
            "cellar ignored SIGTERM while pg_dump waited on a lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        env.store_entries("db").is_empty(),
        "{:?}",
        env.store_entries("db")
    );
    // pg_dump is gone too.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let left = pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{src}' AND application_name = 'cellar'"),
    );
    assert_eq!(left.trim(), "0");
}

/// The password reaches pg_dump through memory only: no file on disk ever
/// holds it, so nothing is left even when cellar is killed.
#[test]
fn the_password_file_lives_in_memory() {
    let env = TestEnv::new();
    let seen = env.path().join("seen");
    let bin = crate::harness::fake_bin_dir(
        &env,
        &[(
            "pg_dump",
            &format!(
                "#!/bin/sh\necho \"$PGPASSFILE\" > {s}\ncat \"$PGPASSFILE\" >> {s}\nstat -L -c %a \"$PGPASSFILE\" >> {s}\nexit 1\n",
                s = seen.display()
            ),
        )],
    );
    env.pg_profile(
        "db",
        "whatever",
        &format!(
            "password = \"memory-only-pw\"\nglobals = false\npg_bin_dir = \"{}\"",
            bin.display()
        ),
        "",
    );
    let out = env.cellar(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let text = std::fs::read_to_string(&seen).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "/dev/fd/255", "{text}");
    assert!(lines[1].ends_with(":memory-only-pw"), "{text}");
    assert_eq!(lines[2], "600", "{text}");
}

/// Leftovers of killed uploads: hidden temporaries in a folder store and
/// incomplete multipart uploads on S3 are removed by prune once a day old.
#[test]
fn prune_removes_leftovers_of_killed_uploads() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("f", &[&data], "");
    env.at("2026-01-01T02:00:00Z", &["backup", "f"]).ok();
    let store = env.store("f");
    let old = store.join(".20251230T020000Z.tar.xz.pgp.tmp-abc123");
    let fresh = store.join(".20260101T020000Z.tar.xz.pgp.tmp-def456");
    std::fs::write(&old, "partial").unwrap();
    std::fs::write(&fresh, "partial").unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let dry = env.at(&now, &["prune", "f", "--dry-run"]);
    dry.ok();
    assert!(
        dry.stdout.contains("would remove") && dry.stdout.contains("tmp-abc123"),
        "{}",
        dry.stdout
    );
    assert!(old.exists());
    let out = env.at(&now, &["prune", "f"]);
    out.ok();
    assert!(
        out.stdout.contains("removed") && out.stdout.contains("tmp-abc123"),
        "{}",
        out.stdout
    );
    assert!(!old.exists());
    assert!(fresh.exists(), "an upload still under way is never touched");

    let m = crate::s3harness::shared();
    m.create_bucket("leftovers", false);
    env.files_profile("s", &[&data], "");
    env.edit(
        "profiles/s.toml",
        "[store]\nurl = \"file://store\"",
        &crate::s3harness::store_toml(m, "leftovers", ""),
    );
    env.cellar(&["backup", "s"]).ok();
    let (rt, c) = m.client();
    rt.block_on(
        c.create_multipart_upload()
            .bucket("leftovers")
            .key("backups/s/.killed-upload")
            .send(),
    )
    .unwrap();
    assert_eq!(m.open_uploads("leftovers"), 1);
    // (moto reports a fixed old `Initiated` date, so the one-day rule is
    // shown by the folder store above; here, that the upload is aborted.)
    let later = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let out = env.at(&later, &["prune", "s"]);
    out.ok();
    assert!(
        out.stdout.contains("incomplete multipart upload"),
        "{}",
        out.stdout
    );
    assert_eq!(m.open_uploads("leftovers"), 0);
}

/// `--globals` applies the roles only once the database payload is known
/// whole, so a damaged backup changes nothing on the server, roles included.
#[test]
fn globals_are_applied_only_after_the_dump_is_checked() {
    let own = crate::harness::private_pg();
    own.psql("postgres", "CREATE ROLE shop_owner NOLOGIN");
    own.psql("postgres", "CREATE DATABASE shop");
    own.psql(
        "shop",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (7); ALTER TABLE t OWNER TO shop_owner;",
    );
    let env = TestEnv::new();
    env.pg_profile("g", "shop", "globals = true", "");
    env.move_to("g", &own);
    env.cellar(&["backup", "g"]).ok();
    own.psql("postgres", "DROP DATABASE shop");
    own.psql("postgres", "DROP ROLE shop_owner");
    let has_role = || {
        own.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'shop_owner'",
        )
        .trim()
            == "1"
    };
    // A damaged database payload: neither the roles nor the database change.
    let payload = env
        .payloads("g")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(".pgdump."))
        .unwrap();
    let good = std::fs::read(&payload).unwrap();
    crate::harness::flip_byte(&payload);
    let out = env.cellar(&["restore", "g", "--to-database", "shop", "--globals"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        !has_role(),
        "roles were applied before the dump was checked"
    );
    assert!(!own.exists("shop"));
    // Whole again: roles first, then the database, owned as before.
    std::fs::write(&payload, good).unwrap();
    env.cellar(&["restore", "g", "--to-database", "shop", "--globals"])
        .ok();
    assert!(has_role());
    let owner = own.psql(
        "shop",
        "SELECT tableowner FROM pg_tables WHERE tablename = 't'",
    );
    assert_eq!(owner.trim(), "shop_owner");
}

#[test]
fn names_with_line_breaks_cannot_forge_a_line_of_the_log_or_of_status() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("kept"), "kept").unwrap();
    // A FIFO is skipped with a warning that names it.
    let forged = "x\n INFO forged: backup complete\rERROR y\u{1b}[2K";
    let fifo = std::ffi::CString::new(data.join(forged).as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    env.files_profile("names", &[&data], "");
    // An invalid profile is reported with its value.
    env.files_profile("broken", &[std::path::Path::new("/placeholder")], "");
    env.edit(
        "profiles/broken.toml",
        "\"/placeholder\"",
        "\"/nonexistent\\nERROR forged too\\r\"",
    );
    let out = env.cellar(&["run"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let cellar_line = |l: &str| {
        ["ERROR ", " WARN ", " INFO ", "  ", "error: "]
            .iter()
            .any(|p| l.starts_with(p))
    };
    let clean = |text: &str| {
        for line in text.lines() {
            assert!(!line.contains(['\r', '\u{1b}']), "{line:?} in {text:?}");
            assert!(!line.starts_with(" INFO forged"), "{text}");
            assert!(!line.starts_with("ERROR forged"), "{text}");
        }
    };
    clean(&out.stderr);
    clean(&out.stdout);
    for line in out.stderr.lines() {
        assert!(cellar_line(line), "{line:?} in {}", out.stderr);
    }
    assert!(out.stderr.contains("skipping the FIFO"), "{}", out.stderr);
    assert!(out.stderr.contains("\\r"), "{}", out.stderr);
    assert!(out.stderr.contains("nonexistent"), "{}", out.stderr);

    // A failure that names the file, on its own command.
    let target = env.path().join("t\nERROR forged");
    std::fs::write(&target, "a file, not a folder").unwrap();
    let err = env.cellar(&["restore", "names", "--to-dir", target.to_str().unwrap()]);
    assert_ne!(err.code, 0);
    clean(&err.stderr);

    // A folder that no profile backs up, named by check --coverage.
    let root = env.path().join("root");
    std::fs::create_dir_all(root.join("x\n WARN forged warning\rERROR y")).unwrap();
    let cov = env.cellar(&["check", "--coverage", "--root", root.to_str().unwrap()]);
    clean(&cov.stdout);
    clean(&cov.stderr);
    assert!(
        !cov.stdout.lines().any(|l| l.starts_with(" WARN")),
        "{}",
        cov.stdout
    );
    assert!(cov.stdout.contains("1 NOT"), "{}", cov.stdout);

    // A key of an invalid profile, shown by status.
    env.write(
        "profiles/evil.toml",
        "\"x\\nforged: ok\\n  last success: 20261207T000000Z\" = 1\n",
    );
    let status = env.cellar(&["status"]);
    clean(&status.stdout);
    assert!(status.stdout.contains("evil: INVALID"), "{}", status.stdout);
    assert!(
        !status.stdout.lines().any(|l| l.starts_with("forged")),
        "{}",
        status.stdout
    );
    for line in status.stdout.lines() {
        assert!(!line.starts_with(' ') || line.starts_with("  "), "{line:?}");
    }

    // A drill's error (it quotes the server and the database) with Unicode
    // separators and bidi overrides: status shows it escaped.
    let state = env.path().join("state/names.json");
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    st["last_drill"] = serde_json::json!({
        "backup_id": "20261207T000000Z", "by": "drill",
        "started_at": "2026-12-07T00:00:00Z", "finished_at": "2026-12-07T00:00:01Z",
        "passed": false, "restore_seconds": 1.0, "plain_bytes": 1, "stored_bytes": 1,
        "bytes_per_second": 1.0,
        "error": "table t\u{2028}forged: ok\u{202e}evil\u{1b}[2J"
    });
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    let status = env.cellar(&["status", "names"]);
    clean(&status.stdout);
    assert!(
        status.stdout.contains("FAILED by drill") && status.stdout.contains("\\u{2028}forged"),
        "{}",
        status.stdout
    );
    assert!(
        !status.stdout.contains(['\u{2028}', '\u{202e}']),
        "{}",
        status.stdout
    );
}

#[test]
fn secrets_and_keys_that_other_users_can_read_or_replace_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let data = env.data_dir(&[("a", b"a")]);
    env.files_profile("lit", &[&data], "");
    env.edit(
        "profiles/lit.toml",
        "[encryption]\n",
        "[encryption]\npassphrase = \"hunter2\"\n",
    );
    let chmod = |rel: &str, mode: u32| {
        std::fs::set_permissions(env.path().join(rel), std::fs::Permissions::from_mode(mode))
            .unwrap()
    };
    let check = || {
        let out = env.cellar(&["check", "lit"]);
        assert!(!out.all().contains("hunter2"), "{}", out.all());
        out.all()
    };
    chmod("profiles/lit.toml", 0o644);
    let out = check();
    assert!(
        out.contains(
            "encryption.passphrase: the secret is written in a profile other users can read"
        ),
        "{out}"
    );
    chmod("profiles/lit.toml", 0o600);
    let out = check();
    assert!(!out.contains("other users"), "{out}");

    chmod("profiles/lit.toml", 0o620);
    chmod("secrets/k.pub.asc", 0o646);
    let out = check();
    assert!(
        out.contains("profiles/lit.toml can be changed by other users"),
        "{out}"
    );
    assert!(
        out.contains("k.pub.asc can be replaced by other users"),
        "{out}"
    );
    // A key of mode 0644 in a folder anyone may write, through a link.
    chmod("profiles/lit.toml", 0o600);
    chmod("secrets/k.pub.asc", 0o644);
    std::fs::create_dir(env.path().join("open")).unwrap();
    chmod("open", 0o777);
    std::fs::rename(
        env.path().join("secrets/k.pub.asc"),
        env.path().join("open/k.pub.asc"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        env.path().join("open/k.pub.asc"),
        env.path().join("secrets/k.pub.asc"),
    )
    .unwrap();
    let out = check();
    assert!(
        out.contains("k.pub.asc can be replaced by other users"),
        "{out}"
    );
    // With the sticky bit, only the owner may replace it.
    chmod("open", 0o1777);
    let out = check();
    assert!(!out.contains("other users"), "{out}");
}
