//! `backup` and `upload` for one job: lock, stage, upload to every
//! destination, keep or remove the staged copy, record the status.
//!
//! A staged backup is removed only when every destination of the job has it
//! (journal says the manifest is there), keeping the newest `keep_local`. After
//! a partial failure it stays, and the next `upload` or `backup` of the job
//! resumes what is missing, oldest backup first.

use std::sync::Arc;

use serde::Serialize;

use crate::backup::claim::{self, Claimed};
use crate::backup::journal;
use crate::backup::source::CommandStderr;
use crate::backup::stage;
use crate::backup::upload::{self, DestinationReport};
use crate::cluster::{self, RunBy, SetMember};
use crate::config::{Config, Job};
use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::manifest::{BackupKind, Manifest};
use crate::outcome::{Status, combine, worst};
use crate::progress::Progress;
use crate::remote::catalog;
use crate::remote::prune::{self, PruneReport};
use crate::schedule::status::{self, BackupRun, DestinationStatus, LastRun};
use crate::staging::{JobLock, JobStaging};
use crate::stop::Stop;

/// What staging packed, from the backup's manifest (see
/// [`crate::format::manifest::Stats`]).
#[derive(Debug, Clone, Serialize)]
pub struct StagedStats {
    /// Files packed into the backup's volumes (an incremental's unchanged files
    /// are not counted).
    pub files: u64,
    /// Their bytes, before compression.
    pub bytes: u64,
    /// The volumes' total size as stored, in bytes.
    pub stored_bytes: u64,
    /// How long staging took, hooks included, in seconds.
    pub seconds: f64,
}

/// The result of one backup (staged and/or uploaded), as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The job's name.
    pub job: String,
    /// The host that ran it (`host_id`): the origin its backup records.
    pub host: String,
    /// The backup's id; None when the run failed before a backup was staged.
    pub backup: Option<String>,
    /// Full or incremental; None when the run failed before that was known.
    pub kind: Option<BackupKind>,
    /// How the run ended over all destinations (see
    /// [`crate::outcome::combine`]).
    pub status: Status,
    /// What staging packed; None when the run failed before that was known.
    pub staged: Option<StagedStats>,
    /// One report per destination; empty when nothing was uploaded.
    pub destinations: Vec<DestinationReport>,
    /// Files that changed while they were read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Entries left out because they could not be read (`on_unreadable = "skip"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// What hooks and the source command printed on stderr (its end).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stderr: Vec<CommandStderr>,
    /// Messages for the operator: how the backup was built, entries skipped,
    /// bookkeeping that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why the run failed (or stopped) before any upload; a destination's own
    /// error is in its report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Retention applied after a successful backup, per destination with a policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<PruneReport>,
}

impl RunReport {
    /// A run with nothing to do: another cluster member owns the slot.
    pub fn skipped(job: &str, host: &str, why: String) -> RunReport {
        RunReport {
            status: Status::Skipped,
            error: None,
            notes: vec![why],
            ..RunReport::failed(job, host, &Error::Failed(String::new()))
        }
    }

    /// A run that failed (or was stopped) before anything was staged.
    pub fn failed(job: &str, host: &str, error: &Error) -> RunReport {
        RunReport {
            job: job.to_string(),
            host: host.to_string(),
            backup: None,
            kind: None,
            status: match error {
                Error::Stopped(_) => Status::Interrupted,
                _ => Status::Failed,
            },
            staged: None,
            destinations: Vec::new(),
            changed: Vec::new(),
            unreadable: Vec::new(),
            stderr: Vec::new(),
            notes: Vec::new(),
            error: Some(error.to_string()),
            prune: Vec::new(),
        }
    }
}

/// Each destination's status, in order.
fn statuses_of(reports: &[DestinationReport]) -> Vec<Status> {
    reports.iter().map(|r| r.status).collect()
}

fn stats_of(m: &Manifest) -> StagedStats {
    StagedStats {
        files: m.stats.files,
        bytes: m.stats.bytes,
        stored_bytes: m.stats.stored_bytes,
        seconds: m.stats.seconds,
    }
}

