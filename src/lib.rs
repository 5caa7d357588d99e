//! cellar as a library: the engine behind the `cellar` binary.
//!
//! Modules follow the pipeline: `profile` (what to back up), `source`
//! (pg_dump, tar), `pipeline` (compress, encrypt, hash), `store` (where),
//! `backup`/`restore`/`catalog` (the operations) and `commands` (the CLI).

pub mod backup;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod coverage;
pub mod drill;
pub mod hooks;
pub mod job;
pub mod keys;
pub mod lock;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod mirror;
pub mod pin;
pub mod pipeline;
pub mod process;
pub mod profile;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod seipd;
pub mod source;
pub mod state;
pub mod store;

/// An error with the exit code it stands for.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Failure {
    /// Invalid configuration or usage (exit 2).
    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    /// Anything else is a failed job (exit 1).
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}
