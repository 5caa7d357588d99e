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
    memcached_port: u16,
    /// account, container, object, memcached, proxy (last).
    children: Vec<Child>,
    /// Keystone and the proxy that trusts it, when started.
    keystone: Vec<Child>,
}

/// What [`Swift::start_keystone`] made: a project `shop` with a user
/// `backup` (role member) and an application credential of that user.
pub struct Keystone {
    pub auth_url: String,
    pub user: String,
    pub password: String,
    pub project: String,
    pub app_id: String,
    pub app_secret: String,
    pub region: String,
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
            let port = crate::harness::free_port();
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
        let memcached = crate::harness::free_port();
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
        let proxy_port = crate::harness::free_port();
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
            memcached_port: memcached,
            children,
            keystone: Vec::new(),
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

    /// Starts Debian's Keystone (SQLite, fernet tokens, its own wsgiref
    /// server) and a second proxy on the same rings that trusts it
    /// (keystonemiddleware's authtoken and Swift's keystoneauth), then
    /// makes a project, a user, an application credential and the
    /// object-store endpoint in region `RegionOne`.
    pub fn start_keystone(&mut self) -> Keystone {
        let d = self.dir.join("keystone");
        std::fs::create_dir_all(&d).unwrap();
        let ks_port = crate::harness::free_port();
        let proxy_port = crate::harness::free_port();
        let user = whoami();
        let conf = d.join("keystone.conf");
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nlog_file = {d}/keystone.log\n[database]\nconnection = sqlite:///{d}/keystone.db\n\
                 [token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
                 [fernet_receipts]\nkey_repository = {d}/fernet-receipts\n\
                 [credential]\nkey_repository = {d}/credential-keys\n",
                d = d.display()
            ),
        )
        .unwrap();
        let manage = |args: &[&str]| {
            run_ok(
                Command::new("keystone-manage")
                    .arg("--config-file")
                    .arg(&conf)
                    .args(args),
                &format!("keystone-manage {}", args[0]),
            )
        };
        let owner = ["--keystone-user", &user, "--keystone-group", &user];
        manage(&["db_sync"]);
        manage(&[&["fernet_setup"][..], &owner].concat());
        manage(&[&["credential_setup"][..], &owner].concat());
        let auth_url = format!("http://127.0.0.1:{ks_port}/v3");
        manage(&[
            "bootstrap",
            "--bootstrap-password",
            "adminpw",
            "--bootstrap-public-url",
            &auth_url,
            "--bootstrap-region-id",
            "RegionOne",
        ]);
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        self.keystone.push(
            Command::new("keystone-wsgi-public")
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &ks_port.to_string(),
                    "--",
                    "--config-file",
                ])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("keystone-wsgi-public (run scripts/test-setup.sh)"),
        );
        std::fs::write(
            self.dir.join("proxy-keystone.conf"),
            format!(
                "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {proxy_port}\nworkers = 0\nswift_dir = {d}\n\
                 user = {user}\nlog_level = WARNING\n\
                 [pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging cache \
                 listing_formats bulk authtoken keystoneauth copy slo dlo proxy-logging proxy-server\n\
                 [app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\
                 [filter:authtoken]\npaste.filter_factory = keystonemiddleware.auth_token:filter_factory\n\
                 www_authenticate_uri = {auth_url}\nauth_url = {auth_url}\nauth_type = password\n\
                 project_domain_name = Default\nuser_domain_name = Default\nproject_name = admin\n\
                 username = admin\npassword = adminpw\ndelay_auth_decision = True\ninterface = public\n\
                 memcached_servers = 127.0.0.1:{mc}\n\
                 [filter:keystoneauth]\nuse = egg:swift#keystoneauth\noperator_roles = admin, member\n\
                 [filter:catch_errors]\nuse = egg:swift#catch_errors\n\
                 [filter:gatekeeper]\nuse = egg:swift#gatekeeper\n\
                 [filter:healthcheck]\nuse = egg:swift#healthcheck\n\
                 [filter:proxy-logging]\nuse = egg:swift#proxy_logging\n\
                 [filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{mc}\n\
                 [filter:listing_formats]\nuse = egg:swift#listing_formats\n\
                 [filter:bulk]\nuse = egg:swift#bulk\n\
                 [filter:copy]\nuse = egg:swift#copy\n\
                 [filter:slo]\nuse = egg:swift#slo\n\
                 [filter:dlo]\nuse = egg:swift#dlo\n",
                d = self.dir.display(),
                mc = self.memcached_port,
            ),
        )
        .unwrap();
        self.keystone.push(spawn(
            &self.dir,
            "swift-proxy-server",
            "proxy-keystone.conf",
            "proxy-keystone",
        ));
        let script = format!(
            r#"
import json, time, urllib.request
K = "{auth_url}"
def call(method, path, body=None, token=None):
    req = urllib.request.Request(K + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={{"Content-Type": "application/json", **({{"X-Auth-Token": token}} if token else {{}})}})
    with urllib.request.urlopen(req) as r:
        return r.headers, (json.loads(r.read() or b"null"))
def token(user, pw, project):
    for _ in range(120):
        try:
            h, _ = call("POST", "/auth/tokens", {{"auth": {{"identity": {{"methods": ["password"], "password": {{"user": {{"name": user, "domain": {{"name": "Default"}}, "password": pw}}}}}}, "scope": {{"project": {{"name": project, "domain": {{"name": "Default"}}}}}}}}}})
            return h["X-Subject-Token"]
        except OSError:
            time.sleep(0.5)
    raise SystemExit("keystone did not start")
admin = token("admin", "adminpw", "admin")
_, svc = call("POST", "/services", {{"service": {{"type": "object-store", "name": "swift"}}}}, admin)
call("POST", "/endpoints", {{"endpoint": {{"service_id": svc["service"]["id"], "interface": "public", "region_id": "RegionOne", "url": "http://127.0.0.1:{proxy_port}/v1/AUTH_$(project_id)s"}}}}, admin)
_, p = call("POST", "/projects", {{"project": {{"name": "shop", "domain_id": "default"}}}}, admin)
_, u = call("POST", "/users", {{"user": {{"name": "backup", "password": "backuppw", "domain_id": "default"}}}}, admin)
_, roles = call("GET", "/roles?name=member", None, admin)
call("PUT", "/projects/%s/users/%s/roles/%s" % (p["project"]["id"], u["user"]["id"], roles["roles"][0]["id"]), None, admin)
mine = token("backup", "backuppw", "shop")
_, ac = call("POST", "/users/%s/application_credentials" % u["user"]["id"], {{"application_credential": {{"name": "cellar"}}}}, mine)
print(ac["application_credential"]["id"], ac["application_credential"]["secret"], mine)
"#
        );
        let out = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keystone setup: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(d.join("server.log")).unwrap_or_default()
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut words = text.split_whitespace();
        let (app_id, app_secret, token) = (
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
        );
        // The container, made by the new user through the new proxy.
        let started = Instant::now();
        loop {
            let made = runtime().block_on(async {
                let r = reqwest::Client::new()
                    .get(format!("{auth_url}/auth/tokens"))
                    .header("X-Auth-Token", &token)
                    .header("X-Subject-Token", &token)
                    .send()
                    .await
                    .ok()?;
                let doc: serde_json::Value = r.json().await.ok()?;
                let project = doc["token"]["project"]["id"].as_str()?.to_string();
                let r = reqwest::Client::new()
                    .put(format!(
                        "http://127.0.0.1:{proxy_port}/v1/AUTH_{project}/ks"
                    ))
                    .header("X-Auth-Token", &token)
                    .send()
                    .await
                    .ok()?;
                Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
            });
            if made.as_ref().is_some_and(|(status, _)| *status < 300) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the Keystone proxy did not start: {made:?} {}",
                std::fs::read_to_string(self.dir.join("proxy-keystone.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.contains("is not known to keystonemiddleware"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Keystone {
            auth_url,
            user: "backup".into(),
            password: "backuppw".into(),
            project: "shop".into(),
            app_id,
            app_secret,
            region: "RegionOne".into(),
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
        for c in self.children.iter_mut().chain(self.keystone.iter_mut()) {
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