/// What `offsite backup` did for one job: the new backup, and any earlier
/// staged backups it finished uploading first.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutcome {
    /// The run of the new backup.
    #[serde(flatten)]
    pub report: RunReport,
    /// The earlier staged backups uploaded (or resumed) before it, oldest
    /// first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<RunReport>,
}

impl BackupOutcome {
    /// The worst status of the new backup's run and the earlier ones.
    pub fn status(&self) -> Status {
        worst(std::iter::once(self.report.status).chain(self.earlier.iter().map(|r| r.status)))
    }
}

/// Stages a backup of `job` and, unless `upload` is false, uploads it (after
/// any earlier staged backups of the job that are not everywhere yet).
///
/// Errors before staging starts (configuration, overlap, another run holding
/// the lock) are returned; failures after that are in the report.
///
/// A cluster job's backup is its member's part of set `set` (a scheduled
/// slot, `--set`), or of the set of the current window when `set` is
/// `None`; see [`crate::cluster`].
pub async fn backup(
    config: &Config,
    job: &Job,
    kind: BackupKind,
    set: Option<&str>,
    upload: bool,
    progress_arc: Arc<dyn Progress>,
    stop: &Stop,
) -> Result<BackupOutcome> {
    let Some(notify) = &job.notify else {
        return backup_run(config, job, kind, set, upload, progress_arc, stop).await;
    };
    let start = notify.started(&job.name).await;
    let run = backup_run(config, job, kind, set, upload, progress_arc.clone(), stop).await;
    let mut outcome = match run {
        Ok(o) => o,
        Err(e) => {
            // The run never started (its lock is held, a key is missing): a
            // start ping must not be left without its end.
            let report = RunReport::failed(&job.name, config.origin(job), &e);
            let json = serde_json::to_string(&report).unwrap_or_default();
            let event = crate::notify::Event::Failure;
            let failed = tell(config, job, notify, event, &report, &json).await;
            for n in start.into_iter().chain(failed) {
                progress_arc.note(&n);
            }
            return Err(e);
        }
    };
    if let Some(event) = crate::notify::Event::of(outcome.status()) {
        let json = serde_json::to_string(&outcome).unwrap_or_default();
        let failed = tell(config, job, notify, event, &outcome.report, &json).await;
        for n in start.into_iter().chain(failed) {
            progress_arc.note(&n);
            outcome.report.notes.push(n);
        }
    }
    Ok(outcome)
}

/// Sends `job`'s notification of `event` about `report` (`json`, as
/// `--json` prints it); answers what failed.
async fn tell(
    config: &Config,
    job: &Job,
    notify: &crate::notify::Notify,
    event: crate::notify::Event,
    report: &RunReport,
    json: &str,
) -> Vec<String> {
    let message = crate::notify::Message {
        job: &job.name,
        event,
        report: json,
        summary: &summary(report),
        backup: report.backup.as_deref(),
        dir: &job.workdir,
    };
    notify.finished(&message, &config.secret_variables()).await
}

/// One line for a person on how a run ended (a notification's body).
pub fn summary(r: &RunReport) -> String {
    let mut line = format!("offsite job {} on {}: {}", r.job, r.host, r.status.word());
    if let Some(id) = &r.backup {
        line.push_str(&format!(", backup {id}"));
    }
    for d in &r.destinations {
        line.push_str(&format!("; {} {}", d.name, d.status.word()));
        if let Some(e) = &d.error {
            line.push_str(&format!(": {e}"));
        }
    }
    if let Some(e) = &r.error {
        line.push_str(&format!("; {e}"));
    }
    line
}

