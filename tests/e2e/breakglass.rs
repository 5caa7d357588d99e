//! Break-glass: standard tools alone (gpg 2.2, xz, zstd, pg_restore, tar)
//! restore what cellar stored, with keys cellar generated.

use std::process::Command;

use crate::harness::{db_name, pg, TestEnv, RICH_SCHEMA};

fn gpg_home(env: &TestEnv) -> std::path::PathBuf {
    let home = env.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for key in ["secrets/k.key.asc", "secrets/k.pub.asc"] {
        let out = Command::new("gpg")
            .args(["--batch", "--homedir"])
            .arg(&home)
            .arg("--import")
            .arg(env.path().join(key))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg --import {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    home
}

fn shell(script: &str) {
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn break_glass_pg(test: &str, decompress: &str, compression: &str) {
    let pg = pg();
    let src = db_name(test);
    let dst = format!("{src}_bg");
    pg.create_db(&src);
    pg.psql(&src, RICH_SCHEMA);
    pg.create_db(&dst);
    let env = TestEnv::new();
    env.pg_profile("db", &src, "", compression);
    env.cellar(&["backup", "db"]).ok();
    let home = gpg_home(&env);
    let payload = env
        .payloads("db")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(".pgdump."))
        .unwrap();
    shell(&format!(
        "gpg --batch --quiet --homedir '{}' --decrypt '{}' | {decompress} | pg_restore -h 127.0.0.1 -p {} -U postgres -d {dst}",
        home.display(),
        payload.display(),
        pg.port
    ));
    assert_eq!(pg.dump(&src), pg.dump(&dst));
    // The globals payload is plain SQL that psql takes.
    let globals = env
        .payloads("db")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(".globals.sql."))
        .unwrap();
    shell(&format!(
        "gpg --batch --quiet --homedir '{}' --decrypt '{}' | {decompress} | grep -q 'CREATE ROLE postgres'",
        home.display(),
        globals.display()
    ));
}

#[test]
fn gpg_xz_pg_restore_restores_a_backup() {
    break_glass_pg("bg_xz", "xz -d", "");
}

#[test]
fn gpg_zstd_pg_restore_restores_a_zstd_backup() {
    break_glass_pg("bg_zstd", "zstd -d", "[compression]\nalgorithm = \"zstd\"");
}

#[test]
fn gpg_xz_tar_restores_a_folder() {
    let env = TestEnv::new();
    let data = env.path().join("data");
    std::fs::create_dir_all(data.join("empty")).unwrap();
    std::fs::write(data.join("hello.txt"), "hello from cellar\n").unwrap();
    std::os::unix::fs::symlink("hello.txt", data.join("link")).unwrap();
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let home = gpg_home(&env);
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    shell(&format!(
        "gpg --batch --quiet --homedir '{}' --decrypt '{}' | xz -d | tar -x -C '{}'",
        home.display(),
        env.payloads("f")[0].display(),
        out.display()
    ));
    let root = out.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(root.join("hello.txt")).unwrap(),
        "hello from cellar\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap().to_str(),
        Some("hello.txt")
    );
    assert!(root.join("empty").is_dir());
}

#[test]
fn manifest_hash_matches_b2sum_of_the_stored_file() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&env.manifests("f")[0]).unwrap()).unwrap();
    let payload = &manifest["payloads"][0];
    let out = Command::new("b2sum")
        .arg(&env.payloads("f")[0])
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        sum.split_whitespace().next().unwrap(),
        payload["stored_blake2b"].as_str().unwrap()
    );
    assert_eq!(
        std::fs::metadata(&env.payloads("f")[0]).unwrap().len(),
        payload["stored_size"].as_u64().unwrap()
    );
    let fpr = manifest["recipients"][0].as_str().unwrap();
    assert_eq!(fpr.len(), 40);
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["kind"], "files");
    assert_eq!(manifest["compression"]["algorithm"], "xz");
}

#[test]
fn gpg_zstd_mariadb_restores_a_mariadb_backup() {
    use crate::myharness::{mariadb, my_db, RICH_SCHEMA as MY_SCHEMA};
    let my = mariadb();
    let src = my_db("breakglass");
    let dst = my_db("breakglass_bg");
    my.create_db(&src);
    my.sql(&src, MY_SCHEMA);
    my.create_db(&dst);
    let env = TestEnv::new();
    env.my_profile(
        "db",
        my,
        &format!("database = \"{src}\"\nglobals = false"),
        "[compression]\nalgorithm = \"zstd\"",
    );
    env.cellar(&["backup", "db"]).ok();
    let home = gpg_home(&env);
    let payload = env.payloads("db").into_iter().next().unwrap();
    shell(&format!(
        "gpg --batch --quiet --homedir '{}' --decrypt '{}' | zstd -d | mariadb --no-defaults --socket='{}' -uroot {dst}",
        home.display(),
        payload.display(),
        my.sock().display()
    ));
    assert_eq!(my.fingerprint(&dst), my.fingerprint(&src));
}
