//! A real OpenStack Swift for the tests: Debian's swift-proxy,
//! swift-account, swift-container and swift-object (installed by
//! scripts/test-setup.sh) run as a private all-in-one on free ports of
//! 127.0.0.1, with rings of one device on a temporary folder,
//! `mount_check = false`, tempauth (account `test`, user `tester`, key
//! `testing`), the SLO and s3api middlewares, and a private memcached
//! (tempauth keeps its tokens there). One shared server per test binary,
//! stopped and removed by a watchdog when the test process is gone; private
//! ones for tests that kill theirs. Tests keep apart by container name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const USER: &str = "test:tester";
pub const KEY: &str = "testing";

pub struct Swift {
    pub dir: PathBuf,
    pub proxy_port: u16,
    /// account, container, object, memcached, proxy (last).
    children: Vec<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (run scripts/test-setup.sh to install Swift)"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const PROXY_PIPELINE: &str = "catch_errors gatekeeper healthcheck proxy-logging cache \
    listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server";

impl Swift {
    /// A Swift of its own (for tests that kill or stop it).
    pub fn start() -> Swift {
        let dir = tempfile::Builder::new()
            .prefix("cellar-swift-")
            .tempdir()
            .unwrap()
            .keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.join("devs/d1")).unwrap();
        let user = whoami();
        let mut children = Vec::new();
        for server in ["account", "container", "object"] {
            let port = free_port();
            let builder = format!("{server}.builder");
            run_ok(
                Command::new("swift-ring-builder")
                    .current_dir(&dir)
                    .args([&builder, "create", "6", "1", "1"]),
                "swift-ring-builder create",
            );
            run_ok(
                Command::new("swift-ring-builder").current_dir(&dir).args([
                    &builder,
                    "add",
                    &format!("r1z1-127.0.0.1:{port}/d1"),
                    "1",
                ]),
                "swift-ring-builder add",
            );
            // Exit code 1 is a warning here (one device, one replica).
            let _ = Command::new("swift-ring-builder")
                .current_dir(&dir)
                .args([&builder, "rebalance"])
                .output()
                .unwrap();
            std::fs::write(
                dir.join(format!("{server}.conf")),
                format!(
                    "[DEFAULT]\ndevices = {d}/devs\nmount_check = false\nbind_ip = 127.0.0.1\n\
                     bind_port = {port}\nworkers = 0\nswift_dir = {d}\nuser = {user}\nlog_level = WARNING\n\
                     [pipeline:main]\npipeline = {server}-server\n\
                     [app:{server}-server]\nuse = egg:swift#{server}\n",
                    d = dir.display()
                ),
            )
            .unwrap();
            children.push(spawn(
                &dir,
                &format!("swift-{server}-server"),
                &format!("{server}.conf"),
                server,
            ));
        }
        let memcached = free_port();
        let mut mc = Command::new("memcached");
        mc.args(["-l", "127.0.0.1", "-p", &memcached.to_string(), "-U", "0"]);
        if user == "root" {
            mc.args(["-u", "nobody"]);
        }
        children.push(
            mc.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("memcached (run scripts/test-setup.sh)"),
        );
        let proxy_port = free_port();
        std::fs::write(
            dir.join("proxy.conf"),
            format!(
                "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {proxy_port}\nworkers = 0\nswift_dir = {d}\n\
                 user = {user}\nlog_level = WARNING\n\
                 [pipeline:main]\npipeline = {PROXY_PIPELINE}\n\
                 [app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\
                 [filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = {KEY} .admin\n\
                 user_test_reader = reading\n\
                 [filter:s3api]\nuse = egg:swift#s3api\n\
                 [filter:catch_errors]\nuse = egg:swift#catch_errors\n\
                 [filter:gatekeeper]\nuse = egg:swift#gatekeeper\n\
                 [filter:healthcheck]\nuse = egg:swift#healthcheck\n\
                 [filter:proxy-logging]\nuse = egg:swift#proxy_logging\n\
                 [filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{memcached}\n\
                 [filter:listing_formats]\nuse = egg:swift#listing_formats\n\
                 [filter:bulk]\nuse = egg:swift#bulk\n\
                 [filter:copy]\nuse = egg:swift#copy\n\
                 [filter:slo]\nuse = egg:swift#slo\n\
                 [filter:dlo]\nuse = egg:swift#dlo\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut s = Swift {
            dir,
            proxy_port,
            children,
        };
        s.start_proxy();
        s
    }

