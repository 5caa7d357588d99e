//! A store on an SFTP server (`sftp://user@host:port/path`), through the
//! system's OpenSSH client (openssh + openssh-sftp-client).
//!
//! Host keys are always checked against `known_hosts` (an unknown host is
//! an error that says how to add it); the user's ~/.ssh/config is not
//! read, so what the profile says is what happens. Uploads go to a hidden
//! temporary name in the target folder, are fsynced (when the server
//! offers fsync) and renamed when complete, so a payload appears whole or
//! not at all. Downloads stream.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use openssh::{ControlPersist, KnownHosts, SessionBuilder};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::TokioCompatFile;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use toml::Spanned;

use super::{ConfigProblem, ObjectInfo, Reader, Resolved, Store, StoreError};
use crate::profile::raw::SftpConfig;

#[derive(Debug, Clone)]
pub struct SftpTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub root: PathBuf,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

impl SftpTarget {
    /// Resolves the url `sftp://[user@]host[:port]/path` and `[store.sftp]`
    /// (which may be absent). Paths are relative to `base`, the config dir.
    pub fn resolve(
        url: &Spanned<String>,
        config: Option<Spanned<SftpConfig>>,
        base: &Path,
    ) -> Result<Resolved<SftpTarget>, Vec<ConfigProblem>> {
        let mut target = SftpTarget::parse(url.get_ref()).map_err(|e| {
            // Never echo a url that may hold a password.
            let shown = if e.contains("password") {
                "sftp://USER:***@...".to_string()
            } else {
                url.get_ref().clone()
            };
            vec![ConfigProblem {
                span: Some(url.span()),
                key: "store.url".into(),
                message: format!("invalid sftp url `{shown}`: {e}"),
                fix: "write sftp://USER@HOST:PORT/PATH and give the key in [store.sftp] identity_file (or ssh-agent)".into(),
            }]
        })?;
        if let Some(c) = config {
            target.identity_file = c.get_ref().identity_file.as_ref().map(|p| base.join(p));
            target.known_hosts = c.get_ref().known_hosts.as_ref().map(|p| base.join(p));
        }
        Ok(Resolved {
            options: target,
            warnings: Vec::new(),
        })
    }

    /// Parses `sftp://[user@]host[:port]/path`.
    fn parse(url: &str) -> Result<SftpTarget, String> {
        let rest = url.strip_prefix("sftp://").ok_or("not an sftp:// url")?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or("the url has no path after the host")?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => {
                // It would reach ssh's argv and the logs.
                return Err(
                    "it holds a password (user:password@); cellar logs in with an ssh key only"
                        .into(),
                );
            }
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("port `{p}` is not a number"))?,
            ),
            None => (hostport, 22),
        };
        if host.is_empty() {
            return Err("the url has no host".into());
        }
        Ok(SftpTarget {
            user,
            host: host.to_string(),
            port,
            root: PathBuf::from(format!("/{}", path.trim_end_matches('/'))),
            identity_file: None,
            known_hosts: None,
        })
    }
}

pub struct SftpStore {
    rt: Runtime,
    sftp: Sftp,
    target: SftpTarget,
    _control: tempfile::TempDir,
    /// The `flock` that tells other cellars the control folder is in use.
    _control_lock: std::fs::File,
}

fn explain_connect(t: &SftpTarget, e: &openssh::Error) -> String {
    let text = format!("{e}");
    let detail = match e {
        openssh::Error::Connect(io) => io.to_string(),
        _ => text.clone(),
    };
    let known = t
        .known_hosts
        .as_ref()
        .map_or("~/.ssh/known_hosts".to_string(), |p| {
            p.display().to_string()
        });
    if detail.contains("Host key verification failed") || detail.contains("host key") {
        format!(
            "the host key of {host}:{port} is not in {known} (or does not match): check the server's \
             fingerprint, then add it with `ssh-keyscan -p {port} {host} >> {known}`",
            host = t.host,
            port = t.port
        )
    } else if detail.contains("Permission denied") {
        format!(
            "{}@{} refused the login ({detail}); check identity_file in [store.sftp] and the server's authorized_keys",
            t.user.as_deref().unwrap_or("(current user)"),
            t.host
        )
    } else {
        format!("cannot connect to {}:{}: {detail}", t.host, t.port)
    }
}

/// Prefix of the folders in the temp dir that hold an ssh master's socket.
const CONTROL_PREFIX: &str = "cellar-ssh-";

