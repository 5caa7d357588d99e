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
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGTERM, SIGINT] {
        // Order matters: the conditional shutdown sees the flag as it was
        // before this signal, so only a second signal exits.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(flag()));
        let _ = signal_hook::flag::register(sig, Arc::clone(flag()));
    }
}

pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// The error a stage returns when it stops for a signal.
pub fn interrupted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "interrupted by a signal (SIGTERM/SIGINT): the backup was abandoned",
    )
}
