//! What a store holds for a profile, and which of it can be trusted.
//!
//! The store is not trusted: anyone who can write to it (a leaked S3 key, a
//! compromised NAS) can add or change objects. A backup is *trusted* only
//! when its manifest parses (no unknown fields), has the format version
//! this cellar writes, carries a valid detached signature from one of the
//! profile's `trusted_signers` (or is older than `allow_unsigned_before`),
//! names this profile and id, matches the profile's kind, lists at least
//! one payload, and every payload it lists is present with its recorded
//! size. Everything else is *untrusted*, with the reason: shown by `list`,
//! never restored, never the latest, never counted by the retention, and
//! deleted by prune only with `--force`. Payloads without a manifest are an
//! *unfinished* backup.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::bail;
use tracing::warn;

use crate::manifest::{self, Content, Manifest, MANIFEST_SUFFIX, SIGNATURE_SUFFIX};
use crate::profile::{Kind, Profile};
use crate::store::{ObjectInfo, Store, StoreError};

mod cache;

/// A manifest larger than this is not one of ours.
const MAX_MANIFEST: u64 = 64 << 20;
/// Nor a signature larger than this (ours are under 1 KiB; a stuffed one
/// would make verification slow).
const MAX_SIGNATURE: u64 = 16 << 10;

#[derive(Debug, Clone)]
pub enum Trust {
    /// Payloads without a manifest.
    Unfinished,
    /// Has a manifest, not checked yet (see [`check`]).
    Unchecked,
    /// Checked: `by` says why it is trusted (the signer's fingerprint).
    Trusted { manifest: Box<Manifest>, by: String },
    /// Has a manifest that cannot be trusted, and why.
    Untrusted(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// All objects of this id (payloads, signature and manifest).
    pub objects: Vec<ObjectInfo>,
    /// A manifest object exists.
    pub complete: bool,
    pub trust: Trust,
}

impl Entry {
    pub fn size(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.trust {
            Trust::Trusted { manifest, .. } => Some(manifest),
            _ => None,
        }
    }

    /// Trusted only through `allow_unsigned_before`: restorable, but never
    /// counted by the retention (an unsigned one could be planted inside
    /// that window, and must not push a signed backup out).
    pub fn unsigned(&self) -> bool {
        matches!(&self.trust, Trust::Trusted { by, .. } if by.starts_with("unsigned"))
    }

    pub fn untrusted(&self) -> Option<&str> {
        match &self.trust {
            Trust::Untrusted(why) => Some(why),
            _ => None,
        }
    }

