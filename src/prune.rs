//! Applying the retention to a store.
//!
//! A backup is deleted manifest first, then its payloads: an interrupted
//! prune leaves at worst an unfinished backup (payloads without manifest),
//! never a listed backup without its payloads. Unfinished backups older
//! than a day are removed too; younger ones may still be uploading.

use chrono::{DateTime, Duration, Utc};

use crate::catalog::{self, Entry};
use crate::manifest::{self, Manifest};
use crate::profile::Retention;
use crate::retention::{self, Decision};
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Unfinished backups old enough to remove.
    pub unfinished: Vec<Entry>,
    entries: Vec<Entry>,
}

/// What `prune` would do now.
pub fn plan(
    store: &dyn Store,
    profile: &str,
    policy: &Retention,
    now: DateTime<Utc>,
) -> Result<Plan, StoreError> {
    let entries = catalog::scan(store, profile)?;
    let complete: Vec<(String, DateTime<Utc>)> = entries
        .iter()
        .filter(|e| e.complete)
        .filter_map(|e| manifest::parse_id(&e.id).map(|t| (e.id.clone(), t)))
        .collect();
    let decisions = retention::decide(&complete, policy, now);
    let unfinished = entries
        .iter()
        .filter(|e| !e.complete)
        .filter(|e| manifest::parse_id(&e.id).is_some_and(|t| t < now - Duration::days(1)))
        .cloned()
        .collect();
    Ok(Plan {
        decisions,
        unfinished,
        entries,
    })
}

/// Deletes what the plan does not keep; returns the ids removed.
pub fn apply(store: &dyn Store, profile: &str, plan: &Plan) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    for d in plan.decisions.iter().filter(|d| !d.keep()) {
        let Some(entry) = plan.entries.iter().find(|e| e.id == d.id) else {
            continue;
        };
        let manifest_key = Manifest::key(profile, &d.id);
        store.delete(&manifest_key)?;
        for o in entry.objects.iter().filter(|o| o.key != manifest_key) {
            store.delete(&o.key)?;
        }
        removed.push(d.id.clone());
    }
    for e in &plan.unfinished {
        for o in &e.objects {
            store.delete(&o.key)?;
        }
        removed.push(e.id.clone());
    }
    Ok(removed)
}
