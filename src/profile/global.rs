//! The optional `DIR/cellar.toml`: settings for every profile.

use super::*;

use super::validate::Validator;

/// The optional `DIR/cellar.toml`: settings for every profile.
#[derive(Debug, Default)]
pub struct Global {
    pub hooks: Hooks,
}

/// Reads `DIR/cellar.toml` if it exists.
pub fn load_global(config_dir: &Path) -> Result<Global, Vec<Problem>> {
    let rel = PathBuf::from("cellar.toml");
    let text = match std::fs::read_to_string(config_dir.join(&rel)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Global::default()),
        Err(e) => {
            return Err(vec![Problem {
                file: rel,
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
                fix: "check the file's permissions".into(),
            }])
        }
    };
    let loc = Locator {
        file: rel.clone(),
        text: &text,
    };
    let raw: raw::Global =
        toml::from_str(&text).map_err(|e| vec![loc.from_toml("", &e, "README.md")])?;
    let mut v = Validator {
        loc: &loc,
        base: config_dir,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let hooks = raw.hooks.map_or(Some(Hooks::default()), |h| v.hooks(h));
    match hooks {
        Some(hooks) if v.problems.is_empty() => Ok(Global { hooks }),
        _ => Err(v.problems),
    }
}
