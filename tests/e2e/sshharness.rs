//! A real sshd for the SFTP tests: OpenSSH's server from openssh-server,
//! with its own config, host key and authorized_keys in a temporary folder,
//! on a free port of 127.0.0.1 (the system's sshd is not touched).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
}

/// sshd_config and the client's known_hosts for the server on `port`.
fn write_config(d: &Path, port: u16) {
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n\
             StrictModes no\nSubsystem sftp internal-sftp\n",
            d = d.display()
        ),
    )
    .unwrap();
    let host = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
    let mut fields = host.split_whitespace();
    std::fs::write(
        d.join("known_hosts"),
        format!(
            "[127.0.0.1]:{port} {} {}\n",
            fields.next().unwrap(),
            fields.next().unwrap()
        ),
    )
    .unwrap();
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("cellar-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("stranger_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all(d.join("root")).unwrap();
        let port = crate::harness::free_port();
        write_config(d, port);
        let mut s = Sshd {
            port,
            dir,
            child: None,
        };
        s.resume();
        s
    }

    /// (Re)starts the server process. After a kill, another process of the
    /// parallel suite may have taken the old port (a client's ephemeral port
    /// or another harness's listener): then the server moves to a fresh port,
    /// and `store_toml` must be written into the profile again.
    pub fn resume(&mut self) {
        let _ = std::fs::create_dir_all("/run/sshd");
        let started = Instant::now();
        loop {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
                self.port = crate::harness::free_port();
                write_config(self.dir.path(), self.port);
            }
            let log = std::fs::File::create(self.dir.path().join("sshd.log")).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(self.dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("/usr/sbin/sshd (apt-get install openssh-server; .ci/run does)");
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(self.dir.path().join("sshd.log"))
                        .unwrap_or_default();
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "sshd did not start ({status}): {log}"
                    );
                    // Lost the port between the check and sshd's bind: again.
                    self.port = crate::harness::free_port();
                    write_config(self.dir.path(), self.port);
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                    && child.try_wait().unwrap().is_none()
                {
                    self.child = Some(child);
                    return;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(self.dir.path().join("sshd.log"))
                        .unwrap_or_default();
                    panic!("sshd did not start: {log}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops the server and every session it serves, as a crashed host would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Each session is a child of the listener: kill them first.
            let _ = Command::new("pkill")
                .args(["-9", "-P"])
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The `[store]` tables for this server.
    pub fn store_toml(&self, key: &str, known_hosts: &str) -> String {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
                    .unwrap()
                    .trim()
                    .to_string()
            });
        format!(
            "[store]\nurl = \"sftp://{user}@127.0.0.1:{}{}\"\n[store.sftp]\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\n",
            self.port,
            self.root().display(),
            self.dir.path().join(key).display(),
            self.dir.path().join(known_hosts).display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}
