//! OpenPGP keys and the encryption/decryption stages of the pipeline.
//!
//! Everything here produces and reads ordinary OpenPGP: keys import into
//! gpg, and `gpg --decrypt` opens every payload. gpg 2.2 (Debian 12) does
//! not understand SEIPDv2 (AEAD) or version-6 keys, so keys are generated
//! with the RFC 4880 profile and SEIPDv1 as their only feature, and each
//! recipient is built with SEIPDv1 too, whatever its certificate
//! advertises. SEIPDv1 still carries an MDC: a modified ciphertext fails
//! the integrity check at the end of the stream.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use openpgp::cert::prelude::*;
use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::Message;
use openpgp::serialize::SerializeInto;
use openpgp::types::{Features, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("{path} is not an OpenPGP key ({reason})")]
    NotACert { path: PathBuf, reason: String },
    #[error("{path} has no valid encryption-capable key; use a certificate with an encryption subkey that is neither expired nor revoked")]
    NoEncryptionKey { path: PathBuf },
    #[error("{path} holds no secret key material; point `identity` at the secret key (NAME.key.asc), not the public one")]
    NoSecret { path: PathBuf },
    #[error("{path} holds no secret signing key; point `signer` at a signing key made by `cellar keygen --sign NAME` (NAME.sign.key.asc)")]
    NoSigningSecret { path: PathBuf },
    #[error("{path} has no valid signing key; `trusted_signers` lists the public halves of signing keys (NAME.sign.pub.asc)")]
    NoSigningKey { path: PathBuf },
    #[error("{0} already exists; remove it first or pick another NAME")]
    Exists(PathBuf),
    #[error("OpenPGP: {0}")]
    Pgp(#[from] anyhow::Error),
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
}

/// One policy for the process: the decryptor borrows it for its lifetime.
static POLICY: StandardPolicy<'static> = StandardPolicy::new();

fn policy() -> &'static StandardPolicy<'static> {
    &POLICY
}

/// A recipient certificate checked to have a usable encryption key.
#[derive(Clone)]
pub struct RecipientCert {
    pub path: PathBuf,
    pub cert: Cert,
}

impl std::fmt::Debug for RecipientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.cert.fingerprint())
    }
}

impl RecipientCert {
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }
}

/// Reads a certificate and checks that it can receive encrypted data.
pub fn load_recipient(path: &Path) -> Result<RecipientCert, KeyError> {
    let cert = read_cert(path)?;
    let p = policy();
    let usable = cert
        .keys()
        .with_policy(p, None)
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .next()
        .is_some();
    if !usable {
        return Err(KeyError::NoEncryptionKey {
            path: path.to_owned(),
        });
    }
    Ok(RecipientCert {
        path: path.to_owned(),
        cert,
    })
}

/// A secret key (possibly passphrase-protected) used to decrypt backups.
pub struct Identity {
    pub path: PathBuf,
    cert: Cert,
    passphrase: Option<Secret>,
}

pub fn load_identity(path: &Path, passphrase: Option<Secret>) -> Result<Identity, KeyError> {
    let cert = read_cert(path)?;
    if !cert.is_tsk() {
        return Err(KeyError::NoSecret {
            path: path.to_owned(),
        });
    }
    Ok(Identity {
        path: path.to_owned(),
        cert,
        passphrase,
    })
}

impl RecipientCert {
    /// The file holds secret key material, not just the public key.
    pub fn is_secret(&self) -> bool {
        self.cert.is_tsk()
    }
}

impl Identity {
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }
}

