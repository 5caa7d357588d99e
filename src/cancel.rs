//! SIGTERM and SIGINT stop a backup cleanly instead of killing it.
//!
//! The first signal sets a flag that the pipeline checks between chunks:
//! the running backup fails with "interrupted", its payloads are deleted
//! and no manifest is written. A second signal ends the process at once,
//! unless it comes within a second of the first (`timeout` and process
//! managers signal the process and then its whole group).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers; call once at startup.
pub fn install() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let flag = Arc::clone(flag());
    let first = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // SIGHUP too: a dropped SSH session must clean up like Ctrl-C.
    for sig in [SIGTERM, SIGINT, SIGHUP] {
        let (flag, first) = (Arc::clone(&flag), Arc::clone(&first));
        // SAFETY: the handler only reads the monotonic clock, touches
        // atomics and may call _exit, all async-signal-safe.
        let _ = unsafe {
            signal_hook::low_level::register(sig, move || {
                let now = monotonic_ms();
                match first.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => flag.store(true, Ordering::SeqCst),
                    // A second signal ends the process at once, unless it
                    // came with the first: `timeout` and process managers
                    // signal the process and then its group.
                    Err(at) if now.saturating_sub(at) >= SAME_SIGNAL_MS => {
                        signal_hook::low_level::exit(130)
                    }
                    Err(_) => {}
                }
            })
        };
    }
}

/// `cellar list P | head -1`: a closed stdout ends the process quietly by
/// SIGPIPE, as it ends cat or ls, instead of a panic in `println!`.
///
/// Only a closed stdout does: the default disposition would also kill a
/// command that had printed everything when the ssh process of an SFTP
/// store exits just before cellar's last write to it. That SIGPIPE is
/// ignored, and the write fails with EPIPE for the code that made it.
pub fn end_on_closed_stdout() {
    // SAFETY: the handler calls only poll(2), then sigaction(2) and
    // raise(3) through emulate_default_handler: all async-signal-safe.
    let _ = unsafe {
        signal_hook::low_level::register(signal_hook::consts::SIGPIPE, || {
            if no_reader(libc::STDOUT_FILENO) {
                let _ =
                    signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
            }
        })
    };
}

/// Whether nobody reads `fd` any more: a pipe whose reader closed it, a
/// socket whose peer left.
fn no_reader(fd: libc::c_int) -> bool {
    crate::process::poll_fd(fd, 0, 0)
        .is_ok_and(|revents| revents & (libc::POLLERR | libc::POLLHUP) != 0)
}

/// Signals this close to the first count as the same request.
const SAME_SIGNAL_MS: u64 = 1000;

fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Never 0, which means "no signal yet".
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000 + 1
}

pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// The marker inside the error a stage returns when it stops for a signal.
///
/// It is deliberately not `ErrorKind::Interrupted`: `io::copy` and every
/// read loop retry that kind, which would swallow the stop.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal (SIGTERM/SIGINT): the job was abandoned")]
pub struct Cancelled;

/// The error a stage returns when it stops for a signal.
pub fn interrupted() -> std::io::Error {
    std::io::Error::other(Cancelled)
}

/// Whether an error (anywhere in its chain) is a stop for a signal.
pub fn is_cancelled(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Cancelled>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<Cancelled>())
    })
}

#[cfg(test)]
mod tests {
    use super::no_reader;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_a_pipe_or_socket_nobody_reads_counts_as_closed() {
        let (reader, writer) = std::io::pipe().unwrap();
        assert!(!no_reader(writer.as_raw_fd()));
        drop(reader);
        assert!(no_reader(writer.as_raw_fd()));

        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!no_reader(a.as_raw_fd()));
        drop(b);
        assert!(no_reader(a.as_raw_fd()));

        let file = tempfile::tempfile().unwrap();
        assert!(!no_reader(file.as_raw_fd()));
    }
}
