//! Retention end to end on a local store, and the per-profile lock.

use std::time::Duration;

use crate::harness::TestEnv;

fn ids(env: &TestEnv, p: &str) -> Vec<String> {
    env.manifests(p)
        .iter()
        .map(|m| {
            m.file_name()
                .unwrap()
                .to_string_lossy()
                .split('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn prune_keeps_the_policy_explains_itself_and_run_prunes_after_success() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile(
        "r",
        &[&data],
        "[retention]\ndaily = 3\nweekly = 2\nmonthly = 1\n",
    );
    // Ten days of backups, two on the last day.
    for day in 1..=10 {
        env.at(&format!("2026-03-{day:02}T02:00:00Z"), &["backup", "r"])
            .ok();
    }
    env.at("2026-03-10T14:00:00Z", &["backup", "r"]).ok();
    assert_eq!(ids(&env, "r").len(), 11);
    // An unfinished backup (payload without manifest) from a week ago.
    let week_ago = env.path().join("store/r/20260303T020000Z.manifest.json");
    std::fs::remove_file(&week_ago).unwrap();

    let dry = env.at("2026-03-10T15:00:00Z", &["prune", "r", "--dry-run"]);
    dry.ok();
    assert!(
        dry.stdout.contains("would delete 20260301T020000Z"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("unfinished (no manifest)"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("keep         20260310T140000Z  newest,daily,weekly,monthly"),
        "{}",
        dry.stdout
    );
    assert_eq!(ids(&env, "r").len(), 10, "--dry-run deleted something");

    let list = env.at("2026-03-10T15:00:00Z", &["list", "r"]);
    assert!(
        list.stdout
            .contains("20260308T020000Z   2026-03-08 02:00:00"),
        "{}",
        list.stdout
    );

    env.at("2026-03-10T15:00:00Z", &["prune", "r"]).ok();
    // Daily: 10 (14:00), 9, 8; weekly (ISO weeks): 2026-W11 = 10th, W10 = 8th;
    // monthly: 2026-03 = the 10th.
    assert_eq!(
        ids(&env, "r"),
        vec!["20260308T020000Z", "20260309T020000Z", "20260310T140000Z"]
    );
    assert!(
        !env.store_entries("r")
            .iter()
            .any(|n| n.starts_with("20260303")),
        "unfinished not removed"
    );

    // `run` prunes after a successful backup (unless --no-prune).
    env.at("2026-03-20T02:00:00Z", &["run", "--no-prune", "r"])
        .ok();
    assert_eq!(ids(&env, "r").len(), 4);
    env.at("2026-03-21T02:00:00Z", &["run", "r"]).ok();
    assert_eq!(
        ids(&env, "r"),
        vec!["20260310T140000Z", "20260320T020000Z", "20260321T020000Z"]
    );
    let json = env.at("2026-03-21T03:00:00Z", &["list", "r", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[2]["tier"], "newest,daily,weekly,monthly");
}

#[test]
fn a_second_cellar_waits_for_the_lock_then_gives_up_and_a_killed_holder_frees_it() {
    let env = TestEnv::new();
    let big = crate::harness::noise(48 << 20, 5);
    let data = env.data_dir(&[("big", &big)]);
    env.files_profile("l", &[&data], "");
    env.edit("profiles/l.toml", "level = 1", "level = 9\nthreads = 1");
    let mut first = env.cmd().args(["backup", "l"]).spawn().unwrap();
    let started = std::time::Instant::now();
    while !env.path().join("state/locks/l.lock").exists() {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let second = env.cellar(&["--lock-wait", "1s", "backup", "l"]);
    assert_eq!(second.code, 1, "{}", second.all());
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert!(
        second.stderr.contains("profile l is busy") && second.stderr.contains("(backup)"),
        "{}",
        second.stderr
    );
    first.kill().unwrap();
    first.wait().unwrap();
    env.edit("profiles/l.toml", "level = 9\nthreads = 1", "level = 0");
    env.cellar(&["--lock-wait", "1s", "backup", "l"]).ok();
}

/// One backup made while the clock ran months ahead: later nightly runs
/// (`run --due`) still run and keep their own backups (the newest is the
/// newest of today), the one from the future stays too, and `status`
/// does not take the future one for a fresh backup.
#[test]
fn a_backup_from_a_clock_ahead_does_not_make_later_ones_old() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile(
        "r",
        &[&data],
        "[retention]\ndaily = 1\nweekly = 1\nmonthly = 1\n",
    );
    env.edit(
        "profiles/r.toml",
        "kind = \"files\"",
        "kind = \"files\"\nschedule = \"0 2 * * *\"",
    );
    // (`backup` does not prune: all three stay.)
    for day in ["2026-12-05", "2026-12-06", "2027-06-01"] {
        env.at(&format!("{day}T02:06:00Z"), &["backup", "r"]).ok();
    }
    assert_eq!(ids(&env, "r").len(), 3);
    let st = env.at("2026-12-06T12:00:00Z", &["status", "--max-age", "26h"]);
    assert_eq!(st.code, 1, "{}", st.all());
    assert!(st.stdout.contains("dated in the future"), "{}", st.stdout);
    env.at("2026-12-07T02:06:00Z", &["run", "--due"]).ok();
    env.at("2026-12-08T02:06:00Z", &["run", "--due"]).ok();
    let mut kept = ids(&env, "r");
    kept.sort();
    assert_eq!(kept, ["20261208T020600Z", "20270601T020600Z"]);
    env.at("2026-12-08T03:00:00Z", &["status", "--max-age", "26h"])
        .ok();
    let back = env.path().join("back");
    let out = env.at(
        "2026-12-08T03:00:00Z",
        &["restore", "r", "--to-dir", back.to_str().unwrap()],
    );
    out.ok();
    assert!(out.stdout.contains("20261208T020600Z"), "{}", out.stdout);
}

/// A profile "r" keeping one day, backed up on two nights (12-05, 12-06).
fn two_nights() -> TestEnv {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile(
        "r",
        &[&data],
        "[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\n",
    );
    env.at("2026-12-05T02:00:00Z", &["backup", "r"]).ok();
    env.at("2026-12-06T02:00:00Z", &["backup", "r"]).ok();
    env
}

/// A folder planted under a pin's name is not a pin: `pin` says so (exit
/// 1) instead of "pinned already", and the backup is not left to prune.
#[test]
fn a_folder_in_the_way_of_a_pin_is_reported() {
    let env = two_nights();
    std::fs::create_dir(env.path().join("store/r/20261205T020000Z.pin")).unwrap();
    let out = env.cellar(&["pin", "r", "20261205T020000Z"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("not a pin"), "{}", out.stderr);
    std::fs::remove_dir(env.path().join("store/r/20261205T020000Z.pin")).unwrap();
    env.cellar(&["pin", "r", "20261205T020000Z"]).ok();
    env.at("2026-12-06T03:00:00Z", &["prune", "r"]).ok();
    assert_eq!(ids(&env, "r").len(), 2);
}

/// Objects planted with names no store would touch (a backslash, a
/// control character), one beside a backup that is due for deletion:
/// prune and run go on, delete what they should, and name the objects.
#[test]
fn objects_with_names_no_store_touches_do_not_stop_prune() {
    let env = two_nights();
    let store = env.path().join("store/r");
    std::fs::write(store.join("20200101T000000Z.a\\b"), "x").unwrap();
    std::fs::write(store.join("20261205T020000Z.x\u{1}"), "x").unwrap();
    let out = env.at("2026-12-07T02:00:00Z", &["run", "r"]);
    out.ok();
    assert!(!out.stderr.contains("pruning failed"), "{}", out.stderr);
    assert!(out.stderr.contains("remove it by hand"), "{}", out.stderr);
    assert_eq!(ids(&env, "r"), ["20261207T020000Z"]);
    assert!(!store.join("20261205T020000Z.manifest.json").exists());
    assert!(store.join("20200101T000000Z.a\\b").exists());
}
