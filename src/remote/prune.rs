//! `prune`: apply the retention policy to one destination and delete what it
//! says, reporting every decision with its reason.
//!
//! A backup is deleted manifest first, so a half-pruned backup is incomplete
//! (invisible to list and restore), never a complete-looking backup with
//! volumes missing; a later prune finishes it after the grace period.
//! The caller holds the job's lock, so a prune never runs while a backup or a
//! restore of the job runs on this host.

use jiff::Timestamp;
use offsite_backends::list_all;
use serde::Serialize;

use crate::cluster::{self, Cluster, SetDecision, SetInfo};
use crate::config::Job;
use crate::error::{Error, Result};
use crate::outcome::Status;
use crate::remote::catalog;
use std::collections::BTreeMap;

use crate::destinations::Target;
use crate::format::manifest::host_of_id;
use crate::retention::{self, Action, BackupInfo, Decision, Origins};
use offsite_backends::ErrorKind;

/// What a prune did on one destination (in a dry run, what it would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The job's name.
    pub job: String,
    /// The destination's name.
    pub destination: String,
    /// A dry run: decided and reported, nothing deleted.
    pub dry_run: bool,
    /// `ok`, or `failed` when listing, deciding or deleting failed.
    pub status: Status,
    /// Whose backups the policy was applied to: `own` (this host's, and
    /// those that record no host) or `all` (each host's on its own).
    pub origins: Origins,
    /// The fate of every backup the policy was applied to, and why.
    pub decisions: Vec<Decision>,
    /// Backups whose objects were all deleted.
    pub deleted: Vec<String>,
    /// Backups of other hosts found under the job's prefix and left alone
    /// (`origins = "own"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<OtherBackup>,
    /// Hidden files interrupted uploads left on a file-tree destination
    /// (partial and temp files) older than `incomplete_grace`: deleted (or,
    /// in a dry run, to be deleted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<String>,
    /// Backups the policy deletes but S3 Object Lock still holds: deleted
    /// by a prune after `until` (not a failure).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<Locked>,
    /// Kept backups whose locks were extended, so that they stay locked as
    /// long as the newest backup that needs them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extended: Vec<Locked>,
    /// A cluster job's sets, each kept or deleted as a whole (its members'
    /// backups are in `decisions` too).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<SetDecision>,
    /// Why the prune failed; None when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A backup and the time its objects are locked until (S3 Object Lock).
#[derive(Debug, Clone, Serialize)]
pub struct Locked {
    /// The backup's id.
    pub id: String,
    /// When the lock ends, in RFC 3339 (or the destination's message when that
    /// cannot be read).
    pub until: String,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Object Lock and chains: a full (or an incremental) that kept backups
/// build on must stay locked as long as the newest of them, or it could be
/// deleted while they still need it. Each kept incremental's lock (read from
/// its manifest) is carried down its chain: every backup it needs gets at
/// least that lock, on every object.
async fn extend_locks(
    target: &Target,
    job: &str,
    all: &[BackupInfo],
    decisions: &[Decision],
    extended: &mut Vec<Locked>,
) -> Result<()> {
    let by_id: std::collections::HashMap<&str, &BackupInfo> =
        all.iter().map(|b| (b.id.as_str(), b)).collect();
    let manifest_of = |id: &str| target.layout().manifest(job, id);
    let mut needed: BTreeMap<&str, std::time::SystemTime> = BTreeMap::new();
    for d in decisions
        .iter()
        .filter(|d| d.action == Action::Keep && d.complete)
    {
        let Some(mut at) = by_id.get(d.id.as_str()).and_then(|b| b.parent.as_deref()) else {
            continue;
        };
        let Some(until) = target.backend.retained_until(&manifest_of(&d.id)).await? else {
            continue;
        };
        for _ in 0..all.len() {
            let e = needed.entry(at).or_insert(until);
            *e = (*e).max(until);
            match by_id.get(at).and_then(|b| b.parent.as_deref()) {
                Some(p) => at = p,
                None => break,
            }
        }
    }
    for (id, until) in needed {
        let manifest = manifest_of(id);
        // Reported when the manifest's lock was shorter; every object is
        // checked either way (a volume, written earlier, ends a little earlier).
        let shorter = target
            .backend
            .retained_until(&manifest)
            .await?
            .is_none_or(|now| now < until);
        let folder = target.layout().backup_folder(job, id);
        for o in list_all(target.backend.as_ref(), &folder).await? {
            target.backend.extend_retention(&o.key, until).await?;
        }
        if shorter {
            extended.push(Locked {
                id: id.to_string(),
                until: rfc3339(until),
            });
        }
    }
    Ok(())
}

/// A backup another host made, which a prune of this host's backups leaves alone.
#[derive(Debug, Clone, Serialize)]
pub struct OtherBackup {
    /// The backup's id.
    pub id: String,
    /// The host that made it.
    pub host: String,
    /// Whether it has a readable manifest (false: incomplete or damaged).
    pub complete: bool,
}

/// Whose backup `id` is: the host its manifest records, else the host its
/// id names; none for a backup made before backups recorded their host.
fn origin_of(id: &str, recorded: Option<&str>) -> Option<String> {
    recorded.or_else(|| host_of_id(id)).map(str::to_string)
}

/// Parses `--now` (RFC 3339, e.g. `2026-12-01T00:00:00Z`).
pub fn parse_now(text: &str) -> Result<Timestamp> {
    text.parse::<Timestamp>().map_err(|e| {
        Error::Usage(format!(
            "--now {text:?}: {e}; write an RFC 3339 time like 2026-12-01T02:00:00Z"
        ))
    })
}

fn created_at(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok()
}

/// Applies the job's policy (or the destination's override) to `target`.
/// Returns `None` when no policy applies: nothing is ever pruned then.
pub async fn prune_destination(
    job: &Job,
    target: &Target,
    host_id: &str,
    now: Timestamp,
    dry_run: bool,
) -> Option<PruneReport> {
    let policy = job.retention_for(&target.config)?.clone();
    let mut report = PruneReport {
        job: job.name.clone(),
        destination: target.config.name.clone(),
        dry_run,
        status: Status::Ok,
        origins: policy.origins,
        decisions: Vec::new(),
        deleted: Vec::new(),
        others: Vec::new(),
        leftovers: Vec::new(),
        retained: Vec::new(),
        extended: Vec::new(),
        sets: Vec::new(),
        error: None,
    };
    let pruning = Pruning {
        job,
        target,
        host_id,
        policy: &policy,
    };
    let result = pruning.run(now, dry_run, &mut report).await;
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
        report.status = Status::Failed;
        report.error = Some(e.to_string());
    }
    Some(report)
}