    fn object(&self, name: &str) -> Option<&ObjectInfo> {
        self.objects
            .iter()
            .find(|o| o.key.rsplit('/').next() == Some(name))
    }
}

/// How far ahead of this host's clock a backup id may be and still count
/// as the latest: clocks of several hosts writing one store drift a little.
pub const FUTURE_SLACK_MINUTES: i64 = 10;

/// A backup dated later than now (plus the slack): made while a clock was
/// wrong. Never chosen as "the latest"; restorable by its id.
pub fn in_future(id: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    manifest::parse_id(id)
        .is_some_and(|t| t > now + chrono::Duration::minutes(FUTURE_SLACK_MINUTES))
}

/// Every backup id in the profile's folder, oldest first, unchecked.
pub fn scan(store: &dyn Store, profile: &str) -> Result<Vec<Entry>, StoreError> {
    let prefix = format!("{profile}/");
    let mut by_id: BTreeMap<String, Entry> = BTreeMap::new();
    for obj in store.list(&prefix)? {
        let name = &obj.key[prefix.len()..];
        let Some((id, _)) = name.split_once('.') else {
            continue;
        };
        if manifest::parse_id(id).is_none() {
            continue;
        }
        // A name cellar never writes, which every store refuses to touch
        // (`..`, a backslash, a control character): anyone may have put it
        // there. It is no part of any backup, and prune leaves it alone.
        if crate::store::check_key(&obj.key).is_err() {
            tracing::warn!(
                "the store holds {:?}, a name cellar never writes and will not touch; remove it by hand",
                obj.key
            );
            continue;
        }
        let e = by_id.entry(id.to_string()).or_insert_with(|| Entry {
            id: id.to_string(),
            objects: Vec::new(),
            complete: false,
            trust: Trust::Unfinished,
        });
        if name.ends_with(MANIFEST_SUFFIX) {
            e.complete = true;
            e.trust = Trust::Unchecked;
        }
        e.objects.push(obj);
    }
    Ok(by_id.into_values().collect())
}

/// Every backup, oldest first, each complete one checked. With
/// `config_dir`, signatures verified before are remembered there (see
/// [`cache`]): `list`, `prune` and `run` over thousands of backups then
/// neither download nor verify again what did not change. Restore, verify
/// and mirror use [`manifest`], which always reads and verifies.
pub fn backups(
    store: &dyn Store,
    profile: &Profile,
    config_dir: Option<&Path>,
) -> Result<Vec<Entry>, StoreError> {
    let mut entries = scan(store, &profile.name)?;
    let mut verified = match config_dir {
        Some(dir) => cache::Verified::load(dir, profile),
        None => cache::Verified::default(),
    };
    // Remote stores answer one request at a time slowly, and signatures
    // cost CPU: the entries not in the cache are checked by a few threads.
    let todo: Vec<&mut Entry> = entries.iter_mut().filter(|e| e.complete).collect();
    let workers = todo.len().div_ceil(64).clamp(1, 16);
    let chunk = todo.len().div_ceil(workers).max(1);
    let mut parts: Vec<Vec<&mut Entry>> = Vec::new();
    let mut rest = todo;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        parts.push(rest);
        rest = tail;
    }
    let found = &verified;
    let results: Vec<Result<Vec<cache::Fresh>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    let mut fresh = Vec::new();
                    for e in part {
                        let (trust, new) = check_with(store, profile, e, found)?;
                        e.trust = trust;
                        fresh.extend(new);
                    }
                    Ok(fresh)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a catalog thread panicked"))
            .collect()
    });
    let mut fresh = Vec::new();
    for r in results {
        fresh.extend(r?);
    }
    if let Some(dir) = config_dir {
        verified.update(dir, &profile.name, fresh, &entries);
    }
    Ok(entries)
}

