//! `cellar verify PROFILE [ID | --all]`: prove backups would restore,
//! without restoring them.

use std::path::Path;

use tracing::error;

use super::SharedProgress;
use crate::catalog;
use crate::restore::{self, Fetch};
use crate::Failure;

pub fn run(
    dir: &Path,
    name: &str,
    id: Option<&str>,
    all: bool,
    progress: SharedProgress,
) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    let store = super::open_store(dir, &profile)?;
    let identity = super::identity(&profile)?;
    let fetch = Fetch {
        profile: &profile,
        store: store.as_ref(),
        identity: &identity,
        progress: progress.as_ref(),
    };
    let ids: Vec<Option<String>> = if all {
        catalog::scan(store.as_ref(), &profile.name)?
            .into_iter()
            .filter(|e| e.complete)
            .map(|e| Some(e.id))
            .collect()
    } else {
        vec![id.map(str::to_string)]
    };
    let mut bad = 0;
    for id in &ids {
        let result = catalog::manifest(store.as_ref(), &profile, id.as_deref())
            .and_then(|m| restore::verify(&fetch, &m).map(|_| m).map_err(Into::into));
        match result {
            Ok(m) => println!(
                "{}: backup {} verified: {} payload(s) intact",
                profile.name,
                m.id,
                m.payloads.len()
            ),
            Err(e) => {
                bad += 1;
                if ids.len() == 1 {
                    return Err(e.into());
                }
                error!("{:#}", e);
            }
        }
    }
    if all && ids.is_empty() {
        println!("{}: no complete backups to verify", profile.name);
    }
    Ok(if bad > 0 { 1 } else { 0 })
}
