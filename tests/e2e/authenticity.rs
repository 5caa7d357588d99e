//! The store is not trusted: someone who can write to it, but holds no key
//! of the backup host, plants and alters backups. None of it is ever
//! restored, counted by the retention or deleted without --force.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use blake2::Digest;
use sequoia_openpgp as openpgp;

use crate::harness::{db_name, pg, TestEnv};
use crate::s3harness::{self, store_toml};

const FILE_STORE: &str = "url = \"file://store\"";

fn b2(data: &[u8]) -> String {
    let mut h = blake2::Blake2b512::new();
    h.update(data);
    hex::encode(h.finalize())
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// OpenPGP-encrypted to the profile's public key, as anyone can do.
fn encrypt(env: &TestEnv, data: &[u8]) -> Vec<u8> {
    let r = vec![cellar::keys::load_recipient(&env.path().join("secrets/k.pub.asc")).unwrap()];
    let mut out = Vec::new();
    let mut w = cellar::keys::encrypt_to(&mut out, &r).unwrap();
    w.write_all(data).unwrap();
    w.finalize().unwrap();
    out
}

/// A bare literal data packet: no encryption at all.
fn literal(data: &[u8]) -> Vec<u8> {
    use openpgp::serialize::stream::{LiteralWriter, Message};
    let mut out = Vec::new();
    let m = Message::new(&mut out);
    let mut w = LiteralWriter::new(m).build().unwrap();
    w.write_all(data).unwrap();
    w.finalize().unwrap();
    out
}

/// How a planted backup is signed.
enum Sig<'a> {
    None,
    /// With this secret signing key file.
    By(&'a Path),
    /// The signature file of another backup, copied.
    CopyOf(&'a str),
}

/// Writes a planted backup `id` of profile "db" into the local store: a
/// plain SQL payload, with a manifest modelled on `model` (a real one).
fn plant(env: &TestEnv, model: &str, id: &str, payload: &[u8], payloads: bool, sig: Sig<'_>) {
    let dir = env.store("db");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{model}.manifest.json"))).unwrap())
            .unwrap();
    let name = format!("{id}.sql.xz.pgp");
    std::fs::write(dir.join(&name), payload).unwrap();
    m["id"] = id.into();
    m["payloads"] = if payloads {
        serde_json::json!([{
            "name": name,
            "content": "sql",
            "stored_size": payload.len(),
            "stored_blake2b": b2(payload),
            "plain_size": 0,
            "plain_blake2b": b2(b""),
        }])
    } else {
        serde_json::json!([])
    };
    let json = serde_json::to_vec_pretty(&m).unwrap();
    match sig {
        Sig::None => {}
        Sig::By(key) => {
            let k = cellar::keys::load_signing_key(key).unwrap();
            let s = cellar::keys::sign_detached(&k, &json).unwrap();
            std::fs::write(dir.join(format!("{id}.manifest.json.sig")), s).unwrap();
        }
        Sig::CopyOf(other) => {
            std::fs::copy(
                dir.join(format!("{other}.manifest.json.sig")),
                dir.join(format!("{id}.manifest.json.sig")),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join(format!("{id}.manifest.json")), json).unwrap();
}

/// A payload whose SQL runs a shell command if psql ever lets it.
fn hostile_sql(marker: &Path) -> Vec<u8> {
    format!(
        "\\! touch {}\nCREATE TABLE planted (v int);\n-- PostgreSQL database dump complete\n",
        marker.display()
    )
    .into_bytes()
}

fn real_backup(test: &str, extra: &str) -> (TestEnv, String, String) {
    let pg = pg();
    let src = db_name(&format!("{test}_src"));
    pg.create_db(&src);
    pg.psql(
        &src,
        "CREATE TABLE real (v int); INSERT INTO real VALUES (42);",
    );
    let env = TestEnv::new();
    env.pg_profile(
        "db",
        &src,
        "globals = false",
        &format!(
            "[mirror]\ndatabase = \"{}\"\nchecks = [\"SELECT v = 42 FROM real\"]\n{extra}",
            db_name(&format!("{test}_mirror"))
        ),
    );
    env.at("2026-01-01T02:00:00Z", &["backup", "db"]).ok();
    (env, src, "20260101T020000Z".to_string())
}

#[test]
fn planted_and_altered_backups_are_never_used() {
    let pg = pg();
    let (env, _src, real) = real_backup("forged", "");
    let marker = env.path().join("pwned");
    let sql = encrypt(&env, &xz(&hostile_sql(&marker)));
    // Unsigned, with a newer id (the attack the review found).
    plant(&env, &real, "20260102T020000Z", &sql, true, Sig::None);
    // Signed by a key the profile does not trust.
    cellar::keys::keygen_signing(&env.path().join("evil"), "evil", "evil").unwrap();
    let evil = env.path().join("evil/evil.sign.key.asc");
    plant(&env, &real, "20260103T020000Z", &sql, true, Sig::By(&evil));
    // A valid signature, but over another manifest.
    plant(
        &env,
        &real,
        "20260104T020000Z",
        &sql,
        true,
        Sig::CopyOf(&real),
    );
    // No payloads at all (even signed by the host's own key).
    let host = env.path().join("secrets/host.sign.key.asc");
    plant(&env, &real, "20260105T020000Z", b"", false, Sig::By(&host));
    // Garbage where a manifest should be.
    std::fs::write(
        env.store("db").join("20260106T020000Z.manifest.json"),
        "{not json",
    )
    .unwrap();

    let now = "2026-01-07T03:00:00Z";
    let list = env.at(now, &["list", "db"]);
    list.ok();
    for (id, why) in [
        ("20260102T020000Z", "no signature"),
        ("20260103T020000Z", "does not verify"),
        ("20260104T020000Z", "does not verify"),
        ("20260105T020000Z", "no payloads"),
        ("20260106T020000Z", "no signature"),
    ] {
        let line = list
            .stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or("");
        assert!(
            line.contains("UNTRUSTED") && line.contains(why),
            "{id}: {}",
            list.stdout
        );
    }
    let real_line = list.stdout.lines().find(|l| l.starts_with(&real)).unwrap();
    assert!(real_line.contains("newest"), "{}", list.stdout);

    // Every read path uses the real backup, or refuses the planted one.
    let out = env.at(now, &["verify", "db"]);
    out.ok();
    assert!(out.stdout.contains(&real), "{}", out.stdout);
    let out = env.at(now, &["verify", "db", "20260102T020000Z"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("not trusted"), "{}", out.stderr);
    let out = env.at(now, &["verify", "db", "--all"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let dst = db_name("forged_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.at(now, &["restore", "db", "--to-database", &dst]);
    out.ok();
    assert!(out.stdout.contains(&real), "{}", out.stdout);
    assert_eq!(pg.psql(&dst, "SELECT v FROM real").trim(), "42");
    let out = env.at(
        now,
        &[
            "restore",
            "db",
            "20260102T020000Z",
            "--to-database",
            &dst,
            "--clean",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    env.at(now, &["mirror", "db"]).ok();
    assert!(!marker.exists(), "a planted payload ran a shell command");

    // Retention counts only the real backup; the planted ones are kept for
    // inspection until --force.
    let prune = env.at("2026-03-01T03:00:00Z", &["prune", "db"]);
    prune.ok();
    assert!(
        prune.stdout.contains(&format!("keep         {real}")),
        "{}",
        prune.stdout
    );
    assert!(prune.stdout.contains("UNTRUSTED"), "{}", prune.stdout);
    assert!(env
        .store("db")
        .join("20260102T020000Z.manifest.json")
        .exists());
    env.at("2026-03-01T03:00:00Z", &["prune", "db", "--force"])
        .ok();
    let left: Vec<String> = env.store_entries("db");
    assert!(left.iter().all(|n| n.starts_with(&real)), "{left:?}");
}

#[test]
fn unsigned_backups_need_the_opt_in_and_even_then_cannot_run_meta_commands() {
    let (env, _src, real) = real_backup("optin", "");
    let marker = env.path().join("pwned");
    // An older, unsigned backup (as made before manifests were signed).
    std::fs::remove_file(env.store("db").join(format!("{real}.manifest.json.sig"))).unwrap();
    let out = env.at("2026-01-02T00:00:00Z", &["verify", "db", &real]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("allow_unsigned_before"),
        "{}",
        out.stderr
    );
    env.edit(
        "profiles/db.toml",
        "signer = ",
        &format!("allow_unsigned_before = \"{real}\"\nsigner = "),
    );
    env.at("2026-01-02T00:00:00Z", &["verify", "db", &real])
        .ok();

    // Even with the signature check bypassed for it, a planted plain
    // payload cannot run psql meta-commands.
    let sql = encrypt(&env, &xz(&hostile_sql(&marker)));
    plant(&env, &real, "20260101T010000Z", &sql, true, Sig::None);
    let dst = db_name("optin_dst");
    pg().psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    let out = env.at(
        "2026-01-02T00:00:00Z",
        &["restore", "db", "20260101T010000Z", "--to-database", &dst],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!marker.exists(), "the shell command ran");
    assert!(!pg().exists(&dst));

    // A payload with no encryption layer is refused, even when signed.
    let host = env.path().join("secrets/host.sign.key.asc");
    plant(
        &env,
        &real,
        "20260101T030000Z",
        &literal(&xz(b"SELECT 1;\n-- PostgreSQL database dump complete\n")),
        true,
        Sig::By(&host),
    );
    let out = env.at(
        "2026-01-02T00:00:00Z",
        &["verify", "db", "20260101T030000Z"],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("encryption container"),
        "{}",
        out.stderr
    );
}

#[test]
fn gpg_verifies_a_manifest_signature() {
    let (env, _src, real) = real_backup("gpgverify", "");
    let home = env.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .args(["--batch", "--homedir"])
            .arg(&home)
            .args(args)
            .output()
            .unwrap()
    };
    let pubkey = env.path().join("secrets/host.sign.pub.asc");
    assert!(gpg(&["--import", pubkey.to_str().unwrap()])
        .status
        .success());
    let m = env.store("db").join(format!("{real}.manifest.json"));
    let sig = env.store("db").join(format!("{real}.manifest.json.sig"));
    let out = gpg(&["--verify", sig.to_str().unwrap(), m.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One changed byte and gpg says BAD.
    let mut text = std::fs::read(&m).unwrap();
    text[10] ^= 1;
    std::fs::write(&m, text).unwrap();
    let out = gpg(&["--verify", sig.to_str().unwrap(), m.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn names_from_outside_cannot_leave_the_profile_folder() {
    let pg = pg();
    let evil = "t_a/../../../../escaped";
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS \"{evil}\""));
    pg.psql("postgres", &format!("CREATE DATABASE \"{evil}\""));
    pg.psql(evil, "CREATE TABLE t (v int); INSERT INTO t VALUES (7);");
    let env = TestEnv::new();
    env.pg_profile_with(
        "db",
        &format!("databases = [{evil:?}, \"postgres\"]\nglobals = false"),
        "",
    );
    env.cellar(&["backup", "db"]).ok();
    // Every object is a plain file inside the profile's folder.
    let names = env.store_entries("db");
    assert!(
        names
            .iter()
            .any(|n| n.contains("t_a%2F..%2F") || n.contains("t_a%2F%2E%2E")),
        "{names:?}"
    );
    assert!(!env.path().join("escaped").exists());
    let walk: Vec<_> = walk(&env.path().join("store"));
    assert!(
        walk.iter().all(|p| p.starts_with(env.store("db"))),
        "{walk:?}"
    );
    let dst = db_name("escaped_dst");
    pg.psql("postgres", &format!("DROP DATABASE IF EXISTS {dst}"));
    env.cellar(&["restore", "db", "--database", evil, "--to-database", &dst])
        .ok();
    assert_eq!(pg.psql(&dst, "SELECT v FROM t").trim(), "7");
    pg.psql("postgres", &format!("DROP DATABASE \"{evil}\""));

    // A profile file named `...toml` (profile name `..`) is refused.
    std::fs::copy(
        env.path().join("profiles/db.toml"),
        env.path().join("profiles/...toml"),
    )
    .unwrap();
    let out = env.cellar(&["check", ".."]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("not a plain name"), "{}", out.all());
    assert!(!env.path().join("store/..").join("20").exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn two_writers_of_one_profile_in_the_same_second_never_overwrite_each_other() {
    let shared = tempfile::tempdir().unwrap();
    let envs: Vec<TestEnv> = (0..2).map(|_| TestEnv::new()).collect();
    // Both hosts share the signing key (one profile, two config dirs).
    let secrets = envs[0].path().join("secrets");
    for env in &envs {
        let data = env.data_dir(&[("f.bin", &crate::harness::noise(4 << 20, 7))]);
        env.files_profile("f", &[&data], "");
        env.edit(
            "profiles/f.toml",
            FILE_STORE,
            &format!("url = \"file://{}\"", shared.path().display()),
        );
        for k in [
            "k.pub.asc",
            "k.key.asc",
            "host.sign.key.asc",
            "host.sign.pub.asc",
        ] {
            if env.path() != envs[0].path() {
                std::fs::copy(secrets.join(k), env.path().join("secrets").join(k)).unwrap();
            }
        }
    }
    let children: Vec<_> = envs
        .iter()
        .map(|env| {
            env.cmd()
                .env("CELLAR_NOW", "2026-05-05T05:05:05Z")
                .args(["backup", "f"])
                .output_async()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = envs[0].at("2026-05-05T06:00:00Z", &["list", "f", "--json"]);
    list.ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert!(rows.iter().all(|r| r["trusted"] == true), "{}", list.stdout);
    for r in &rows {
        envs[1]
            .at(
                "2026-05-05T06:00:00Z",
                &["verify", "f", r["id"].as_str().unwrap()],
            )
            .ok();
    }
}

trait Spawn {
    fn output_async(&mut self) -> std::process::Child;
}

impl Spawn for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// A files profile "f" over one small file, stored in a new bucket of the
/// shared S3 server.
fn s3_files_env(bucket: &str) -> (&'static s3harness::Moto, TestEnv) {
    let m = s3harness::shared();
    m.create_bucket(bucket, false);
    let env = TestEnv::new();
    let data = env.data_dir(&[("a.txt", b"real data")]);
    env.files_profile("f", &[&data], "");
    env.edit(
        "profiles/f.toml",
        &format!("[store]\n{FILE_STORE}\n"),
        &store_toml(m, bucket, ""),
    );
    (m, env)
}

#[test]
fn s3_store_refuses_a_planted_backup_and_never_overwrites() {
    let (m, env) = s3_files_env("planted");
    env.at("2026-02-02T02:00:00Z", &["backup", "f"]).ok();
    let real = "20260202T020000Z";
    // Copy the real backup to a newer id without its signature, and
    // overwrite-attempt: the same id again.
    for k in m.keys("planted").iter().filter(|k| !k.ends_with(".sig")) {
        let bytes = m.get("planted", k);
        let newer = k.replace(real, "20260203T020000Z");
        let bytes = if newer.ends_with(".manifest.json") {
            String::from_utf8(bytes)
                .unwrap()
                .replace(real, "20260203T020000Z")
                .into_bytes()
        } else {
            bytes
        };
        m.put("planted", &newer, bytes);
    }
    let list = env.at("2026-02-04T00:00:00Z", &["list", "f"]);
    list.ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("20260203T020000Z") && l.contains("no signature")),
        "{}",
        list.stdout
    );
    let out = env.at(
        "2026-02-04T00:00:00Z",
        &[
            "restore",
            "f",
            "--to-dir",
            env.path().join("r").to_str().unwrap(),
        ],
    );
    out.ok();
    assert!(out.stdout.contains(real), "{}", out.stdout);
    // A second backup in the same second gets an id of its own.
    env.at("2026-02-02T02:00:00Z", &["backup", "f"]).ok();
    let list = env.at("2026-02-04T00:00:00Z", &["list", "f", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(
        rows.iter().filter(|r| r["trusted"] == true).count(),
        2,
        "{}",
        list.stdout
    );
}

/// A store that reports, in its listing, the MD5s it was told to, whatever
/// its objects now hold: an S3 server lying about ETags.
struct LyingListing {
    inner: Box<dyn cellar::store::Store>,
    md5: std::collections::HashMap<String, String>,
}

impl cellar::store::Store for LyingListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(
        &self,
        key: &str,
        data: &mut dyn std::io::Read,
    ) -> Result<u64, cellar::store::StoreError> {
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<cellar::store::Reader, cellar::store::StoreError> {
        self.inner.get(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<cellar::store::ObjectInfo>, cellar::store::StoreError> {
        let mut v = self.inner.list(prefix)?;
        for o in &mut v {
            o.md5 = self.md5.get(&o.key).cloned();
        }
        Ok(v)
    }
    fn delete(&self, key: &str) -> Result<(), cellar::store::StoreError> {
        self.inner.delete(key)
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// `list`, `prune` and `run` remember the signatures they verified
/// (state/<profile>.verified.json). What they remember is only ever used
/// for the same bytes; a manifest changed in the store is verified again,
/// and even a store that lies about its objects' MD5s never gets a changed
/// manifest restored.
#[test]
fn remembered_signatures_never_vouch_for_changed_bytes() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("a.txt", b"real data")]);
    env.files_profile("f", &[&data], "");
    env.at("2026-02-02T02:00:00Z", &["backup", "f"]).ok();
    env.at("2026-02-03T02:00:00Z", &["backup", "f"]).ok();
    let (old, new) = ("20260202T020000Z", "20260203T020000Z");
    let now = "2026-02-04T00:00:00Z";
    let cache = env.path().join("state/f.verified.json");
    let list = env.at(now, &["list", "f", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert!(rows.iter().all(|r| r["trusted"] == true), "{}", list.stdout);
    assert!(cache.exists(), "list remembers what it verified");

    // The manifest altered (a count changed), its signature kept.
    let mpath = env.store("f").join(format!("{new}.manifest.json"));
    let signed = std::fs::read(&mpath).unwrap();
    let sig = std::fs::read(env.store("f").join(format!("{new}.manifest.json.sig"))).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
    assert!(v["source"]["changed_during_backup"].is_null(), "{v}");
    v["source"]["changed_during_backup"] = 7.into();
    let altered = serde_json::to_vec_pretty(&v).unwrap();
    assert_ne!(altered, signed);
    std::fs::write(&mpath, &altered).unwrap();

    let list = env.at(now, &["list", "f"]);
    list.ok();
    let line = list.stdout.lines().find(|l| l.starts_with(new)).unwrap();
    assert!(
        line.contains("UNTRUSTED") && line.contains("does not verify"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(old) && l.contains("newest")),
        "{}",
        list.stdout
    );
    let out = env.at(
        now,
        &[
            "restore",
            "f",
            new,
            "--to-dir",
            env.path().join("r1").to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.all());

    // A listing that reports the MD5s of the signed bytes while the store
    // serves the altered ones.
    std::fs::write(&mpath, &signed).unwrap();
    env.at(now, &["list", "f"]).ok();
    std::fs::write(&mpath, &altered).unwrap();
    let profile = cellar::commands::load_one(env.path(), "f").unwrap();
    let md5 = [
        (format!("f/{new}.manifest.json"), md5_hex(&signed)),
        (format!("f/{new}.manifest.json.sig"), md5_hex(&sig)),
    ]
    .into_iter()
    .collect();
    let lying = LyingListing {
        inner: cellar::store::open(&profile.store, env.path()).unwrap(),
        md5,
    };
    let entries = cellar::catalog::backups(&lying, &profile, Some(env.path())).unwrap();
    let e = entries.iter().find(|e| e.id == new).unwrap();
    // The listing shows what the signer signed (the remembered bytes)...
    let m = e.manifest().expect("the remembered, signed manifest");
    assert_eq!(m.source.changed_during_backup, 0);
    // ...and every path that reads a backup's contents reads the store's
    // bytes and verifies them again.
    let err = cellar::catalog::manifest(&lying, &profile, Some(new)).unwrap_err();
    assert!(format!("{err:#}").contains("not trusted"), "{err:#}");
    let err = cellar::catalog::manifest(&lying, &profile, None).unwrap();
    assert_eq!(err.id, old, "the latest trusted backup is the old one");

    // Another set of trusted signers forgets everything remembered.
    let before = std::fs::read_to_string(&cache).unwrap();
    assert!(before.contains(new));
    cellar::keys::keygen_signing(&env.path().join("secrets"), "next", "next").unwrap();
    env.edit(
        "profiles/f.toml",
        "[encryption]",
        "[encryption]\ntrusted_signers = [\"secrets/host.sign.pub.asc\", \"secrets/next.sign.pub.asc\"]",
    );
    std::fs::write(&mpath, &signed).unwrap();
    env.at(now, &["list", "f"]).ok();
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert!(after["signers"].as_str().unwrap().contains(','), "{after}");
}

/// On S3 the listing's ETags let `list` skip downloading manifests it
/// verified before; a manifest overwritten in the bucket has another ETag,
/// so it is downloaded and verified again.
#[test]
fn s3_list_verifies_an_overwritten_manifest_again() {
    let (m, env) = s3_files_env("remembered");
    env.at("2026-02-02T02:00:00Z", &["backup", "f"]).ok();
    let id = "20260202T020000Z";
    let now = "2026-02-04T00:00:00Z";
    let list = env.at(now, &["list", "f"]);
    list.ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(id) && l.contains("newest")),
        "{}",
        list.stdout
    );
    let cache = std::fs::read_to_string(env.path().join("state/f.verified.json")).unwrap();
    assert!(cache.contains(id), "{cache}");
    // Twice: the second list uses what the first verified.
    env.at(now, &["list", "f"]).ok();

    let key = m
        .keys("remembered")
        .into_iter()
        .find(|k| k.ends_with(".manifest.json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.get("remembered", &key)).unwrap();
    m.put("remembered", &key, serde_json::to_vec(&v).unwrap());
    let list = env.at(now, &["list", "f"]);
    list.ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(id) && l.contains("UNTRUSTED") && l.contains("does not verify")),
        "{}",
        list.stdout
    );
}
