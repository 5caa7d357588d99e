//! Secrets: values that must never reach a log line, a process argument or
//! a `Debug` dump.
//!
//! A profile names a secret as a literal, `file:PATH` or `env:VAR`; the
//! validation layer resolves it into a [`Secret`], whose `Debug` and
//! `Display` print a placeholder. The only way to the value is
//! [`Secret::expose`], so every use of the plain text is easy to find.

use std::fmt;
use std::path::{Path, PathBuf};

/// A resolved secret value. Printing it shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plain text. Call sites are the places where a secret leaves
    /// cellar: a 0600 passfile, an environment variable, a key unlock.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from, as written in a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Literal,
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// How `check` and `show` describe the secret without revealing it.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Literal => "literal value (redacted)".into(),
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(v) => format!("environment variable {v}"),
        }
    }
}

/// What went wrong resolving a secret; the message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {cause}; create it (chmod 600) or fix the path")]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("environment variable {0} is not set; export it or use \"file:PATH\"")]
    MissingEnv(String),
    #[error("secret file {0} is empty; write the secret into it")]
    Empty(PathBuf),
}

impl SecretError {
    /// What to do about it, for a problem's `fix`.
    pub fn fix(&self) -> &'static str {
        match self {
            SecretError::Unreadable { .. } => {
                "create the file with the secret on one line (chmod 600), or fix the path"
            }
            SecretError::MissingEnv(_) => {
                "export the variable in the environment cellar runs in (crontab, systemd unit)"
            }
            SecretError::Empty(_) => "write the secret into the file",
        }
    }
}

/// A resolved secret and, for files, a warning when others may read it.
pub struct Resolved {
    pub secret: Secret,
    pub source: SecretSource,
    pub warning: Option<String>,
}

/// Resolves `literal`, `file:PATH` (relative to `base`) or `env:VAR`.
/// A trailing newline in a file is dropped, as editors add one.
pub fn resolve(spec: &str, base: &Path) -> Result<Resolved, SecretError> {
    if let Some(path) = spec.strip_prefix("file:") {
        let path = base.join(path);
        let text = std::fs::read_to_string(&path).map_err(|cause| SecretError::Unreadable {
            path: path.clone(),
            cause,
        })?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(SecretError::Empty(path));
        }
        let warning = readable_by_others(&path).then(|| {
            format!(
                "secret file {} is readable by other users; run: chmod 600 {}",
                path.display(),
                path.display()
            )
        });
        Ok(Resolved {
            secret: Secret::new(value),
            source: SecretSource::File(path),
            warning,
        })
    } else if let Some(var) = spec.strip_prefix("env:") {
        let value = std::env::var(var).map_err(|_| SecretError::MissingEnv(var.to_string()))?;
        remember_env(var);
        Ok(Resolved {
            secret: Secret::new(value),
            source: SecretSource::Env(var.to_string()),
            warning: None,
        })
    } else {
        Ok(Resolved {
            secret: Secret::new(spec),
            source: SecretSource::Literal,
            warning: None,
        })
    }
}

/// The environment variables secrets were read from (`env:VAR`), for
/// every child cellar starts to go without.
static ENV_SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn remember_env(var: &str) {
    let mut known = ENV_SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|v| v == var) {
        known.push(var.to_string());
    }
}

/// The variables that held secrets read so far (`env:VAR`).
pub fn env_secrets() -> Vec<String> {
    ENV_SECRETS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// True when the group or others may read the file.
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o044 != 0)
        .unwrap_or(false)
}

/// True when the group or others may replace the file: write it, or write
/// the folder it is in (without the sticky bit), or that of the file a
/// link leads to.
pub fn writable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    let folder_open = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        mode(dir).is_ok_and(|m| m & 0o022 != 0 && m & 0o1000 == 0)
    };
    mode(path).is_ok_and(|m| m & 0o022 != 0)
        || folder_open(path)
        || std::fs::canonicalize(path).is_ok_and(|c| folder_open(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    #[test]
    fn file_secret_drops_trailing_newline_and_warns_on_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = resolve("file:pw", dir.path()).unwrap();
        assert_eq!(r.secret.expose(), "s3cret");
        assert!(r.warning.unwrap().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(resolve("file:pw", dir.path()).unwrap().warning.is_none());
    }

    #[test]
    fn missing_env_and_file_say_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve("env:CELLAR_TEST_SURELY_UNSET", dir.path())
            .err()
            .unwrap();
        assert!(e.to_string().contains("export it"));
        let e = resolve("file:nope", dir.path()).err().unwrap();
        assert!(e.to_string().contains("cannot read secret file"));
    }
}
