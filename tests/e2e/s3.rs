//! The S3 store against a real S3-compatible server (moto): round trips
//! with multipart uploads, more than 1,000 objects, object lock and tags,
//! the server stopped mid-upload, a missing bucket, a bad endpoint.

use std::time::{Duration, Instant};

use crate::harness::{db_name, noise, pg, TestEnv, RICH_SCHEMA};
use crate::s3harness::{self, store_toml};

const FILE_STORE: &str = "[store]\nurl = \"file://store\"\n";

#[test]
fn files_and_postgres_round_trip_through_s3_with_multipart() {
    let m = s3harness::shared();
    m.create_bucket("roundtrip", false);
    let env = TestEnv::new();
    // 12 MiB of noise: three 5 MiB parts.
    let data = env.data_dir(&[("noise.bin", &noise(12 << 20, 9)), ("a.txt", b"hello")]);
    env.files_profile("f", &[&data], "");
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &store_toml(m, "roundtrip", "part_size_mib = 5\nstorage_class = \"STANDARD\"\nrequest_headers = { \"x-amz-meta-owner\" = \"ops\" }"),
    );
    env.edit("profiles/f.toml", "level = 1", "level = 0");
    env.cellar(&["check", "f"]).ok();
    env.cellar(&["backup", "f"]).ok();
    assert_eq!(m.open_uploads("roundtrip"), 0);
    let keys = m.keys("roundtrip");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("backups/f/") && k.ends_with(".tar.xz.pgp")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with(".manifest.json")));
    env.cellar(&["list", "f"]).ok();
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
    let src = db_name("s3_src");
    let dst = db_name("s3_dst");
    pg.create_db(&src);
    pg.psql(&src, RICH_SCHEMA);
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.pg_profile("db", &src, "", "");
    env.edit(
        "profiles/db.toml",
        FILE_STORE,
        &store_toml(m, "roundtrip", ""),
    );
    env.cellar(&["backup", "db"]).ok();
    env.cellar(&["verify", "db"]).ok();
    env.cellar(&["restore", "db", "--to-database", &dst]).ok();
    assert_eq!(pg.dump(&src), pg.dump(&dst));
}

#[test]
fn listing_pages_through_more_than_a_thousand_objects() {
    let m = s3harness::shared();
    m.create_bucket("many", false);
    let (rt, c) = m.client();
    for i in 0..1100 {
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + i * 60, 0).unwrap();
        let key = format!("backups/p/{}.tar.xz.pgp", cellar::manifest::id_for(t));
        rt.block_on(
            c.put_object()
                .bucket("many")
                .key(key)
                .body(vec![1u8].into())
                .send(),
        )
        .unwrap();
    }
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("p", &[&data], "");
    env.edit("profiles/p.toml", FILE_STORE, &store_toml(m, "many", ""));
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
fn object_lock_and_tier_tags_are_set() {
    let m = s3harness::shared();
    m.create_bucket("locked", true);
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("l", &[&data], "");
    env.edit(
        "profiles/l.toml",
        FILE_STORE,
        &store_toml(
            m,
            "locked",
            "object_lock = { mode = \"GOVERNANCE\", days = 2 }\ntag_tiers = true",
        ),
    );
    env.cellar(&["backup", "l"]).ok();
    let (rt, c) = m.client();
    let key = m
        .keys("locked")
        .into_iter()
        .find(|k| k.ends_with(".pgp"))
        .unwrap();
    let head = rt
        .block_on(c.head_object().bucket("locked").key(&key).send())
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    let tags = rt
        .block_on(c.get_object_tagging().bucket("locked").key(&key).send())
        .unwrap();
    assert!(tags
        .tag_set()
        .iter()
        .any(|t| t.key() == "cellar-tier" && t.value() == "daily"));
    env.cellar(&["verify", "l"]).ok();
}

