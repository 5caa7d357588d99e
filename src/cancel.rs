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
