//! What cellar remembers between runs: per profile, the last run, the last
//! success and the last failure, in `DIR/state/<profile>.json`. `status`,
//! `run --due` and the metrics file read it. Written atomically (temporary
//! file, fsync, rename), so a crash never leaves half a state file.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// One run of one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// Bytes written to the store.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Bytes of dump or tar before compression.
    #[serde(default)]
    pub plain_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Canary findings (suspiciously small or empty dump).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Run {
    pub fn duration_secs(&self) -> f64 {
        (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Run>,
    /// The last successful restore drill (`cellar mirror`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mirror: Option<Run>,
}

impl ProfileState {
    pub fn record(&mut self, run: Run) {
        match run.outcome {
            Outcome::Success => self.last_success = Some(run.clone()),
            Outcome::Failure => self.last_failure = Some(run.clone()),
        }
        self.last_run = Some(run);
    }
}

pub fn dir(config_dir: &Path) -> PathBuf {
    config_dir.join("state")
}

fn file(config_dir: &Path, profile: &str) -> PathBuf {
    dir(config_dir).join(format!("{profile}.json"))
}

/// The profile's state; empty when it never ran. A damaged file is
/// reported and treated as empty rather than blocking backups.
pub fn load(config_dir: &Path, profile: &str) -> ProfileState {
    let path = file(config_dir, profile);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!("ignoring the damaged state file {}: {e}", path.display());
            ProfileState::default()
        }),
        Err(_) => ProfileState::default(),
    }
}

pub fn save(config_dir: &Path, profile: &str, state: &ProfileState) -> std::io::Result<()> {
    let dir = dir(config_dir);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    write_atomic(&file(config_dir, profile), &json)
}

/// Writes `bytes` to `path` through a temporary file in the same folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cellar-")
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // tempfile creates 0600; state and metrics are not secret.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_parent(path)
}

/// Fsyncs the folder holding `path`, so a rename or a new file in it
/// survives a crash.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
