//! Files backups on a live system: files that grow, shrink or vanish while
//! they are read, special files, overlapping and symlinked paths, and
//! crafted archives on which verify and restore must agree.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blake2::Digest;

use crate::harness::{noise, TestEnv};

fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn restore_to(env: &TestEnv, profile: &str, to: &Path) -> crate::harness::Out {
    env.cellar(&["restore", profile, "--to-dir", to.to_str().unwrap()])
}

/// The restored copy of `src` under the restore target `to`.
fn restored(to: &Path, src: &Path) -> PathBuf {
    to.join(src.strip_prefix("/").unwrap())
}

fn manifest(env: &TestEnv, profile: &str) -> serde_json::Value {
    let m = env.manifests(profile);
    serde_json::from_slice(&std::fs::read(m.last().unwrap()).unwrap()).unwrap()
}

#[test]
fn files_that_grow_or_shrink_during_the_backup_keep_the_archive_valid() {
    let env = TestEnv::new();
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Read slowly enough (8 MiB of noise through xz) that the writers are
    // certainly at work while each file is read.
    std::fs::write(data.join("a_stable.bin"), noise(1 << 20, 1)).unwrap();
    std::fs::write(data.join("grow.log"), noise(8 << 20, 2)).unwrap();
    std::fs::write(data.join("shrink.dat"), noise(8 << 20, 3)).unwrap();
    std::fs::write(data.join("z_stable.txt"), "after the changing files\n").unwrap();
    env.files_profile("live", &[&data], "");

    // Each changes while cellar holds it open: a line appended to the
    // log, the other file cut to 4 KiB.
    let child = spawn_backup(&env, "live");
    wait_reading(child.id(), &data.join("grow.log"));
    // Lines keep coming until the backup is done: one of them lands while
    // the file is read, however the threads are scheduled.
    let appender = Appender::start(&data.join("grow.log"));
    wait_reading(child.id(), &data.join("shrink.dat"));
    std::fs::File::options()
        .write(true)
        .open(data.join("shrink.dat"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    let out: crate::harness::Out = child.wait_with_output().unwrap().into();
    drop(appender);
    out.ok();
    let log = out.all();
    assert!(log.contains("file changed as we read it"), "{log}");
    assert!(log.contains("grow.log"), "{log}");
    assert!(log.contains("shrink.dat"), "{log}");
    assert!(!log.contains("a_stable.bin"), "{log}");
    assert_eq!(manifest(&env, "live")["source"]["changed_during_backup"], 2);

    // The archive is whole: verify, restore, and GNU tar agree.
    env.cellar(&["verify", "live"]).ok();
    let to = env.path().join("restored");
    restore_to(&env, "live", &to).ok();
    let back = restored(&to, &data);
    for f in ["a_stable.bin", "z_stable.txt"] {
        assert_eq!(
            std::fs::read(back.join(f)).unwrap(),
            std::fs::read(data.join(f)).unwrap(),
            "{f}"
        );
    }
    // The grown log comes back as a prefix of what it is now.
    let now = std::fs::read(data.join("grow.log")).unwrap();
    let got = std::fs::read(back.join("grow.log")).unwrap();
    assert_eq!(got.len(), 8 << 20);
    assert!(now.starts_with(&got) && now.len() > got.len());
    // The cut file comes back at its recorded size: its start, then zeros.
    let cut = std::fs::read(back.join("shrink.dat")).unwrap();
    assert_eq!(cut.len(), 8 << 20);
    assert_eq!(cut[..4096], noise(8 << 20, 3)[..4096]);
    assert!(cut[cut.len() - 4096..].iter().all(|b| *b == 0));
    let tar = env.path().join("live.tar");
    env.cellar(&["restore", "live", "--to-file", tar.to_str().unwrap()])
        .ok();
    let listed = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("z_stable.txt"));

    // list --json and status say so.
    let list = env.cellar(&["list", "live", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list.ok().stdout).unwrap();
    assert_eq!(rows[0]["changed_during_backup"], 2);
    let status = env.cellar(&["status", "live"]);
    assert!(
        status
            .stdout
            .contains("2 file(s) changed while they were read"),
        "{}",
        status.stdout
    );

    // fail_on_change = true: the run fails and keeps no backup.
    env.edit(
        "profiles/live.toml",
        "[store]",
        "fail_on_change = true\n[store]",
    );
    let before = env.store_entries("live");
    let appender = Appender::start(&data.join("grow.log"));
    let child = spawn_backup(&env, "live");
    let out: crate::harness::Out = child.wait_with_output().unwrap().into();
    drop(appender);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("fail_on_change = true"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("grow.log"), "{}", out.stderr);
    assert_eq!(env.store_entries("live"), before);
}

/// Appends a line to a file every 2 ms until dropped.
struct Appender {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Appender {
    fn start(path: &Path) -> Appender {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut f = std::fs::File::options().append(true).open(path).unwrap();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                f.write_all(b"another log line\n").unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Appender {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pids' open files, to act while cellar reads a given file.
fn reading(pid: u32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == file))
        })
        .unwrap_or(false)
}

/// `cellar backup PROFILE` in the background, its output captured.
fn spawn_backup(env: &TestEnv, profile: &str) -> std::process::Child {
    env.cmd()
        .args(["backup", profile])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_reading(pid: u32, file: &Path) {
    let started = Instant::now();
    while !reading(pid, file) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cellar never opened {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn fifos_sockets_devices_and_vanished_files_are_warnings() {
    let env = TestEnv::new();
    let data = env.path().join("data");
    std::fs::create_dir_all(data.join("z_dir/deeper")).unwrap();
    std::fs::write(data.join("a_big.bin"), noise(24 << 20, 7)).unwrap();
    std::fs::write(data.join("z_gone"), "deleted during the walk").unwrap();
    std::fs::write(data.join("z_dir/deeper/f"), "also deleted").unwrap();
    std::fs::write(data.join("z_kept"), "kept").unwrap();
    let fifo = std::ffi::CString::new(data.join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(data.join("socket")).unwrap();
    if root() {
        let dev = std::ffi::CString::new(data.join("null").to_str().unwrap()).unwrap();
        let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o640, libc::makedev(1, 3)) };
        assert_eq!(rc, 0);
    }
    env.files_profile("live", &[&data], "");

    let child = spawn_backup(&env, "live");
    wait_reading(child.id(), &data.join("a_big.bin"));
    // The folder was listed already; these go while a_big.bin is read.
    std::fs::remove_file(data.join("z_gone")).unwrap();
    std::fs::remove_dir_all(data.join("z_dir")).unwrap();
    let out: crate::harness::Out = child.wait_with_output().unwrap().into();
    out.ok();
    let log = out.all();
    for needle in [
        "skipping the FIFO",
        "skipping the socket",
        "z_gone vanished",
    ] {
        assert!(log.contains(needle), "{needle}: {log}");
    }
    let m = manifest(&env, "live");
    let skipped = m["source"]["skipped"].to_string();
    assert!(skipped.contains("vanished"), "{skipped}");
    assert!(skipped.contains("FIFO"), "{skipped}");

    env.cellar(&["verify", "live"]).ok();
    let to = env.path().join("restored");
    restore_to(&env, "live", &to).ok();
    let back = restored(&to, &data);
    assert_eq!(std::fs::read(back.join("z_kept")).unwrap(), b"kept");
    assert!(!back.join("fifo").exists() && !back.join("socket").exists());
    assert!(!back.join("z_gone").exists());
    if root() {
        let md = std::fs::symlink_metadata(back.join("null")).unwrap();
        assert!(md.file_type().is_char_device(), "{md:?}");
        assert_eq!(md.rdev(), libc::makedev(1, 3));
        assert_eq!(md.mode() & 0o7777, 0o640);
    }
}

#[test]
fn overlapping_paths_are_refused_and_a_symlinked_path_restores_as_its_target() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("a", b"a")]);
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/b"), "b").unwrap();
    let sub = data.join("sub");
    let dotted = PathBuf::from(format!("{}/./", data.display()));
    for (paths, needle) in [
        (vec![&data, &sub], "remove"),
        (vec![&sub, &data], "the first holds the second"),
        (vec![&data, &dotted], "list each path once"),
    ] {
        env.files_profile(
            "over",
            &paths.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
            "",
        );
        let out = env.cellar(&["check", "over"]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(out.all().contains("overlaps"), "{}", out.all());
        assert!(out.all().contains(needle), "{}", out.all());
        assert_eq!(env.cellar(&["backup", "over"]).code, 2);
    }
    let up = PathBuf::from(format!("{}/../data", data.display()));
    env.files_profile("over", &[&up], "");
    let out = env.cellar(&["check", "over"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("`..`"), "{}", out.all());

    // A listed path that is a symlink: its target, under the link's name.
    let link = env.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let file_link = env.path().join("file-link");
    std::os::unix::fs::symlink(data.join("a"), &file_link).unwrap();
    env.files_profile("linked", &[&link, &file_link], "");
    env.cellar(&["backup", "linked"]).ok();
    env.cellar(&["verify", "linked"]).ok();
    let to = env.path().join("restored");
    restore_to(&env, "linked", &to).ok();
    let back = restored(&to, &link);
    assert!(std::fs::symlink_metadata(&back).unwrap().is_dir());
    assert_eq!(std::fs::read(back.join("sub/b")).unwrap(), b"b");
    let back_file = restored(&to, &file_link);
    assert!(std::fs::symlink_metadata(&back_file).unwrap().is_file());
    assert_eq!(std::fs::read(back_file).unwrap(), b"a");
}

fn b2(data: &[u8]) -> String {
    hex::encode(blake2::Blake2b512::digest(data))
}

/// Replaces the payload of the profile's only backup with `tar`, as a
/// backup host gone bad would write it: compressed, encrypted, the manifest
/// updated and signed with the host's own key. Restore then trusts it, and
/// only the archive rules stand between it and the file system.
fn replace_payload(env: &TestEnv, profile: &str, tar: &[u8]) {
    let path = env.manifests(profile).pop().unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(tar).unwrap();
    let compressed = xz.finish().unwrap();
    let r = vec![cellar::keys::load_recipient(&env.path().join("secrets/k.pub.asc")).unwrap()];
    let mut stored = Vec::new();
    let mut w = cellar::keys::encrypt_to(&mut stored, &r).unwrap();
    w.write_all(&compressed).unwrap();
    w.finalize().unwrap();
    let p = &mut m["payloads"][0];
    let name = p["name"].as_str().unwrap().to_string();
    std::fs::write(env.store(profile).join(&name), &stored).unwrap();
    p["stored_size"] = stored.len().into();
    p["stored_blake2b"] = b2(&stored).into();
    p["plain_size"] = tar.len().into();
    p["plain_blake2b"] = b2(tar).into();
    let json = serde_json::to_vec_pretty(&m).unwrap();
    let k = cellar::keys::load_signing_key(&env.path().join("secrets/host.sign.key.asc")).unwrap();
    let sig = cellar::keys::sign_detached(&k, &json).unwrap();
    let sig_path = PathBuf::from(format!("{}.sig", path.display()));
    std::fs::write(sig_path, sig).unwrap();
    std::fs::write(&path, json).unwrap();
}

/// Crafted archives, written by Python's tarfile (which writes whatever
/// it is told). Each entry: (name, type, link target, mode, mtime).
const CRAFT: &str = r#"
import io, sys, tarfile
out, spec = sys.argv[1], eval(sys.argv[2])
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    for name, kind, link, mode, mtime in spec:
        i = tarfile.TarInfo(name)
        i.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE,
                  "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "p": tarfile.FIFOTYPE}[kind]
        i.linkname, i.mode, i.mtime = link, mode, mtime
        data = b""
        if kind == "c":
            i.devmajor, i.devminor = 1, 3
        if kind == "f":
            data = ("content of " + name).encode()
            i.size = len(data)
        t.addfile(i, io.BytesIO(data))
"#;

fn craft(dir: &Path, spec: &str) -> Vec<u8> {
    let out = dir.join("crafted.tar");
    let st = Command::new("python3")
        .args(["-c", CRAFT, out.to_str().unwrap(), spec])
        .status()
        .unwrap();
    assert!(st.success(), "python3 tarfile failed for {spec}");
    std::fs::read(out).unwrap()
}

#[test]
fn verify_passes_exactly_when_a_restore_would() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("c", &[&data], "");
    env.cellar(&["backup", "c"]).ok();
    // Outside the target: nothing may ever appear or change here.
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), "untouched").unwrap();
    let victim_mtime = std::fs::metadata(&outside).unwrap().mtime();
    let o = outside.display();
    let cases: Vec<(&str, String, bool)> = vec![
        ("plain", "[('a/b', 'f', '', 0o644, 1)]".into(), true),
        ("dotdot", "[('a/../../escaped', 'f', '', 0o644, 1)]".into(), false),
        ("absolute", format!("[('{o}/abs', 'f', '', 0o644, 1)]"), false),
        (
            "write through a symlink",
            format!("[('l', 'l', '{o}', 0o777, 1), ('l/through', 'f', '', 0o644, 1)]"),
            false,
        ),
        (
            "hard link out of the tree",
            format!("[('h', 'h', '{o}/victim', 0o644, 1)]"),
            false,
        ),
        (
            "hard link up",
            "[('h', 'h', '../../../etc/passwd', 0o644, 1)]".into(),
            false,
        ),
        (
            "folder over a symlink",
            format!("[('l', 'l', '{o}', 0o777, 1), ('l', 'd', '', 0o755, 1), ('l/x', 'f', '', 0o644, 1)]"),
            false,
        ),
        ("duplicate", "[('a', 'f', '', 0o644, 1), ('a', 'f', '', 0o644, 1)]".into(), false),
        ("file then inside it", "[('a', 'f', '', 0o644, 1), ('a/b', 'f', '', 0o644, 1)]".into(), false),
        (
            "absolute folder mtime",
            format!("[('{o}', 'd', '', 0o700, 5)]"),
            false,
        ),
        (
            "setuid file and a device",
            "[('suid', 'f', '', 0o4755, 1), ('null', 'c', '', 0o640, 1), ('pipe', 'p', '', 0o600, 1)]".into(),
            true,
        ),
        (
            "good hard link and children before their folder",
            "[('d/f', 'f', '', 0o644, 1), ('d/h', 'h', 'd/f', 0o644, 1), ('d', 'd', '', 0o555, 1)]".into(),
            true,
        ),
        (
            "extreme mtimes",
            "[('far', 'f', '', 0o644, 2**62), ('old', 'd', '', 0o755, 0), ('max', 'f', '', 0o644, 8**11 - 1)]".into(),
            true,
        ),
    ];
    for (what, spec, ok) in cases {
        let tar = craft(env.path(), &spec);
        replace_payload(&env, "c", &tar);
        let verify = env.cellar(&["verify", "c"]);
        let to = env.path().join(format!("to-{}", what.replace(' ', "-")));
        let restore = restore_to(&env, "c", &to);
        eprintln!(
            "{what}: verify {}, restore {}\n{}",
            verify.code, restore.code, restore.stderr
        );
        assert_eq!(verify.code == 0, ok, "verify, {what}: {}", verify.all());
        assert_eq!(restore.code == 0, ok, "restore, {what}: {}", restore.all());
        assert!(!verify.all().contains("panicked") && !restore.all().contains("panicked"));
        assert_eq!(to.exists(), ok, "{what}");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            1,
            "{what} wrote outside"
        );
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"untouched");
        assert_eq!(
            std::fs::metadata(&outside).unwrap().mtime(),
            victim_mtime,
            "{what}"
        );
        if !ok {
            assert!(verify.all().contains("archive entry"), "{}", verify.all());
        }
        if what == "setuid file and a device" {
            let suid = std::fs::metadata(to.join("suid")).unwrap();
            let null = std::fs::symlink_metadata(to.join("null"));
            if root() {
                assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
                assert!(null.unwrap().file_type().is_char_device());
            } else {
                assert_eq!(suid.permissions().mode() & 0o7777, 0o755);
                assert!(null.is_err());
            }
            assert!(std::fs::symlink_metadata(to.join("pipe"))
                .unwrap()
                .file_type()
                .is_fifo());
        }
        if what.starts_with("good hard link") {
            let a = std::fs::metadata(to.join("d/f")).unwrap();
            let b = std::fs::metadata(to.join("d/h")).unwrap();
            assert_eq!(a.ino(), b.ino());
            assert_eq!(a.permissions().mode() & 0o777, 0o644);
            let d = std::fs::metadata(to.join("d")).unwrap();
            assert_eq!((d.mode() & 0o777, d.mtime()), (0o555, 1));
        }
    }
    let left = env.leftovers();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn unreadable_files_fail_the_backup_by_name_unless_skipped() {
    if !root() {
        eprintln!("skipped: needs root to run cellar as nobody");
        return;
    }
    let env = TestEnv::new();
    let data = env.data_dir(&[("readable", b"r"), ("secret.txt", b"s")]);
    std::fs::set_permissions(
        data.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    env.files_profile("u", &[&data], "");
    // cellar runs as nobody; the data's unreadable parts stay root's.
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(env.path())
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::create_dir_all(data.join("locked")).unwrap();
    std::fs::write(data.join("locked/inside"), "i").unwrap();
    std::fs::set_permissions(data.join("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(data.join("secret.txt"), Some(0), Some(0)).unwrap();
    let nobody = |args: &[&str]| -> crate::harness::Out {
        Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                env!("CARGO_BIN_EXE_cellar"),
                "--config-dir",
            ])
            .arg(env.path())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let out = nobody(&["backup", "u"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("locked"), "{}", out.stderr);
    assert!(
        out.stderr.contains("skip_unreadable = true"),
        "{}",
        out.stderr
    );
    assert!(env.manifests("u").is_empty());
    env.edit(
        "profiles/u.toml",
        "[store]",
        "skip_unreadable = true\n[store]",
    );
    let out = nobody(&["backup", "u"]);
    out.ok();
    assert!(out.stderr.contains("secret.txt"), "{}", out.stderr);
    assert!(out.stderr.contains("locked"), "{}", out.stderr);
    let skipped = manifest(&env, "u")["source"]["skipped"].to_string();
    assert!(skipped.contains("2 unreadable"), "{skipped}");
    nobody(&["verify", "u"]).ok();
}

/// From the hostile review: a folder swapped for a symlink during the
/// walk is never followed out of the tree, and names too long to restore
/// are left out with a warning instead of making a backup that cannot be
/// restored.
#[test]
fn a_folder_swapped_for_a_symlink_is_not_followed_and_long_names_are_left_out() {
    let env = TestEnv::new();
    let data = env.path().join("data");
    std::fs::create_dir_all(data.join("b_dir")).unwrap();
    std::fs::write(data.join("a_big.bin"), noise(24 << 20, 5)).unwrap();
    std::fs::write(data.join("b_dir/inside"), "inside").unwrap();
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("shadow"), "secret from outside").unwrap();
    // A path just over what a restore accepts.
    let mut deep = data.join("long");
    while deep.as_os_str().len() < 3900 {
        deep = deep.join("d".repeat(200));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), "too deep").unwrap();
    env.files_profile("swap", &[&data], "");
    let child = spawn_backup(&env, "swap");
    wait_reading(child.id(), &data.join("a_big.bin"));
    std::fs::rename(data.join("b_dir"), env.path().join("b_dir.moved")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("b_dir")).unwrap();
    let out: crate::harness::Out = child.wait_with_output().unwrap().into();
    out.ok();
    assert!(
        out.stderr.contains("longer than 3840 bytes"),
        "{}",
        out.stderr
    );
    env.cellar(&["verify", "swap"]).ok();
    let tar = env.path().join("swap.tar");
    env.cellar(&["restore", "swap", "--to-file", tar.to_str().unwrap()])
        .ok();
    let listed = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !names.contains("shadow"),
        "followed the swapped symlink: {names}"
    );
    let to = env.path().join("restored");
    restore_to(&env, "swap", &to).ok();
}

