//! A real S3-compatible server for the tests: moto (`moto[server]` from
//! PyPI, installed by `.ci/run` into /opt/cellar-moto, or wherever
//! `CELLAR_MOTO_SERVER` points). One shared server per test binary, plus
//! private ones for tests that stop their server.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub struct Moto {
    pub port: u16,
    pub child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_bin() -> String {
    std::env::var("CELLAR_MOTO_SERVER")
        .unwrap_or_else(|_| "/opt/cellar-moto/bin/moto_server".into())
}

/// Starts a moto server on a free port and waits until it answers.
pub fn start() -> Moto {
    start_with(&[])
}

/// Starts a moto server with extra environment variables.
pub fn start_with(env: &[(&str, &str)]) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(moto_bin())
        .envs(env.iter().copied())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (run .ci/run to install moto): {e}",
                moto_bin()
            )
        });
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { port, child }
}

pub struct LosingProxy {
    pub port: u16,
    /// Requests to start a multipart upload that went through.
    pub creates: Arc<AtomicUsize>,
}

impl LosingProxy {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

static SHARED: OnceLock<Moto> = OnceLock::new();

pub fn shared() -> &'static Moto {
    SHARED.get_or_init(|| {
        let m = start();
        // Stop the shared server when this test process is gone.
        let watchdog = Command::new("setsid")
            .args([
                "-f",
                "sh",
                "-c",
                &format!(
                    "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
                    std::process::id(),
                    m.child.id()
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(watchdog.success());
        m
    })
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A test's own client to create buckets and look at the server.
    pub fn client(&self) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .build();
        (rt, aws_sdk_s3::Client::from_conf(conf))
    }

    pub fn create_bucket(&self, name: &str, object_lock: bool) {
        let (rt, c) = self.client();
        rt.block_on(
            c.create_bucket()
                .bucket(name)
                .object_lock_enabled_for_bucket(object_lock)
                .send(),
        )
        .unwrap();
    }

    pub fn open_uploads(&self, bucket: &str) -> usize {
        let (rt, c) = self.client();
        let out = rt
            .block_on(c.list_multipart_uploads().bucket(bucket).send())
            .unwrap();
        out.uploads().len()
    }

    /// How many parts the first incomplete upload in `bucket` holds
    /// (moto names ListParts' answer so that the SDK cannot read it: the
    /// request is made by hand; moto does not check signatures).
    pub fn uploaded_parts(&self, bucket: &str) -> usize {
        let (rt, c) = self.client();
        let out = rt
            .block_on(c.list_multipart_uploads().bucket(bucket).send())
            .unwrap();
        let Some(u) = out.uploads().first() else {
            return 0;
        };
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET /{bucket}/{}?uploadId={} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
            u.key().unwrap(),
            u.upload_id().unwrap()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer.matches("<Part>").count()
    }

    /// A proxy in front of this server that passes every request on but
    /// never passes on the answer to one that starts a multipart upload:
    /// the server makes the upload, the client never learns its id.
    pub fn losing_create_answers(&self) -> LosingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let creates = Arc::new(AtomicUsize::new(0));
        let server = self.port;
        let seen = creates.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", server)) else {
                    return;
                };
                let lost = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
                let (mut s_in, mut s_out) = (upstream.try_clone().unwrap(), upstream);
                let (flag, seen) = (lost.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let creates = buf[..n]
                            .split(|&b| b == b'\n')
                            .filter(|l| {
                                l.starts_with(b"POST /")
                                    && contains(l, b"uploads")
                                    && !contains(l, b"uploadId")
                            })
                            .count();
                        if creates > 0 {
                            flag.store(true, Ordering::SeqCst);
                            seen.fetch_add(creates, Ordering::SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if !lost.load(Ordering::SeqCst) && c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    // A lost answer: the client waits until it gives up.
                    if !lost.load(Ordering::SeqCst) {
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                    }
                });
            }
        });
        LosingProxy { port, creates }
    }

    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (rt, c) = self.client();
        let mut keys = Vec::new();
        let mut pages = c.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(p) = rt.block_on(pages.next()) {
            keys.extend(
                p.unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys
    }

    /// The bytes of one object.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (rt, c) = self.client();
        let out = rt
            .block_on(c.get_object().bucket(bucket).key(key).send())
            .unwrap();
        rt.block_on(out.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    /// Writes one object, as anyone holding the bucket's keys can.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let (rt, c) = self.client();
        rt.block_on(
            c.put_object()
                .bucket(bucket)
                .key(key)
                .body(bytes.into())
                .send(),
        )
        .unwrap();
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// The `[store]` tables for a bucket on this server.
pub fn store_toml(m: &Moto, bucket: &str, extra: &str) -> String {
    format!(
        "[store]\nurl = \"s3://{bucket}/backups\"\n[store.s3]\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n{extra}\n",
        m.endpoint()
    )
}

/// A server that checks signatures: after four unauthenticated calls
/// (user, key, policy, bucket) every request must be signed with the key
/// it returns, as (access key id, secret).
pub fn start_with_auth(bucket: &str) -> (Moto, String, String) {
    let m = start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let python = std::path::Path::new(&moto_bin()).with_file_name("python");
    let script = format!(
        r#"
import boto3, json
kw = dict(endpoint_url="{e}", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="backup")
k = iam.create_access_key(UserName="backup")["AccessKey"]
iam.put_user_policy(UserName="backup", PolicyName="s3", PolicyDocument=json.dumps(
    {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}]}}))
boto3.client("s3", **kw).create_bucket(Bucket="{bucket}")
print(k["AccessKeyId"], k["SecretAccessKey"])
"#,
        e = m.endpoint()
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (id, secret) = text.trim().split_once(' ').unwrap();
    (m, id.to_string(), secret.to_string())
}
