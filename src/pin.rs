//! Pins: a backup kept out of the retention until it is unpinned.
//!
//! A pin is a small object next to the backup, `<profile>/<id>.pin`, so
//! it lives as long as the backup does, whatever happens to the host that
//! made it (a pin in local state would be lost with the host, and the
//! backup pruned by the next one). The store is not trusted, but a pin can
//! only keep a backup: a forged pin costs space, never data. A pin counts
//! only next to a trusted backup; `prune` removes a stray one (no
//! manifest) with the unfinished backups, and deleting a backup (`prune
//! --force` of an untrusted one) deletes its pin with it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::catalog::Entry;
use crate::store::{Store, StoreError};

pub const PIN_SUFFIX: &str = ".pin";

pub fn key(profile: &str, id: &str) -> String {
    format!("{profile}/{id}{PIN_SUFFIX}")
}

/// What a pin object holds (for people reading the store; cellar only
/// looks at its presence).
#[derive(Debug, Serialize, Deserialize)]
pub struct Pin {
    pub id: String,
    pub pinned_at: chrono::DateTime<chrono::Utc>,
    pub host: String,
}

/// The ids among `entries` that carry a pin.
pub fn pinned(profile: &str, entries: &[Entry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.objects.iter().any(|o| o.key == key(profile, &e.id)))
        .map(|e| e.id.clone())
        .collect()
}

/// Pins backup `id`; false when it was pinned already.
pub fn pin(store: &dyn Store, profile: &str, id: &str) -> Result<bool, StoreError> {
    let pin = Pin {
        id: id.to_string(),
        pinned_at: crate::schedule::now(),
        host: hostname(),
    };
    let bytes = serde_json::to_vec_pretty(&pin).expect("a pin serializes");
    match store.put(&key(profile, id), &mut bytes.as_slice()) {
        Ok(_) => Ok(true),
        Err(StoreError::Exists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases the pin of `id`; false when it was not pinned.
pub fn unpin(store: &dyn Store, profile: &str, id: &str) -> Result<bool, StoreError> {
    let k = key(profile, id);
    let exists = store.list(&k)?.iter().any(|o| o.key == k);
    if exists {
        store.delete(&k)?;
    }
    Ok(exists)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