/// Writes `secrets/NAME.pub.asc` and `secrets/NAME.key.asc` (0600).
pub fn keygen(
    dir: &Path,
    name: &str,
    user_id: &str,
    passphrase: Option<&Secret>,
) -> Result<(PathBuf, PathBuf, String), KeyError> {
    let pub_path = dir.join(format!("{name}.pub.asc"));
    let key_path = dir.join(format!("{name}.key.asc"));
    for p in [&pub_path, &key_path] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let mut builder = CertBuilder::general_purpose(Some(user_id))
        .set_profile(openpgp::Profile::RFC4880)?
        .set_features(Features::empty().set_seipdv1())?
        .set_validity_period(None);
    if let Some(pw) = passphrase {
        builder = builder.set_password(Some(Password::from(pw.expose())));
    }
    let (cert, _rev) = builder.generate()?;
    let public = cert.armored().to_vec()?;
    let secret = cert.as_tsk().armored().to_vec()?;
    std::fs::create_dir_all(dir).map_err(|cause| KeyError::Write {
        path: dir.to_owned(),
        cause,
    })?;
    write_new(&key_path, &secret, 0o600)?;
    write_new(&pub_path, &public, 0o644)?;
    Ok((pub_path, key_path, cert.fingerprint().to_hex()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|cause| KeyError::Write {
            path: path.to_owned(),
            cause,
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| crate::state::sync_parent(path))
        .map_err(|cause| KeyError::Write {
            path: path.to_owned(),
            cause,
        })
}

/// Wraps `sink` in an OpenPGP message encrypted to every recipient's
/// storage-encryption keys (SEIPDv1, AES-256; see [`crate::seipd`]). Bytes
/// written to the result are the literal data; `finalize` must be called
/// to write the MDC.
pub fn encrypt_to<W: Write>(
    sink: W,
    recipients: &[RecipientCert],
) -> Result<crate::seipd::Seipd<W>, KeyError> {
    let p = policy();
    let keys = recipients.iter().flat_map(|r| {
        r.cert
            .keys()
            .with_policy(p, None)
            .supported()
            .alive()
            .revoked(false)
            .for_storage_encryption()
            .map(|ka| ka.key())
    });
    Ok(crate::seipd::Seipd::new(sink, keys)?)
}

struct Helper<'a> {
    identity: &'a Identity,
    /// Set once a session key of ours opened the message.
    decrypted: bool,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // A payload is an encryption container (integrity from the MDC and
        // the manifest's BLAKE2, which the caller checks) holding literal
        // data, maybe compressed; nothing else.
        use openpgp::parse::stream::MessageLayer;
        let mut layers = structure.into_iter();
        if !matches!(layers.next(), Some(MessageLayer::Encryption { .. })) {
            return Err(anyhow::anyhow!(
                "the payload is not an OpenPGP encryption container"
            ));
        }
        for layer in layers {
            if !matches!(layer, MessageLayer::Compression { .. }) {
                return Err(anyhow::anyhow!(
                    "the payload holds more than encrypted data (e.g. signatures); cellar never writes that"
                ));
            }
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let p = policy();
        for ka in self
            .identity
            .cert
            .keys()
            .with_policy(p, None)
            .supported()
            .secret()
            .for_storage_encryption()
            .chain(
                self.identity
                    .cert
                    .keys()
                    .with_policy(p, None)
                    .supported()
                    .secret()
                    .for_transport_encryption(),
            )
        {
            let mut key = ka.key().clone();
            if key.secret().is_encrypted() {
                let Some(pw) = &self.identity.passphrase else {
                    return Err(anyhow::anyhow!(
                        "the secret key {} is passphrase-protected; set `passphrase` in [encryption]",
                        self.identity.path.display()
                    ));
                };
                key = key
                    .decrypt_secret(&Password::from(pw.expose()))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "wrong passphrase for the secret key {}",
                            self.identity.path.display()
                        )
                    })?;
            }
            let mut pair = key.into_keypair()?;
            for pkesk in pkesks {
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
                    if decrypt(algo, &sk) {
                        self.decrypted = true;
                        return Ok(None);
                    }
                }
            }
        }
        let wanted: Vec<String> = pkesks
            .iter()
            .filter_map(|p| p.recipient().map(|r| r.to_hex()))
            .collect();
        Err(anyhow::anyhow!(
            "the secret key {} ({}) cannot decrypt this backup; it was encrypted for key id(s) {}",
            self.identity.path.display(),
            self.identity.fingerprint(),
            if wanted.is_empty() {
                "(anonymous)".to_string()
            } else {
                wanted.join(", ")
            }
        ))
    }
}

