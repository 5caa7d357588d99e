//! `cellar keygen NAME`: an ordinary OpenPGP key pair in secrets/.

use std::path::Path;

use crate::secret;
use crate::Failure;

pub fn run(
    dir: &Path,
    name: &str,
    user_id: Option<&str>,
    passphrase: Option<&str>,
    sign: bool,
) -> Result<i32, Failure> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Failure::config(anyhow::anyhow!(
            "key name `{name}` must be a plain file name such as `ops`"
        )));
    }
    let pass = match passphrase {
        Some(spec) if !spec.starts_with("file:") && !spec.starts_with("env:") => {
            return Err(Failure::config(anyhow::anyhow!(
                "--passphrase takes file:PATH or env:VAR, never the passphrase itself (other users see a process's arguments); e.g. --passphrase env:CELLAR_KEY_PASSPHRASE"
            )));
        }
        Some(spec) => Some(secret::resolve(spec, dir).map_err(Failure::config)?.secret),
        None => None,
    };
    let uid = user_id.map_or_else(|| format!("cellar {name}"), str::to_string);
    if sign {
        let (pub_path, key_path, fpr) =
            crate::keys::keygen_signing(&dir.join("secrets"), name, &uid)
                .map_err(Failure::config)?;
        println!(
            "signing key: {} (mode 0600; [encryption] signer on the backup host; it only signs)",
            key_path.display()
        );
        println!(
            "public key:  {} ([encryption] trusted_signers on hosts that restore elsewhere)",
            pub_path.display()
        );
        println!("fingerprint: {fpr}");
        return Ok(0);
    }
    let (pub_path, key_path, fpr) =
        crate::keys::keygen(&dir.join("secrets"), name, &uid, pass.as_ref())
            .map_err(Failure::config)?;
    println!(
        "public key:  {} (put this in [encryption] recipients)",
        pub_path.display()
    );
    println!(
        "secret key:  {} (mode 0600; keep a copy offline: restores need it)",
        key_path.display()
    );
    println!("fingerprint: {fpr}");
    Ok(0)
}
