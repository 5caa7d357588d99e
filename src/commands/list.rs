//! `cellar list PROFILE [--json]`: the complete backups in the store.

use std::path::Path;

use crate::Failure;
use crate::{catalog, manifest, schedule};

pub fn run(dir: &Path, name: &str, json: bool) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    let store = super::open_store(dir, &profile)?;
    let entries = catalog::backups(store.as_ref(), &profile, Some(dir))?;
    let (complete, unfinished): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.complete);
    // Only trusted backups count for the retention; pins and the newest
    // passed drill are kept too. The tier each backup is kept under now.
    let st = crate::state::load(dir, &profile.name);
    let decisions = crate::prune::decide(&profile, &complete, &st, schedule::now());
    let pinned = crate::pin::pinned(&profile.name, &complete);
    let drill = |id: &str| st.drills.get(id);
    let tiers: std::collections::HashMap<&str, String> = decisions
        .iter()
        .map(|d| (d.id.as_str(), d.tier_label()))
        .collect();
    let tier = |id: &str| tiers.get(id).cloned().unwrap_or_else(|| "-".to_string());
    if json {
        let rows: Vec<_> = complete
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id,
                    "time": manifest::parse_id(&e.id).map(|t| t.to_rfc3339()),
                    "size": e.size(),
                    "tier": tier(&e.id),
                    "pinned": pinned.contains(&e.id),
                    "drill": drill(&e.id),
                    "trusted": e.manifest().is_some(),
                    "problem": e.untrusted(),
                    "changed_during_backup": e.manifest().map(|m| m.source.changed_during_backup),
                    "future": catalog::in_future(&e.id, schedule::now()),
                    "skipped": e.manifest().map(|m| m.source.skipped.clone()),
                    "objects": e.objects.iter().map(|o| o.key.rsplit('/').next().unwrap_or(&o.key)).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
    } else {
        println!(
            "{:<18} {:<20} {:>10}  {:<28} DRILL",
            "ID", "TIME (UTC)", "SIZE", "TIER"
        );
        for e in &complete {
            let t = manifest::parse_id(&e.id)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let tier = match e.untrusted() {
                Some(why) => format!("UNTRUSTED: {why}"),
                None if catalog::in_future(&e.id, schedule::now()) => format!(
                    "{} (FUTURE: dated after now; never chosen as the latest)",
                    tier(&e.id)
                ),
                None if e.unsigned() => {
                    "unsigned (allow_unsigned_before): kept, not counted".into()
                }
                None => tier(&e.id),
            };
            let drilled = match drill(&e.id) {
                Some(d) => format!(
                    "{} {} ({} in {:.1}s)",
                    d.result(),
                    d.finished_at.format("%Y-%m-%d %H:%M"),
                    super::backup::human_bytes(d.plain_bytes),
                    d.restore_seconds
                ),
                None => "-".into(),
            };
            println!(
                "{:<18} {:<20} {:>10}  {:<28} {}",
                e.id,
                t,
                super::backup::human_bytes(e.size()),
                tier,
                drilled
            );
        }
        if complete.is_empty() {
            println!("(no complete backups in {})", store.location());
        }
    }
    let future = complete
        .iter()
        .filter(|e| catalog::in_future(&e.id, schedule::now()))
        .count();
    if future > 0 {
        tracing::warn!(
            "{future} backup(s) are dated in the future (was the clock ahead when they were made?); restore and mirror without an id skip them"
        );
    }
    let untrusted = complete.iter().filter(|e| e.untrusted().is_some()).count();
    if untrusted > 0 {
        tracing::warn!(
            "{untrusted} backup(s) are untrusted: never restored, never counted by the retention (`cellar prune {} --force` deletes them)",
            profile.name
        );
    }
    if !unfinished.is_empty() {
        tracing::warn!(
            "{} unfinished backup(s) without a manifest are not listed: {}",
            unfinished.len(),
            unfinished
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(0)
}
