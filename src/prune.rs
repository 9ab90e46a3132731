//! `prune`: apply the retention policy to one destination and delete what it
//! says, reporting every decision with its reason.
//!
//! A backup is deleted manifest first, so a half-pruned backup is incomplete
//! (invisible to list and restore), never a complete-looking backup with
//! volumes missing; a later prune finishes it after the grace period.
//! The caller holds the job's lock, so a prune never runs while a backup or a
//! restore of the job runs on this host.

use offsite_backends::list_all;
use serde::Serialize;
use time::OffsetDateTime;

use crate::catalog;
use crate::config::{Config, Job};
use crate::destinations;
use crate::error::{Error, Result};
use crate::manifest::MANIFEST_NAME;
use crate::retention::{self, Action, BackupInfo, Decision};
use crate::stage::{JobLock, JobStaging};
use crate::upload::{Target, remote_key};

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub job: String,
    pub destination: String,
    pub dry_run: bool,
    pub status: &'static str,
    pub decisions: Vec<Decision>,
    /// Backups whose objects were all deleted.
    pub deleted: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Parses `--now` (RFC 3339, e.g. `2026-12-01T00:00:00Z`).
pub fn parse_now(text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|e| {
        Error::Usage(format!(
            "--now {text:?}: {e}; write an RFC 3339 time like 2026-12-01T02:00:00Z"
        ))
    })
}

fn created_at(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// What `prune` did for one job: a report per destination with a policy,
/// and a line for each destination without one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobPrune {
    pub reports: Vec<PruneReport>,
    pub skipped: Vec<String>,
}

/// Prunes every destination of `job` (or only `destination`), holding the
/// job's lock unless it is a dry run.
pub async fn prune_job(
    config: &Config,
    job: &Job,
    destination: Option<&str>,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<JobPrune> {
    let targets = destinations::job_targets(config, job, destination)?;
    let _lock = if dry_run {
        None
    } else {
        Some(JobLock::acquire(
            &JobStaging::new(config, &job.name),
            &job.name,
        )?)
    };
    let mut out = JobPrune::default();
    for t in &targets {
        match prune_destination(job, t, now, dry_run).await {
            Some(r) => out.reports.push(r),
            None => out.skipped.push(format!(
                "job {} on {}: no retention policy, nothing pruned",
                job.name, t.config.name
            )),
        }
    }
    Ok(out)
}

/// Applies the job's policy (or the destination's override) to `target`.
/// Returns `None` when no policy applies: nothing is ever pruned then.
pub async fn prune_destination(
    job: &Job,
    target: &Target,
    now: OffsetDateTime,
    dry_run: bool,
) -> Option<PruneReport> {
    let policy = job.policy_for(&target.config)?.clone();
    let mut report = PruneReport {
        job: job.name.clone(),
        destination: target.config.name.clone(),
        dry_run,
        status: "ok",
        decisions: Vec::new(),
        deleted: Vec::new(),
        error: None,
    };
    let result = async {
        let listing = catalog::list_job(target, &job.name).await?;
        if let Some(d) = listing.damaged.first() {
            // Deciding without every backup's time and parent could delete a needed full.
            return Err(Error::Failed(format!(
                "destination \"{}\": backup {} has a damaged manifest ({}); prune stops rather than guess; repair or remove it by hand",
                target.config.name, d.id, d.error
            )));
        }
        let mut infos = Vec::new();
        for b in &listing.backups {
            let m = &b.manifest;
            let t = created_at(&m.created_at).ok_or_else(|| {
                Error::Failed(format!(
                    "destination \"{}\": backup {}: created_at {:?} is not a valid time; prune stops rather than guess",
                    target.config.name, m.id, m.created_at
                ))
            })?;
            infos.push(BackupInfo {
                id: m.id.clone(),
                kind: m.kind,
                parent: m.parent.clone(),
                created_at: t,
            });
        }
        report.decisions = retention::apply(&infos, &listing.incomplete, &policy, now);
        if dry_run {
            return Ok(());
        }
        for d in report.decisions.iter().filter(|d| d.action == Action::Delete) {
            delete_backup(target, &job.name, &d.id, d.complete).await?;
            report.deleted.push(d.id.clone());
        }
        Ok::<(), Error>(())
    }
    .await;
    // The Glacier vault ships its catalog after deletes, even when a later delete failed.
    let result = match (result, report.deleted.is_empty()) {
        (Ok(()), false) => target.backend.flush().await.map_err(Error::from),
        (Err(e), false) => {
            let _ = target.backend.flush().await;
            Err(e)
        }
        (r, true) => r,
    };
    if let Err(e) = result {
        report.status = "failed";
        report.error = Some(e.to_string());
    }
    Some(report)
}

async fn delete_backup(target: &Target, job: &str, id: &str, complete: bool) -> Result<()> {
    let backend = target.backend.as_ref();
    let manifest = remote_key(&target.config.prefix, job, id, MANIFEST_NAME);
    if complete {
        backend.delete(&manifest).await?;
    }
    let folder = format!("{}/", &manifest[..manifest.len() - MANIFEST_NAME.len() - 1]);
    for o in list_all(backend, &folder).await? {
        backend.delete(&o.key).await?;
    }
    Ok(())
}
