//! `cellar init KIND NAME`: a new profile from the commented template.
//! Uses `templates/KIND.toml` in the config dir when present, else the
//! copy built into the binary.

use std::path::Path;

use anyhow::Context;

use crate::cli::InitKind;
use crate::Failure;

const POSTGRES: &str = include_str!("../../templates/postgres.toml");
const MARIADB: &str = include_str!("../../templates/mariadb.toml");
const FILES: &str = include_str!("../../templates/files.toml");

pub fn run(dir: &Path, kind: InitKind, name: &str) -> Result<i32, Failure> {
    if !crate::profile::valid_profile_name(name) {
        return Err(Failure::config(anyhow::anyhow!(
            "profile name `{name}` must be letters, digits, `_`, `-` or `.` (it names a folder in every store), such as `shop` or `my-shop`"
        )));
    }
    let (file, builtin) = match kind {
        InitKind::Postgres => ("postgres.toml", POSTGRES),
        InitKind::Mariadb => ("mariadb.toml", MARIADB),
        InitKind::Files => ("files.toml", FILES),
    };
    let template = match std::fs::read_to_string(dir.join("templates").join(file)) {
        Ok(t) => t,
        Err(_) => builtin.to_string(),
    };
    let target = dir.join("profiles").join(format!("{name}.toml"));
    if target.exists() {
        return Err(Failure::config(anyhow::anyhow!(
            "{} already exists; edit it, or choose another NAME",
            target.display()
        )));
    }
    std::fs::create_dir_all(dir.join("profiles")).context("creating profiles/")?;
    // Never replaces a file that appeared meanwhile.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(template.as_bytes())?;
            f.sync_all()
        })
        .with_context(|| format!("writing {}", target.display()))?;
    println!(
        "wrote {}; edit it, then run `cellar check {name}`",
        target.display()
    );
    Ok(0)
}
