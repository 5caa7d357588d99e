//! What a store holds for a profile: complete backups (those with a
//! manifest) and unfinished ones (payloads without a manifest, which are
//! never offered for restore).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context};

use crate::manifest::{self, Manifest, MANIFEST_SUFFIX};
use crate::store::{ObjectInfo, Store, StoreError};

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// All objects of this id (payloads and the manifest).
    pub objects: Vec<ObjectInfo>,
    pub complete: bool,
}

impl Entry {
    pub fn size(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

/// Every backup id in the profile's folder, oldest first.
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
        let e = by_id.entry(id.to_string()).or_insert_with(|| Entry {
            id: id.to_string(),
            objects: Vec::new(),
            complete: false,
        });
        if name.ends_with(MANIFEST_SUFFIX) {
            e.complete = true;
        }
        e.objects.push(obj);
    }
    Ok(by_id.into_values().collect())
}

/// Reads and checks the manifest of `id`, or of the latest complete backup.
pub fn manifest(store: &dyn Store, profile: &str, id: Option<&str>) -> anyhow::Result<Manifest> {
    let id = match id {
        Some(id) => id.to_string(),
        None => match scan(store, profile)?.into_iter().rev().find(|e| e.complete) {
            Some(e) => e.id,
            None => bail!(
                "profile {profile} has no complete backup in {}; run `cellar backup {profile}` first",
                store.location()
            ),
        },
    };
    let key = Manifest::key(profile, &id);
    let mut text = String::new();
    match store.get(&key) {
        Ok(mut r) => r
            .read_to_string(&mut text)
            .with_context(|| format!("reading {key}"))?,
        Err(StoreError::NotFound { .. }) => {
            let unfinished = scan(store, profile)?.into_iter().any(|e| e.id == id);
            if unfinished {
                bail!("backup {id} of profile {profile} has no manifest: it is an unfinished backup and cannot be trusted; `cellar list {profile}` shows the complete ones");
            }
            bail!("profile {profile} has no backup {id}; `cellar list {profile}` shows the ids");
        }
        Err(e) => return Err(e.into()),
    };
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("the manifest {key} is damaged or not a cellar manifest"))?;
    if m.format_version > manifest::FORMAT_VERSION {
        bail!(
            "the manifest {key} has format version {}, newer than this cellar understands ({}); upgrade cellar",
            m.format_version,
            manifest::FORMAT_VERSION
        );
    }
    if m.profile != profile || m.id != id {
        bail!(
            "the manifest {key} names profile {} backup {}; it was moved or altered",
            m.profile,
            m.id
        );
    }
    Ok(m)
}