/// [`backup`] without its notifications.
async fn backup_run(
    config: &Config,
    job: &Job,
    kind: BackupKind,
    set: Option<&str>,
    upload: bool,
    progress_arc: Arc<dyn Progress>,
    stop: &Stop,
) -> Result<BackupOutcome> {
    let progress = progress_arc.as_ref();
    let started = Started::now();
    crate::staging::check_overlap(config, job)?;
    let asked = set_of_run(job, set)?;
    let targets = config.job_targets(job, None)?;
    let staging = JobStaging::new(config, &job.name);
    let _lock = JobLock::acquire(&staging, &job.name)?;
    let earlier_ids = staging.staged_backups()?;
    let joined = match (&job.cluster, set) {
        (Some(c), None) if c.run == RunBy::All => join_open_set(job, c, &targets).await,
        _ => None,
    };
    let (asked, join_note) = match joined {
        Some(s) => {
            let note =
                format!("joined set {s}, still in progress, which this member had no part of yet");
            (Some(s), Some(note))
        }
        None => (asked, None),
    };
    let (set, claim_note) = match claim_slot(config, job, &targets, asked).await {
        Ok(Slot::Run(set, note)) => (set, note),
        Ok(Slot::Skip(why)) => {
            progress.note(&format!("job {:?}: {why}", job.name));
            let report = RunReport::skipped(&job.name, config.origin(job), why);
            return Ok(BackupOutcome {
                report,
                earlier: Vec::new(),
            });
        }
        Err(e) => {
            let mut report = RunReport::failed(&job.name, config.origin(job), &e);
            if let Err(e) = record_status(&staging, job, "backup", &report, Some(&started)) {
                report.notes.push(format!("could not record status: {e}"));
            }
            return Ok(BackupOutcome {
                report,
                earlier: Vec::new(),
            });
        }
    };

    let staged = {
        let config = config.clone();
        let job2 = job.clone();
        let p = progress_arc.clone();
        let stop = stop.clone();
        let set = set.clone();
        tokio::task::spawn_blocking(move || {
            stage::stage(&config, &job2, kind, set.as_deref(), p.as_ref(), &stop)
        })
        .await
        .map_err(|e| Error::Failed(format!("staging task failed: {e}")))?
    };
    let staged = match staged {
        Ok(s) => s,
        // A configuration or usage problem (a missing passphrase) is not a
        // failed run: it exits 2 before anything is staged.
        Err(e) if e.is_usage() => return Err(e),
        Err(e) => {
            let mut report = RunReport::failed(&job.name, config.origin(job), &e);
            if let (Some(cluster), Some(set)) = (&job.cluster, &set) {
                let member = SetMember { cluster, set };
                for t in &targets {
                    let marker = member.failed_object(t.layout(), &job.name, &e.to_string());
                    if let Err(e) = upload::put_markers(t, vec![marker]).await {
                        report.notes.push(format!(
                            "{}: could not mark the member failed in set {set}: {e}",
                            t.config.name
                        ));
                    }
                }
            }
            if let Err(e) = record_status(&staging, job, "backup", &report, Some(&started)) {
                report.notes.push(format!("could not record status: {e}"));
            }
            return Ok(BackupOutcome {
                report,
                earlier: Vec::new(),
            });
        }
    };
    for n in &staged.notes {
        progress.note(&format!("job {:?}: {n}", job.name));
    }

    let mut earlier = Vec::new();
    if upload {
        for id in &earlier_ids {
            earlier.push(
                upload_staged(
                    config, job, &staging, id, &targets, "upload", progress, stop,
                )
                .await,
            );
        }
    }
    let mut report = RunReport {
        job: job.name.clone(),
        host: config.origin(job).to_string(),
        backup: Some(staged.id.clone()),
        kind: Some(staged.manifest.kind),
        status: Status::Ok,
        staged: Some(stats_of(&staged.manifest)),
        destinations: Vec::new(),
        changed: staged.changed.clone(),
        unreadable: staged.unreadable.clone(),
        stderr: staged.stderr.clone(),
        notes: join_note
            .into_iter()
            .chain(claim_note)
            .chain(staged.notes.clone())
            .collect(),
        error: None,
        prune: Vec::new(),
    };
    if upload {
        let member = set_member(job, &staged.manifest);
        report.destinations = upload_in_chain(
            &staging,
            &staged.dir,
            &staged.manifest,
            member.as_ref(),
            &targets,
            progress,
            stop,
        )
        .await;
        report.status = combine(&statuses_of(&report.destinations));
        if report.status == Status::Ok {
            // The backup is on every destination: bookkeeping failures from here on
            // are reported, never turned into a failed backup.
            if let Err(e) = cleanup(job, &staging, &targets) {
                progress.note(&format!("could not tidy staging: {e}"));
                report.notes.push(format!("could not tidy staging: {e}"));
            }
            report.prune = prune_after_success(config, job, &targets, progress).await;
        }
    }
    if let Err(e) = record_status(&staging, job, "backup", &report, Some(&started)) {
        progress.note(&format!("could not record status: {e}"));
        report.notes.push(format!("could not record status: {e}"));
    }
    Ok(BackupOutcome { report, earlier })
}

