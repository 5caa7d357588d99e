//! `cellar run [PROFILE...]`: back up every profile; one failing profile
//! never stops the others, and a summary at the end names each failure.
//! Exit 2 when a profile is invalid, else 1 when a backup failed.

use std::path::Path;

use tracing::{error, warn};

use super::SharedProgress;
use crate::profile::{self, ProblemList};
use crate::Failure;

pub fn run(dir: &Path, names: &[String], progress: SharedProgress) -> Result<i32, Failure> {
    let files = profile::discover(dir).map_err(Failure::config)?;
    let files = profile::select(dir, files, names).map_err(Failure::config)?;
    let mut ok = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut invalid = false;
    for file in &files {
        let p = match profile::load(dir, file) {
            Ok(p) => p,
            Err(problems) => {
                invalid = true;
                let text = ProblemList(problems).to_string();
                error!("{}: invalid profile, skipped:\n{text}", file.name);
                failed.push((file.name.clone(), "invalid profile (see above)".into()));
                continue;
            }
        };
        for w in &p.warnings {
            warn!("{w}");
        }
        let result = crate::store::open(&p.store, dir)
            .map_err(anyhow::Error::from)
            .and_then(|store| {
                crate::backup::run(&p, store.as_ref(), progress.as_ref())
                    .map_err(anyhow::Error::from)
            });
        match result {
            Ok(m) => {
                println!("{}: backup {} complete", p.name, m.id);
                ok.push(p.name.clone());
            }
            Err(e) => {
                error!("{:#}", e);
                failed.push((p.name.clone(), format!("{e:#}")));
            }
        }
    }
    println!("summary: {} succeeded, {} failed", ok.len(), failed.len());
    for (name, why) in &failed {
        println!("  failed: {name}: {}", why.lines().next().unwrap_or(""));
    }
    Ok(if invalid {
        2
    } else if failed.is_empty() {
        0
    } else {
        1
    })
}
