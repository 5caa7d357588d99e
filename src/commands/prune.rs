//! `cellar prune PROFILE [--dry-run]`: apply the retention and say, for
//! every backup, what is kept or deleted and why.

use std::path::Path;
use std::time::Duration;

use crate::{lock, prune, schedule, Failure};

pub fn run(
    dir: &Path,
    name: &str,
    dry_run: bool,
    force: bool,
    wait: Duration,
) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    let store = super::open_store(dir, &profile)?;
    let _lock = if dry_run {
        None
    } else {
        Some(lock::acquire(dir, &profile.name, "prune", wait)?)
    };
    let st = crate::state::load(dir, &profile.name);
    let plan = prune::plan(store.as_ref(), dir, &profile, schedule::now(), &st, true)?;
    if let Some(why) = &plan.hold {
        println!("{}: nothing is deleted: {why}", profile.name);
        for d in &plan.decisions {
            println!("{:<12} {}  {:<22} held", "keep", d.id, d.tier_label());
        }
        return Ok(0);
    }
    let verb = |keep: bool| match (keep, dry_run) {
        (true, _) => "keep",
        (false, true) => "would delete",
        (false, false) => "delete",
    };
    for d in &plan.decisions {
        println!(
            "{:<12} {}  {:<22} {}",
            verb(d.keep()),
            d.id,
            d.tier_label(),
            d.reason
        );
    }
    for e in &plan.unfinished {
        println!(
            "{:<12} {}  {:<22} unfinished (no manifest) and older than a day",
            verb(false),
            e.id,
            "-"
        );
    }
    for e in &plan.untrusted {
        println!(
            "{:<12} {}  {:<22} UNTRUSTED: {}{}",
            if force { verb(false) } else { "keep" },
            e.id,
            "-",
            e.untrusted().unwrap_or(""),
            if force {
                ""
            } else {
                " (kept for inspection; --force deletes it)"
            }
        );
    }
    for l in prune::sweep(store.as_ref(), &profile.name, schedule::now(), dry_run)? {
        println!(
            "{:<12} leftover of a killed upload, older than a day: {l}",
            if dry_run { "would remove" } else { "removed" }
        );
    }
    if !dry_run {
        let done = prune::apply(store.as_ref(), &profile.name, &plan, force)?;
        for (id, until) in &done.locked {
            println!(
                "skipped      {id}  under object lock until {}; it will be deleted by a prune after that",
                until.format("%Y-%m-%d %H:%M UTC")
            );
        }
        println!("{}: {} backup(s) deleted", profile.name, done.removed.len());
    }
    Ok(0)
}