/// The set a run of `job` belongs to: `given` (a scheduled slot, `--set`),
/// else, for a cluster job, the set of the current window; `None` for a
/// single-host job, which refuses `--set`.
pub fn set_of_run(job: &Job, given: Option<&str>) -> Result<Option<String>> {
    match (&job.cluster, given) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::Usage(format!(
            "job {:?} has no cluster, so its backups belong to no set; remove --set (or add cluster = {{ members = [...] }} to the job)",
            job.name
        ))),
        (Some(_), Some(s)) if !cluster::valid_set(s) => Err(Error::Usage(format!(
            "--set {s:?} is not a set id: write the set's UTC time to the second, like 20261201T020000Z"
        ))),
        (Some(_), Some(s)) => Ok(Some(s.to_string())),
        (Some(c), None) => Ok(Some(cluster::set_for(
            None,
            jiff::Timestamp::now(),
            c.window,
        ))),
    }
}

/// A manual run of a cluster member (no `--set`, no slot) joins the
/// newest set still in progress that this member has no part of, as
/// listed on the first destination it can read: a member started late
/// joins its peers' set instead of making a set of its own. `None` when
/// there is none, or no destination can be read (put-only).
async fn join_open_set(
    job: &Job,
    cluster: &cluster::Cluster,
    targets: &[Target],
) -> Option<String> {
    let target = targets
        .iter()
        .find(|t| t.backend.capabilities().list && t.backend.capabilities().read)?;
    let sets = catalog::list_sets(target, &job.name, cluster, jiff::Timestamp::now())
        .await
        .ok()?;
    sets.into_iter()
        .rev()
        .find(|v| {
            v.status == cluster::SetStatus::InProgress
                && v.members_missing.contains(&cluster.member)
        })
        .map(|v| v.set)
}

/// What a run of a cluster job does with its slot.
enum Slot {
    /// Back up into this set (`None`: a single-host job), saying why when
    /// it is not the set asked for (a takeover).
    Run(Option<String>, Option<String>),
    /// Another member owns the slot: nothing to do, for this reason.
    Skip(String),
}

/// For a job whose run is the cluster's (`run = "one"`), claims the set
/// (or takes over a late one, see [`claim`]); every other job runs `set`.
async fn claim_slot(
    config: &Config,
    job: &Job,
    targets: &[Target],
    set: Option<String>,
) -> Result<Slot> {
    let (Some(c), Some(asked)) = (&job.cluster, &set) else {
        return Ok(Slot::Run(set, None));
    };
    if c.run != RunBy::One {
        return Ok(Slot::Run(set, None));
    }
    if let Some(cmd) = &c.claim_if
        && let Some(why) = claim_refused(config, job, c, asked, cmd).await?
    {
        return Ok(Slot::Skip(why));
    }
    let Some(target) = claim::claim_target(targets) else {
        return Err(Error::Config(format!(
            "{}: job {:?} has run = \"one\" but no destination that can claim a slot",
            config.file.display(),
            job.name
        )));
    };
    match claim::claim(target, &job.name, c, asked, jiff::Timestamp::now()).await? {
        Claimed::Ours { set, note } => Ok(Slot::Run(Some(set), note)),
        Claimed::Theirs(why) => Ok(Slot::Skip(why)),
    }
}

