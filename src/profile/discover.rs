//! Finding the profile files under `DIR/profiles` and choosing among them.

use super::*;

/// Errors loading the profile set as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Problems(ProblemList),
    #[error("no profile named `{name}` in {dir}; known profiles: {known}")]
    Unknown {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("cannot read the profiles folder {dir}: {cause}; create it or pass --config-dir")]
    Dir { dir: PathBuf, cause: std::io::Error },
}

#[derive(Debug)]
pub struct ProblemList(pub Vec<Problem>);

impl std::fmt::Display for ProblemList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A profile file found under `DIR/profiles`.
#[derive(Debug, Clone)]
pub struct ProfileFile {
    pub name: String,
    pub path: PathBuf,
    pub rel: PathBuf,
    /// An entry that cannot be a profile (a dangling link, a link loop, a
    /// name used twice): reported as an invalid profile of its own, so the
    /// others still run.
    pub problem: Option<Problem>,
}

fn entry_problem(rel: &Path, message: String, fix: &str) -> Option<Problem> {
    Some(Problem {
        file: rel.to_owned(),
        line: 0,
        column: 0,
        key: String::new(),
        message,
        fix: fix.into(),
    })
}

/// Finds `DIR/profiles/**/*.toml`, sorted by name. Two files with the same
/// stem in different folders are a problem: the name must be unique. An
/// entry that cannot be read is a [`ProfileFile`] with a problem; only a
/// missing profiles folder is an error.
pub fn discover(config_dir: &Path) -> Result<Vec<ProfileFile>, LoadError> {
    let dir = config_dir.join("profiles");
    if !dir.is_dir() {
        return Err(LoadError::Dir {
            dir: dir.clone(),
            cause: std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
        });
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A dangling link, a loop, an unreadable folder: that entry
                // is an invalid profile; the others still run.
                let Some(path) = e.path().map(Path::to_owned) else {
                    return Err(LoadError::Dir {
                        dir: dir.clone(),
                        cause: e.into(),
                    });
                };
                let rel = path.strip_prefix(config_dir).unwrap_or(&path).to_owned();
                let name = match path.extension() {
                    Some(x) if x == "toml" => path.file_stem(),
                    _ => path.file_name(),
                }
                .map_or_else(
                    || rel.display().to_string(),
                    |s| s.to_string_lossy().into_owned(),
                );
                let message = if e.loop_ancestor().is_some() {
                    "a symlink loop".to_string()
                } else {
                    format!("cannot read it: {e}")
                };
                files.push(ProfileFile {
                    name,
                    path: path.clone(),
                    problem: entry_problem(
                        &rel,
                        message,
                        "fix or remove this entry in the profiles folder (a dangling or looping symlink?)",
                    ),
                    rel,
                });
                continue;
            }
        };
        let path = entry.path();
        let kind = entry.file_type();
        if !kind.is_dir() && path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let rel = path.strip_prefix(config_dir).unwrap_or(path).to_owned();
            // A FIFO, a device or a socket named like a profile is reported,
            // never opened: reading a FIFO would hang every run.
            let problem = (!kind.is_file())
                .then(|| {
                    entry_problem(
                        &rel,
                        "it is not a regular file (a FIFO, a device or a socket)".into(),
                        "a profile is a small regular TOML file; move this entry out of profiles/",
                    )
                })
                .flatten();
            files.push(ProfileFile {
                name,
                path: path.to_owned(),
                rel,
                problem,
            });
        }
    }
    // A name used twice: neither file is the profile, both are reported.
    for i in 0..files.len() {
        let other = files
            .iter()
            .enumerate()
            .find(|(j, b)| *j != i && b.name == files[i].name)
            .map(|(_, b)| b.rel.clone());
        if let (Some(other), None) = (other, &files[i].problem) {
            let message = format!(
                "profile name `{}` is also used by {}",
                files[i].name,
                other.display()
            );
            files[i].problem = entry_problem(
                &files[i].rel,
                message,
                "rename one of the files: the file stem is the profile's name",
            );
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Picks the named profiles (all when `names` is empty).
pub fn select(
    config_dir: &Path,
    files: Vec<ProfileFile>,
    names: &[String],
) -> Result<Vec<ProfileFile>, LoadError> {
    if names.is_empty() {
        return Ok(files);
    }
    let mut out = Vec::new();
    for n in names {
        match files.iter().find(|f| &f.name == n) {
            Some(f) => out.push(f.clone()),
            None => {
                return Err(LoadError::Unknown {
                    name: n.clone(),
                    dir: config_dir.join("profiles"),
                    known: if files.is_empty() {
                        "(none; create one with `cellar init postgres NAME`)".into()
                    } else {
                        files
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })
            }
        }
    }
    Ok(out)
}

/// Reads and validates one profile file.
/// The `rto` and `rpo` of a profile file, read without validating the
/// rest (no secrets are read): for `status` and the metrics file, which
/// must work where the profile's secrets cannot be read. A value that is
/// missing or not a duration is None (`check` reports the latter).
pub fn objectives(file: &Path) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return (None, None);
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return (None, None);
    };
    let get = |key: &str| {
        table
            .get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| humantime::parse_duration(s).ok())
            .filter(|d| !d.is_zero())
    };
    (get("rto"), get("rpo"))
}

/// Parses and validates profile text. `rel` names the file in messages.
/// A profile name is a folder name in every store: letters, digits, `_`,
/// `-` and `.` (never first, never two in a row).
pub fn valid_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
