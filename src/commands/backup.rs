//! `cellar backup PROFILE`: one backup now (with its hooks and canaries).

use std::path::Path;

use super::SharedProgress;
use crate::Failure;

pub fn run(
    dir: &Path,
    name: &str,
    opts: &super::Opts<'_>,
    progress: SharedProgress,
) -> Result<i32, Failure> {
    let profile = super::load_one(dir, name)?;
    let global = super::load_global(dir)?;
    let m = super::runner(dir, &global, opts, progress.as_ref()).run(&profile)?;
    println!(
        "{}: backup {} complete: {} payload(s), {} stored",
        profile.name,
        m.id,
        m.payloads.len(),
        human_bytes(m.stored_size())
    );
    Ok(0)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
