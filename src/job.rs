//! One scheduled unit of work: a profile's backup with everything around
//! it. Hooks run first (global, then the profile's), then the backup, the
//! canary checks, the state record, the closing hooks (`after` on success,
//! `on_failure` otherwise, even when a `before` hook failed) and the
//! metrics file. `backup`, `run` and `daemon` all go through here.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use tracing::{error, warn};

use crate::hooks::{self, HookEnv};
use crate::manifest::Manifest;
use crate::profile::{Global, HookCommand, Profile};
use crate::progress::Progress;
use crate::state::{self, Outcome, Run};

/// How `backup`, `run` and `daemon` run a profile's backup: the settings
/// shared by every profile of one invocation.
pub struct BackupJob<'a> {
    pub config_dir: &'a Path,
    pub global: &'a Global,
    pub metrics_file: Option<PathBuf>,
    pub progress: &'a dyn Progress,
    /// How long to wait for another cellar holding the profile's lock.
    pub lock_wait: std::time::Duration,
    /// Apply the retention after a successful backup.
    pub prune: bool,
}

/// The main payloads' plaintext size (roles and tablespaces excluded).
fn dump_bytes(m: &Manifest) -> u64 {
    m.payloads
        .iter()
        .filter(|p| !p.content.is_globals())
        .map(|p| p.plain_size)
        .sum()
}

const STRICT_CANARY: &str = "the canary failed (strict = true)";

/// Canary findings: an empty dump, or one much smaller than the last.
pub fn canary(p: &Profile, m: &Manifest, previous_plain: Option<u64>) -> Vec<String> {
    let mut found = Vec::new();
    if m.source.entries == Some(0) {
        found.push(match p.kind {
            crate::profile::Kind::Postgres | crate::profile::Kind::Mariadb => {
                "the dump is empty: the database has no tables".to_string()
            }
            crate::profile::Kind::Files => {
                "the backup is empty: no files were found under `paths`".to_string()
            }
        });
    }
    let now = dump_bytes(m);
    if let Some(before) = previous_plain.filter(|b| *b > 0) {
        if p.canary.shrink_warn > 0 && now < before {
            let shrink = 100.0 * (before - now) as f64 / before as f64;
            if shrink > p.canary.shrink_warn as f64 {
                found.push(format!(
                    "the dump is {shrink:.0}% smaller than the previous one ({before} -> {now} bytes; shrink_warn = {}%)",
                    p.canary.shrink_warn
                ));
            }
        }
    }
    found
}

/// What the source reported as changed or left out (the log has the names).
fn source_notes(m: &Manifest) -> Vec<String> {
    let mut notes = Vec::new();
    if m.source.changed_during_backup > 0 {
        notes.push(format!(
            "{} file(s) changed while they were read; each is archived with the size it had when opened (the log of this run names them)",
            m.source.changed_during_backup
        ));
    }
    notes.extend(m.source.skipped.iter().cloned());
    notes
}

