//! SIGTERM and SIGINT stop a backup cleanly instead of killing it.
//!
//! The first signal sets a flag that the pipeline checks between chunks:
//! the running backup fails with "interrupted", its payloads are deleted
//! and no manifest is written. A second signal ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers; call once at startup.
pub fn install() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // SIGHUP too: a dropped SSH session must clean up like Ctrl-C.
    for sig in [SIGTERM, SIGINT, SIGHUP] {
        // Order matters: the conditional shutdown sees the flag as it was
        // before this signal, so only a second signal exits.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(flag()));
        let _ = signal_hook::flag::register(sig, Arc::clone(flag()));
    }
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
