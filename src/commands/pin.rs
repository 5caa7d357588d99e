//! `cellar pin PROFILE ID` / `cellar unpin PROFILE ID`: keep a backup out
//! of the retention, or release it. The pin is an object in the store
//! next to the backup (see `crate::pin`).

use std::path::Path;

use crate::{catalog, pin, Failure};

pub fn run(
    dir: &Path,
    name: &str,
    id: &str,
    keep: bool,
    wait: std::time::Duration,
) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    let store = super::open_store(dir, &profile)?;
    // Not while this host prunes the profile: a pin must not land next to
    // a backup that is being deleted.
    let _lock = crate::lock::acquire(dir, &profile.name, if keep { "pin" } else { "unpin" }, wait)?;
    if keep {
        // Only a trusted backup is worth keeping (and must exist).
        let m = catalog::manifest(store.as_ref(), &profile, Some(id))?;
        let done = pin::pin(store.as_ref(), &profile.name, &m.id)?;
        if done.changed {
            println!(
                "{}: backup {} is pinned: prune keeps it until `cellar unpin {} {}`",
                profile.name, m.id, profile.name, m.id
            );
        } else {
            println!("{}: backup {} was pinned already", profile.name, m.id);
        }
        if done.legal_holds > 0 {
            println!("  S3 legal hold set on {} object(s)", done.legal_holds);
        }
    } else {
        let done = pin::unpin(store.as_ref(), &profile.name, id)?;
        if done.changed {
            println!(
                "{}: backup {id} is unpinned: the retention decides about it again",
                profile.name
            );
        } else {
            println!("{}: backup {id} was not pinned", profile.name);
        }
        if done.legal_holds > 0 {
            println!("  S3 legal hold cleared on {} object(s)", done.legal_holds);
        }
    }
    Ok(0)
}