/// A reader of the decrypted literal data. Reading to the end checks the
/// MDC: a tampered or truncated ciphertext is an error on the last read.
pub fn decrypt_from<'a, R: Read + Send + Sync + 'a>(
    source: R,
    identity: &'a Identity,
) -> anyhow::Result<impl Read + 'a> {
    let p = policy();
    let d = DecryptorBuilder::from_reader(source)?
        // Hold back little: the caller verifies the whole stream before it
        // commits anything, so a big buffer would only cost memory.
        .buffer_size(256 * 1024)
        .with_policy(
            p,
            None,
            Helper {
                identity,
                decrypted: false,
            },
        )?;
    // Strict: a message that no key of ours opened (a bare literal packet,
    // a password-encrypted one) is refused before any byte of it is used.
    if !d.helper_ref().decrypted {
        anyhow::bail!(
            "the payload is not encrypted to a key of ours (no encryption container); cellar never writes that"
        );
    }
    Ok(d)
}

/// The backup host's signing key: signs manifests, nothing else.
pub struct SigningKey {
    pub path: PathBuf,
    cert: Cert,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.cert.fingerprint())
    }
}

impl SigningKey {
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// The public half, trusted by default on read paths.
    pub fn certificate(&self) -> Cert {
        self.cert.clone().strip_secret_key_material()
    }
}

fn read_cert(path: &Path) -> Result<Cert, KeyError> {
    let bytes = std::fs::read(path).map_err(|cause| KeyError::Read {
        path: path.to_owned(),
        cause,
    })?;
    Cert::from_bytes(&bytes).map_err(|e| KeyError::NotACert {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads a secret signing key (unprotected: it signs unattended).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let cert = read_cert(path)?;
    let key = cert
        .keys()
        .with_policy(policy(), None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .next();
    match key {
        None => Err(KeyError::NoSigningSecret {
            path: path.to_owned(),
        }),
        Some(k) if k.key().secret().is_encrypted() => Err(KeyError::Pgp(anyhow::anyhow!(
            "{} is passphrase-protected; a signing key must sign unattended: make one with `cellar keygen --sign NAME`",
            path.display()
        ))),
        Some(_) => Ok(SigningKey {
            path: path.to_owned(),
            cert,
        }),
    }
}

/// Reads a certificate whose signatures read paths accept.
pub fn load_trusted_signer(path: &Path) -> Result<Cert, KeyError> {
    let cert = read_cert(path)?;
    let can_sign = cert
        .keys()
        .with_policy(policy(), None)
        .supported()
        .revoked(false)
        .for_signing()
        .next()
        .is_some();
    if !can_sign {
        return Err(KeyError::NoSigningKey {
            path: path.to_owned(),
        });
    }
    Ok(cert.strip_secret_key_material())
}

/// An ASCII-armored detached OpenPGP signature over `data`, as
/// `gpg --verify SIG DATA` checks it.
pub fn sign_detached(key: &SigningKey, data: &[u8]) -> Result<Vec<u8>, KeyError> {
    use openpgp::armor;
    use openpgp::serialize::stream::{Armorer, Signer};
    let pair = key
        .cert
        .keys()
        .with_policy(policy(), None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .next()
        .ok_or_else(|| KeyError::NoSigningSecret {
            path: key.path.clone(),
        })?
        .key()
        .clone()
        .into_keypair()?;
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let message = Armorer::new(message).kind(armor::Kind::Signature).build()?;
        let mut signer = Signer::new(message, pair)?.detached().build()?;
        signer.write_all(data).map_err(anyhow::Error::from)?;
        signer.finalize()?;
    }
    Ok(out)
}

struct SignatureCheck<'a> {
    trusted: &'a [Cert],
    signer: Option<String>,
}

impl VerificationHelper for SignatureCheck<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.trusted.to_vec())
    }
    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        use openpgp::parse::stream::MessageLayer;
        let mut problems = Vec::new();
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in results {
                    match r {
                        Ok(good) => {
                            self.signer = Some(good.ka.cert().fingerprint().to_hex());
                            return Ok(());
                        }
                        Err(e) => problems.push(e.to_string()),
                    }
                }
            }
        }
        Err(anyhow::anyhow!(if problems.is_empty() {
            "no signature".to_string()
        } else {
            problems.join("; ")
        }))
    }
}

