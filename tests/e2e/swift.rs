//! The Swift store against a real OpenStack Swift (Debian's, as a private
//! all-in-one): round trips through Static Large Objects, more than 1,000
//! objects, prune, the proxy killed mid-upload, credentials and containers
//! that are wrong; and the S3 store against the same Swift's S3 API.

use std::time::{Duration, Instant};

use crate::harness::{noise, pg, TestEnv, RICH_SCHEMA};
use crate::swiftharness::{self, Swift};

const FILE_STORE: &str = "[store]\nurl = \"file://store\"\n";

fn segments(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.contains("/.segments/")).collect()
}

fn manifests(names: &[String]) -> Vec<&String> {
    names
        .iter()
        .filter(|n| n.ends_with(".manifest.json"))
        .collect()
}

#[test]
fn files_and_postgres_round_trip_through_slo_segments() {
    let s = swiftharness::shared();
    s.create_container("roundtrip");
    let env = TestEnv::new();
    // 6 MiB of noise in 1 MiB segments: at least six segments.
    let data = env.data_dir(&[("noise.bin", &noise(6 << 20, 5)), ("a.txt", b"hello")]);
    env.files_profile("f", &[&data], "");
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &s.store_toml("roundtrip", "segment_size_mib = 1"),
    );
    env.edit("profiles/f.toml", "level = 1", "level = 0");
    let out = env.cellar(&["check", "f"]);
    out.ok();
    assert!(
        out.stdout.contains("swift://roundtrip/backups"),
        "{}",
        out.stdout
    );
    env.cellar(&["backup", "f"]).ok();
    let names = s.names("roundtrip");
    assert!(segments(&names).len() >= 6, "{names:?}");
    let payload = names
        .iter()
        .find(|k| k.starts_with("backups/f/") && k.ends_with(".tar.xz.pgp"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let (_, head, _) = s.request("HEAD", &format!("/roundtrip/{payload}"), &[]);
    assert_eq!(
        head.get("X-Static-Large-Object")
            .map(|v| v.to_str().unwrap()),
        Some("True")
    );
    assert_eq!(manifests(&names).len(), 1);
    let list = env.cellar(&["list", "f"]);
    list.ok();
    assert!(!list.stderr.contains("unfinished"), "{}", list.stderr);
    env.cellar(&["verify", "f"]).ok();
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("noise.bin")).unwrap(),
        std::fs::read(data.join("noise.bin")).unwrap()
    );

    // PostgreSQL through the same store.
    let pg = pg();
    let src = pg.filled_db("swift_src", RICH_SCHEMA);
    let dst = crate::harness::db_name("swift_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.pg_profile("db", &src, "", "");
    env.edit(
        "profiles/db.toml",
        FILE_STORE,
        &s.store_toml("roundtrip", "segment_size_mib = 1"),
    );
    env.cellar(&["backup", "db"]).ok();
    env.cellar(&["verify", "db"]).ok();
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(pg.dump(&src), pg.dump(&dst));
}

#[test]
fn listing_pages_through_more_than_a_thousand_objects() {
    let s = swiftharness::shared();
    s.create_container("many");
    // 1,100 unfinished payloads in one request (Swift's bulk extract).
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..1100 {
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + i * 60, 0).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let name = format!("backups/p/{}.tar.xz.pgp", cellar::manifest::id_for(t));
        tar.append_data(&mut h, name, &[1u8][..]).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let (status, _, body) = s.upload("/many?extract-archive=tar", tar);
    assert!(
        body.contains("Number Files Created: 1100")
            || body.contains("\"Number Files Created\": 1100"),
        "{status} {body}"
    );

    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("p", &[&data], "");
    env.edit("profiles/p.toml", FILE_STORE, &s.store_toml("many", ""));
    env.cellar(&["backup", "p"]).ok();
    let list = env.cellar(&["list", "p", "--json"]);
    list.ok();
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert!(
        list.stderr.contains("1100 unfinished backup(s)"),
        "{}",
        list.stderr
    );
}