    /// Starts the proxy (again) and waits until it logs users in.
    pub fn start_proxy(&mut self) {
        if self.children.len() == 5 {
            let mut old = self.children.pop().unwrap();
            let _ = old.kill();
            let _ = old.wait();
        }
        self.children.push(spawn(
            &self.dir,
            "swift-proxy-server",
            "proxy.conf",
            "proxy",
        ));
        let started = Instant::now();
        loop {
            if let Ok((200, ..)) = self.try_auth() {
                // The account servers may lag behind the proxy: wait until
                // a container can be made.
                if matches!(self.request("PUT", "/.cellar-ready", &[]).0, 201 | 202) {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Swift did not start: {:?} {}",
                self.try_auth(),
                std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the proxy at once (SIGKILL), as a crash would.
    pub fn kill_proxy(&mut self) {
        let p = self.children.last_mut().unwrap();
        let _ = p.kill();
        let _ = p.wait();
    }

    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/auth/v1.0", self.proxy_port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    fn try_auth(&self) -> Result<(u16, String, String), String> {
        let rt = runtime();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(self.auth_url())
                .header("X-Auth-User", USER)
                .header("X-Auth-Key", KEY)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            Ok((r.status().as_u16(), h("X-Auth-Token"), h("X-Storage-Url")))
        })
    }

    /// One request as test:tester to `path` under the account; returns
    /// the status, the headers and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.send(method, path, headers, Vec::new())
    }

    /// A PUT of `body` to `path` under the account.
    pub fn upload(&self, path: &str, body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, String) {
        self.send("PUT", path, &[("Accept", "application/json")], body)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let Ok((200, token, storage)) = self.try_auth() else {
            return (0, Default::default(), String::new());
        };
        let rt = runtime();
        rt.block_on(async {
            let mut rq = reqwest::Client::new()
                .request(method.parse().unwrap(), format!("{storage}{path}"))
                .header("X-Auth-Token", token)
                .body(body);
            for (k, v) in headers {
                rq = rq.header(*k, *v);
            }
            match rq.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    (status, headers, r.text().await.unwrap_or_default())
                }
                Err(_) => (0, Default::default(), String::new()),
            }
        })
    }

    pub fn create_container(&self, name: &str) {
        let (status, ..) = self.request("PUT", &format!("/{name}"), &[]);
        assert!(
            status == 201 || status == 202,
            "PUT container {name}: {status}"
        );
    }

    /// Every object name in a container (all pages).
    pub fn names(&self, container: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let (status, _, body) = self.request(
                "GET",
                &format!("/{container}?format=json&marker={marker}"),
                &[],
            );
            assert_eq!(status, 200, "list {container}");
            let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            let Some(last) = page.last() else { break };
            marker = last["name"].as_str().unwrap().to_string();
            out.extend(page.iter().map(|o| o["name"].as_str().unwrap().to_string()));
        }
        out
    }

    /// The `[store]` tables for a container on this server (v1 auth).
    pub fn store_toml(&self, container: &str, extra: &str) -> String {
        format!(
            "[store]\nurl = \"swift://{container}/backups\"\n[store.swift]\nauth_url = \"{}\"\nusername = \"{USER}\"\npassword = \"{KEY}\"\n{extra}\n",
            self.auth_url()
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn spawn(dir: &Path, program: &str, conf: &str, log: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{log}.log"))).unwrap();
    Command::new(program)
        .current_dir(dir)
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} (run scripts/test-setup.sh): {e}"))
}

impl Drop for Swift {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SHARED: OnceLock<Swift> = OnceLock::new();

/// The Swift that this test binary's tests share.
pub fn shared() -> &'static Swift {
    SHARED.get_or_init(|| {
        let s = Swift::start();
        // Stop the servers and remove the folder once this process is gone.
        let pids: Vec<String> = s.children.iter().map(|c| c.id().to_string()).collect();
        let watchdog = Command::new("setsid")
            .args([
                "-f",
                "sh",
                "-c",
                &format!(
                    "while kill -0 {} 2>/dev/null; do sleep 1; done; kill -9 {} 2>/dev/null; rm -rf {}",
                    std::process::id(),
                    pids.join(" "),
                    s.dir.display()
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(watchdog.success());
        s
    })
}
