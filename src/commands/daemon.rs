//! `cellar daemon`: stay in the foreground (for systemd or a container)
//! and back up each profile when its `schedule` fires, one job at a time.
//! Profiles are re-read on every tick, so edits need no restart. SIGTERM
//! or SIGINT abandons the running backup cleanly (no manifest, its
//! payloads removed) and exits 0.

use std::path::Path;
use std::time::Duration;

use tracing::{error, info, warn};

use super::SharedProgress;
use crate::profile::{self, ProblemList};
use crate::{cancel, schedule, Failure};

pub fn run(
    dir: &Path,
    tick: u64,
    opts: &super::Opts<'_>,
    progress: SharedProgress,
) -> Result<i32, Failure> {
    info!("cellar daemon: watching {}", dir.join("profiles").display());
    let mut reported = std::collections::HashSet::new();
    while !cancel::requested() {
        let global = super::load_global(dir)?;
        let runner = super::runner(dir, &global, opts, progress.as_ref());
        let files = profile::discover(dir).map_err(Failure::config)?;
        for file in &files {
            if cancel::requested() {
                break;
            }
            let p = match profile::load(dir, file) {
                Ok(p) => p,
                Err(problems) => {
                    let text = ProblemList(problems).to_string();
                    // Say it once per distinct problem, not every tick.
                    if reported.insert(text.clone()) {
                        error!("{}: invalid profile, not scheduled:\n{text}", file.name);
                    }
                    continue;
                }
            };
            if p.schedule.is_none() || !super::run::due(dir, &p, schedule::now()) {
                continue;
            }
            info!("{}: schedule fired; backing up", p.name);
            match runner.run(&p) {
                Ok(m) => info!("{}: backup {} complete", p.name, m.id),
                Err(e) => error!("{:#}", e),
            }
        }
        for _ in 0..tick.max(1) * 4 {
            if cancel::requested() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    warn!("cellar daemon: stopped by a signal");
    Ok(0)
}
