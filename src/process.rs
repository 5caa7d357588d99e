//! Child processes (pg_dump, pg_restore, psql) handled with care.
//!
//! Commands are argv vectors, never shell strings. stderr is read on its
//! own thread (keeping the last 64 KiB), so a chatty child can never block
//! on a full pipe while we wait on its stdout. A non-zero exit becomes an
//! error that shows the captured stderr. A child that is dropped before it
//! was waited for is killed: a failed backup leaves no pg_dump behind.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

const STDERR_KEEP: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {tool}: {cause}; {hint}")]
    Spawn {
        tool: String,
        hint: String,
        cause: std::io::Error,
    },
    #[error("{tool} failed ({status}){}", fmt_stderr(.stderr))]
    Failed {
        tool: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("waiting for {tool}: {cause}")]
    Wait { tool: String, cause: std::io::Error },
}

fn fmt_stderr(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

pub struct Running {
    pub tool: String,
    pub child: Child,
    stderr: Option<JoinHandle<String>>,
    waited: bool,
    /// The child leads a process group of its own (its workers too).
    group: bool,
}

/// Spawns `cmd` with stderr captured. The caller sets stdin/stdout.
pub fn spawn(cmd: &mut Command, tool: &str, hint: &str) -> Result<Running, ProcessError> {
    cmd.stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|cause| ProcessError::Spawn {
        tool: tool.to_string(),
        hint: hint.to_string(),
        cause,
    })?;
    Ok(running(child, tool))
}

/// Like [`spawn`], for a child that outlives the thread that asks for it
/// (a psql session that threads share) and must still end with cellar,
/// even by `kill -9`: it is spawned with [`die_with_parent`] by a thread
/// that lives as long as cellar does, whose end the signal follows. A
/// session's psql left running would carry out the statements it had
/// read (a swap) after cellar was gone.
pub fn spawn_tied(mut cmd: Command, tool: &str, hint: &str) -> Result<Running, ProcessError> {
    use std::sync::{mpsc, Mutex, OnceLock};
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawn_error = |cause| ProcessError::Spawn {
        tool: tool.to_string(),
        hint: hint.to_string(),
        cause,
    };
    cmd.stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let _ = std::thread::Builder::new()
            .name("cellar-spawner".into())
            .spawn(move || {
                for (mut cmd, back) in rx {
                    let _ = back.send(cmd.spawn());
                }
            });
        Mutex::new(tx)
    });
    let (back, answer) = mpsc::channel();
    let gone = || std::io::Error::other("the thread that starts sessions is gone");
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, back))
        .map_err(|_| spawn_error(gone()))?;
    let child = answer
        .recv()
        .map_err(|_| spawn_error(gone()))?
        .map_err(spawn_error)?;
    Ok(running(child, tool))
}

/// A spawned child whose stderr is read on a thread of its own.
fn running(mut child: Child, tool: &str) -> Running {
    let mut err = child.stderr.take().expect("stderr was piped");
    let stderr = std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        if kept.len() > STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    Running {
        tool: tool.to_string(),
        child,
        stderr: Some(stderr),
        waited: false,
        group: false,
    }
}

/// Like [`spawn`], but the child leads a new process group, so killing it
/// also kills the workers it forked (pg_restore -j).
pub fn spawn_group(cmd: &mut Command, tool: &str, hint: &str) -> Result<Running, ProcessError> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let mut r = spawn(cmd, tool, hint)?;
    r.group = true;
    Ok(r)
}

impl Running {
    /// Waits for the child; a non-zero exit is an error with its stderr.
    /// Returns the stderr text on success (warnings, notices).
    pub fn wait(mut self) -> Result<String, ProcessError> {
        let status = self.child.wait().map_err(|cause| ProcessError::Wait {
            tool: self.tool.clone(),
            cause,
        })?;
        self.waited = true;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if status.success() {
            Ok(stderr)
        } else {
            Err(ProcessError::Failed {
                tool: self.tool.clone(),
                status,
                stderr,
            })
        }
    }

    /// Waits like [`Running::wait`], but a SIGTERM/SIGINT to cellar kills
    /// the child (and its group) within a fraction of a second and returns
    /// the cancellation error.
    pub fn wait_or_cancel(self) -> anyhow::Result<String> {
        self.wait_for(None)
    }

    /// [`Running::wait_or_cancel`], and the child (with its group) is
    /// killed once it has run for `limit`.
    pub fn wait_for(mut self, limit: Option<std::time::Duration>) -> anyhow::Result<String> {
        let started = std::time::Instant::now();
        let exited = ExitWatch::new(self.child.id());
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(self.wait()?),
                Ok(None) => {}
                Err(cause) => {
                    return Err(ProcessError::Wait {
                        tool: self.tool.clone(),
                        cause,
                    }
                    .into())
                }
            }
            if crate::cancel::requested() {
                self.terminate();
                return Err(anyhow::Error::new(crate::cancel::interrupted())
                    .context(format!("stopping {}", self.tool)));
            }
            if let Some(limit) = limit.filter(|l| started.elapsed() >= *l) {
                self.terminate();
                anyhow::bail!(
                    "{} did not finish within {}; it was killed (raise [hooks] timeout if it needs longer)",
                    self.tool,
                    humantime::format_duration(limit)
                );
            }
            exited.pause(std::time::Duration::from_millis(50));
        }
    }

    fn terminate(&mut self) {
        if self.group {
            // SAFETY: kill(2) on the process group this child leads.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.waited = true;
    }

    /// Kills the child and reaps it.
    pub fn kill(mut self) {
        self.terminate();
    }
}

