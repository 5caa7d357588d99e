//! Applying the retention to a store.
//!
//! A backup is deleted manifest first, then its payloads: an interrupted
//! prune leaves at worst an unfinished backup (payloads without manifest),
//! never a listed backup without its payloads. Unfinished backups older
//! than a day are removed too; younger ones may still be uploading.
//!
//! Good backups are protected: pinned ones and the newest one whose drill
//! passed are kept ([`retention::decide_guarded`]), and from a run of the
//! profile that failed because of a canary (a strict empty or shrunken
//! dump, or one that lacks a table's data) until a run succeeds, prune
//! deletes nothing at all: the backups before it may be the last good ones.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use crate::catalog::{self, Entry};
use crate::manifest::{self, Manifest};
use crate::profile::Profile;
use crate::retention::{self, Decision};
use crate::state::ProfileState;
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Why nothing may be deleted now (the last run failed a canary).
    pub hold: Option<String>,
    /// Unfinished backups old enough to remove.
    pub unfinished: Vec<Entry>,
    /// Backups whose manifest cannot be trusted: reported, deleted only
    /// with `--force` (they may be evidence of tampering).
    pub untrusted: Vec<Entry>,
    entries: Vec<Entry>,
}

/// How old a leftover of a killed upload must be before prune removes it:
/// an upload still under way is never younger than its own start.
pub const LEFTOVER_AGE_HOURS: i64 = 24;

/// Removes (or with `dry_run` lists) what killed uploads left in the
/// profile's folder: hidden temporary files, incomplete multipart uploads.
pub fn sweep(
    store: &dyn Store,
    profile: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<String>, StoreError> {
    store.sweep(
        &format!("{profile}/"),
        now - chrono::Duration::hours(LEFTOVER_AGE_HOURS),
        dry_run,
    )
}

/// Deletes one backup, manifest first (so an interruption leaves an
/// unfinished backup, never a manifest without its payloads).
pub fn delete_backup(store: &dyn Store, profile: &str, id: &str) -> Result<(), StoreError> {
    let Some(entry) = catalog::scan(store, profile)?
        .into_iter()
        .find(|e| e.id == id)
    else {
        return Ok(());
    };
    let manifest_key = Manifest::key(profile, id);
    if entry.objects.iter().any(|o| o.key == manifest_key) {
        store.delete(&manifest_key)?;
    }
    for o in entry.objects.iter().filter(|o| o.key != manifest_key) {
        store.delete(&o.key)?;
    }
    Ok(())
}

/// What `prune` would do now. Only trusted backups count for the
/// retention: a planted manifest can never push a real backup out.
/// `state` is the profile's state: its drills, and (with `hold_on_canary`)
/// its last run, which holds prune off when it failed a canary.
pub fn plan(
    store: &dyn Store,
    config_dir: &Path,
    profile: &Profile,
    now: DateTime<Utc>,
    state: &ProfileState,
    hold_on_canary: bool,
) -> Result<Plan, StoreError> {
    let entries = catalog::backups(store, profile, Some(config_dir))?;
    let decisions = decide(profile, &entries, state, now);
    // (A state written before `canary_hold` existed: its last run.)
    let hold = state
        .canary_hold
        .as_ref()
        .or(state.last_run.as_ref().filter(|r| r.canary_failed))
        .filter(|_| hold_on_canary)
        .map(|r| {
            format!(
                "run {} failed a canary: {}; prune deletes nothing until a run succeeds",
                r.backup_id
                    .clone()
                    .unwrap_or_else(|| r.started_at.format("%Y-%m-%d %H:%M UTC").to_string()),
                r.error
                    .as_deref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| r.warnings.join("; "))
            )
        });
    let untrusted = entries
        .iter()
        .filter(|e| e.untrusted().is_some())
        .cloned()
        .collect();
    let unfinished = entries
        .iter()
        .filter(|e| !e.complete)
        .filter(|e| manifest::parse_id(&e.id).is_some_and(|t| t < now - Duration::days(1)))
        .cloned()
        .collect();
    Ok(Plan {
        decisions,
        hold,
        unfinished,
        untrusted,
        entries,
    })
}

