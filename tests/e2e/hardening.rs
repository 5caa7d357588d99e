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
    ] {
        env.pg_profile_with("p", source, "");
        let out = env.cellar(&["check", "p"]);
        assert_eq!(out.code, 2, "{source}: {}", out.all());
        assert!(out.all().contains(needle), "{source}: {}", out.all());
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