/// Wakes a waiter as soon as a child exits: a pidfd (Linux 5.3 and
/// later) becomes readable when its process ends. Each psql, pg_dump and
/// pg_restore that cellar waits for this way used to be noticed up to
/// 50 ms late, a tenth of a second or more a restore (measured with
/// `strace -tt`).
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(pid: u32) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
        // descriptor or -1. The child is not reaped before its Running is
        // waited, so the pid is still its own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a descriptor pidfd_open just returned, owned by no one else.
        ExitWatch((fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sleeps for `most`, or less when the child exits first (a plain
    /// sleep where the kernel has no pidfds).
    fn pause(&self, most: std::time::Duration) {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.0 else {
            return std::thread::sleep(most);
        };
        // EINTR (a signal for cancel) just ends the pause early.
        let _ = poll_fd(
            fd.as_raw_fd(),
            libc::POLLIN,
            most.as_millis() as libc::c_int,
        );
    }
}

/// poll(2) on one descriptor: the events that came (0 when `timeout_ms`
/// passed first). Async-signal-safe: [`crate::cancel`] calls it from a
/// signal handler.
pub fn poll_fd(
    fd: std::os::fd::RawFd,
    events: libc::c_short,
    timeout_ms: libc::c_int,
) -> std::io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll(2) on the one pollfd it is given.
    if unsafe { libc::poll(&mut p, 1, timeout_ms) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.revents)
}

/// A child's pipe that wakes up every quarter second while it is quiet,
/// so a SIGTERM to cellar stops the read (with [`crate::cancel::Cancelled`])
/// even when the child sends nothing at all.
pub struct Cancellable<R>(pub R);

impl<R: std::io::Read + std::os::fd::AsRawFd> std::io::Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if crate::cancel::requested() {
                return Err(crate::cancel::interrupted());
            }
            match poll_fd(self.0.as_raw_fd(), libc::POLLIN, 250) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(0) => {}
                // Readable, at end, or broken: read says which.
                Ok(_) => return self.0.read(buf),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.waited {
            self.terminate();
        }
    }
}

/// A command for `program` without the environment variables cellar read
/// secrets from (`env:VAR`, any profile's: a key passphrase, a store's
/// secret key, a database password), nor `PGPASSWORD`/`MYSQL_PWD`, which
/// would override the password cellar hands over privately.
pub fn tool(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in crate::secret::env_secrets() {
        cmd.env_remove(var);
    }
    cmd.env_remove("PGPASSWORD").env_remove("MYSQL_PWD");
    cmd
}

/// A private in-memory file (a 0600 memfd) holding `text`: a password
/// file a child reads as `/dev/fd/N`. Nothing reaches the disk, and it is
/// gone with the processes however cellar ends, even on kill -9.
pub fn secret_file(name: &std::ffi::CStr, text: &str) -> std::io::Result<std::fs::File> {
    memory_file(name, text.as_bytes())
}

/// A private in-memory file (a 0600 memfd) holding `bytes`, for a child to
/// read as `/dev/fd/N`: nothing reaches the disk, even on kill -9.
pub fn memory_file(name: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: a valid C string; the new descriptor is owned below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // Clients ignore a password file that others could read.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    Ok(f)
}

/// Makes `fd` the child's descriptor `target`, not close-on-exec, so the
/// child can open it as `/dev/fd/<target>`. `fd` must stay open until the
/// child is spawned.
pub fn pass_fd(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec; dup2
    // leaves the copy without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child is killed when cellar dies, even by `kill -9`: a pg_restore
/// left running would keep the unnamed spool file alive and go on loading
/// a scratch database that no one will swap in. Only for a child that the
/// spawning thread waits for: the signal follows that thread's end.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: prctl, getppid and _exit are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Gone already, before the line above took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Runs `cmd` and streams its stdout into `out` (a dump into the
/// pipeline). A quiet child (a dump waiting on a lock) does not hold off
/// a SIGTERM; when `out` fails, the child is killed, and when the child
/// fails, its own error is returned (it explains more than a broken pipe).
pub fn stream_stdout(
    mut cmd: Command,
    tool: &str,
    hint: &str,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = spawn(&mut cmd, tool, hint)?;
    let mut stdout = std::io::BufReader::with_capacity(
        1 << 18,
        Cancellable(child.child.stdout.take().expect("stdout was piped")),
    );
    let copied = std::io::copy(&mut stdout, out);
    drop(stdout);
    match copied {
        Ok(_) => {
            child.wait()?;
            Ok(())
        }
        Err(e) => {
            child.kill();
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_shows_stderr_and_chatty_stderr_does_not_block() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' x >&2; echo boom >&2; exit 3",
        ]);
        cmd.stdout(Stdio::null());
        let e = spawn(&mut cmd, "sh", "").unwrap().wait().unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("sh failed (exit status: 3): "), "{msg:.80}");
        assert!(msg.ends_with("boom"));
    }

    #[test]
    fn missing_tool_gives_the_hint() {
        let mut cmd = Command::new("/nonexistent/pg_dump");
        let e = spawn(&mut cmd, "pg_dump", "install postgresql-client")
            .err()
            .unwrap();
        assert!(e.to_string().contains("install postgresql-client"));
    }
}
