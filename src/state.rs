//! What cellar remembers between runs: per profile, the last run, the last
//! success and the last failure, the last mirror, and the restore drills
//! (the last one, and the last one of each backup id), in
//! `DIR/state/<profile>.json`. `status`,
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
    /// This run failed because of a canary (a strict empty or shrink
    /// finding, or a dump missing a table's data): prune holds off while
    /// the last run says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_failed: bool,
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
    /// The last drill (`cellar drill` or `cellar mirror`), passed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<Drill>,
    /// The last drill of each backup id (the newest [`MAX_DRILLS`]), for
    /// `list` and for the retention, which keeps the newest drilled backup.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub drills: std::collections::BTreeMap<String, Drill>,
    /// The run that failed a canary, until a later run succeeds: prune
    /// deletes nothing meanwhile, whatever other failures came after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_hold: Option<Run>,
}

/// How many backup ids keep their drill result in the state file.
pub const MAX_DRILLS: usize = 400;

/// One restore drill: the backup restored into a scratch database and
/// compared with its manifest's inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    pub backup_id: String,
    /// `drill` or `mirror`.
    pub by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub passed: bool,
    /// Wall time from the first byte fetched to the restored database
    /// compared (the swap or drop excluded): what a restore costs.
    pub restore_seconds: f64,
    /// Plaintext bytes of the dump that was restored.
    pub plain_bytes: u64,
    /// Stored bytes of that dump.
    pub stored_bytes: u64,
    /// Plaintext bytes of the whole backup's dumps (globals excluded), the
    /// measure `status` projects the restore time with.
    #[serde(default)]
    pub backup_plain_bytes: u64,
    /// Plaintext bytes restored per second.
    pub bytes_per_second: f64,
    /// Tables whose rows were compared with the inventory (0: not compared).
    #[serde(default)]
    pub tables_compared: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An earlier drill of the same backup passed: it is proven to
    /// restore, whatever made a later drill fail (a server down).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passed_before: bool,
}

impl Drill {
    pub fn result(&self) -> &'static str {
        if self.passed {
            "passed"
        } else {
            "FAILED"
        }
    }
}

impl ProfileState {
    pub fn record(&mut self, run: Run) {
        match run.outcome {
            Outcome::Success => {
                self.last_success = Some(run.clone());
                self.canary_hold = None;
            }
            Outcome::Failure => {
                if run.canary_failed {
                    self.canary_hold = Some(run.clone());
                }
                self.last_failure = Some(run.clone());
            }
        }
        self.last_run = Some(run);
    }

    pub fn record_drill(&mut self, mut drill: Drill) {
        if let Some(earlier) = self.drills.get(&drill.backup_id) {
            drill.passed_before = earlier.passed || earlier.passed_before;
        }
        self.drills.insert(drill.backup_id.clone(), drill.clone());
        while self.drills.len() > MAX_DRILLS {
            let oldest = self.drills.keys().next().cloned().expect("not empty");
            self.drills.remove(&oldest);
        }
        self.last_drill = Some(drill);
    }

    /// The last passed drill's restore time, projected linearly to the
    /// newest good backup's size (never below what was measured): the
    /// restore time to expect now. None without a passed drill.
    pub fn projected_restore_seconds(&self) -> Option<f64> {
        let d = self.last_drill.as_ref().filter(|d| d.passed)?;
        let newest = self.last_success.as_ref().map_or(0, |r| r.plain_bytes);
        let growth = if d.backup_plain_bytes > 0 && newest > d.backup_plain_bytes {
            newest as f64 / d.backup_plain_bytes as f64
        } else {
            1.0
        };
        Some(d.restore_seconds * growth)
    }

    /// How old the newest good backup's data is: since its start (the
    /// snapshot), not its end. None when the last success is dated after
    /// `now` (see [`State::present_success`]).
    pub fn newest_backup_age_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        self.present_success(now)
            .map(|r| (now - r.started_at).num_milliseconds().max(0) as f64 / 1000.0)
    }

    /// The last success, unless it is dated after `now`: a backup made
    /// while the clock ran ahead says nothing about how old the data is
    /// now, and must not hold off the next scheduled backup for months.
    pub fn present_success(&self, now: DateTime<Utc>) -> Option<&Run> {
        let slack = chrono::Duration::minutes(crate::catalog::FUTURE_SLACK_MINUTES);
        self.last_success
            .as_ref()
            .filter(|r| r.started_at <= now + slack)
    }

    /// The newest backup id whose last drill passed.
    pub fn newest_passed_drill(&self) -> Option<&str> {
        self.drills
            .values()
            .rev()
            .find(|d| d.passed || d.passed_before)
            .map(|d| d.backup_id.as_str())
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
