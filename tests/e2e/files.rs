//! Folder backups: an exact round trip of names, modes, mtimes, symlinks,
//! empty folders and a large binary file; excludes; refusals.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::harness::TestEnv;

/// type, mode, mtime, size, content hash or link target, per relative path.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let what = if md.file_type().is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(e.path()).unwrap().display()
            )
        } else if md.is_dir() {
            format!("dir {:o} {}", md.mode() & 0o7777, md.mtime())
        } else {
            use blake2::Digest;
            let h = blake2::Blake2b512::digest(std::fs::read(e.path()).unwrap());
            format!(
                "file {:o} {} {} {}",
                md.mode() & 0o7777,
                md.mtime(),
                md.len(),
                hex::encode(h)
            )
        };
        m.insert(rel, what);
    }
    m
}

fn set_mtime(p: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = std::fs::File::options()
        .write(true)
        .open(p)
        .or_else(|_| std::fs::File::open(p))
        .unwrap();
    f.set_modified(t).unwrap();
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub dir/ünïcödé 日本")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("cache")).unwrap();
    std::fs::write(root.join("plain.txt"), "hello\n").unwrap();
    std::fs::write(
        root.join("sub dir/ünïcödé 日本/quote's \"and\" $dollar.txt"),
        "odd\n",
    )
    .unwrap();
    std::fs::write(root.join("new\nline"), "newline in name\n").unwrap();
    std::fs::write(root.join("scratch.tmp"), "excluded\n").unwrap();
    std::fs::write(root.join("cache/page"), "excluded\n").unwrap();
    let long = "l".repeat(120);
    std::fs::create_dir_all(root.join(&long).join(&long)).unwrap();
    std::fs::write(root.join(&long).join(&long).join("deep.txt"), "deep\n").unwrap();
    // 24 MiB of incompressible bytes: several pipeline chunks.
    let mut big = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("plain.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::set_permissions(
        root.join("plain.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(root.join("big.bin"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o711)).unwrap();
    set_mtime(&root.join("plain.txt"), 1_600_000_000);
    set_mtime(&root.join("big.bin"), 1_500_000_000);
    set_mtime(&root.join("empty"), 1_400_000_000);
}

#[test]
fn folder_round_trip_keeps_names_modes_links_and_empty_folders() {
    let env = TestEnv::new();
    let data = env.path().join("data");
    make_tree(&data);
    env.files_profile("www", &[&data], "");
    std::fs::write(
        env.path().join("profiles/www.toml"),
        std::fs::read_to_string(env.path().join("profiles/www.toml"))
            .unwrap()
            .replace("[store]", "exclude = [\"*.tmp\", \"cache/\"]\n[store]"),
    )
    .unwrap();
    env.cellar(&["backup", "www"]).ok();
    env.cellar(&["verify", "www"]).ok();
    let target = env.path().join("restored");
    env.cellar(&["restore", "www", "--to-dir", target.to_str().unwrap()])
        .ok();
    let restored_root = target.join(data.strip_prefix("/").unwrap());
    let mut expected = snapshot(&data);
    expected.remove("scratch.tmp");
    expected.remove("cache");
    expected.remove("cache/page");
    let got = snapshot(&restored_root);
    // The root folder's mtime changes when the excluded entries are left out
    // of nothing; compare everything below it exactly.
    let strip_root = |m: &mut BTreeMap<String, String>| {
        m.remove("");
    };
    let (mut expected, mut got) = (expected, got);
    strip_root(&mut expected);
    strip_root(&mut got);
    assert_eq!(expected, got);
    // No temporary folder is left beside the target.
    let leftovers = env.leftovers();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn restore_into_a_non_empty_folder_is_refused() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("a", b"a")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let target = env.path().join("busy");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "mine").unwrap();
    let out = env.cellar(&["restore", "f", "--to-dir", target.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(target.join("keep.txt")).unwrap(),
        "mine"
    );
    // An empty existing folder is fine.
    let empty = env.path().join("empty-target");
    std::fs::create_dir_all(&empty).unwrap();
    env.cellar(&["restore", "f", "--to-dir", empty.to_str().unwrap()])
        .ok();
    assert!(empty
        .join(data.strip_prefix("/").unwrap())
        .join("a")
        .exists());
}

#[test]
fn to_file_writes_a_tar_that_tar_lists() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("hello.txt", b"hi")]);
    env.files_profile("f", &[&data], "");
    env.cellar(&["backup", "f"]).ok();
    let file = env.path().join("out.tar");
    env.cellar(&["restore", "f", "--to-file", file.to_str().unwrap()])
        .ok();
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("data/hello.txt"));
    // An existing file is never overwritten.
    let again = env.cellar(&["restore", "f", "--to-file", file.to_str().unwrap()]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already exists"));
}

#[test]
fn run_backs_up_every_profile_and_one_failure_does_not_stop_the_others() {
    let env = TestEnv::new();
    let data = env.data_dir(&[("x", b"x")]);
    env.files_profile("a_ok", &[&data], "");
    env.files_profile("b_missing", &[&env.path().join("does-not-exist")], "");
    env.files_profile("c_ok", &[&data], "");
    let out = env.cellar(&["run"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("summary: 2 succeeded, 1 failed"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("failed: b_missing"), "{}", out.stdout);
    assert_eq!(env.manifests("a_ok").len(), 1);
    assert_eq!(env.manifests("c_ok").len(), 1);
    assert!(env.store_entries("b_missing").is_empty());
    // An invalid profile is reported (exit 2) and the valid ones still run.
    env.write("profiles/d_bad.toml", "kind = \"files\"\n");
    std::fs::remove_dir_all(env.path().join("store/b_missing")).ok();
    std::fs::remove_file(env.path().join("profiles/b_missing.toml")).unwrap();
    // Nor do a FIFO (it used to hang every run) or a device.
    let fifo = env.path().join("profiles/e_fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/zero", env.path().join("profiles/f_zero.toml")).unwrap();
    let out = env.cellar(&["run", "--no-prune"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert_eq!(env.manifests("a_ok").len(), 2);
    assert_eq!(env.manifests("c_ok").len(), 2);
    for name in ["d_bad", "e_fifo", "f_zero"] {
        assert!(
            out.stdout.contains(&format!("failed: {name}")),
            "{}",
            out.all()
        );
    }
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
}

#[test]
fn to_file_killed_at_any_moment_leaves_nothing_but_the_whole_file() {
    let env = TestEnv::new();
    let big = crate::harness::noise(48 << 20, 11);
    let data = env.data_dir(&[("big", &big)]);
    env.files_profile("k", &[&data], "");
    env.cellar(&["backup", "k"]).ok();
    let out_dir = env.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("k.tar");
    for delay_ms in [50u64, 150, 300, 600] {
        let mut child = env
            .cmd()
            .args(["restore", "k", "--to-file", file.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let left: Vec<_> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // Either nothing at all, or the whole verified file.
        match left.as_slice() {
            [] => {}
            [name] if name == "k.tar" => {
                assert!(std::fs::metadata(&file).unwrap().len() > 48 << 20);
                std::fs::remove_file(&file).unwrap();
            }
            other => panic!("after kill -9 at {delay_ms} ms: {other:?}"),
        }
    }
}