#[test]
fn prune_deletes_slo_backups_with_their_segments() {
    let s = swiftharness::shared();
    s.create_container("prune");
    let env = TestEnv::new();
    let data = env.data_dir(&[("noise.bin", &noise(3 << 20, 7))]);
    env.files_profile(
        "p",
        &[&data],
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    env.edit(
        "profiles/p.toml",
        FILE_STORE,
        &s.store_toml("prune", "segment_size_mib = 1"),
    );
    env.edit("profiles/p.toml", "level = 1", "level = 0");
    for day in 1..=3 {
        env.at(&format!("2026-03-{day:02}T02:00:00Z"), &["backup", "p"])
            .ok();
    }
    let before = segments(&s.names("prune")).len();
    assert!(before >= 9, "{before}");
    let out = env.at("2026-03-03T12:00:00Z", &["prune", "p"]);
    out.ok();
    let names = s.names("prune");
    assert_eq!(
        manifests(&names),
        vec!["backups/p/20260303T020000Z.manifest.json"]
    );
    let left = segments(&names);
    assert_eq!(left.len() * 3, before, "{left:?}");
    assert!(
        left.iter().all(|n| n.contains("20260303T020000Z")),
        "{left:?}"
    );
    env.cellar(&["verify", "p"]).ok();
}

#[test]
fn proxy_killed_mid_upload_leaves_earlier_backups_and_prune_removes_the_segments() {
    // A private Swift: this test kills its proxy.
    let mut s = Swift::start();
    s.create_container("killed");
    let env = TestEnv::new();
    let data = env.data_dir(&[("small", b"first")]);
    env.files_profile("f", &[&data], "");
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &s.store_toml("killed", "segment_size_mib = 1"),
    );
    env.edit("profiles/f.toml", "level = 1", "level = 0");
    // The first backup with the default retries: a Swift just started can
    // answer 503 while its servers come up, more so on a loaded machine.
    env.cellar(&["backup", "f"]).ok();
    // The killed one fails fast: no retries against the dead proxy.
    env.edit(
        "profiles/f.toml",
        "segment_size_mib = 1",
        "segment_size_mib = 1\ntimeout = \"2s\"\nmax_attempts = 1",
    );

    std::fs::write(data.join("big"), noise(64 << 20, 3)).unwrap();
    let child = env
        .cmd()
        .args(["backup", "f"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while segments(&s.names("killed")).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.kill_proxy();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains(swiftharness::KEY), "{stderr}");
    s.start_proxy();

    // The earlier backup is whole, nothing partial is listed, and the
    // segments of the killed upload are still there.
    let names = s.names("killed");
    assert_eq!(manifests(&names).len(), 1, "{names:?}");
    assert!(!segments(&names).is_empty(), "{names:?}");
    let list = env.cellar(&["list", "f", "--json"]);
    list.ok();
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);

    // A day later, prune removes them.
    let later = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let out = env.at(&later, &["prune", "f"]);
    out.ok();
    assert!(
        out.stdout.contains("segment(s) of an unfinished upload"),
        "{}",
        out.stdout
    );
    assert!(segments(&s.names("killed")).is_empty());
    std::fs::remove_file(data.join("big")).unwrap();
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
}

