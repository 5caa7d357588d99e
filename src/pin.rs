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
//!
//! On S3 with `object_lock`, a pin also sets a legal hold on each object
//! of the backup (and on the pin), so no one can remove those object
//! versions, whatever their retention date, until `unpin` clears it.

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

/// What `pin` and `unpin` did.
#[derive(Debug, Default)]
pub struct Done {
    /// The pin was created (pin) or removed (unpin); false when it was
    /// already there (pin) or absent (unpin).
    pub changed: bool,
    /// Objects whose S3 legal hold was set (pin) or cleared (unpin).
    pub legal_holds: usize,
}

/// Sets or clears the legal hold on every object of backup `id`.
fn legal_holds(store: &dyn Store, profile: &str, id: &str, on: bool) -> Result<usize, StoreError> {
    let mut n = 0;
    let prefix = format!("{profile}/{id}.");
    for o in store.list(&prefix)? {
        if store.set_legal_hold(&o.key, on)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Pins backup `id`: the pin object, then (S3 with object lock) a legal
/// hold on each of its objects.
pub fn pin(store: &dyn Store, profile: &str, id: &str) -> Result<Done, StoreError> {
    let pin = Pin {
        id: id.to_string(),
        pinned_at: crate::schedule::now(),
        host: hostname(),
    };
    let bytes = serde_json::to_vec_pretty(&pin).expect("a pin serializes");
    let k = key(profile, id);
    let changed = match store.put(&k, &mut bytes.as_slice()) {
        Ok(_) => true,
        // Something is there: a pin only if the listing shows one (a
        // folder planted under the name is not, and would keep nothing).
        Err(StoreError::Exists { .. }) if store.list(&k)?.iter().any(|o| o.key == k) => false,
        Err(StoreError::Exists { store: s, key }) => {
            return Err(StoreError::Remote {
                op: "pin",
                store: s,
                key,
                message: "something that is not a pin (a folder?) is in the way under the pin's name; remove it from the store and pin again".into(),
            })
        }
        Err(e) => return Err(e),
    };
    Ok(Done {
        changed,
        legal_holds: legal_holds(store, profile, id, true)?,
    })
}

/// Releases the pin of `id`: the legal holds first, then the pin object.
pub fn unpin(store: &dyn Store, profile: &str, id: &str) -> Result<Done, StoreError> {
    let k = key(profile, id);
    let exists = store.list(&k)?.iter().any(|o| o.key == k);
    let held = legal_holds(store, profile, id, false)?;
    if exists {
        store.delete(&k)?;
    }
    Ok(Done {
        changed: exists,
        legal_holds: held,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
