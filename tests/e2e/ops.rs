//! Operations: `run --due` against an injected clock, the daemon stopped
//! mid-backup, hooks (order, environment, failure paths), status exit
//! codes, the metrics file, canaries, `show`, completions and man page.

use std::time::Duration;

use crate::harness::TestEnv;

fn manifests(env: &TestEnv, p: &str) -> usize {
    env.manifests(p).len()
}

fn run_due_at(env: &TestEnv, now: &str) -> crate::harness::Out {
    env.at(now, &["run", "--due"])
}

#[test]
fn due_runs_what_fired_and_catches_up_missed_runs() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    // Once a year, Jan 1 at 03:00: far from any time-zone boundary.
    env.files_profile("yearly", &[&data], "");
    env.edit(
        "profiles/yearly.toml",
        "kind = \"files\"",
        "kind = \"files\"\nschedule = \"0 3 1 1 *\"",
    );
    env.files_profile("manual", &[&data], "");

    // Never backed up: due at once. A profile without schedule is not.
    let out = run_due_at(&env, "2027-01-02T00:00:00Z");
    out.ok();
    assert_eq!(manifests(&env, "yearly"), 1);
    assert_eq!(manifests(&env, "manual"), 0);
    // Not fired since.
    let out = run_due_at(&env, "2027-06-01T00:00:00Z");
    out.ok();
    assert!(
        out.stdout.contains("summary: 0 succeeded, 0 failed"),
        "{}",
        out.stdout
    );
    assert_eq!(manifests(&env, "yearly"), 1);
    // Jan 1 2028 was missed (the host was off): caught up once, in March.
    run_due_at(&env, "2028-03-01T00:00:00Z").ok();
    assert_eq!(manifests(&env, "yearly"), 2);
    run_due_at(&env, "2028-03-01T00:05:00Z").ok();
    assert_eq!(manifests(&env, "yearly"), 2);
}