/// Checks a detached signature over `data` against the trusted signers;
/// returns the fingerprint of the certificate that made it.
pub fn verify_detached(trusted: &[Cert], data: &[u8], sig: &[u8]) -> anyhow::Result<String> {
    use openpgp::parse::stream::DetachedVerifierBuilder;
    let helper = SignatureCheck {
        trusted,
        signer: None,
    };
    let mut v = DetachedVerifierBuilder::from_bytes(sig)?.with_policy(policy(), None, helper)?;
    v.verify_bytes(data)?;
    v.helper_ref()
        .signer
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no good signature"))
}

/// Writes `secrets/NAME.sign.key.asc` (0600) and `secrets/NAME.sign.pub.asc`:
/// a key that only signs (cellar's manifests), unprotected so that it can
/// sign unattended. Returns the two paths and the fingerprint.
pub fn keygen_signing(
    dir: &Path,
    name: &str,
    user_id: &str,
) -> Result<(PathBuf, PathBuf, String), KeyError> {
    let pub_path = dir.join(format!("{name}.sign.pub.asc"));
    let key_path = dir.join(format!("{name}.sign.key.asc"));
    for p in [&pub_path, &key_path] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let (cert, _rev) = CertBuilder::new()
        .add_userid(user_id)
        .set_profile(openpgp::Profile::RFC4880)?
        .set_features(Features::empty().set_seipdv1())?
        .set_validity_period(None)
        .add_signing_subkey()
        .generate()?;
    let public = cert.armored().to_vec()?;
    let secret = cert.as_tsk().armored().to_vec()?;
    std::fs::create_dir_all(dir).map_err(|cause| KeyError::Write {
        path: dir.to_owned(),
        cause,
    })?;
    write_new(&key_path, &secret, 0o600)?;
    write_new(&pub_path, &public, 0o644)?;
    Ok((pub_path, key_path, cert.fingerprint().to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(passphrase: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        let pw = passphrase.map(Secret::new);
        let (pubp, keyp, _) = keygen(dir.path(), "t", "test", pw.as_ref()).unwrap();
        let r = vec![load_recipient(&pubp).unwrap()];
        let mut out = Vec::new();
        let mut w = encrypt_to(&mut out, &r).unwrap();
        w.write_all(b"hello backup").unwrap();
        w.finalize().unwrap();
        let id = load_identity(&keyp, pw).unwrap();
        let mut rd = decrypt_from(&out[..], &id).unwrap();
        let mut s = String::new();
        rd.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello backup");
    }

    #[test]
    fn encrypt_decrypt_roundtrip() {
        roundtrip(None);
        roundtrip(Some("pass word"));
    }

    #[test]
    fn public_key_is_not_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (pubp, _, _) = keygen(dir.path(), "t", "test", None).unwrap();
        assert!(matches!(
            load_identity(&pubp, None),
            Err(KeyError::NoSecret { .. })
        ));
        std::fs::write(dir.path().join("junk"), "hello").unwrap();
        assert!(matches!(
            load_recipient(&dir.path().join("junk")),
            Err(KeyError::NotACert { .. })
        ));
    }

    #[test]
    fn secret_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, keyp, _) = keygen(dir.path(), "t", "test", None).unwrap();
        let mode = std::fs::metadata(&keyp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(dir.path(), "t", "test", None).is_err());
    }
}
