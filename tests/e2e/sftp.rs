//! The SFTP store against a real OpenSSH server: round trips, prune,
//! listing more than 1,000 objects, the server killed mid-upload, a key
//! the server refuses, an unknown host key.

use std::time::{Duration, Instant};

use crate::harness::{db_name, pg, TestEnv};
use crate::sshharness::Sshd;

const FILE_STORE: &str = "[store]\nurl = \"file://store\"\n";

#[test]
fn round_trips_prune_and_long_listings_over_sftp() {
    let sshd = Sshd::start();
    let env = TestEnv::new();
    let data = env.data_dir(&[("a.txt", b"hello sftp"), ("b.bin", &vec![7u8; 3 << 20])]);
    env.files_profile(
        "f",
        &[&data],
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &sshd.store_toml("client_key", "known_hosts"),
    );
    env.cellar(&["check", "f"]).ok();
    env.cellar(&["backup", "f"]).ok();
    env.cellar(&["verify", "f"]).ok();
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("b.bin")).unwrap(),
        vec![7u8; 3 << 20]
    );

    // Prune on this store: two days of backups, one kept.
    env.at("2030-01-01T02:00:00Z", &["backup", "f"]).ok();
    env.at("2030-01-02T02:00:00Z", &["backup", "f"]).ok();
    let out = env.at("2030-01-02T03:00:00Z", &["prune", "f"]);
    out.ok();
    let manifests: Vec<_> = std::fs::read_dir(sshd.root().join("f"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".manifest.json"))
        .collect();
    assert_eq!(
        manifests,
        vec!["20300102T020000Z.manifest.json"],
        "{}",
        out.stdout
    );

    // More than 1,000 objects in the folder.
    for i in 0..1100 {
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + i * 60, 0).unwrap();
        std::fs::write(
            sshd.root()
                .join("f")
                .join(format!("{}.tar.xz.pgp", cellar::manifest::id_for(t))),
            b"x",
        )
        .unwrap();
    }
    let list = env.cellar(&["list", "f"]);
    list.ok();
    assert!(
        list.stderr.contains("1100 unfinished backup(s)"),
        "{}",
        list.stderr
    );

    // A postgres profile through the same server.
    let pg = pg();
    let src = db_name("sftp_src");
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 500) g;",
    );
    env.pg_profile("db", &src, "", "");
    env.edit(
        "profiles/db.toml",
        FILE_STORE,
        &sshd.store_toml("client_key", "known_hosts"),
    );
    env.cellar(&["backup", "db"]).ok();
    let dst = db_name("sftp_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(pg.dump(&src), pg.dump(&dst));
}

#[test]
fn refused_key_and_unknown_host_key_say_how_to_fix() {
    let sshd = Sshd::start();
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("stranger", &[&data], "");
    env.edit(
        "profiles/stranger.toml",
        FILE_STORE,
        &sshd.store_toml("stranger_key", "known_hosts"),
    );
    let out = env.cellar(&["check", "stranger"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("refused the login"), "{}", out.stdout);

    env.files_profile("unknown", &[&data], "");
    env.edit(
        "profiles/unknown.toml",
        FILE_STORE,
        &sshd.store_toml("client_key", "empty_known_hosts"),
    );
    let out = env.cellar(&["backup", "unknown"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("ssh-keyscan -p"), "{}", out.stderr);
}

#[test]
fn server_killed_mid_upload_fails_cleanly_and_keeps_earlier_backups() {
    let mut sshd = Sshd::start();
    let env = TestEnv::new();
    let data = env.data_dir(&[("small", b"first")]);
    env.files_profile("f", &[&data], "");
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &sshd.store_toml("client_key", "known_hosts"),
    );
    env.cellar(&["backup", "f"]).ok();

    let big = crate::harness::noise(48 << 20, 11);
    std::fs::write(data.join("big"), &big).unwrap();
    env.edit("profiles/f.toml", "level = 1", "level = 9\nthreads = 1");
    let child = env
        .cmd()
        .args(["backup", "f"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let dir = sshd.root().join("f");
    while !std::fs::read_dir(&dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    sshd.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sftp://"), "{stderr}");
    assert!(
        stderr.contains("connection to the SFTP server was lost"),
        "{stderr}"
    );
    let before = sshd.store_toml("client_key", "known_hosts");
    sshd.resume();
    // The old port may have been taken meanwhile: the server may be on a new one.
    env.edit(
        "profiles/f.toml",
        &before,
        &sshd.store_toml("client_key", "known_hosts"),
    );
    std::fs::remove_file(data.join("big")).unwrap();
    env.edit("profiles/f.toml", "level = 9\nthreads = 1", "level = 1");
    let list = env.cellar(&["list", "f", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{}", list.stdout);
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
}

/// `kill -9` of cellar mid-upload: its ssh master (an authenticated
/// connection) goes within ControlPersist's 30 s, not never.
#[test]
fn a_killed_cellar_leaves_no_ssh_master_behind() {
    let sshd = Sshd::start();
    let env = TestEnv::new();
    let data = env.data_dir(&[("big", &crate::harness::noise(48 << 20, 12))]);
    env.files_profile("f", &[&data], "");
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &sshd.store_toml("client_key", "known_hosts"),
    );
    env.edit("profiles/f.toml", "level = 1", "level = 9\nthreads = 1");
    // ssh masters of this test's server: `-M` and its port.
    let port = format!("{}", sshd.port);
    let masters = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = args.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"ssh"))
                    && args.contains(&&b"-M"[..])
                    && args.contains(&port.as_bytes())
            })
            .collect()
    };
    let mut child = env.cmd().args(["backup", "f"]).spawn().unwrap();
    let started = Instant::now();
    let dir = sshd.root().join("f");
    while !std::fs::read_dir(&dir)
        .is_ok_and(|mut d| d.any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-")))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let found = masters();
    assert!(!found.is_empty(), "no ssh master found to watch");
    // Its control folder (the socket's and ssh_config's), private.
    let args = std::fs::read(format!("/proc/{}/cmdline", found[0])).unwrap();
    let control = args
        .split(|b| *b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .filter_map(|a| a.find("cellar-ssh-").map(|i| (a, i)))
        .map(|(a, i)| {
            let end = a[i..].find('/').map_or(a.len(), |j| i + j);
            std::path::PathBuf::from(&a[a[..i].rfind(['=', ' ']).map_or(0, |k| k + 1)..end])
        })
        .next()
        .unwrap_or_else(|| panic!("no control folder in {:?}", String::from_utf8_lossy(&args)));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", control.display());
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while !masters().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "ssh master still running a minute after cellar was killed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The folder outlives the killed cellar; the next one that opens an
    // SFTP store removes it (another test's cellar may be first).
    while std::fs::metadata(&control)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(11))
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    env.cellar(&["list", "f"]).ok();
    assert!(!control.exists(), "{} was left", control.display());
}
