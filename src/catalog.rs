//! What a destination holds: the complete backups of a job (those with a
//! manifest), sorted by the manifests' `created_at`, never by name, and the
//! incomplete ones (volumes without a manifest) that a crash or a running
//! upload left.

use std::collections::BTreeMap;

use offsite_backends::{get_bytes, list_all};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_NAME, Manifest};
use crate::upload::{Target, remote_key};

#[derive(Debug, Clone)]
pub struct RemoteBackup {
    pub destination: String,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, Serialize)]
pub struct DamagedBackup {
    pub id: String,
    pub error: String,
}

#[derive(Debug, Clone)]
pub struct Listing {
    pub destination: String,
    /// Complete backups, oldest first.
    pub backups: Vec<RemoteBackup>,
    /// Ids with objects but no manifest.
    pub incomplete: Vec<String>,
    /// Ids whose manifest cannot be read or trusted.
    pub damaged: Vec<DamagedBackup>,
}

/// The folder of `job` on the target, with a trailing slash.
pub fn job_prefix(target: &Target, job: &str) -> String {
    let k = remote_key(&target.config.prefix, job, "x", "y");
    // remote_key ends with "/x/y"; keep what comes before.
    format!("{}/", &k[..k.len() - 4])
}

pub async fn list_job(target: &Target, job: &str) -> Result<Listing> {
    let prefix = job_prefix(target, job);
    let objects = list_all(target.backend.as_ref(), &prefix).await?;
    let mut by_id: BTreeMap<String, bool> = BTreeMap::new();
    for o in &objects {
        let rest = &o.key[prefix.len()..];
        if let Some((id, name)) = rest.split_once('/') {
            let has_manifest = by_id.entry(id.to_string()).or_insert(false);
            if name == MANIFEST_NAME {
                *has_manifest = true;
            }
        }
    }
    let mut listing = Listing {
        destination: target.config.name.clone(),
        backups: Vec::new(),
        incomplete: Vec::new(),
        damaged: Vec::new(),
    };
    for (id, complete) in by_id {
        if !complete {
            listing.incomplete.push(id);
            continue;
        }
        let key = remote_key(&target.config.prefix, job, &id, MANIFEST_NAME);
        let origin = format!("destination \"{}\": {key}", target.config.name);
        let parsed = match get_bytes(target.backend.as_ref(), &key).await {
            Ok(bytes) => Manifest::from_json(&bytes, &origin).and_then(|m| {
                if m.id != id || m.job != job {
                    Err(Error::Failed(format!(
                        "{origin}: the manifest says job {:?} backup {:?}, not what its key says",
                        m.job, m.id
                    )))
                } else {
                    Ok(m)
                }
            }),
            Err(e) => Err(e.into()),
        };
        match parsed {
            Ok(manifest) => listing.backups.push(RemoteBackup {
                destination: target.config.name.clone(),
                manifest,
            }),
            Err(e) => listing.damaged.push(DamagedBackup {
                id,
                error: e.to_string(),
            }),
        }
    }
    listing.backups.sort_by(|a, b| {
        a.manifest
            .created_at
            .cmp(&b.manifest.created_at)
            .then(a.manifest.id.cmp(&b.manifest.id))
    });
    Ok(listing)
}

/// Picks `wanted` (an id, or `latest`) from a listing.
/// Refuses a `--backup` value that can be no backup's id: `latest`, or an
/// id as offsite writes them (`20261122T021500Z-full`, `...-incr`).
pub fn check_backup_arg(wanted: &str) -> Result<()> {
    let b = wanted.as_bytes();
    let shaped = b.len() > 17
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && &b[15..17] == b"Z-"
        && crate::manifest::safe_id(wanted);
    if wanted == "latest" || shaped {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--backup {wanted:?} is not a backup id: give `latest` or an id as `offsite list` shows it (like 20261122T021500Z-full)"
    )))
}

pub fn select<'a>(listing: &'a Listing, job: &str, wanted: &str) -> Result<&'a RemoteBackup> {
    let damaged = |id: &str| {
        Error::Failed(format!(
            "destination \"{}\": job {job:?} backup {id:?} is damaged ({}); choose another with --backup ID (see `offsite list`)",
            listing.destination,
            listing
                .damaged
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.error.as_str())
                .unwrap_or("")
        ))
    };
    if let Some(d) = listing.damaged.iter().find(|d| d.id == wanted) {
        return Err(damaged(&d.id));
    }
    let found = if wanted == "latest" {
        let latest = listing.backups.last();
        // Never fall back silently to an older backup when a newer one is damaged.
        let newest_damaged = listing.damaged.iter().map(|d| d.id.as_str()).max();
        if let Some(d) = newest_damaged
            && latest.is_none_or(|b| d > b.manifest.id.as_str())
        {
            return Err(damaged(d));
        }
        latest
    } else {
        listing.backups.iter().find(|b| b.manifest.id == wanted)
    };
    found.ok_or_else(|| {
        let have: Vec<&str> = listing.backups.iter().map(|b| b.manifest.id.as_str()).collect();
        Error::Failed(format!(
            "destination \"{}\": job {job:?} has no complete backup {wanted:?} (complete: {}); run `offsite list --job {job}`",
            listing.destination,
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        ))
    })
}
