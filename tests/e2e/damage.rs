//! The bad day: damaged payloads, the wrong key, a missing manifest, a
//! killed backup, a full disk. Each gives a clear error and loses nothing.

use std::time::Duration;

use crate::harness::{db_name, flip_byte, pg, TestEnv};

#[test]
fn flipped_byte_fails_verify_and_restore_leaves_the_database_untouched() {
    let pg = pg();
    let src = db_name("flip_src");
    let dst = db_name("flip_dst");
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE t AS SELECT g AS x, md5(g::text) AS y FROM generate_series(1, 50000) g;",
    );
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false", "");
    env.cellar(&["backup", "db"]).ok();
    let payload = &env.payloads("db")[0];
    flip_byte(payload);

    let out = env.cellar(&["verify", "db"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("is damaged")
            && out
                .stderr
                .contains("BLAKE2b-512 of the stored bytes does not match"),
        "{}",
        out.stderr
    );

    // A new database: it is not left behind.
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("is damaged"), "{}", out.stderr);
    assert!(!pg.exists(&dst), "the failed restore left {dst} behind");

    // An existing database with --clean: its content is exactly as before.
    pg.create_db(&dst);
    pg.psql(
        &dst,
        "CREATE TABLE mine (v text); INSERT INTO mine VALUES ('precious');",
    );
    let before = pg.dump(&dst);
    let out = env.cellar(&["restore", "db", "--to-database", &dst, "--clean"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("was left as it was"), "{}", out.stderr);
    assert_eq!(pg.dump(&dst), before);

    // --to-file leaves no file.
    let file = env.path().join("dump.out");
    let out = env.cellar(&["restore", "db", "--to-file", file.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(!file.exists());
}

#[test]
fn damage_near_the_end_is_caught_before_commit() {
    // The restore streams into the open transaction; a flipped byte in the
    // last bytes is only seen at the end, and still nothing is committed.
    let pg = pg();
    let src = db_name("tail_src");
    let dst = db_name("tail_dst");
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 1000) g;",
    );
    let env = TestEnv::new();
    env.pg_profile("db", &src, "globals = false\nformat = \"plain\"", "");
    env.cellar(&["backup", "db"]).ok();
    let payload = &env.payloads("db")[0];
    let mut bytes = std::fs::read(payload).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(payload, bytes).unwrap();
    pg.create_db(&dst);
    let out = env.cellar(&["restore", "db", "--to-database", &dst]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .trim(),
        "0"
    );
}

#[test]
fn flipped_byte_in_a_folder_backup_leaves_no_target() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("f", &vec![7u8; 1 << 20])]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    flip_byte(&env.payloads("f")[0]);
    let target = env.path().join("restored");
    let out = env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("is damaged"), "{}", out.stderr);
    assert!(!target.exists());
    let leftovers = env.leftovers();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn wrong_key_says_which_key_the_backup_needs() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("f", b"x")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    env.cellar(&["keygen", "other"]).ok();
    let p = env.path().join("profiles/f.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("secrets/k.key.asc", "secrets/other.key.asc"),
    )
    .unwrap();
    let out = env.cellar(&["verify", "f"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("cannot decrypt"), "{}", out.stderr);
    assert!(out.stderr.contains("other.key.asc"), "{}", out.stderr);
    // The public key is not an identity.
    std::fs::write(&p, text.replace("secrets/k.key.asc", "secrets/k.pub.asc")).unwrap();
    let out = env.cellar(&["verify", "f"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("holds no secret key"), "{}", out.stderr);
}

#[test]
fn passphrase_protected_key_needs_its_passphrase() {
    let env = TestEnv::new();
    env.write("secrets/pp", "open sesame\n");
    env.cellar(&["keygen", "locked", "--passphrase", "file:secrets/pp"])
        .ok();
    let data = env.data_dir(&[("f", b"x")]);
    env.files_profile("f", &[&data], "");
    let p = env.path().join("profiles/f.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("secrets/k.pub.asc", "secrets/locked.pub.asc")
        .replace("secrets/k.key.asc", "secrets/locked.key.asc");
    std::fs::write(&p, &text).unwrap();
    env.cellar(&["backup", "f"]).ok();
    let out = env.cellar(&["verify", "f"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("passphrase-protected"),
        "{}",
        out.stderr
    );
    std::fs::write(
        &p,
        text.replace(
            "identity = ",
            "passphrase = \"file:secrets/pp\"\nidentity = ",
        ),
    )
    .unwrap();
    let out = env.cellar(&["verify", "f"]);
    out.ok();
    // The secret file is world-readable: a warning says how to fix it.
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn payload_without_manifest_is_not_a_backup() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("f", b"x")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let manifest = env.manifests("f")[0].clone();
    let id = manifest
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    std::fs::remove_file(&manifest).unwrap();
    let list = env.cellar(&["list", "f"]);
    list.ok();
    assert!(!list.stdout.contains(&id), "{}", list.stdout);
    assert!(list.stderr.contains("unfinished"), "{}", list.stderr);
    let out = env.cellar(&[
        "restore",
        "f",
        &id,
        "--to-dir",
        env.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no manifest") && out.stderr.contains("unfinished"),
        "{}",
        out.stderr
    );
    let out = env.cellar(&["verify", "f"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no trusted backup"), "{}", out.stderr);
}

#[test]
fn killed_backup_leaves_no_listed_backup_and_earlier_ones_restore() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("small", b"first")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    // Enough slow-to-compress data that the backup is still running.
    let big = crate::harness::noise(64 << 20, 1);
    std::fs::write(data.join("big"), &big).unwrap();
    env.edit("profiles/f.toml", "level = 1", "level = 9\nthreads = 1");
    let mut child = env.cmd().arg("backup").arg("f").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup finished too soon to be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let list = env.cellar(&["list", "--json", "f"]);
    list.ok();
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{}", list.stdout);
    assert_eq!(env.manifests("f").len(), 1);
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(restored.join("small")).unwrap(),
        "first"
    );
    assert!(!restored.join("big").exists());
}

#[test]
fn full_disk_fails_cleanly() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = TestEnv::new();
    let mnt = env.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    if !m.success() {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let big = crate::harness::noise(8 << 20, 7);
    std::fs::write(data.join("big"), &big).unwrap();
    env.files_profile("f", &[&data], "");
    let p = env.path().join("profiles/f.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("file://store", &format!("file://{}", mnt.display())),
    )
    .unwrap();
    let out = env.cellar(&["backup", "f"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(mnt.join("f"))
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A restore to a file on the full disk fails the same way and leaves
    // no file, whole or partial, behind.
    std::fs::write(&p, &text).unwrap();
    let out = env.cellar(&["backup", "f"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let dest = mnt.join("restored.tar");
    let out = env.cellar(&["restore", "f", "--to-file", dest.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "f")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