#[test]
fn daemon_stops_on_sigterm_mid_backup_without_a_manifest() {
    let env = TestEnv::new();
    let big = crate::harness::noise(64 << 20, 3);
    let data = env.data_dir(&[("big", &big)]);
    env.files_profile("slow", &[&data], "");
    env.edit(
        "profiles/slow.toml",
        "kind = \"files\"",
        "kind = \"files\"\nschedule = \"* * * * *\"",
    );
    env.edit("profiles/slow.toml", "level = 1", "level = 9\nthreads = 1");
    let mut child = env.cmd().args(["daemon", "--tick", "1"]).spawn().unwrap();
    // Wait until the backup is under way (its temporary file appears).
    let started = std::time::Instant::now();
    while !env
        .store_entries("slow")
        .iter()
        .any(|n| n.contains(".tmp-"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon never started the backup"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        env.store_entries("slow").is_empty(),
        "{:?}",
        env.store_entries("slow")
    );
    let state = std::fs::read_to_string(env.path().join("state/slow.json")).unwrap();
    assert!(state.contains("interrupted"), "{state}");
}

#[test]
fn hooks_run_in_order_with_their_environment_and_on_failure_after_a_failed_before() {
    let env = TestEnv::new();
    let log = env.path().join("hooks.log");
    let script = env.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1|$2|$3|$CELLAR_PROFILE|$CELLAR_STATUS|$CELLAR_BACKUP_ID|$CELLAR_ERROR\" >> {}\n[ \"$1\" = \"$HOOK_FAIL\" ] && exit 3\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s = script.display();
    env.write(
        "cellar.toml",
        // Hooks see only a safe base of cellar's environment, plus pass_env.
        &format!("[hooks]\npass_env = [\"HOOK_FAIL\"]\nbefore = [\"{s} global-before\"]\nafter = [\"{s} global-after\"]\non_failure = [\"{s} global-failure\"]\n"),
    );
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile(
        "h",
        &[&data],
        // No shell: quotes group words, and $VARS stay literal.
        &format!("[hooks]\nbefore = [\"{s} before 'two words' '$HOME'\"]\nafter = [\"{s} after\"]\non_failure = [\"{s} failure\"]\n"),
    );
    let out = env.cellar(&["backup", "h"]);
    out.ok();
    let id = env.manifests("h")[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines,
        format!(
            "global-before|||h|running||\nbefore|two words|$HOME|h|running||\nafter|||h|success|{id}|\nglobal-after|||h|success|{id}|\n"
        )
    );

    // A failing before hook: no backup, on_failure runs with the error.
    std::fs::remove_file(&log).unwrap();
    let out = env
        .cmd()
        .env("HOOK_FAIL", "global-before")
        .args(["backup", "h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.manifests("h").len(), 1);
    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("global-before|"));
    assert!(
        lines[1].starts_with("failure|||h|failure||") && lines[1].contains("before hook"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("global-failure|||h|failure||"),
        "{}",
        lines[2]
    );

    // shell = true hands the line to sh -c.
    env.edit("profiles/h.toml", "[hooks]\n", "[hooks]\nshell = true\n");
    env.edit(
        "profiles/h.toml",
        &format!("before = [\"{s} before 'two words' '$HOME'\"]"),
        &format!("before = [\"{s} shell \\\"$CELLAR_PROFILE\\\" | cat\"]"),
    );
    std::fs::remove_file(&log).unwrap();
    env.cellar(&["backup", "h"]).ok();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(lines.contains("shell|h||h|running"), "{lines}");
}

#[test]
fn status_exit_codes_json_and_metrics_file() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"some data")]);
    env.files_profile("s", &[&data], "");
    // Never backed up: stale.
    let out = env.cellar(&["status"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("s: STALE"), "{}", out.stdout);

    let metrics = env.path().join("metrics/cellar.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    env.cellar(&["--metrics-file", metrics.to_str().unwrap(), "backup", "s"])
        .ok();
    let out = env.cellar(&["status", "--max-age", "26h"]);
    out.ok();
    assert!(out.stdout.contains("s: ok"), "{}", out.stdout);
    // 27 hours later it is stale.
    let later = (chrono::Utc::now() + chrono::Duration::hours(27)).to_rfc3339();
    let out: crate::harness::Out = env
        .cmd()
        .env("CELLAR_NOW", &later)
        .args(["status", "--max-age", "26h"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("s: STALE"), "{}", out.stdout);

    // Metrics: every sample line is `name{labels} value` after its HELP/TYPE.
    let text = std::fs::read_to_string(&metrics).unwrap();
    let mut typed = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(kind, "gauge");
            typed.insert(name.to_string());
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line");
            assert_eq!(labels, "profile=\"s\"}");
            samples.insert(name.to_string(), value.parse::<f64>().unwrap());
        }
    }
    assert_eq!(samples["cellar_last_run_success"], 1.0);
    assert!(samples["cellar_last_success_stored_bytes"] > 0.0);
    assert!(samples["cellar_last_success_timestamp_seconds"] > 1.7e9);

    // A failed run: status FAILED, exit 1, metrics say 0.
    std::fs::remove_dir_all(&data).unwrap();
    let out = env.cellar(&["--metrics-file", metrics.to_str().unwrap(), "backup", "s"]);
    assert_eq!(out.code, 1);
    let out = env.cellar(&["status", "--json"]);
    assert_eq!(out.code, 1);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["status"], "failed");
    assert!(rows[0]["last_failure"]["error"]
        .as_str()
        .unwrap()
        .contains("cannot read"));
    assert!(std::fs::read_to_string(&metrics)
        .unwrap()
        .contains("cellar_last_run_success{profile=\"s\"} 0"));
}