/// One job's prune on one destination.
struct Pruning<'a> {
    job: &'a Job,
    target: &'a Target,
    host_id: &'a str,
    policy: &'a retention::Policy,
}

impl Pruning<'_> {
    /// The group a backup of `origin` is judged in: `None` for this host's
    /// (and those made before backups recorded a host: they can only be
    /// its own or a lone host's, and its chains may start there).
    fn group(&self, origin: Option<String>) -> Option<String> {
        origin.filter(|h| h != self.host_id)
    }

    async fn run(&self, now: Timestamp, dry_run: bool, report: &mut PruneReport) -> Result<()> {
        let all = match &self.job.cluster {
            Some(c) => self.decide_sets(c, now, report).await?,
            None => self.decide(now, report).await?,
        };
        self.find_leftovers(report).await?;
        let retain = self.target.backend.capabilities().retention;
        // Object Lock: a backup still locked cannot be deleted yet; the plan says until when.
        if retain.is_some() {
            self.find_retained(report).await?;
        }
        if dry_run {
            return Ok(());
        }
        if retain.is_some() {
            extend_locks(
                self.target,
                &self.job.name,
                &all,
                &report.decisions,
                &mut report.extended,
            )
            .await?;
        }
        self.delete(report).await
    }

    /// Lists the destination and decides on every backup of the origins
    /// judged here (the others go to `others`); answers every backup's
    /// retention facts, whatever its origin.
    async fn decide(&self, now: Timestamp, report: &mut PruneReport) -> Result<Vec<BackupInfo>> {
        let (target, policy) = (self.target, self.policy);
        let listing = catalog::list_job(target, &self.job.name).await?;
        // Another host's damaged manifest is that host's to deal with: left
        // alone (in `others`), as its backups are.
        let (theirs, ours): (Vec<_>, Vec<_>) = listing.damaged.iter().partition(|d| {
            policy.origins == Origins::Own && self.group(origin_of(&d.id, None)).is_some()
        });
        for d in theirs {
            report.others.push(OtherBackup {
                id: d.id.clone(),
                host: origin_of(&d.id, None).unwrap_or_default(),
                complete: false,
            });
        }
        if let Some(d) = ours.first() {
            // Deciding without every backup's time and parent could delete a needed full.
            return Err(Error::Integrity(format!(
                "destination \"{}\": backup {} has a damaged manifest ({}); prune stops rather than guess; repair or remove it by hand",
                target.config.name, d.id, d.error
            )));
        }
        let mut groups: BTreeMap<Option<String>, (Vec<BackupInfo>, Vec<String>)> = BTreeMap::new();
        for b in &listing.backups {
            let m = &b.manifest;
            let t = created_at(&m.created_at).ok_or_else(|| {
                Error::Integrity(format!(
                    "destination \"{}\": backup {}: created_at {:?} is not a valid time; prune stops rather than guess",
                    target.config.name, m.id, m.created_at
                ))
            })?;
            let origin = self.group(origin_of(&m.id, m.host.as_deref()));
            groups.entry(origin).or_default().0.push(BackupInfo {
                id: m.id.clone(),
                kind: m.kind,
                parent: m.parent.clone(),
                created_at: t,
                degenerate: m.degenerate.is_some(),
            });
        }
        for id in &listing.incomplete {
            let origin = self.group(origin_of(id, None));
            groups.entry(origin).or_default().1.push(id.clone());
        }
        let all: Vec<BackupInfo> = groups.values().flat_map(|g| g.0.clone()).collect();
        for (origin, (infos, incomplete)) in groups {
            match (origin, policy.origins) {
                (Some(host), Origins::Own) => {
                    report.others.extend(infos.iter().map(|b| OtherBackup {
                        id: b.id.clone(),
                        host: host.clone(),
                        complete: true,
                    }));
                    report
                        .others
                        .extend(incomplete.iter().map(|id| OtherBackup {
                            id: id.clone(),
                            host: host.clone(),
                            complete: false,
                        }));
                }
                _ => report
                    .decisions
                    .extend(retention::apply(&infos, &incomplete, policy, now)),
            }
        }
        // A chain may cross origins (another host's incremental on a backup
        // made before backups recorded their host): its parents stay.
        retention::keep_needed_across_origins(&mut report.decisions, &all);
        Ok(all)
    }

    /// A cluster job: decides on whole sets ([`cluster::decide_sets`]),
    /// every member's backup going with its set; a backup in no set's
    /// index is left alone. Answers every backup's retention facts.
    async fn decide_sets(
        &self,
        cluster: &Cluster,
        now: Timestamp,
        report: &mut PruneReport,
    ) -> Result<Vec<BackupInfo>> {
        let (target, job) = (self.target, self.job.name.as_str());
        let listing = catalog::list_job(target, job).await?;
        if let Some(d) = listing.damaged.first() {
            return Err(Error::Integrity(format!(
                "destination \"{}\": backup {} has a damaged manifest ({}); prune stops rather than guess; repair or remove it by hand",
                target.config.name, d.id, d.error
            )));
        }
        let verdicts = catalog::list_sets(target, job, cluster, now).await?;
        let mut all = Vec::new();
        let mut sets = Vec::new();
        for v in &verdicts {
            let time = cluster::set_time(&v.set).unwrap_or(now);
            let backups = listing
                .backups
                .iter()
                .filter(|b| b.manifest.set.as_deref() == Some(v.set.as_str()))
                .map(|b| (b.manifest.id.clone(), b.manifest.parent.clone()))
                .collect();
            sets.push(SetInfo {
                set: v.set.clone(),
                time,
                status: v.status,
                backups,
            });
        }
        report.sets = cluster::decide_sets(&sets, self.policy, now);
        let fate: BTreeMap<&str, &SetDecision> =
            report.sets.iter().map(|d| (d.set.as_str(), d)).collect();
        for b in &listing.backups {
            let m = &b.manifest;
            all.push(BackupInfo {
                id: m.id.clone(),
                kind: m.kind,
                parent: m.parent.clone(),
                created_at: created_at(&m.created_at).unwrap_or(now),
                degenerate: m.degenerate.is_some(),
            });
            report
                .decisions
                .push(set_decision(&m.id, m.set.as_deref(), &fate, true));
        }
        for id in &listing.incomplete {
            report
                .decisions
                .push(set_decision(id, cluster::set_of_id(id), &fate, false));
        }
        Ok(all)
    }

    /// What interrupted uploads left in this host's backups' folders (every
    /// host's with origins = "all"), once older than the grace period.
    async fn find_leftovers(&self, report: &mut PruneReport) -> Result<()> {
        let prefix = self.target.layout().job_folder(&self.job.name);
        for l in self.target.backend.list_leftovers(&prefix).await? {
            let id = l.key[prefix.len()..].split('/').next().unwrap_or("");
            let ours =
                self.group(origin_of(id, None)).is_none() || self.policy.origins == Origins::All;
            let age = l
                .modified
                .and_then(|m| std::time::SystemTime::now().duration_since(m).ok());
            if ours && age.is_some_and(|a| a > self.policy.incomplete_grace) {
                report.leftovers.push(l.key);
            }
        }
        Ok(())
    }

    /// The complete backups to delete that Object Lock still holds.
    async fn find_retained(&self, report: &mut PruneReport) -> Result<()> {
        for d in report
            .decisions
            .iter()
            .filter(|d| d.action == Action::Delete && d.complete)
        {
            let manifest = self.target.layout().manifest(&self.job.name, &d.id);
            if let Some(until) = self.target.backend.retained_until(&manifest).await? {
                report.retained.push(Locked {
                    id: d.id.clone(),
                    until: rfc3339(until),
                });
            }
        }
        Ok(())
    }

    /// Deletes what the decisions delete and Object Lock allows, then the
    /// leftovers (last, so a pruned backup's folder is left empty and goes
    /// with them).
    async fn delete(&self, report: &mut PruneReport) -> Result<()> {
        let target = self.target;
        // A set to delete stops looking complete before any of it goes.
        self.delete_set_markers(report, |name| name.ends_with(".done"))
            .await?;
        let doomed: Vec<(String, bool)> = report
            .decisions
            .iter()
            .filter(|d| d.action == Action::Delete)
            .filter(|d| !report.retained.iter().any(|r| r.id == d.id))
            .map(|d| (d.id.clone(), d.complete))
            .collect();
        for (id, complete) in doomed {
            match delete_backup(target, &self.job.name, &id, complete).await {
                Ok(()) => report.deleted.push(id),
                // A volume locked longer than its manifest: not a failure either.
                Err(Error::Destination(e)) if e.kind() == ErrorKind::Retained => {
                    let locked = e.key().unwrap_or_default();
                    let until = match target.backend.retained_until(locked).await {
                        Ok(Some(t)) => rfc3339(t),
                        _ => e.message().to_string(),
                    };
                    report.retained.push(Locked { id, until });
                }
                Err(e) => return Err(e),
            }
        }
        for key in &report.leftovers {
            target.backend.delete(key).await?;
        }
        // The rest of a set's markers go once all its backups have.
        self.delete_set_markers(report, |_| true).await
    }

    /// The markers (those `which` names) of the sets the decisions delete:
    /// the `done` markers before any backup goes, so a set half deleted is
    /// never listed complete; the others once every member's backup is
    /// gone (a backup Object Lock holds keeps them).
    async fn delete_set_markers(
        &self,
        report: &PruneReport,
        which: impl Fn(&str) -> bool,
    ) -> Result<()> {
        for d in report.sets.iter().filter(|d| d.action == Action::Delete) {
            let members_gone = report
                .decisions
                .iter()
                .filter(|x| cluster::set_of_id(&x.id) == Some(d.set.as_str()))
                .all(|x| report.deleted.contains(&x.id));
            let folder = format!(
                "{}{}/",
                self.target.layout().set_index(&self.job.name),
                d.set
            );
            for o in list_all(self.target.backend.as_ref(), &folder).await? {
                let name = &o.key[folder.len()..];
                let done_marker = name.ends_with(".done");
                if which(name) && (done_marker || members_gone) {
                    self.target.backend.delete(&o.key).await?;
                }
            }
        }
        Ok(())
    }
}

/// The decision on backup `id` of set `set` (a complete backup, or what an
/// unfinished upload left): its set's fate; kept when it is in no set's index.
fn set_decision(
    id: &str,
    set: Option<&str>,
    fate: &BTreeMap<&str, &SetDecision>,
    complete: bool,
) -> Decision {
    match set.and_then(|s| fate.get(s)) {
        Some(d) => Decision {
            id: id.to_string(),
            action: d.action,
            complete,
            reasons: d
                .reasons
                .iter()
                .map(|r| format!("set {}: {r}", d.set))
                .collect(),
        },
        None => Decision {
            id: id.to_string(),
            action: Action::Keep,
            complete,
            reasons: vec!["in no set's index, so left alone".to_string()],
        },
    }
}

async fn delete_backup(target: &Target, job: &str, id: &str, complete: bool) -> Result<()> {
    let backend = target.backend.as_ref();
    let manifest = target.layout().manifest(job, id);
    if complete {
        backend.delete(&manifest).await?;
    }
    let folder = target.layout().backup_folder(job, id);
    for o in list_all(backend, &folder).await? {
        backend.delete(&o.key).await?;
    }
    Ok(())
}