impl BackupJob<'_> {
    fn prune(&self, p: &Profile) -> anyhow::Result<()> {
        let store = crate::store::open(&p.store, self.config_dir)?;
        // This run passed its canaries (else prune is not called), so the
        // hold of an earlier canary failure is over.
        let st = state::load(self.config_dir, &p.name);
        let plan = crate::prune::plan(
            store.as_ref(),
            self.config_dir,
            p,
            crate::schedule::now(),
            &st,
            false,
        )?;
        for e in &plan.untrusted {
            tracing::warn!(
                "{}: backup {} is untrusted and kept for inspection ({}); `cellar prune {} --force` deletes it",
                p.name,
                e.id,
                e.untrusted().unwrap_or(""),
                p.name
            );
        }
        let done = crate::prune::apply(store.as_ref(), &p.name, &plan, false)?;
        for l in crate::prune::sweep(store.as_ref(), &p.name, crate::schedule::now(), false)? {
            tracing::info!("{}: removed a leftover of a killed upload: {l}", p.name);
        }
        if !done.removed.is_empty() {
            tracing::info!("{}: pruned {}", p.name, done.removed.join(", "));
        }
        for (id, until) in &done.locked {
            tracing::info!(
                "{}: {id} is past retention but under object lock until {until}",
                p.name
            );
        }
        Ok(())
    }

    pub fn run(&self, p: &Profile) -> anyhow::Result<Manifest> {
        Ok(self
            .run_if(p, || true)?
            .expect("a backup that is always wanted is made"))
    }

    /// Backs up `p` if `still_wanted`, asked once the profile's lock is
    /// held: a run that waited for another one (`run --due` from two
    /// overlapping cron ticks) sees what that one did. `None` when not.
    pub fn run_if(
        &self,
        p: &Profile,
        still_wanted: impl FnOnce() -> bool,
    ) -> anyhow::Result<Option<Manifest>> {
        // Held until the backup and its prune are done; a busy profile is
        // not a failed backup, so nothing is recorded for it.
        let _lock = crate::lock::acquire(self.config_dir, &p.name, "backup", self.lock_wait)?;
        if !still_wanted() {
            return Ok(None);
        }
        // The injectable clock (CELLAR_NOW), so schedule tests stay coherent.
        let started_at = crate::schedule::now();
        let clock = std::time::Instant::now();
        let mut st = state::load(self.config_dir, &p.name);
        let previous_plain = st.last_success.as_ref().map(|r| r.plain_bytes);
        let before: Vec<&HookCommand> = self
            .global
            .hooks
            .before
            .iter()
            .chain(&p.hooks.before)
            .collect();
        let running = HookEnv {
            profile: &p.name,
            backup_id: None,
            status: "running",
            error: None,
        };
        let mut canaries_found: Vec<String> = Vec::new();
        let mut made: Option<Manifest> = None;
        let result = hooks::run("before", &before, &running)
            .and_then(|_| {
                let m = self.checked_backup(p, &st, previous_plain, &mut canaries_found)?;
                made = Some(m.clone());
                Ok(m)
            })
            .map_err(|e| match e.downcast::<StrictCanary>() {
                // Stored, kept, but a failed run.
                Ok(strict) => {
                    made = Some(strict.0.clone());
                    anyhow!(strict.1)
                }
                Err(e) => e,
            });
        let mut warnings = canaries_found.clone();
        if let Some(m) = &made {
            warnings.extend(source_notes(m));
        }
        if result.is_ok() && self.prune {
            if let Err(e) = self.prune(p) {
                error!(
                    "{}: the backup succeeded, but pruning failed: {e:#}",
                    p.name
                );
            }
        }
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        // The run failed a canary (a strict finding, or a dump that lacks a
        // table's data): prune holds off until a run passes. A finding
        // with strict = false is a warning only, so that a database that
        // is meant to be empty or shrink does not stop the retention.
        let canary_failed = (p.canary.strict && !canaries_found.is_empty())
            || result.as_ref().err().is_some_and(|e| {
                e.chain().any(|c| {
                    c.is::<crate::backup::DumpCanary>()
                        || c.downcast_ref::<crate::backup::BackupError>()
                            .is_some_and(|b| b.dump_canary())
                })
            });
        let run = Run {
            backup_id: made.as_ref().map(|m| m.id.clone()),
            started_at,
            finished_at: started_at
                + chrono::Duration::from_std(clock.elapsed()).unwrap_or_default(),
            outcome: if result.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            stored_bytes: made.as_ref().map_or(0, |m| m.stored_size()),
            plain_bytes: made.as_ref().map_or(0, dump_bytes),
            error: error.clone(),
            warnings,
            canary_failed,
        };
        st.record(run);
        save_state(self.config_dir, &p.name, &st);

        self.closing_hooks(p, made.as_ref(), &result);
        write_metrics(self.config_dir, self.metrics_file.as_deref());
        result.map(Some)
    }

    /// The backup itself and its canaries; a strict canary finding is a
    /// [`StrictCanary`] error that carries the stored backup.
    fn checked_backup(
        &self,
        p: &Profile,
        st: &state::ProfileState,
        previous_plain: Option<u64>,
        canaries_found: &mut Vec<String>,
    ) -> anyhow::Result<Manifest> {
        let store = crate::store::open(&p.store, self.config_dir)?;
        let m = crate::backup::run(p, store.as_ref(), self.progress)?;
        let canaries = canary(p, &m, previous_plain);
        for w in &canaries {
            warn!("{}: canary: {w}", p.name);
        }
        *canaries_found = canaries.clone();
        if p.canary.strict && !canaries.is_empty() {
            // One suspicious backup is kept for inspection, not one per
            // retry: the one the last strict failure kept goes.
            let previous = st
                .last_failure
                .as_ref()
                .filter(|r| {
                    r.error
                        .as_deref()
                        .is_some_and(|e| e.contains(STRICT_CANARY))
                })
                .and_then(|r| r.backup_id.clone())
                .filter(|id| {
                    *id != m.id
                        && st.last_success.as_ref().and_then(|s| s.backup_id.as_ref()) != Some(id)
                });
            if let Some(old) = previous {
                match crate::prune::delete_backup(store.as_ref(), &p.name, &old) {
                    Ok(()) => warn!(
                        "{}: deleted backup {old}, kept by the previous strict canary failure; {} is kept instead",
                        p.name, m.id
                    ),
                    Err(e) => warn!("{}: cannot delete backup {old} of the previous strict canary failure: {e}", p.name),
                }
            }
            let message = format!(
                "{}: backup {} was stored, but {STRICT_CANARY}: {}",
                p.name,
                m.id,
                canaries.join("; ")
            );
            return Err(StrictCanary(m, message).into());
        }
        Ok(m)
    }

    /// `after` on success, `on_failure` otherwise: a closing hook that
    /// fails does not change what happened to the backup; it is reported
    /// as an error of its own.
    fn closing_hooks(
        &self,
        p: &Profile,
        made: Option<&Manifest>,
        result: &anyhow::Result<Manifest>,
    ) {
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        let closing = HookEnv {
            profile: &p.name,
            backup_id: made.map(|m| m.id.as_str()),
            status: if result.is_ok() { "success" } else { "failure" },
            error: error.as_deref(),
        };
        let (stage, list): (&str, Vec<&HookCommand>) = if result.is_ok() {
            (
                "after",
                p.hooks
                    .after
                    .iter()
                    .chain(&self.global.hooks.after)
                    .collect(),
            )
        } else {
            (
                "on_failure",
                p.hooks
                    .on_failure
                    .iter()
                    .chain(&self.global.hooks.on_failure)
                    .collect(),
            )
        };
        // A closing hook that fails does not change what happened to the
        // backup; it is reported as an error of its own.
        for e in hooks::run_all(stage, &list, &closing) {
            error!("{}: {e:#}", p.name);
        }
    }
}

/// A strict canary finding: the backup is stored (and kept), the run failed.
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
struct StrictCanary(Manifest, String);

/// Saves a profile's state; a failure is logged, never fatal (the backup or
/// mirror it records is done).
pub fn save_state(config_dir: &Path, profile: &str, st: &state::ProfileState) {
    if let Err(e) = state::save(config_dir, profile, st) {
        error!(
            "{profile}: cannot record the run in {}: {e}",
            state::dir(config_dir).display()
        );
    }
}

/// Rewrites the metrics file, when one is asked for.
pub fn write_metrics(config_dir: &Path, path: Option<&Path>) {
    if let Some(path) = path {
        if let Err(e) = crate::metrics::write(config_dir, path) {
            error!("cannot write the metrics file {}: {e}", path.display());
        }
    }
}
