//! What `offsite status` shows: each job's record, what is staged, its
//! next scheduled runs and its health, and whether a daemon runs.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::cluster::{Cluster, SetStatus, SetVerdict};
use crate::config::{Config, Job};
use crate::error::Result;
use crate::remote::catalog;
use crate::schedule::cron::JobSchedule;
use crate::schedule::daemon;
use crate::schedule::status::{self, JobStatus, Problem};
use crate::staging::JobStaging;

/// A job's health in one word, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Its last run succeeded and its backups are recent enough.
    Ok,
    /// A destination's newest backup is older than `max_age`, or none ever arrived.
    Stale,
    /// Its backups are there, but the last run was partial or its prune failed.
    Partial,
    /// Its last run failed or was stopped.
    Failed,
}

impl Health {
    /// The health `problems` amount to: `ok`, or the worst of them.
    pub fn of(problems: &[Problem]) -> Health {
        problems
            .iter()
            .map(|p| match p.status.as_str() {
                "failed" | "interrupted" => Health::Failed,
                // The backups are there; what should remove the old ones is not working.
                "partial" | "prune_failed" | "partial_set" => Health::Partial,
                _ => Health::Stale,
            })
            .max()
            .unwrap_or(Health::Ok)
    }
}

/// `offsite status`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The worst job's health.
    pub status: Health,
    /// This host (`host_id`).
    pub host: String,
    /// Whether a daemon runs for this staging folder.
    pub daemon: DaemonState,
    /// Every job's problems, in job order.
    pub problems: Vec<Problem>,
    /// One report per job.
    pub jobs: Vec<JobReport>,
}

/// Whether a daemon holds the staging folder's daemon lock.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonState {
    /// A daemon runs.
    pub running: bool,
    /// Its process id, as its lock file records it.
    pub pid: Option<String>,
}

/// One job in `offsite status`.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The job's name.
    pub job: String,
    /// Its health.
    pub health: Health,
    /// The job's `max_age` now (`None`: age is not checked).
    pub max_age_seconds: Option<u64>,
    /// What is wrong with it.
    pub problems: Vec<Problem>,
    /// Its status record.
    pub status: JobStatus,
    /// The backups staged here, not yet on every destination.
    pub staged: Vec<String>,
    /// Its scheduled tasks and when each runs next (`None`: no schedule).
    pub schedule: Option<BTreeMap<&'static str, NextRun>>,
    /// The schedule's time zone, for showing the next runs as its cron reads them.
    #[serde(skip)]
    pub timezone: Option<TimeZone>,
    /// The job's destinations, in configuration order.
    #[serde(skip)]
    pub destinations: Vec<String>,
    /// A cluster job's newest sets on each destination it can list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<DestinationSets>,
}

/// A cluster job's newest sets on one destination, judged from their markers.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationSets {
    /// The destination.
    pub destination: String,
    /// Its newest sets ([`SETS_SHOWN`] at most), newest first.
    pub sets: Vec<SetVerdict>,
    /// Why they could not be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How many of a cluster job's newest sets `status` shows per destination.
pub const SETS_SHOWN: usize = 5;

/// A scheduled task's cron and its next slot (`None`: it never runs again).
#[derive(Debug, Clone, Serialize)]
pub struct NextRun {
    /// The cron expression, as configured.
    pub cron: String,
    /// Its next slot after now.
    pub next: Option<Timestamp>,
}

/// The next slot of each scheduled task after `now`, by task word.
fn next_runs(s: &JobSchedule, now: Timestamp) -> BTreeMap<&'static str, NextRun> {
    s.next_runs(now)
        .into_iter()
        .map(|(task, next)| {
            let cron = s
                .tasks()
                .find(|(t, _)| *t == task)
                .map(|(_, c)| c.as_str().to_string())
                .unwrap_or_default();
            (task.word(), NextRun { cron, next })
        })
        .collect()
}