#[test]
fn missing_bucket_and_bad_endpoint_say_what_is_wrong() {
    let m = s3harness::shared();
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("nb", &[&data], "");
    env.edit(
        "profiles/nb.toml",
        FILE_STORE,
        &store_toml(m, "no-such-bucket", ""),
    );
    let out = env.cellar(&["check", "nb"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("bucket `no-such-bucket` does not exist"),
        "{}",
        out.stdout
    );
    let out = env.cellar(&["backup", "nb"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("NoSuchBucket"), "{}", out.stderr);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.files_profile("ep", &[&data], "");
    env.edit(
        "profiles/ep.toml",
        FILE_STORE,
        &store_toml(m, "x", "").replace(&m.endpoint(), &format!("http://127.0.0.1:{closed}")),
    );
    let out = env.cellar(&["check", "ep"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("cannot reach"), "{}", out.stdout);
}

/// A private server (the test freezes or fronts it) with one bucket, and a
/// files profile `f` of `files` stored there uncompressed, in 5 MiB parts.
fn private_files(
    bucket: &str,
    timeout: &str,
    attempts: u32,
    files: &[(&str, &[u8])],
) -> (s3harness::Moto, TestEnv, std::path::PathBuf) {
    let m = s3harness::start();
    m.create_bucket(bucket, false);
    let env = TestEnv::new();
    let data = env.data_dir(files);
    env.files_profile("f", &[&data], "");
    let opts = format!("part_size_mib = 5\ntimeout = \"{timeout}\"\nmax_attempts = {attempts}");
    env.edit(
        "profiles/f.toml",
        FILE_STORE,
        &store_toml(&m, bucket, &opts),
    );
    env.edit("profiles/f.toml", "level = 1", "level = 0");
    (m, env, data)
}

#[test]
fn server_stopped_mid_upload_fails_cleanly_and_keeps_earlier_backups() {
    // A private server: this test freezes it.
    let (m, env, data) = private_files("frozen", "2s", 2, &[("small", b"first")]);
    env.cellar(&["backup", "f"]).ok();

    std::fs::write(data.join("big"), noise(96 << 20, 3)).unwrap();
    let child = env
        .cmd()
        .args(["backup", "f"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Freeze it once a part is in: cellar knows the upload by then (a
    // freeze while the upload is being started is the test below).
    let started = Instant::now();
    while m.uploaded_parts("frozen") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.signal(libc::SIGSTOP);
    // Longer than the attempts (2 x 2 s plus backoff); the abort, retried
    // with backoff, goes through once the server is back.
    std::thread::sleep(Duration::from_secs(10));
    m.signal(libc::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Depending on where the request hung: no answer, or a dropped connection.
    assert!(
        stderr.contains("did not answer within") || stderr.contains("cannot reach"),
        "{stderr}"
    );
    assert_eq!(
        m.open_uploads("frozen"),
        0,
        "the multipart upload was not aborted"
    );
    let manifests = m
        .keys("frozen")
        .into_iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .count();
    assert_eq!(manifests, 1);
    std::fs::remove_file(data.join("big")).unwrap();
    let target = env.path().join("r");
    env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()])
        .ok();
}

#[test]
fn an_upload_started_without_an_answer_is_aborted_too() {
    // The server makes the multipart upload but its answer is lost (a
    // timeout, a dropped connection); the SDK tries again, and that answer
    // is lost too. cellar never learns an id, yet nothing may stay billed.
    let (m, env, _data) = private_files("lost", "2s", 2, &[("big", &noise(12 << 20, 5))]);
    let proxy = m.losing_create_answers();
    env.edit("profiles/f.toml", &m.endpoint(), &proxy.endpoint());
    let out = env.cellar(&["backup", "f"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("did not answer within"),
        "{}",
        out.stderr
    );
    assert!(
        proxy.creates.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the SDK did not try again"
    );
    assert_eq!(m.open_uploads("lost"), 0, "an upload was left behind");
}

#[test]
fn wrong_credentials_are_named_as_such() {
    let (m, id, secret) = s3harness::start_with_auth("auth");
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    let with = |name: &str, id: &str, secret: &str| {
        env.files_profile(name, &[&data], "");
        env.edit(
            &format!("profiles/{name}.toml"),
            FILE_STORE,
            &store_toml(&m, "auth", "").replace(
                "access_key_id = \"test\"\nsecret_access_key = \"test\"",
                &format!("access_key_id = \"{id}\"\nsecret_access_key = \"env:CELLAR_TEST_S3_SECRET_{name}\""),
            ),
        );
        std::env::set_var(format!("CELLAR_TEST_S3_SECRET_{name}"), secret);
    };
    with("good", &id, &secret);
    with("badsecret", &id, "not-the-secret");
    with("badid", "AKIANOTKNOWN", &secret);
    env.cellar(&["check", "good"]).ok();
    env.cellar(&["backup", "good"]).ok();

    let out = env.cellar(&["check", "badsecret"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("wrong credentials"), "{}", out.stdout);
    let out = env.cellar(&["backup", "badsecret"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the secret access key is wrong (SignatureDoesNotMatch)"),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains("not-the-secret"));

    let out = env.cellar(&["backup", "badid"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("does not know this access key id")
            && out.stderr.contains("(InvalidAccessKeyId)"),
        "{}",
        out.stderr
    );
}

fn tag_of(m: &s3harness::Moto, bucket: &str, key: &str) -> String {
    let (rt, c) = m.client();
    let tags = rt
        .block_on(c.get_object_tagging().bucket(bucket).key(key).send())
        .unwrap();
    tags.tag_set()
        .iter()
        .find(|t| t.key() == "cellar-tier")
        .map(|t| t.value().to_string())
        .unwrap_or_default()
}

#[test]
fn prune_retags_tiers_and_skips_what_object_lock_protects() {
    let m = s3harness::shared();
    m.create_bucket("tiers", false);
    m.create_bucket("lockprune", true);
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);

    env.files_profile(
        "t",
        &[&data],
        "[retention]\ndaily = 2\nweekly = 1\nmonthly = 2\n",
    );
    env.edit(
        "profiles/t.toml",
        FILE_STORE,
        &store_toml(m, "tiers", "tag_tiers = true"),
    );
    for now in ["2026-01-15", "2026-02-10", "2026-02-11", "2026-02-12"] {
        env.at(&format!("{now}T02:00:00Z"), &["backup", "t"]).ok();
    }
    env.at("2026-02-12T12:00:00Z", &["prune", "t"]).ok();
    let keys = m.keys("tiers");
    let payload = |id: &str| {
        keys.iter()
            .find(|k| k.contains(id) && k.ends_with(".pgp"))
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing in {keys:?}"))
    };
    assert!(!keys.iter().any(|k| k.contains("20260210T")), "{keys:?}");
    assert_eq!(tag_of(m, "tiers", &payload("20260115T020000Z")), "monthly");
    assert_eq!(tag_of(m, "tiers", &payload("20260211T020000Z")), "daily");
    assert_eq!(tag_of(m, "tiers", &payload("20260212T020000Z")), "monthly");

    env.files_profile(
        "k",
        &[&data],
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    env.edit(
        "profiles/k.toml",
        FILE_STORE,
        &store_toml(
            m,
            "lockprune",
            "object_lock = { mode = \"GOVERNANCE\", days = 1 }",
        ),
    );
    for now in ["2026-03-01", "2026-03-02", "2026-03-03"] {
        env.at(&format!("{now}T02:00:00Z"), &["backup", "k"]).ok();
    }
    let out = env.at("2026-03-03T12:00:00Z", &["prune", "k"]);
    out.ok();
    assert!(
        out.stdout
            .contains("skipped      20260301T020000Z  under object lock until"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("0 backup(s) deleted"), "{}", out.stdout);
    let list = env.at("2026-03-03T12:00:00Z", &["list", "k", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
}

/// Pins on S3: a marker object next to the backup that prune respects;
/// on a bucket with object lock, unpin and pin again still work.
#[test]
fn pins_on_s3_are_kept_by_prune_and_released_by_unpin() {
    let m = s3harness::shared();
    m.create_bucket("pins", false);
    m.create_bucket("pins-locked", true);
    let env = TestEnv::new();
    let data = env.data_dir(&[("a.txt", b"hello")]);
    env.files_profile(
        "p",
        &[&data],
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    env.edit("profiles/p.toml", FILE_STORE, &store_toml(m, "pins", ""));
    for day in 1..=3 {
        env.at(&format!("2026-03-{day:02}T02:00:00Z"), &["backup", "p"])
            .ok();
    }
    env.cellar(&["pin", "p", "20260301T020000Z"]).ok();
    assert!(m
        .keys("pins")
        .contains(&"backups/p/20260301T020000Z.pin".to_string()));
    env.at("2026-03-03T03:00:00Z", &["prune", "p"]).ok();
    let manifests = |bucket: &str| -> Vec<String> {
        m.keys(bucket)
            .into_iter()
            .filter(|k| k.ends_with(".manifest.json"))
            .collect()
    };
    assert_eq!(
        manifests("pins"),
        vec![
            "backups/p/20260301T020000Z.manifest.json",
            "backups/p/20260303T020000Z.manifest.json"
        ]
    );
    env.cellar(&["unpin", "p", "20260301T020000Z"]).ok();
    env.at("2026-03-03T04:00:00Z", &["prune", "p"]).ok();
    assert_eq!(
        manifests("pins"),
        vec!["backups/p/20260303T020000Z.manifest.json"]
    );
    assert!(!m.keys("pins").iter().any(|k| k.contains("20260301")));

    // Object lock: the pin object is locked like the others, and unpin
    // still releases it (a delete marker), and a second pin goes in.
    env.files_profile("l", &[&data], "");
    env.edit(
        "profiles/l.toml",
        FILE_STORE,
        &store_toml(
            m,
            "pins-locked",
            "object_lock = { mode = \"GOVERNANCE\", days = 1 }",
        ),
    );
    env.cellar(&["backup", "l"]).ok();
    let id = manifests("pins-locked")[0]
        .trim_start_matches("backups/l/")
        .trim_end_matches(".manifest.json")
        .to_string();
    let out = env.cellar(&["pin", "l", &id]);
    out.ok();
    // payload, signature, manifest and the pin itself
    assert!(
        out.stdout.contains("S3 legal hold set on 4 object(s)"),
        "{}",
        out.stdout
    );
    let hold = |key: &str| -> String {
        let (rt, c) = m.client();
        rt.block_on(
            c.get_object_legal_hold()
                .bucket("pins-locked")
                .key(key)
                .send(),
        )
        .unwrap()
        .legal_hold()
        .and_then(|h| h.status())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
    };
    let manifest_key = format!("backups/l/{id}.manifest.json");
    assert_eq!(hold(&manifest_key), "ON");
    let list = env.cellar(&["list", "l"]);
    assert!(list.stdout.contains("pinned"), "{}", list.stdout);
    let out = env.cellar(&["unpin", "l", &id]);
    out.ok();
    assert!(out.stdout.contains("legal hold cleared"), "{}", out.stdout);
    assert_eq!(hold(&manifest_key), "OFF");
    assert!(!m.keys("pins-locked").iter().any(|k| k.ends_with(".pin")));
    let list = env.cellar(&["list", "l"]);
    assert!(!list.stdout.contains("pinned"), "{}", list.stdout);
    let out = env.cellar(&["pin", "l", &id]);
    out.ok();
    assert!(out.stdout.contains("is pinned"), "{}", out.stdout);
}

/// A server that freezes for good mid-upload: the backup fails within the
/// request attempts plus about a minute of trying to abort, not attempts
/// × timeout for every abort attempt; nothing is listed afterwards.
#[test]
fn a_server_frozen_for_good_fails_the_backup_within_bounds() {
    let (m, env, _data) = private_files("gone", "5s", 3, &[("big", &noise(48 << 20, 4))]);
    let child = env
        .cmd()
        .args(["backup", "f"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while m.open_uploads("gone") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    m.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = frozen.elapsed();
    m.signal(libc::SIGCONT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // 3 attempts of 5 s with backoff, then at most a minute of aborting
    // (before, 8 abort attempts of 3 x 5 s each: over 150 s).
    assert!(took < Duration::from_secs(120), "took {took:?}: {stderr}");
    assert!(
        !m.keys("gone").iter().any(|k| k.ends_with(".manifest.json")),
        "{stderr}"
    );
}