/// Runs the cluster's `claim_if` command (bash, in the job's folder, with
/// `OFFSITE_JOB`, `OFFSITE_SET` and `OFFSITE_MEMBER`, no secrets): why this
/// member does not claim `set`, or `None` when it succeeded.
async fn claim_refused(
    config: &Config,
    job: &Job,
    cluster: &cluster::Cluster,
    set: &str,
    cmd: &str,
) -> Result<Option<String>> {
    let mut c = tokio::process::Command::new("bash");
    c.arg("-c")
        .arg(cmd)
        .current_dir(&job.workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env("OFFSITE_JOB", &job.name)
        .env("OFFSITE_SET", set)
        .env("OFFSITE_MEMBER", &cluster.member);
    for v in config.secret_variables() {
        c.env_remove(v);
    }
    let status = c.status().await.map_err(|e| {
        Error::io(
            format!("job {:?}: cannot run claim_if `{cmd}`", job.name),
            e,
        )
    })?;
    Ok((!status.success()).then(|| {
        format!(
            "claim_if `{cmd}` did not succeed here ({status}), so member {:?} does not claim set {set}",
            cluster.member
        )
    }))
}

/// The set member a staged backup of `job` ships as, when it is one.
fn set_member<'a>(job: &'a Job, manifest: &'a Manifest) -> Option<SetMember<'a>> {
    Some(SetMember {
        cluster: job.cluster.as_ref()?,
        set: manifest.set.as_deref()?,
    })
}

/// Retention, once a backup is on every destination (never before): each
/// destination with a policy that this host may delete from. A failed prune
/// is reported and never fails the backup.
async fn prune_after_success(
    config: &Config,
    job: &Job,
    targets: &[Target],
    progress: &dyn Progress,
) -> Vec<PruneReport> {
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for t in targets {
        // A put-only destination is pruned from another host, with other credentials.
        if !t.backend.capabilities().delete {
            continue;
        }
        if let Some(p) = prune::prune_destination(job, t, config.origin(job), now, false).await {
            if let Some(e) = &p.error {
                progress.note(&format!("prune failed: {e}"));
            }
            out.push(p);
        }
    }
    if !out.is_empty()
        && let Err(e) = record_prune(config, job, &out)
    {
        progress.note(&format!("could not record the prune in status: {e}"));
    }
    out
}

/// Uploads (or resumes) every staged backup of `job` that is not yet on all
/// its destinations, oldest first; when the newest of them ends up on every
/// destination, retention runs as after `backup`.
pub async fn upload(
    config: &Config,
    job: &Job,
    progress: &dyn Progress,
    stop: &Stop,
) -> Result<Vec<RunReport>> {
    let targets = config.job_targets(job, None)?;
    let staging = JobStaging::new(config, &job.name);
    let _lock = JobLock::acquire(&staging, &job.name)?;
    let mut reports = Vec::new();
    for id in staging.staged_backups()? {
        if stop.requested() {
            break;
        }
        reports.push(
            upload_staged(
                config, job, &staging, &id, &targets, "upload", progress, stop,
            )
            .await,
        );
    }
    if let Some(last) = reports.last_mut()
        && last.status == Status::Ok
    {
        last.prune = prune_after_success(config, job, &targets, progress).await;
    }
    Ok(reports)
}

#[allow(clippy::too_many_arguments)]
async fn upload_staged(
    config: &Config,
    job: &Job,
    staging: &JobStaging,
    id: &str,
    targets: &[Target],
    command: &str,
    progress: &dyn Progress,
    stop: &Stop,
) -> RunReport {
    let manifest = match staging.read_manifest(id) {
        Ok(m) => m,
        Err(e) => {
            let mut r = RunReport::failed(&job.name, config.origin(job), &e);
            r.backup = Some(id.to_string());
            return r;
        }
    };
    let dir = staging.backup_dir(id);
    // A backup kept locally (keep_local) that every destination already has:
    // uploading it does nothing, and must not look like a fresh success.
    let already_everywhere = targets
        .iter()
        .all(|t| journal::is_complete(&dir, &t.config.name));
    let member = set_member(job, &manifest);
    let destinations = upload_in_chain(
        staging,
        &dir,
        &manifest,
        member.as_ref(),
        targets,
        progress,
        stop,
    )
    .await;
    let status = combine(&statuses_of(&destinations));
    let mut report = RunReport {
        job: job.name.clone(),
        host: config.origin(job).to_string(),
        backup: Some(id.to_string()),
        kind: Some(manifest.kind),
        status,
        staged: Some(stats_of(&manifest)),
        destinations,
        changed: Vec::new(),
        unreadable: Vec::new(),
        stderr: Vec::new(),
        notes: Vec::new(),
        error: None,
        prune: Vec::new(),
    };
    if status == Status::Ok
        && let Err(e) = cleanup(job, staging, targets)
    {
        report.notes.push(format!("could not tidy staging: {e}"));
    }
    if !already_everywhere && let Err(e) = record_status(staging, job, command, &report, None) {
        report.notes.push(format!("could not record status: {e}"));
    }
    report
}

/// Uploads a staged backup to `targets`, but not where the backup it
/// builds on (its parent, still staged here) has not landed: there the
/// incremental would be reported sent and could not be restored until its
/// parent arrived, and never if the parent cannot. Those destinations
/// report it failed, naming the parent; `offsite upload` sends both, the
/// parent first. (A parent no longer staged here is on every destination.)
async fn upload_in_chain(
    staging: &JobStaging,
    dir: &std::path::Path,
    manifest: &Manifest,
    member: Option<&SetMember<'_>>,
    targets: &[Target],
    progress: &dyn Progress,
    stop: &Stop,
) -> Vec<DestinationReport> {
    // Per target, the parent it still waits for (looked at once: the
    // parent's journal does not change while this backup is sent).
    let waiting: Vec<Option<&str>> = targets
        .iter()
        .map(|t| {
            manifest.parent.as_deref().filter(|parent| {
                let pdir = staging.backup_dir(parent);
                pdir.is_dir() && !journal::is_complete(&pdir, &t.config.name)
            })
        })
        .collect();
    let ready: Vec<Target> = targets
        .iter()
        .zip(&waiting)
        .filter(|(_, w)| w.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    let mut sent = upload::upload_backup(dir, manifest, member, &ready, progress, stop)
        .await
        .into_iter();
    let mut reports = Vec::with_capacity(targets.len());
    for (t, waits_for) in targets.iter().zip(waiting) {
        let Some(parent) = waits_for else {
            reports.extend(sent.next());
            continue;
        };
        let error = format!(
            "destination \"{}\": {} was not sent: the backup it builds on, {parent}, is not complete there yet; run `offsite upload`, which sends {parent} first, then this one",
            t.config.name, manifest.id
        );
        progress.note(&error);
        reports.push(DestinationReport {
            name: t.config.name.clone(),
            status: Status::Failed,
            bytes_sent: 0,
            bytes_resumed: 0,
            seconds: 0.0,
            notes: Vec::new(),
            error: Some(error),
        });
    }
    reports
}

/// Removes staged backups that every destination has, but the newest `keep_local`.
fn cleanup(job: &Job, staging: &JobStaging, targets: &[Target]) -> Result<()> {
    let everywhere: Vec<String> = staging
        .staged_backups()?
        .into_iter()
        .filter(|id| {
            let dir = staging.backup_dir(id);
            targets
                .iter()
                .all(|t| journal::is_complete(&dir, &t.config.name))
        })
        .collect();
    let keep = job.keep_local as usize;
    let remove = everywhere.len().saturating_sub(keep);
    for id in &everywhere[..remove] {
        staging.discard(id)?;
    }
    Ok(())
}

/// When a backup run started.
struct Started {
    at: String,
    instant: std::time::Instant,
}

impl Started {
    fn now() -> Started {
        Started {
            at: status::now_rfc3339(),
            instant: std::time::Instant::now(),
        }
    }
}

fn record_status(
    staging: &JobStaging,
    job: &Job,
    command: &str,
    report: &RunReport,
    started: Option<&Started>,
) -> Result<()> {
    let mut s = status::read(&staging.job_dir, &job.name)?;
    s.job = job.name.clone();
    s.host = Some(report.host.clone());
    let now = status::now_rfc3339();
    let word = report.status.word().to_string();
    // The last full and incremental are the last that succeeded: a failed
    // run is `last_run`, and never hides the backup there is.
    if report.status == Status::Ok
        && let (Some(_), Some(kind)) = (&report.backup, report.kind)
    {
        let run = BackupRun {
            backup: report.backup.clone(),
            started_at: started
                .map(|st| st.at.clone())
                .unwrap_or_else(|| now.clone()),
            finished_at: now.clone(),
            seconds: started
                .map(|st| st.instant.elapsed().as_secs_f64())
                .unwrap_or_default(),
            files: report.staged.as_ref().map(|x| x.files),
            bytes: report.staged.as_ref().map(|x| x.bytes),
            stored_bytes: report.staged.as_ref().map(|x| x.stored_bytes),
            status: word.clone(),
            error: None,
        };
        match kind {
            BackupKind::Full => s.last_full = Some(run),
            BackupKind::Incr => s.last_incremental = Some(run),
        }
    }
    s.last_run = Some(LastRun {
        command: command.to_string(),
        backup: report.backup.clone(),
        status: word,
        finished_at: now.clone(),
        seconds: started.map(|st| st.instant.elapsed().as_secs_f64()),
        error: report.error.clone(),
    });
    for d in &report.destinations {
        let entry = s
            .destinations
            .entry(d.name.clone())
            .or_insert_with(DestinationStatus::default);
        entry.status = d.status.word().to_string();
        entry.backup = report.backup.clone();
        entry.finished_at = now.clone();
        entry.error = d.error.clone();
        entry.bytes_sent = Some(d.bytes_sent);
        // Never back to an older backup (an upload of a backlog after a newer one).
        let newer = match (&entry.last_success_backup, &report.backup) {
            (Some(had), Some(new)) => {
                crate::retention::time_of_id(new) >= crate::retention::time_of_id(had)
            }
            _ => true,
        };
        if d.status == Status::Ok && newer {
            entry.last_success_at = Some(now.clone());
            entry.last_success_backup = report.backup.clone();
        }
    }
    status::write(&staging.job_dir, &s)
}

/// What `prune` did for one job: a report per destination with a policy,
/// and a line for each destination without one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobPrune {
    /// One report per destination with a retention policy.
    pub reports: Vec<PruneReport>,
    /// One line per destination without a policy, which was left alone.
    pub skipped: Vec<String>,
    /// What went wrong around the prune (its status could not be recorded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Prunes every destination of `job` (or only `destination`), holding the
/// job's lock unless it is a dry run.
pub async fn prune_job(
    config: &Config,
    job: &Job,
    destination: Option<&str>,
    now: jiff::Timestamp,
    dry_run: bool,
) -> Result<JobPrune> {
    let targets = config.job_targets(job, destination)?;
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
        match prune::prune_destination(job, t, config.origin(job), now, dry_run).await {
            Some(r) => out.reports.push(r),
            None => out.skipped.push(format!(
                "job {} on {}: no retention policy, nothing pruned",
                job.name, t.config.name
            )),
        }
    }
    if !dry_run
        && !out.reports.is_empty()
        && let Err(e) = record_prune(config, job, &out.reports)
    {
        out.notes
            .push(format!("could not record the prune in status: {e}"));
    }
    Ok(out)
}

/// Records how a prune went in the job's status, which `status --check`
/// reads: a prune failing every night fills the destination unseen otherwise.
pub fn record_prune(config: &Config, job: &Job, reports: &[PruneReport]) -> Result<()> {
    let errors = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.destination)))
        .collect();
    status::record_prune(
        &JobStaging::new(config, &job.name).job_dir,
        &job.name,
        errors,
    )
}