/// A cluster job's newest sets on each destination that can be listed
/// (a put-only one cannot), and a problem for each destination whose
/// newest set no longer in progress is partial.
async fn cluster_sets(
    config: &Config,
    job: &Job,
    cluster: &Cluster,
    now: Timestamp,
) -> Result<(Vec<DestinationSets>, Vec<Problem>)> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for t in config.job_targets(job, None)? {
        if !t.backend.capabilities().list {
            continue;
        }
        let mut shown = DestinationSets {
            destination: t.config.name.clone(),
            sets: Vec::new(),
            error: None,
        };
        match catalog::list_sets(&t, &job.name, cluster, now).await {
            Ok(mut sets) => {
                sets.reverse();
                if let Some(v) = sets.iter().find(|v| v.status != SetStatus::InProgress)
                    && v.status == SetStatus::Partial
                {
                    problems.push(Problem {
                        job: job.name.clone(),
                        destination: Some(t.config.name.clone()),
                        status: "partial_set".into(),
                        why: v.describe(),
                    });
                }
                sets.truncate(SETS_SHOWN);
                shown.sets = sets;
            }
            Err(e) => shown.error = Some(e.to_string()),
        }
        out.push(shown);
    }
    Ok((out, problems))
}

/// One job's report as of `now`.
async fn job_report(config: &Config, job: &Job, now: Timestamp) -> Result<JobReport> {
    let staging = JobStaging::new(config, &job.name);
    let record = status::read(&staging.job_dir, &job.name)?;
    let max_age = job.max_age_at(now);
    let mut problems = status::health(&job.name, &job.destinations, &record, max_age, now);
    let sets = match &job.cluster {
        Some(c) => {
            let (sets, found) = cluster_sets(config, job, c, now).await?;
            problems.extend(found);
            sets
        }
        None => Vec::new(),
    };
    Ok(JobReport {
        job: job.name.clone(),
        health: Health::of(&problems),
        max_age_seconds: max_age.map(|d| d.as_secs()),
        problems,
        status: record,
        staged: staging.staged_backups()?,
        schedule: job.schedule.as_ref().map(|s| next_runs(s, now)),
        timezone: job.schedule.as_ref().map(|s| s.timezone.clone()),
        destinations: job.destinations.clone(),
        sets,
    })
}

/// `offsite status` of every job (or only `job`) as of `now`. Local
/// records only, but for a cluster job, whose sets are read from its
/// destinations' indexes.
pub async fn report(config: &Config, job: Option<&str>, now: Timestamp) -> Result<StatusReport> {
    let mut jobs = Vec::new();
    for j in config.select_jobs(job)? {
        jobs.push(job_report(config, j, now).await?);
    }
    let pid = daemon::running_daemon(&config.staging.dir);
    Ok(StatusReport {
        status: jobs.iter().map(|j| j.health).max().unwrap_or(Health::Ok),
        host: config.host_id.clone(),
        daemon: DaemonState {
            running: pid.is_some(),
            pid,
        },
        problems: jobs.iter().flat_map(|j| j.problems.clone()).collect(),
        jobs,
    })
}

/// `status --check`'s notifications: each job with a `notify` whose
/// problems include a stale destination (or none that a backup reached)
/// is sent a `stale` one, with its report. Answers what failed.
pub async fn notify_stale(config: &Config, report: &StatusReport) -> Vec<String> {
    let mut notes = Vec::new();
    for shown in &report.jobs {
        let Some(job) = config.jobs.iter().find(|j| j.name == shown.job) else {
            continue;
        };
        let Some(notify) = &job.notify else { continue };
        let stale: Vec<&Problem> = shown
            .problems
            .iter()
            .filter(|p| matches!(p.status.as_str(), "stale" | "never"))
            .collect();
        if stale.is_empty() {
            continue;
        }
        let summary = stale
            .iter()
            .map(|p| match &p.destination {
                Some(d) => format!("offsite job {} on {d}: {}: {}", p.job, p.status, p.why),
                None => format!("offsite job {}: {}: {}", p.job, p.status, p.why),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let message = crate::notify::Message {
            job: &job.name,
            event: crate::notify::Event::Stale,
            report: &serde_json::to_string(shown).unwrap_or_default(),
            summary: &summary,
            backup: None,
            dir: &job.workdir,
        };
        notes.extend(notify.finished(&message, &config.secret_variables()).await);
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_the_worst_problem() {
        let p = |status: &str| Problem {
            job: "db".into(),
            destination: None,
            status: status.into(),
            why: String::new(),
        };
        let table: &[(&[&str], Health)] = &[
            (&[], Health::Ok),
            (&["stale", "never"], Health::Stale),
            (&["stale", "prune_failed"], Health::Partial),
            (&["partial", "interrupted", "stale"], Health::Failed),
            (&["failed"], Health::Failed),
        ];
        for (given, want) in table {
            let problems: Vec<Problem> = given.iter().map(|s| p(s)).collect();
            assert_eq!(Health::of(&problems), *want, "{given:?}");
        }
    }
}
