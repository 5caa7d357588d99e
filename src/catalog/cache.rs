//! What the catalog remembers of signatures it verified, so that `list`,
//! `prune` and `run` over thousands of backups stay fast: on a remote
//! store each manifest costs two requests, and each signature a public-key
//! operation.
//!
//! The file (`state/<profile>.verified.json`, on the backup host, which the
//! threat model trusts; the store is not) maps a backup id to the manifest
//! and signature bytes a trusted signer's signature was verified over: their
//! BLAKE2b-256, their MD5s and the manifest itself. It is only a record of
//! "these bytes verified", so it cannot make anything trusted that was not:
//!
//! - Bytes read from the store whose BLAKE2b matches are trusted without a
//!   second signature check (same bytes, same verdict).
//! - Where the store's listing reports MD5s (S3 ETags, Swift hashes) equal
//!   to the remembered ones, nothing is downloaded and the remembered
//!   manifest is judged. The listing comes from the store and could lie, but
//!   what is judged and shown is still bytes a trusted signer signed; a
//!   restore, verify or mirror reads the store's object and verifies it
//!   again, so a swapped object is refused there.
//!
//! The file is keyed to the set of trusted signers: changing
//! `trusted_signers` (dropping a key) forgets everything. A damaged or
//! missing file only costs time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::Entry;
use crate::profile::Profile;

const VERSION: u32 = 1;

fn file(config_dir: &Path, profile: &str) -> PathBuf {
    crate::state::dir(config_dir).join(format!("{profile}.verified.json"))
}

/// BLAKE2b-256 over the manifest and signature (length-prefixed, so no two
/// pairs share an input).
pub fn content_hash(manifest: &[u8], sig: &[u8]) -> String {
    let mut h = blake2b_simd::Params::new().hash_length(32).to_state();
    h.update(&(manifest.len() as u64).to_le_bytes());
    h.update(manifest);
    h.update(sig);
    h.finalize().to_hex().to_string()
}

/// One verified backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    content: String,
    manifest_md5: String,
    sig_md5: String,
    by: String,
    manifest: String,
}

/// A verification made now, to remember.
pub struct Fresh {
    id: String,
    seen: Seen,
}

impl Fresh {
    /// None for a manifest that is not UTF-8 (then it does not parse, and
    /// is not worth remembering).
    pub fn new(id: &str, content: String, manifest: &[u8], sig: &[u8], by: &str) -> Option<Self> {
        Some(Fresh {
            id: id.to_string(),
            seen: Seen {
                content,
                manifest_md5: hex::encode(Md5::digest(manifest)),
                sig_md5: hex::encode(Md5::digest(sig)),
                by: by.to_string(),
                manifest: String::from_utf8(manifest.to_vec()).ok()?,
            },
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Verified {
    version: u32,
    /// The trusted signers' fingerprints, sorted, joined.
    signers: String,
    backups: BTreeMap<String, Seen>,
}

fn signers(profile: &Profile) -> String {
    let mut f: Vec<String> = profile
        .encryption
        .trusted_signers
        .iter()
        .map(|c| c.fingerprint().to_hex())
        .collect();
    f.sort();
    f.join(",")
}

impl Verified {
    /// What was remembered for `profile` and its current trusted signers.
    pub fn load(config_dir: &Path, profile: &Profile) -> Self {
        let signers = signers(profile);
        let read = std::fs::read(file(config_dir, &profile.name))
            .ok()
            .and_then(|b| serde_json::from_slice::<Verified>(&b).ok())
            .filter(|v| v.version == VERSION && v.signers == signers);
        read.unwrap_or(Verified {
            version: VERSION,
            signers,
            backups: BTreeMap::new(),
        })
    }

    /// The remembered manifest and signer of `id`, when the store reports
    /// the MD5s of the manifest and signature verified before.
    pub fn by_md5(
        &self,
        id: &str,
        manifest_md5: Option<String>,
        sig_md5: Option<String>,
    ) -> Option<(&str, &str)> {
        let seen = self.backups.get(id)?;
        (manifest_md5? == seen.manifest_md5 && sig_md5? == seen.sig_md5)
            .then_some((seen.manifest.as_str(), seen.by.as_str()))
    }

    /// The signer of `id` when these very bytes were verified before.
    pub fn by_content(&self, id: &str, content: &str) -> Option<&str> {
        let seen = self.backups.get(id)?;
        (seen.content == content).then_some(seen.by.as_str())
    }

    /// Adds `fresh`, forgets backups no longer in `entries`, and writes the
    /// file when that changed anything. A file that cannot be written is
    /// only reported: it costs time, not safety.
    pub fn update(
        &mut self,
        config_dir: &Path,
        profile: &str,
        fresh: Vec<Fresh>,
        entries: &[Entry],
    ) {
        let before = self.backups.len();
        let added = !fresh.is_empty();
        for f in fresh {
            self.backups.insert(f.id, f.seen);
        }
        let ids: std::collections::HashSet<&str> = entries
            .iter()
            .filter(|e| e.complete)
            .map(|e| e.id.as_str())
            .collect();
        self.backups.retain(|id, _| ids.contains(id.as_str()));
        if !added && self.backups.len() == before {
            return;
        }
        let dir = crate::state::dir(config_dir);
        let json = serde_json::to_vec(self).expect("the cache serializes");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| crate::state::write_atomic(&file(config_dir, profile), &json));
        if let Err(e) = written {
            tracing::warn!(
                "could not remember verified signatures in {}: {e} (the next list verifies them again)",
                dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(manifest: &[u8], sig: &[u8]) -> Verified {
        let mut v = Verified::default();
        let f = Fresh::new(
            "id",
            content_hash(manifest, sig),
            manifest,
            sig,
            "signed by X",
        )
        .unwrap();
        v.backups.insert(f.id, f.seen);
        v
    }

    #[test]
    fn content_hash_separates_manifest_from_signature() {
        // Moving a byte from one to the other changes the hash.
        assert_ne!(content_hash(b"ab", b"c"), content_hash(b"a", b"bc"));
        assert_eq!(content_hash(b"ab", b"c"), content_hash(b"ab", b"c"));
    }

    #[test]
    fn only_the_same_bytes_or_both_md5s_find_a_verdict() {
        let v = remembered(b"{}", b"sig");
        assert_eq!(
            v.by_content("id", &content_hash(b"{}", b"sig")),
            Some("signed by X")
        );
        assert_eq!(v.by_content("id", &content_hash(b"{ }", b"sig")), None);
        assert_eq!(v.by_content("other", &content_hash(b"{}", b"sig")), None);
        let m = hex::encode(Md5::digest(b"{}"));
        let s = hex::encode(Md5::digest(b"sig"));
        assert_eq!(
            v.by_md5("id", Some(m.clone()), Some(s.clone())),
            Some(("{}", "signed by X"))
        );
        assert_eq!(v.by_md5("id", Some(m.clone()), None), None);
        assert_eq!(v.by_md5("id", None, Some(s.clone())), None);
        assert_eq!(v.by_md5("id", Some(s), Some(m)), None);
    }

    #[test]
    fn a_manifest_that_is_not_utf8_is_not_remembered() {
        assert!(Fresh::new("id", String::new(), b"\xff", b"s", "x").is_none());
    }
}