/// The retention's decision for the trusted backups among `entries`,
/// with pins and the newest passed drill protected (`list` shows it).
pub fn decide(
    profile: &Profile,
    entries: &[Entry],
    state: &ProfileState,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let complete: Vec<(String, DateTime<Utc>)> = entries
        .iter()
        .filter(|e| e.manifest().is_some() && !e.unsigned())
        .filter_map(|e| manifest::parse_id(&e.id).map(|t| (e.id.clone(), t)))
        .collect();
    let guards = retention::Guards {
        pinned: crate::pin::pinned(&profile.name, entries),
        drilled: state.newest_passed_drill().map(str::to_string),
    };
    retention::decide_guarded(&complete, &profile.retention, now, &guards)
}

/// What `apply` did.
#[derive(Debug, Default)]
pub struct Applied {
    pub removed: Vec<String>,
    /// Backups the retention would delete but object lock still protects,
    /// with the time the lock ends.
    pub locked: Vec<(String, DateTime<Utc>)>,
}

/// The tier a kept backup's objects are tagged with: `pinned` while
/// pinned (no lifecycle rule or expiry hint may take it), else the longest
/// it is kept under (monthly, weekly, else daily).
fn tag_for(d: &Decision) -> &'static str {
    use crate::retention::Tier;
    if d.tiers.contains(&Tier::Pinned) {
        "pinned"
    } else if d.tiers.contains(&Tier::Monthly) {
        "monthly"
    } else if d.tiers.contains(&Tier::Weekly) {
        "weekly"
    } else {
        "daily"
    }
}

/// Deletes what the plan does not keep (skipping what object lock still
/// protects) and re-tags what it keeps with its tier. Untrusted backups
/// are deleted only with `force`.
pub fn apply(
    store: &dyn Store,
    profile: &str,
    plan: &Plan,
    force: bool,
) -> Result<Applied, StoreError> {
    let mut done = Applied::default();
    if plan.hold.is_some() {
        return Ok(done);
    }
    let by_id: std::collections::HashMap<&str, &Entry> =
        plan.entries.iter().map(|e| (e.id.as_str(), e)).collect();
    for d in plan.decisions.iter().filter(|d| d.keep()) {
        if let Some(entry) = by_id.get(d.id.as_str()) {
            for o in &entry.objects {
                store.set_tier(&o.key, tag_for(d))?;
            }
        }
    }
    for d in plan.decisions.iter().filter(|d| !d.keep()) {
        let Some(entry) = by_id.get(d.id.as_str()) else {
            continue;
        };
        let mut lock = None;
        for o in &entry.objects {
            if let Some(until) = store.locked_until(&o.key)? {
                lock = Some(lock.map_or(until, |l: DateTime<Utc>| l.max(until)));
            }
        }
        if let Some(until) = lock {
            done.locked.push((d.id.clone(), until));
            continue;
        }
        let manifest_key = Manifest::key(profile, &d.id);
        store.delete(&manifest_key)?;
        for o in entry.objects.iter().filter(|o| o.key != manifest_key) {
            store.delete(&o.key)?;
        }
        done.removed.push(d.id.clone());
    }
    let forced = plan.untrusted.iter().filter(|_| force);
    for e in plan.unfinished.iter().chain(forced) {
        let mut locked = false;
        for o in &e.objects {
            if let Some(until) = store.locked_until(&o.key)? {
                done.locked.push((e.id.clone(), until));
                locked = true;
                break;
            }
        }
        if locked {
            continue;
        }
        for o in &e.objects {
            store.delete(&o.key)?;
        }
        done.removed.push(e.id.clone());
    }
    Ok(done)
}