#[test]
fn wrong_password_missing_container_and_no_access_are_explained() {
    let s = swiftharness::shared();
    s.create_container("creds");
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    let profile = |name: &str, toml: String| {
        env.files_profile(name, &[&data], "");
        env.edit(&format!("profiles/{name}.toml"), FILE_STORE, &toml);
    };
    profile(
        "badpw",
        s.store_toml("creds", "").replace(
            "password = \"testing\"",
            "password = \"env:CELLAR_TEST_SWIFT_PW\"",
        ),
    );
    profile("nocont", s.store_toml("no-such-container", ""));
    profile(
        "reader",
        s.store_toml("creds", "")
            .replace("test:tester", "test:reader")
            .replace("\"testing\"", "\"reading\""),
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    profile(
        "unreachable",
        s.store_toml("creds", "max_attempts = 1")
            .replace(&s.endpoint(), &format!("http://127.0.0.1:{closed}")),
    );

    let out = env
        .cmd()
        .env("CELLAR_TEST_SWIFT_PW", "not-the-password")
        .args(["check", "badpw"])
        .output()
        .unwrap();
    let out: crate::harness::Out = out.into();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("wrong username or password"),
        "{}",
        out.stdout
    );
    let out: crate::harness::Out = env
        .cmd()
        .env("CELLAR_TEST_SWIFT_PW", "not-the-password")
        .args(["backup", "badpw"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("refused the credentials"),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains("not-the-password"));

    let out = env.cellar(&["check", "nocont"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("container `no-such-container` does not exist"),
        "{}",
        out.stdout
    );
    let out = env.cellar(&["backup", "nocont"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);

    let out = env.cellar(&["check", "reader"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("access denied"), "{}", out.stdout);

    let out = env.cellar(&["check", "unreachable"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("cannot reach"), "{}", out.stdout);
}

/// The S3 store against Swift's S3 API (the s3api middleware, tempauth
/// credentials as the access key and secret).
#[test]
fn s3_store_round_trips_through_swift_s3api_and_check_names_what_it_lacks() {
    let s = swiftharness::shared();
    s.create_container("s3side");
    let env = TestEnv::new();
    let data = env.data_dir(&[("noise.bin", &noise(12 << 20, 11)), ("a.txt", b"hi")]);
    let s3 = |extra: &str| {
        format!(
            "[store]\nurl = \"s3://s3side/backups\"\n[store.s3]\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{extra}\n",
            s.endpoint(),
            swiftharness::USER,
            swiftharness::KEY
        )
    };
    env.files_profile("f", &[&data], "");
    env.edit("profiles/f.toml", FILE_STORE, &s3("part_size_mib = 5"));
    env.edit("profiles/f.toml", "level = 1", "level = 0");
    env.cellar(&["check", "f"]).ok();
    env.cellar(&["backup", "f"]).ok();
    env.cellar(&["verify", "f"]).ok();
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("noise.bin")).unwrap(),
        std::fs::read(data.join("noise.bin")).unwrap()
    );
    // Multipart uploads become SLOs whose segments live in s3side+segments.
    assert!(!s.names("s3side+segments").is_empty());

    env.files_profile("lock", &[&data], "");
    env.edit(
        "profiles/lock.toml",
        FILE_STORE,
        &s3("object_lock = { mode = \"GOVERNANCE\", days = 1 }"),
    );
    let out = env.cellar(&["check", "lock"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("object lock"), "{}", out.stdout);

    env.files_profile("tags", &[&data], "");
    env.edit("profiles/tags.toml", FILE_STORE, &s3("tag_tiers = true"));
    let out = env.cellar(&["check", "tags"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("tagging"), "{}", out.stdout);
}

fn delete_at(s: &Swift, container: &str, name: &str) -> Option<i64> {
    let (status, head, _) = s.request("HEAD", &format!("/{container}/{name}"), &[]);
    assert_eq!(status, 200, "{name}");
    head.get("X-Delete-At")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[test]
fn expiry_hints_follow_the_tiers_and_spare_pinned_backups() {
    let s = swiftharness::shared();
    s.create_container("expiry");
    let env = TestEnv::new();
    let data = env.data_dir(&[("noise.bin", &noise(2 << 20, 13))]);
    env.files_profile(
        "e",
        &[&data],
        "[retention]\ndaily = 2\nweekly = 0\nmonthly = 2\n",
    );
    env.edit(
        "profiles/e.toml",
        FILE_STORE,
        &s.store_toml(
            "expiry",
            "segment_size_mib = 1\ndelete_after = { daily = \"10d\", weekly = \"6w\", monthly = \"400d\" }",
        ),
    );
    env.edit("profiles/e.toml", "level = 1", "level = 0");
    let now = chrono::Utc::now().timestamp();
    env.cellar(&["backup", "e"]).ok();
    let names = s.names("expiry");
    let payload_of = |names: &[String], i: usize| -> String {
        let mut p: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("backups/e/") && n.ends_with(".pgp"))
            .collect();
        p.sort();
        p[i].clone()
    };
    let first = payload_of(&names, 0);
    // New objects, segments included, expire after the daily age.
    let day10 = 10 * 86_400;
    for n in names
        .iter()
        .filter(|n| n.contains("/.segments/"))
        .chain([&first])
    {
        let at = delete_at(s, "expiry", n).unwrap_or_else(|| panic!("{n} has no X-Delete-At"));
        assert!((at - now - day10).abs() < 120, "{n}: {at}");
    }

    std::thread::sleep(Duration::from_millis(1100));
    env.cellar(&["backup", "e"]).ok();
    let id = |p: &str| p.trim_start_matches("backups/e/")[..16].to_string();
    env.cellar(&["pin", "e", &id(&first)]).ok();
    env.cellar(&["prune", "e"]).ok();
    let names = s.names("expiry");
    let second = payload_of(&names, 1);
    // Pinned: no expiry, on the SLO and its segments; nor on the pin.
    assert_eq!(delete_at(s, "expiry", &first), None);
    assert_eq!(
        delete_at(s, "expiry", &format!("backups/e/{}.pin", id(&first))),
        None
    );
    let first_segments: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("/.segments/") && n.contains(&id(&first)))
        .collect();
    assert!(!first_segments.is_empty());
    for n in first_segments {
        assert_eq!(delete_at(s, "expiry", n), None, "{n}");
    }
    // The newest: its time plus the age of its longest tier.
    let t = chrono::NaiveDateTime::parse_from_str(&id(&second), "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
        .timestamp();
    let at = delete_at(s, "expiry", &second).unwrap();
    assert!(at == t + 400 * 86_400 || at == t + day10, "{at} vs {t}");
}

/// Keystone v3 from Debian (SQLite): a password scoped to a project, an
/// application credential, an RC file, a wrong region and a wrong password.
#[test]
fn keystone_v3_password_app_credential_and_rc_file() {
    let mut s = Swift::start();
    let ks = s.start_keystone();
    let env = TestEnv::new();
    let data = env.data_dir(&[("noise.bin", &noise(3 << 20, 17))]);
    let store = |extra: &str| {
        format!(
            "[store]\nurl = \"swift://ks/backups\"\n[store.swift]\n{extra}\nsegment_size_mib = 1\n"
        )
    };
    let profile = |name: &str, toml: String| {
        env.files_profile(name, &[&data], "");
        env.edit(&format!("profiles/{name}.toml"), FILE_STORE, &toml);
        env.edit(&format!("profiles/{name}.toml"), "level = 1", "level = 0");
    };
    let password = format!(
        "auth_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\nproject_name = \"{}\"\nregion = \"{}\"",
        ks.auth_url, ks.user, ks.password, ks.project, ks.region
    );
    profile("pw", store(&password));
    let out = env.cellar(&["check", "pw"]);
    out.ok();
    env.cellar(&["backup", "pw"]).ok();
    env.cellar(&["verify", "pw"]).ok();

    profile(
        "app",
        store(&format!(
            "auth_url = \"{}\"\napplication_credential_id = \"{}\"\napplication_credential_secret = \"env:CELLAR_TEST_APP_SECRET\"",
            ks.auth_url, ks.app_id
        )),
    );
    let out: crate::harness::Out = env
        .cmd()
        .env("CELLAR_TEST_APP_SECRET", &ks.app_secret)
        .args(["backup", "app"])
        .output()
        .unwrap()
        .into();
    out.ok();
    assert!(!out.all().contains(&ks.app_secret));

    env.write(
        "secrets/openrc.sh",
        &format!(
            "#!/usr/bin/env bash\nexport OS_AUTH_URL={}\nexport OS_PROJECT_NAME=\"{}\"\nexport OS_USER_DOMAIN_NAME=\"Default\"\nexport OS_USERNAME=\"{}\"\nexport OS_PASSWORD='{}'\nexport OS_REGION_NAME=\"{}\"\nexport OS_INTERFACE=public\nexport OS_IDENTITY_API_VERSION=3\n",
            ks.auth_url, ks.project, ks.user, ks.password, ks.region
        ),
    );
    profile("rc", store("rc_file = \"secrets/openrc.sh\""));
    env.cellar(&["backup", "rc"]).ok();
    let target = env.path().join("r");
    env.cellar(&["restore", "rc", "--to-dir", target.to_str().unwrap()])
        .ok();

    profile("region", store(&password.replace("RegionOne", "RegionTwo")));
    let out = env.cellar(&["check", "region"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("wrong region") && out.stdout.contains("RegionOne"),
        "{}",
        out.stdout
    );
    profile("badpw", store(&password.replace(&ks.password, "nope")));
    let out = env.cellar(&["check", "badpw"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("refused the credentials"),
        "{}",
        out.stdout
    );
}

/// `[store.swift]` problems are configuration errors (exit 2), each with
/// its line and fix, and a password never shows in them.
#[test]
fn swift_profile_problems_name_the_key_and_the_fix() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    let profile = |name: &str, toml: &str| {
        env.files_profile(name, &[&data], "");
        env.edit(&format!("profiles/{name}.toml"), FILE_STORE, toml);
    };
    profile(
        "noauth",
        "[store]\nurl = \"swift://c/p\"\n[store.swift]\nsegment_size_mib = 0\n",
    );
    profile(
        "typo",
        "[store]\nurl = \"swift://c\"\n[store.swift]\nauth_url = \"https://k/v3\"\npasword = \"hunter2\"\n",
    );
    profile(
        "v1",
        "[store]\nurl = \"swift://c\"\n[store.swift]\nauth_url = \"http://k/auth/v1.0\"\nusername = \"tester\"\npassword = \"hunter2\"\n",
    );
    profile(
        "notswift",
        "[store]\nurl = \"file://store\"\n[store.swift]\nauth_url = \"https://k/v3\"\n",
    );
    let out = env
        .cmd()
        .env_remove("OS_AUTH_URL")
        .args(["check", "noauth", "typo", "v1", "notswift"])
        .output()
        .unwrap();
    let out: crate::harness::Out = out.into();
    assert_eq!(out.code, 2, "{}", out.all());
    let all = out.all();
    for expected in [
        "store.swift.auth_url: no auth_url in [store.swift] nor in the OS_* environment",
        "store.swift.segment_size_mib: 0 MiB is not a valid segment size",
        "unknown field `pasword`",
        "store.swift: v1 auth needs username = \"ACCOUNT:USER\"",
        "store.swift: [store.swift] is set but the url is not swift://",
    ] {
        assert!(all.contains(expected), "{expected}\n{all}");
    }
    assert!(!all.contains("hunter2"), "{all}");
    // Each problem points at its line.
    for name in ["noauth", "typo", "v1", "notswift"] {
        let line = all
            .lines()
            .find(|l| l.contains(&format!("profiles/{name}.toml:")))
            .unwrap_or_else(|| panic!("{name}: {all}"));
        let at = line.split(".toml:").nth(1).unwrap();
        assert!(at.starts_with(|c: char| c.is_ascii_digit()), "{line}");
    }
}