/// `offsite backup` of several jobs, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRuns {
    /// The worst job's status.
    pub status: Status,
    /// One outcome per job run, in order.
    pub jobs: Vec<BackupOutcome>,
}

/// `offsite backup`: every job (or `job`), one after the other, until
/// `stop`. The staging folders are checked before any job runs. One job's
/// refusal (its lock is held) does not stop the others: it is that job's
/// failed outcome. A single job's refusal, and a usage or configuration
/// error, is the error.
pub async fn backup_jobs(
    config: &Config,
    job: Option<&str>,
    kind: BackupKind,
    set: Option<&str>,
    upload: bool,
    progress: Arc<dyn Progress>,
    stop: &Stop,
) -> Result<BackupRuns> {
    let jobs = config.select_jobs(job)?;
    // Refuse an overlapping staging folder before any job runs, not halfway through.
    for j in &jobs {
        crate::staging::check_overlap(config, j)?;
    }
    let mut outcomes = Vec::new();
    for j in &jobs {
        if stop.requested() {
            break;
        }
        match backup(config, j, kind, set, upload, progress.clone(), stop).await {
            Ok(o) => outcomes.push(o),
            Err(e) if jobs.len() == 1 || e.is_usage() => return Err(e),
            Err(e) => {
                progress.note(&e.to_string());
                outcomes.push(BackupOutcome {
                    report: RunReport::failed(&j.name, config.origin(j), &e),
                    earlier: Vec::new(),
                });
            }
        }
    }
    refresh_metrics(config, progress.as_ref());
    Ok(BackupRuns {
        status: worst(outcomes.iter().map(BackupOutcome::status)),
        jobs: outcomes,
    })
}

