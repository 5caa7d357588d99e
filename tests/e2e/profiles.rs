//! Profiles: every shipped profile and template parses, and each kind of
//! mistake gives a message (snapshotted) with file, line and fix, all
//! problems of a file at once.

use crate::harness::TestEnv;

/// Copies the repository's profiles/ and templates/ into a config dir with
/// the keys they name, and parses each file.
#[test]
fn shipped_profiles_and_templates_parse() {
    let env = TestEnv::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["demo", "ops"] {
        cellar::keys::keygen(&env.path().join("secrets"), name, name, None).unwrap();
    }
    cellar::keys::keygen_signing(&env.path().join("secrets"), "demo", "demo").unwrap();
    let mut seen = 0;
    for folder in ["profiles", "templates"] {
        for entry in std::fs::read_dir(repo.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let rel = std::path::Path::new(folder).join(path.file_name().unwrap());
            let stem = path.file_stem().unwrap().to_string_lossy();
            if let Err(problems) = cellar::profile::parse(env.path(), &stem, &rel, &text) {
                panic!(
                    "{} does not parse:\n{}",
                    rel.display(),
                    cellar::profile::ProblemList(problems)
                );
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "expected at least 2 profiles and 2 templates, saw {seen}"
    );
}

fn check(env: &TestEnv, name: &str, text: &str) -> String {
    env.write(&format!("profiles/{name}.toml"), text);
    let out = env.cellar(&["check", name]);
    assert_eq!(out.code, 2, "{}", out.all());
    out.stdout
}

#[test]
fn invalid_profiles_report_every_problem_with_line_and_fix() {
    let env = TestEnv::new();
    let cases = [
        (
            "typos",
            r#"kind = "postgres"
shedule = "0 2 * * *"
[source]
hots = "db"
database = "shop"
[store]
url = "file://store"
[encryption]
recipients = ["secrets/k.pub.asc"]
[compression]
level = "high"
"#,
        ),
        (
            "missing",
            r#"kind = "files"
[source]
exclude = ["*.tmp"]
"#,
        ),
        (
            "values",
            r#"kind = "postgres"
schedule = "0 25 * * *"
[source]
database = "a"
databases = ["b"]
format = "directory"
password = "file:secrets/nope.password"
[store]
url = "ftp://host/x"
[encryption]
recipients = ["secrets/missing.pub.asc", "profiles/values.toml"]
passphrase = "env:CELLAR_TEST_UNSET_VARIABLE"
[compression]
algorithm = "zstd"
level = 22
[mirror]
database = "x"
bogus = 1
"#,
        ),
        ("kind", "kind = \"mongodb\"\n[store]\nurl = \"file://x\"\n"),
        ("syntax", "kind = \"files\"\n[source\npaths = []\n"),
        (
            "files_mirror",
            r#"kind = "files"
[source]
paths = []
[store]
url = "s3://bucket/x"
[store.sftp]
known_hosts = "k"
[encryption]
recipients = []
[mirror]
database = "x"
"#,
        ),
    ];
    for (name, text) in cases {
        let out = check(&env, name, text);
        insta::assert_snapshot!(name, out);
    }
}

#[test]
fn unknown_profile_name_lists_the_known_ones() {
    let env = TestEnv::new();
    env.files_profile("alpha", &[env.path()], "");
    let out = env.cellar(&["backup", "beta"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no profile named `beta`") && out.stderr.contains("alpha"),
        "{}",
        out.stderr
    );
}

#[test]
fn init_writes_a_profile_from_the_template_that_check_accepts_once_edited() {
    let env = TestEnv::new();
    env.cellar(&["init", "files", "site"]).ok();
    let p = env.path().join("profiles/site.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("kind = \"files\""));
    let again = env.cellar(&["init", "files", "site"]);
    assert_eq!(again.code, 2);
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let edited = text
        .replace(
            "[\"/var/www/uploads\", \"/etc/myapp\"]",
            &format!("[{:?}]", data.to_str().unwrap()),
        )
        .replace("file:///var/backups/cellar", "file://store")
        .replace("secrets/ops", "secrets/k");
    std::fs::write(&p, edited).unwrap();
    let out = env.cellar(&["check", "site"]);
    out.ok();
    assert!(out.stdout.contains("site: store: ok"), "{}", out.stdout);
}

#[test]
fn keygen_writes_keys_gpg_imports() {
    let env = TestEnv::new();
    let out = env.cellar(&["keygen", "ops"]);
    out.ok();
    let home = env.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for f in ["secrets/ops.pub.asc", "secrets/ops.key.asc"] {
        let o = std::process::Command::new("gpg")
            .args(["--batch", "--homedir"])
            .arg(&home)
            .arg("--import")
            .arg(env.path().join(f))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = std::process::Command::new("gpg")
        .args(["--batch", "--homedir"])
        .arg(&home)
        .args(["--list-secret-keys", "--with-colons"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("cellar ops"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.path().join("secrets/ops.key.asc"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