fn read_small(
    store: &dyn Store,
    key: &str,
    size: u64,
    max: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    if size > max {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    store
        .get(key)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|cause| StoreError::Io {
            op: "read",
            store: store.location(),
            key: key.to_string(),
            cause,
        })?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// A complete backup's manifest and signature as read from the store.
struct Raw {
    manifest: Vec<u8>,
    sig: Option<Vec<u8>>,
}

/// Reads the manifest and signature of `e`; the inner error is why the
/// backup is untrusted, the outer one a store that cannot be read.
fn read_raw(
    store: &dyn Store,
    profile: &Profile,
    e: &Entry,
) -> Result<Result<Raw, String>, StoreError> {
    let Some(obj) = e.object(&format!("{}{MANIFEST_SUFFIX}", e.id)) else {
        return Ok(Err("it has no manifest".into()));
    };
    let Some(manifest) = read_small(
        store,
        &Manifest::key(&profile.name, &e.id),
        obj.size,
        MAX_MANIFEST,
    )?
    else {
        return Ok(Err("the manifest is far too large to be one".into()));
    };
    let sig = match e.object(&format!("{}{SIGNATURE_SUFFIX}", e.id)) {
        None => None,
        Some(sig_obj) => match read_small(
            store,
            &Manifest::sig_key(&profile.name, &e.id),
            sig_obj.size,
            MAX_SIGNATURE,
        )? {
            Some(sig) => Some(sig),
            None => {
                return Ok(Err(
                    "the signature is far too large to be one of cellar's".into()
                ))
            }
        },
    };
    Ok(Ok(Raw { manifest, sig }))
}

/// Who vouches for the manifest: a trusted signer's signature, or
/// `allow_unsigned_before`; the error is why no one does.
fn signed_by(profile: &Profile, e: &Entry, raw: &Raw) -> Result<String, String> {
    let enc = &profile.encryption;
    match &raw.sig {
        Some(sig) => match crate::keys::verify_detached(&enc.trusted_signers, &raw.manifest, sig) {
            Ok(fpr) => Ok(format!("signed by {fpr}")),
            Err(err) => Err(format!(
                "its signature does not verify against trusted_signers: {err:#}"
            )),
        },
        None if enc
            .allow_unsigned_before
            .as_deref()
            .is_some_and(|before| e.id.as_str() <= before) =>
        {
            Ok("unsigned, accepted by allow_unsigned_before".to_string())
        }
        None => Err(
            "it has no signature (a backup made before signed manifests needs allow_unsigned_before in [encryption]; otherwise it was planted)"
                .into(),
        ),
    }
}

/// The trust of a manifest whose signature (or opt-in) `by` vouches for.
fn judge(profile: &Profile, e: &Entry, manifest: &[u8], by: String) -> Trust {
    let m: Manifest = match serde_json::from_slice(manifest) {
        Ok(m) => m,
        Err(err) => return Trust::Untrusted(format!("the manifest does not parse: {err}")),
    };
    if let Err(why) = consistent(profile, e, &m) {
        return Trust::Untrusted(why);
    }
    Trust::Trusted {
        manifest: Box::new(m),
        by,
    }
}

/// Decides whether a complete backup can be trusted (see the module doc),
/// reading and verifying everything. Only a store that cannot be read is
/// an error.
pub fn check(store: &dyn Store, profile: &Profile, e: &Entry) -> Result<Trust, StoreError> {
    if !e.complete {
        return Ok(Trust::Unfinished);
    }
    Ok(match read_raw(store, profile, e)? {
        Err(why) => Trust::Untrusted(why),
        Ok(raw) => match signed_by(profile, e, &raw) {
            Ok(by) => judge(profile, e, &raw.manifest, by),
            Err(why) => Trust::Untrusted(why),
        },
    })
}

/// [`check`], using what `verified` remembers: the manifest's bytes when
/// the store's listing reports the MD5s of the manifest and signature
/// verified before (no download), else the verdict on the same bytes (no
/// signature check). Also returns what to remember of a new verification.
fn check_with(
    store: &dyn Store,
    profile: &Profile,
    e: &Entry,
    verified: &cache::Verified,
) -> Result<(Trust, Option<cache::Fresh>), StoreError> {
    if !e.complete {
        return Ok((Trust::Unfinished, None));
    }
    let md5 = |suffix: &str| {
        e.object(&format!("{}{suffix}", e.id))
            .and_then(|o| o.md5.clone())
    };
    if let Some((manifest, by)) =
        verified.by_md5(&e.id, md5(MANIFEST_SUFFIX), md5(SIGNATURE_SUFFIX))
    {
        return Ok((judge(profile, e, manifest.as_bytes(), by.to_string()), None));
    }
    let raw = match read_raw(store, profile, e)? {
        Ok(raw) => raw,
        Err(why) => return Ok((Trust::Untrusted(why), None)),
    };
    let Some(sig) = &raw.sig else {
        // Unsigned (allow_unsigned_before): no signature to remember.
        return Ok((
            match signed_by(profile, e, &raw) {
                Ok(by) => judge(profile, e, &raw.manifest, by),
                Err(why) => Trust::Untrusted(why),
            },
            None,
        ));
    };
    let content = cache::content_hash(&raw.manifest, sig);
    if let Some(by) = verified.by_content(&e.id, &content) {
        return Ok((judge(profile, e, &raw.manifest, by.to_string()), None));
    }
    match signed_by(profile, e, &raw) {
        Ok(by) => {
            let fresh = cache::Fresh::new(&e.id, content, &raw.manifest, sig, &by);
            Ok((judge(profile, e, &raw.manifest, by), fresh))
        }
        Err(why) => Ok((Trust::Untrusted(why), None)),
    }
}

/// The checks of a parsed manifest against the profile and the store.
fn consistent(profile: &Profile, e: &Entry, m: &Manifest) -> Result<(), String> {
    if m.format_version != manifest::FORMAT_VERSION {
        return Err(format!(
            "format version {} is not the one this cellar reads ({}); upgrade cellar if it is newer",
            m.format_version,
            manifest::FORMAT_VERSION
        ));
    }
    if m.profile != profile.name || m.id != e.id {
        return Err(format!(
            "it names profile {:?} backup {:?}: it was moved or altered",
            m.profile, m.id
        ));
    }
    if m.kind != profile.kind {
        return Err(format!(
            "it is a {:?} backup, the profile is {:?}",
            m.kind, profile.kind
        ));
    }
    if m.payloads.is_empty() {
        return Err("it lists no payloads".into());
    }
    let suffix = format!(".{}.pgp", m.compression.extension());
    let mut names = BTreeSet::new();
    for p in &m.payloads {
        let well_named = p.name.starts_with(&format!("{}.", e.id))
            && p.name.ends_with(&suffix)
            && !p.name.contains('/')
            && !p.name.contains('\\')
            && !p.name.contains("..")
            && !p.name.chars().any(char::is_control);
        if !well_named {
            return Err(format!(
                "payload name {:?} is not one cellar writes",
                p.name
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(format!("payload {} is listed twice", p.name));
        }
        let fits = matches!(
            (profile.kind, p.content),
            (Kind::Files, Content::Tar)
                | (
                    Kind::Postgres,
                    Content::Pgdump | Content::Sql | Content::Globals
                )
                | (Kind::Mariadb, Content::Mariadb | Content::MariadbUsers)
        );
        if !fits {
            return Err(format!(
                "payload {} holds {:?}, which a {:?} profile never writes",
                p.name, p.content, profile.kind
            ));
        }
        match e.object(&p.name) {
            None => return Err(format!("payload {} is missing from the store", p.name)),
            Some(o) if o.size != p.stored_size => {
                return Err(format!(
                    "payload {} is {} bytes in the store, the manifest says {}",
                    p.name, o.size, p.stored_size
                ))
            }
            Some(_) => {}
        }
    }
    let count = |c: Content| m.payloads.iter().filter(|p| p.content == c).count();
    let shape_ok = match profile.kind {
        Kind::Files => m.payloads.len() == 1,
        Kind::Postgres | Kind::Mariadb => {
            let globals = count(Content::Globals) + count(Content::MariadbUsers);
            globals <= 1 && m.payloads.len() > globals
        }
    };
    if !shape_ok {
        return Err("its payloads are not a shape cellar writes for this kind".into());
    }
    Ok(())
}

/// The trusted manifest of `id`, or of the latest trusted backup.
pub fn manifest(
    store: &dyn Store,
    profile: &Profile,
    id: Option<&str>,
) -> anyhow::Result<Manifest> {
    let name = &profile.name;
    let entries = scan(store, name)?;
    match id {
        Some(id) => {
            let Some(e) = entries.iter().find(|e| e.id == id) else {
                bail!("profile {name} has no backup {id}; `cellar list {name}` shows the ids");
            };
            if !e.complete {
                bail!("backup {id} of profile {name} has no manifest: it is an unfinished backup and cannot be trusted; `cellar list {name}` shows the complete ones");
            }
            match check(store, profile, e)? {
                Trust::Trusted { manifest, .. } => Ok(*manifest),
                Trust::Untrusted(why) => bail!(
                    "backup {id} of profile {name} is not trusted, so it is never restored: {why}"
                ),
                _ => unreachable!("a complete backup is checked"),
            }
        }
        None => {
            let now = crate::schedule::now();
            for e in entries.iter().rev().filter(|e| e.complete) {
                if in_future(&e.id, now) {
                    warn!(
                        "{name}: skipping backup {} as the latest: it is dated in the future (was the clock ahead?); name its id to restore it",
                        e.id
                    );
                    continue;
                }
                match check(store, profile, e)? {
                    Trust::Trusted { manifest, .. } => return Ok(*manifest),
                    Trust::Untrusted(why) => {
                        warn!("{name}: skipping backup {} (untrusted: {why})", e.id)
                    }
                    _ => {}
                }
            }
            bail!(
                "profile {name} has no trusted backup in {}; run `cellar backup {name}` first (`cellar list {name}` shows what is there)",
                store.location()
            )
        }
    }
}