/// A backup killed with SIGKILL records nothing itself: `status` finds it
/// in the profile's lock file (a line nobody holds), says INTERRUPTED and
/// exits 1, until the next run of the profile ends. A run that ends, well
/// or not, leaves no such line; one under way is shown as running.
#[test]
fn status_names_a_backup_that_was_killed_until_the_next_run() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"some data")]);
    env.files_profile("k", &[&data], "");
    env.cellar(&["backup", "k"]).ok();
    let out = env.cellar(&["status", "k"]);
    out.ok();
    assert!(!out.stdout.contains("interrupted"), "{}", out.stdout);

    // A backup held in its before hook, then killed.
    let hook_pid = env.path().join("hook.pid");
    env.files_profile(
        "k",
        &[&data],
        &format!(
            "[hooks]\nbefore = [\"sh -c 'echo $$ > {}; exec sleep 60'\"]\ntimeout = \"90s\"",
            hook_pid.display()
        ),
    );
    let mut child = env.cmd().args(["backup", "k"]).spawn().unwrap();
    let started = std::time::Instant::now();
    let out = loop {
        let out = env.cellar(&["status", "k"]);
        if out.stdout.contains("running now:") {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "status never showed the backup running: {}",
            out.all()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        out.code,
        0,
        "a run under way is not a failure: {}",
        out.all()
    );
    assert!(
        out.stdout
            .contains(&format!("running now: pid {} (backup) since", child.id())),
        "{}",
        out.stdout
    );
    // Asked from another pid namespace (a container beside the backup's),
    // where the kernel's table of locks lists none of this one's: the run
    // is still seen as running.
    let other_ns = std::process::Command::new("unshare")
        .args([
            "-pf",
            "--mount-proc",
            env!("CARGO_BIN_EXE_cellar"),
            "status",
            "k",
        ])
        .env("CELLAR_CONFIG_DIR", env.path())
        .output();
    match other_ns {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("k: ") => {
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(
                stdout.contains("running now:") && !stdout.contains("INTERRUPTED"),
                "{stdout}"
            );
        }
        other => eprintln!("no second pid namespace here, part skipped: {other:?}"),
    }
    while !hook_pid.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let hook: i32 = std::fs::read_to_string(&hook_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(hook, libc::SIGKILL) };

    let out = env.cellar(&["status", "k"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("k: INTERRUPTED"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("interrupted: pid {} (backup) since", child.id()))
            && out.stdout.contains("did not finish: cellar was killed"),
        "{}",
        out.stdout
    );
    let out = env.cellar(&["status", "--json", "k"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["status"], "interrupted");
    assert!(rows[0]["interrupted"]
        .as_str()
        .unwrap()
        .contains("(backup)"));
    assert!(rows[0]["running"].is_null());

    // A run that fails clears it (and says FAILED); the next good one, too.
    env.files_profile("k", &[&data], "[hooks]\nbefore = [\"false\"]");
    assert_eq!(env.cellar(&["backup", "k"]).code, 1);
    let out = env.cellar(&["status", "k"]);
    assert!(out.stdout.contains("k: FAILED"), "{}", out.stdout);
    assert!(!out.stdout.contains("interrupted:"), "{}", out.stdout);
    env.files_profile("k", &[&data], "");
    env.cellar(&["backup", "k"]).ok();
    let out = env.cellar(&["status", "k"]);
    out.ok();
    assert!(!out.stdout.contains("interrupted:"), "{}", out.stdout);
}

#[test]
fn canaries_warn_on_empty_and_shrunken_dumps_and_strict_fails() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("big", &vec![b'a'; 200_000])]);
    env.files_profile("c", &[&data], "");
    env.cellar(&["backup", "c"]).ok();
    std::fs::write(data.join("big"), b"tiny").unwrap();
    let out = env.cellar(&["backup", "c"]);
    out.ok();
    assert!(
        out.stderr.contains("smaller than the previous one"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(data.join("big")).unwrap();
    let out = env.cellar(&["backup", "c"]);
    out.ok();
    assert!(out.stderr.contains("empty"), "{}", out.stderr);
    // strict: the run fails, the backup is kept.
    std::fs::write(
        env.path().join("profiles/c.toml"),
        std::fs::read_to_string(env.path().join("profiles/c.toml")).unwrap()
            + "[canary]\nstrict = true\n",
    )
    .unwrap();
    let out = env.cellar(&["backup", "c"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("canary failed (strict = true)"),
        "{}",
        out.stderr
    );
    assert_eq!(env.manifests("c").len(), 4);
}

#[test]
fn show_redacts_secrets_and_completions_and_man_render() {
    let env = TestEnv::new();
    env.pg_profile("db", "shop", "password = \"hunter2-literal\"", "");
    let out = env.cellar(&["show", "db"]);
    out.ok();
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    assert!(
        out.stdout.contains("password = literal value (redacted)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("level = 1"));
    let out = env.cellar(&["completions", "bash"]);
    out.ok();
    assert!(out.stdout.contains("_cellar()"));
    let out = env.cellar(&["man"]);
    out.ok();
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH cellar"),
        "{:.200}",
        out.stdout
    );
}