/// A private folder (0700) for the ssh master's socket and our ssh_config,
/// held with a `flock` for as long as the store is open. Folders that a
/// cellar killed with `kill -9` left are removed first.
fn control_folder() -> std::io::Result<(tempfile::TempDir, std::fs::File)> {
    use std::os::unix::fs::PermissionsExt;
    sweep_control_folders(&std::env::temp_dir());
    let dir = tempfile::Builder::new()
        .prefix(CONTROL_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let held = std::fs::File::open(dir.path())?;
    crate::lock::try_exclusive(&held)?;
    Ok((dir, held))
}

/// Removes the control folders in `tmp` that are ours and that no process
/// holds: a cellar killed with `kill -9` cannot remove its own. A folder
/// younger than 10 s is left alone (its cellar may be about to lock it),
/// and so is one whose ssh master still answers (a cellar from before the
/// lock, or a master still winding down).
fn sweep_control_folders(tmp: &std::path::Path) {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        if !e
            .file_name()
            .as_encoded_bytes()
            .starts_with(CONTROL_PREFIX.as_bytes())
        {
            continue;
        }
        // Ours, a folder and not a link (never followed), and not new.
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(10));
        if !meta.is_dir() || meta.uid() != me || !old {
            continue;
        }
        let free = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(e.path())
            .and_then(|f| crate::lock::try_exclusive(&f));
        let answers = || {
            std::fs::read_dir(e.path()).is_ok_and(|d| {
                d.flatten().any(|s| {
                    use std::os::unix::fs::FileTypeExt;
                    s.file_type().is_ok_and(|t| t.is_socket())
                        && std::os::unix::net::UnixStream::connect(s.path()).is_ok()
                })
            })
        };
        if free.unwrap_or(false) && !answers() {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::debug!("removed {}, left by a killed cellar", e.path().display())
                }
                Err(err) => tracing::debug!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

impl SftpStore {
    pub fn open(target: SftpTarget) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unsupported(format!("cannot start the SFTP client runtime: {e}"))
            })?;
        let (control, control_lock) = control_folder().map_err(|e| {
            StoreError::Unsupported(format!("cannot create an ssh control folder: {e}"))
        })?;
        let location = format!(
            "sftp://{}:{}{}",
            target.host,
            target.port,
            target.root.display()
        );
        // Our own ssh_config instead of the user's: AES-GCM first, which
        // AES-NI makes about twice as cheap as chacha20 (measured with
        // `ssh -c`), and both ends share the host's cores on loopback.
        let config = control.path().join("ssh_config");
        std::fs::write(
            &config,
            "Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr\nCompression no\n",
        )
        .map_err(|e| StoreError::Unsupported(format!("cannot write an ssh config: {e}")))?;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(KnownHosts::Strict)
            .port(target.port)
            .control_directory(control.path())
            .config_file(&config)
            .connect_timeout(Duration::from_secs(15))
            .server_alive_interval(Duration::from_secs(15))
            // The ssh master goes 30 s after its last channel closed: a
            // cellar killed with kill -9 leaves no authenticated
            // connection behind for long.
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(30).expect("not zero"),
            ));
        if let Some(u) = &target.user {
            b.user(u.clone());
        }
        if let Some(k) = &target.identity_file {
            b.keyfile(k);
        }
        if let Some(k) = &target.known_hosts {
            b.user_known_hosts_file(k);
        }
        let session = rt
            .block_on(b.connect_mux(&target.host))
            .map_err(|e| StoreError::Remote {
                op: "connect to",
                store: location.clone(),
                key: "the server".into(),
                message: explain_connect(&target, &e),
            })?;
        let sftp = rt
            .block_on(Sftp::from_session(session, SftpOptions::default()))
            .map_err(|e| StoreError::Remote {
                op: "start sftp on",
                store: location.clone(),
                key: "the server".into(),
                message: format!("{e}; is the sftp subsystem enabled on the server?"),
            })?;
        Ok(SftpStore {
            rt,
            sftp,
            target,
            _control: control,
            _control_lock: control_lock,
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.target.root.join(key)
    }

    fn err(&self, op: &'static str, key: &str, e: SftpError) -> StoreError {
        self.remote(op, key, e.to_string())
    }

    /// A failure of the server or of the connection to it, said so: the
    /// client's own words for a connection that went away ("Background
    /// task failed") name neither.
    fn remote(&self, op: &'static str, key: &str, message: String) -> StoreError {
        let lost = [
            "Background task failed",
            "read/flush task failed",
            "connection",
            "EOF",
        ]
        .iter()
        .any(|m| message.contains(m));
        let message = if lost {
            format!(
                "the connection to the SFTP server was lost, or the server stopped answering ({message}); check that {} is up and reachable, then run again",
                self.target.host
            )
        } else {
            message
        };
        StoreError::Remote {
            op,
            store: self.location(),
            key: key.to_string(),
            message,
        }
    }

    /// Creates `dir` and its parents, as `mkdir -p`.
    async fn mkdir_p(&self, dir: &Path) -> Result<(), SftpError> {
        let mut fs = self.sftp.fs();
        let mut cur = PathBuf::new();
        for c in dir.components() {
            cur.push(c);
            if fs.metadata(&cur).await.is_err() {
                if let Err(e) = fs.create_dir(&cur).await {
                    // Another writer may have made it meanwhile.
                    if fs.metadata(&cur).await.is_err() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_not_found(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::NoSuchFile, _))
}

impl SftpStore {
    /// The entries of a folder (none when it does not exist).
    fn read_dir(
        &self,
        dir: &std::path::Path,
        prefix: &str,
    ) -> Result<Vec<openssh_sftp_client::fs::DirEntry>, StoreError> {
        let entries = self.rt.block_on(async {
            let mut fs = self.sftp.fs();
            let d = match fs.open_dir(dir).await {
                Ok(d) => d,
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut stream = Box::pin(d.read_dir());
            let mut out = Vec::new();
            while let Some(entry) = stream.next().await {
                out.push(entry?);
            }
            Ok(out)
        });
        entries.map_err(|e| self.err("list", prefix, e))
    }
}

impl Store for SftpStore {
    fn location(&self) -> String {
        format!(
            "sftp://{}{}:{}{}",
            self.target
                .user
                .as_deref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            self.target.host,
            self.target.port,
            self.target.root.display()
        )
    }

    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.target.root).to_owned();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        self.rt
            .block_on(self.mkdir_p(&dir))
            .map_err(|e| self.err("create folder for", key, e))?;
        let file = self
            .rt
            .block_on(
                self.sftp
                    .options()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp),
            )
            .map_err(|e| self.err("create", key, e))?;
        let mut file = Box::pin(TokioCompatFile::new(file));
        let result = (|| -> Result<u64, StoreError> {
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = match data.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(StoreError::Io {
                            op: "read data for",
                            store: self.location(),
                            key: key.to_string(),
                            cause: e,
                        })
                    }
                };
                self.rt
                    .block_on(file.write_all(&buf[..n]))
                    .map_err(|e| self.remote("write", key, e.to_string()))?;
                total += n as u64;
            }
            self.rt
                .block_on(async {
                    file.flush().await?;
                    // fsync where the server offers it (OpenSSH's fsync@openssh.com).
                    let _ = file.as_mut().as_mut_file().sync_all().await;
                    Ok::<(), io::Error>(())
                })
                .map_err(|e| self.remote("finish", key, e.to_string()))?;
            Ok(total)
        })();
        drop(file);
        let result = result.and_then(|total| {
            // SFTP's plain rename (not posix-rename) fails when the target
            // exists: an object is never replaced.
            if self.rt.block_on(self.sftp.fs().metadata(&target)).is_ok() {
                return Err(StoreError::Exists {
                    store: self.location(),
                    key: key.to_string(),
                });
            }
            self.rt
                .block_on(self.sftp.fs().rename(&tmp, &target))
                .map_err(|e| self.err("rename into place", key, e))?;
            Ok(total)
        });
        if result.is_err() {
            // Best effort: the connection may be what failed.
            let _ = self.rt.block_on(self.sftp.fs().remove_file(&tmp));
        }
        result
    }

    fn get(&self, key: &str) -> Result<Reader, StoreError> {
        let file = match self.rt.block_on(self.sftp.open(self.path(key))) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => {
                return Err(StoreError::NotFound {
                    store: self.location(),
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(self.err("open", key, e)),
        };
        let (tx, reader) = super::bridge::channel();
        self.rt.spawn(async move {
            let mut file = Box::pin(TokioCompatFile::new(file));
            loop {
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(bytes::Bytes::from(buf))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::new(reader))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let dir = self.target.root.join(super::folder_of(prefix));
        let entries = self.read_dir(&dir, prefix)?;
        let mut out = Vec::new();
        for e in entries {
            // Listings include `.` and `..`; hidden names are temporaries.
            let Some(key) = super::folder_key(prefix, &e.filename().to_string_lossy()) else {
                continue;
            };
            let meta = e.metadata();
            if !meta.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            out.push(ObjectInfo {
                key,
                size: meta.len().unwrap_or(0),
                modified: meta.modified().map(|t| t.as_system_time().into()),
                md5: None,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn sweep(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        let folder = super::folder_of(prefix);
        let dir = self.target.root.join(folder);
        let entries = self.read_dir(&dir, prefix)?;
        let mut out = Vec::new();
        for e in entries {
            let name = e.filename().to_string_lossy().into_owned();
            if !super::is_temporary(&name) {
                continue;
            }
            let meta = e.metadata();
            let old = meta
                .modified()
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t.as_system_time()))
                .is_some_and(|t| t < older_than);
            if !meta.file_type().is_some_and(|t| t.is_file()) || !old {
                continue;
            }
            if !dry_run {
                match self
                    .rt
                    .block_on(self.sftp.fs().remove_file(dir.join(&name)))
                {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(self.err("delete", &format!("{folder}/{name}"), e)),
                }
            }
            out.push(format!(
                "temporary file {folder}/{name} ({} bytes)",
                meta.len().unwrap_or(0)
            ));
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.rt.block_on(self.sftp.fs().remove_file(self.path(key))) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let t = SftpTarget::parse("sftp://backup@host.example:2222/srv/backups/").unwrap();
        assert_eq!(t.user.as_deref(), Some("backup"));
        assert_eq!((t.host.as_str(), t.port), ("host.example", 2222));
        assert_eq!(t.root, PathBuf::from("/srv/backups"));
        let t = SftpTarget::parse("sftp://host/x").unwrap();
        assert_eq!((t.user, t.port), (None, 22));
        assert!(SftpTarget::parse("sftp://host").is_err());
        assert!(SftpTarget::parse("sftp://h:port/x").is_err());
    }
}