/// Rewrites the metrics file after a run; a failure is a note, never the
/// run's.
pub fn refresh_metrics(config: &Config, progress: &dyn Progress) {
    if let Err(e) = crate::schedule::metrics::refresh(config) {
        progress.note(&format!("could not write the metrics: {e}"));
    }
}

/// `offsite upload`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct UploadRuns {
    /// The worst run's status.
    pub status: Status,
    /// One report per staged backup uploaded, oldest first per job.
    pub runs: Vec<RunReport>,
}

/// `offsite upload`: the staged backups of every job (or `job`) not yet on
/// every destination, until `stop`.
pub async fn upload_jobs(
    config: &Config,
    job: Option<&str>,
    progress: &dyn Progress,
    stop: &Stop,
) -> Result<UploadRuns> {
    let mut runs = Vec::new();
    for j in config.select_jobs(job)? {
        if stop.requested() {
            break;
        }
        runs.extend(upload(config, j, progress, stop).await?);
    }
    refresh_metrics(config, progress);
    Ok(UploadRuns {
        status: worst(runs.iter().map(|r| r.status)),
        runs,
    })
}

/// `offsite prune`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRuns {
    /// `failed` when a destination's prune failed, else `ok`.
    pub status: Status,
    /// One report per job and destination with a policy.
    pub prunes: Vec<PruneReport>,
    /// A line per job and destination without a policy.
    pub skipped: Vec<String>,
    /// What went wrong around the prunes (a status not recorded).
    pub notes: Vec<String>,
}

/// `offsite prune`: every job (or `job`) on each of its destinations (or
/// `destination`), as of `now`.
pub async fn prune_jobs(
    config: &Config,
    job: Option<&str>,
    destination: Option<&str>,
    now: jiff::Timestamp,
    dry_run: bool,
) -> Result<PruneRuns> {
    let mut out = PruneRuns {
        status: Status::Ok,
        prunes: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    for j in config.select_jobs(job)? {
        let mut p = prune_job(config, j, destination, now, dry_run).await?;
        out.prunes.append(&mut p.reports);
        out.skipped.append(&mut p.skipped);
        out.notes.append(&mut p.notes);
    }
    if out.prunes.iter().any(|r| r.error.is_some()) {
        out.status = Status::Failed;
    }
    if let Err(e) = crate::schedule::metrics::refresh(config) {
        out.notes.push(format!("could not write the metrics: {e}"));
    }
    Ok(out)
}
