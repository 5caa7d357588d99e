//! Running `[hooks]` commands (global ones from `cellar.toml` around the
//! profile's own). Each command runs without a shell unless the table says
//! `shell = true`, with what happened in its environment:
//! `CELLAR_PROFILE`, `CELLAR_BACKUP_ID`, `CELLAR_STATUS` (`running`,
//! `success` or `failure`) and `CELLAR_ERROR`. Its output goes to cellar's
//! stderr; a non-zero exit is an error that names the command.
//!
//! A hook sees only a safe base of cellar's environment ([`SAFE_ENV`]) plus
//! the names in `[hooks] pass_env`: cloud credentials and `env:` secrets
//! stay with cellar. It runs in a process group of its own that is killed
//! after `[hooks] timeout` (default 5 minutes) or when cellar is stopped.

use std::process::{Command, Stdio};

use crate::process;
use crate::profile::HookCommand;

/// What a hook is told.
pub struct HookEnv<'a> {
    pub profile: &'a str,
    pub backup_id: Option<&'a str>,
    pub status: &'a str,
    pub error: Option<&'a str>,
}

/// Runs the commands in order; stops at the first that fails.
pub fn run(stage: &str, commands: &[&HookCommand], env: &HookEnv<'_>) -> anyhow::Result<()> {
    commands.iter().try_for_each(|h| run_one(stage, h, env))
}

/// Runs every command, even after one failed (a broken mail hook must not
/// keep the health-check ping from going out); reports each failure.
pub fn run_all(stage: &str, commands: &[&HookCommand], env: &HookEnv<'_>) -> Vec<anyhow::Error> {
    commands
        .iter()
        .filter_map(|h| run_one(stage, h, env).err())
        .collect()
}

/// Variables every hook gets from cellar's environment, when set.
pub const SAFE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "TERM",
];

fn run_one(stage: &str, h: &HookCommand, env: &HookEnv<'_>) -> anyhow::Result<()> {
    let mut cmd = if h.shell {
        let mut c = Command::new("sh");
        c.arg("-c").arg(&h.text);
        c
    } else {
        let mut c = Command::new(&h.argv[0]);
        c.args(&h.argv[1..]);
        c
    };
    cmd.env_clear();
    for name in SAFE_ENV
        .iter()
        .copied()
        .chain(h.pass_env.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("CELLAR_PROFILE", env.profile)
        .env("CELLAR_BACKUP_ID", env.backup_id.unwrap_or(""))
        .env("CELLAR_STATUS", env.status)
        .env("CELLAR_ERROR", env.error.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit());
    tracing::info!("{}: {stage} hook: {}", env.profile, h.text);
    let child = process::spawn_group(
        &mut cmd,
        &format!("{stage} hook `{}`", h.text),
        "check the command in [hooks]",
    )?;
    let stderr = child.wait_for(Some(h.timeout))?;
    if !stderr.trim().is_empty() {
        crate::progress::suspend(|| eprint!("{stderr}"));
    }
    Ok(())
}