#[test]
fn restore_refuses_targets_another_user_could_redirect() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    // A parent anyone may write to, without the sticky bit.
    let open = env.path().join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = restore_to(&env, "f", &open.join("r"));
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("can be changed by another user"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    // A target that is a symlink, or `.`: refused before anything is fetched.
    let link = env.path().join("link");
    std::os::unix::fs::symlink(env.path().join("elsewhere"), &link).unwrap();
    // With a trailing `/` or `/.` too, and a link to an empty folder.
    let empty = env.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let to_empty = env.path().join("to-empty");
    std::os::unix::fs::symlink(&empty, &to_empty).unwrap();
    let (link_s, to_empty_s) = (link.to_str().unwrap(), to_empty.to_str().unwrap());
    for target in [
        link_s,
        ".",
        &format!("{link_s}/"),
        &format!("{to_empty_s}/"),
        &format!("{to_empty_s}/."),
    ] {
        let out = env.cellar(&["restore", "f", "--to-dir", target]);
        assert_eq!(out.code, 2, "{target}: {}", out.all());
        assert!(
            out.stderr.contains("is a symlink") || target == ".",
            "{}",
            out.stderr
        );
    }
    assert!(!env.path().join("elsewhere").exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // A bind mount of a folder on the same file system is a mount point.
    if root() {
        let (from, at) = (env.path().join("bind-from"), env.path().join("bind-at"));
        std::fs::create_dir_all(&from).unwrap();
        std::fs::create_dir_all(&at).unwrap();
        let mounted = Command::new("mount")
            .arg("--bind")
            .arg(&from)
            .arg(&at)
            .status();
        if mounted.is_ok_and(|s| s.success()) {
            let out = env.cellar(&["restore", "f", "--to-dir", at.to_str().unwrap()]);
            let _ = Command::new("umount").arg(&at).status();
            assert_eq!(out.code, 2, "{}", out.all());
            assert!(out.stderr.contains("mount point"), "{}", out.stderr);
        }
    }
    // `paths = ["."]` would back up the config dir itself.
    env.files_profile("dot", &[Path::new(".")], "");
    assert_eq!(env.cellar(&["check", "dot"]).code, 2);
}

/// Folders exchanged with symlinks to a folder outside the tree, files
/// with sockets and symlinks with files, in a tight loop (`renameat2`
/// with `RENAME_EXCHANGE`) while backups run: every backup succeeds, and
/// no content from outside the tree is ever archived.
#[test]
fn entries_exchanged_in_a_loop_never_fail_a_backup_or_bring_in_outside_content() {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = TestEnv::new();
    let (data, side, outside) = (
        env.path().join("data"),
        env.path().join("side"),
        env.path().join("outside"),
    );
    for d in [&data, &side, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(outside.join("secret"), "OUTSIDE-CONTENT").unwrap();
    let mut sockets = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..30 {
        let d = data.join(format!("d{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("secret"), "inside").unwrap();
        std::os::unix::fs::symlink(&outside, side.join(format!("d{i}"))).unwrap();
        std::fs::write(data.join(format!("f{i}")), "a file").unwrap();
        sockets.push(std::os::unix::net::UnixListener::bind(side.join(format!("f{i}"))).unwrap());
        std::os::unix::fs::symlink("f0", data.join(format!("l{i}"))).unwrap();
        std::fs::write(side.join(format!("l{i}")), "a plain file").unwrap();
        for n in ["d", "f", "l"] {
            let c =
                |p: &Path| CString::new(p.join(format!("{n}{i}")).as_os_str().as_bytes()).unwrap();
            pairs.push((c(&data), c(&side)));
        }
    }
    for i in 0..100 {
        std::fs::write(data.join(format!("stable{i}")), format!("stable {i}")).unwrap();
    }
    env.files_profile("x", &[&data], "");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (a, b) in &pairs {
                    // SAFETY: two NUL-terminated paths.
                    unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                }
            }
        })
    };
    let mut outs = Vec::new();
    for run in 0..30 {
        let out = env.cellar(&["backup", "x"]);
        let tar = env.path().join(format!("run{run}.tar"));
        let restored = (out.code == 0).then(|| {
            env.cellar(&["restore", "x", "--to-file", tar.to_str().unwrap()])
                .ok();
            std::fs::read(&tar).unwrap()
        });
        outs.push((out, restored));
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    drop(sockets);
    for (out, tar) in outs {
        out.ok();
        let tar = tar.unwrap();
        assert!(
            !tar.windows(15).any(|w| w == b"OUTSIDE-CONTENT"),
            "a backup holds content from outside the tree: {}",
            out.stderr
        );
        assert!(tar.windows(9).any(|w| w == b"stable 99"));
    }
}

/// A file under a write lease (as Samba and NFS servers take them) is read
/// once its holder gives the lease up, instead of failing the backup; the
/// same through a listed path that is a symlink to it.
#[test]
fn a_file_under_a_lease_is_read_once_the_lease_is_given_up() {
    use std::io::{BufRead, BufReader};
    let env = TestEnv::new();
    let data = env.data_dir(&[("leased", b"leased content"), ("other", b"other")]);
    let file = data.join("leased");
    let link = env.path().join("link-to-leased");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    env.files_profile("l", &[&data], "");
    env.files_profile("s", &[&link], "");
    // The holder gives the lease up when the kernel asks (SIGIO).
    let script = format!(
        "import fcntl, os, signal, sys, time\n\
         fd = os.open({file:?}, os.O_RDWR)\n\
         def give_up(*_):\n    fcntl.fcntl(fd, 1024, fcntl.F_UNLCK); print('released', flush=True)\n\
         signal.signal(signal.SIGIO, give_up)\n\
         fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)\n\
         print('held', flush=True)\n\
         time.sleep(60)\n",
        file = file.to_str().unwrap()
    );
    for profile in ["l", "s"] {
        let mut holder = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "held");
        let out = env.cellar(&["backup", profile]);
        let released = lines.next().map(|l| l.unwrap());
        let _ = holder.kill();
        let _ = holder.wait();
        out.ok();
        assert!(!out.stderr.contains("replaced"), "{}", out.stderr);
        assert_eq!(released.as_deref(), Some("released"), "{profile}");
        let to = env.path().join(format!("r-{profile}"));
        restore_to(&env, profile, &to).ok();
        let back = if profile == "l" {
            restored(&to, &data).join("leased")
        } else {
            restored(&to, &link)
        };
        assert_eq!(std::fs::read(back).unwrap(), b"leased content", "{profile}");
    }
}
