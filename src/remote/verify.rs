//! `verify`: reads a backup back from a destination and checks every hash
//! (see [`super::read`]), collecting every problem and writing nothing.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::cluster::{SetStatus, SetVerdict};
use crate::config::{Config, Job};
use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::crypt::{self, Identities};
use crate::format::manifest::Manifest;
use crate::outcome::Status;

use super::catalog::{self, Which, check_set_arg};
use super::read::{HashOnly, ensure_readable, own_entries, read_backup, read_stored};

/// What `verify` found in one backup on one destination.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The job's name.
    pub job: String,
    /// The destination's name.
    pub destination: String,
    /// The backup's id.
    pub backup: String,
    /// True when no problem was found.
    pub ok: bool,
    /// Files whose size and hash matched (0 when only the stored volumes were
    /// checked).
    pub files: u64,
    /// The bytes of those files, or of the volumes read when only the stored
    /// volumes were checked.
    pub bytes: u64,
    /// How many volumes the backup has.
    pub volumes: u64,
    /// False when only the stored (encrypted) volumes were checked, without an identity.
    pub contents_checked: bool,
    /// Every problem found, for people to read; empty when `ok`.
    pub problems: Vec<String>,
}

/// Downloads `manifest`'s backup from `target` and checks every hash. An
/// encrypted backup without `ids` is checked as stored: every volume's size
/// and hash (of the ciphertext), not the files inside.
pub async fn verify(
    target: &Target,
    manifest: &Manifest,
    ids: Option<Arc<Identities>>,
) -> Result<VerifyReport> {
    ensure_readable(target, &[manifest]).await?;
    let rt = tokio::runtime::Handle::current();
    let target2 = target.clone();
    let sealed = crypt::is_encrypted(manifest) && ids.is_none();
    let m = if sealed {
        manifest.clone()
    } else {
        crypt::open_manifest(manifest, ids.as_deref())?
    };
    let outcome = tokio::task::spawn_blocking(move || {
        if sealed {
            return read_stored(rt, &target2, &m);
        }
        let own = own_entries(&m);
        read_backup(rt, &target2, &m, ids, &own, &mut HashOnly, false)
    })
    .await
    .map_err(|e| Error::Failed(format!("verify task failed: {e}")))?;
    Ok(VerifyReport {
        job: manifest.job.clone(),
        destination: target.config.name.clone(),
        backup: manifest.id.clone(),
        ok: outcome.problems.is_empty(),
        files: outcome.files,
        bytes: outcome.bytes,
        volumes: manifest.volumes.len() as u64,
        contents_checked: !sealed,
        problems: outcome.problems,
    })
}

/// `offsite verify`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRun {
    /// `failed` when a backup is damaged or could not be read, `pending`
    /// while cold storage retrieves volumes, else `ok`.
    pub status: Status,
    /// One report per backup read.
    pub verified: Vec<VerifyReport>,
    /// What could not be verified at all (a listing, a damaged manifest, a
    /// backup not found).
    pub errors: Vec<String>,
    /// Backups whose volumes cold storage is still retrieving.
    pub pending: Vec<String>,
    /// A cluster job's sets (or the one `--set` names), judged: a partial
    /// one makes the run partial.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<SetVerdict>,
}

/// `offsite verify`: every backup (or the one `which` names) of every job
/// (or `job`) on each of its destinations (or `destination`).
pub async fn verify_jobs(
    config: &Config,
    job: Option<&str>,
    destination: Option<&str>,
    which: Which<'_>,
    identity: Option<&Path>,
) -> Result<VerifyRun> {
    if let Some(b) = which.backup {
        catalog::check_backup_arg(b)?;
    }
    let jobs = config.select_jobs(job)?;
    if let Some(set) = which.set {
        check_set_arg(&jobs, set)?;
    }
    let mut run = VerifyRun {
        status: Status::Ok,
        verified: Vec::new(),
        errors: Vec::new(),
        pending: Vec::new(),
        sets: Vec::new(),
    };
    for j in jobs {
        let ids = Identities::find(identity, j.encryption.as_ref(), &j.name)?.map(Arc::new);
        for t in config.job_targets(j, destination)? {
            verify_on(config, &t, j, which, ids.clone(), &mut run).await;
        }
    }
    let ok = run.errors.is_empty() && run.verified.iter().all(|r| r.ok);
    let partial = run.sets.iter().any(|v| v.status == SetStatus::Partial);
    run.status = match (ok, run.pending.is_empty(), partial) {
        (false, _, _) => Status::Failed,
        (true, false, _) => Status::Pending,
        (true, true, true) => Status::Partial,
        (true, true, false) => Status::Ok,
    };
    Ok(run)
}

/// Verifies `job`'s backups on `target` into `run`.
async fn verify_on(
    config: &Config,
    target: &Target,
    job: &Job,
    which: Which<'_>,
    ids: Option<Arc<Identities>>,
    run: &mut VerifyRun,
) {
    if let Some(c) = &job.cluster {
        match catalog::list_sets(target, &job.name, c, jiff::Timestamp::now()).await {
            Ok(sets) => run.sets.extend(
                sets.into_iter()
                    .filter(|v| which.set.is_none_or(|s| s == v.set)),
            ),
            Err(e) => return run.errors.push(e.to_string()),
        }
    }
    let origin = config.origin(job);
    let job = job.name.as_str();
    let listing = match catalog::list_job(target, job).await {
        Ok(l) => l,
        Err(e) => return run.errors.push(e.to_string()),
    };
    let chosen: Vec<&catalog::RemoteBackup> = match (which.set, which.backup) {
        (Some(set), _) => listing
            .backups
            .iter()
            .filter(|b| b.manifest.set.as_deref() == Some(set))
            .collect(),
        (None, b) => match b {
            // Asked for one backup, only that one is judged.
            Some(b) => match catalog::select(&listing, job, b, origin, which.host) {
                Ok(x) => vec![x],
                Err(e) => return run.errors.push(e.to_string()),
            },
            None => {
                for d in &listing.damaged {
                    run.errors
                        .push(format!("job {job} backup {}: {}", d.id, d.error));
                }
                listing.backups.iter().collect()
            }
        },
    };
    for b in chosen {
        match verify(target, &b.manifest, ids.clone()).await {
            Ok(r) => run.verified.push(r),
            Err(e @ Error::Pending(_)) => run.pending.push(e.to_string()),
            Err(e) => run.errors.push(e.to_string()),
        }
    }
}
