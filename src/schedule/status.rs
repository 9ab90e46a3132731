//! The record of each job's last run, per destination, kept in
//! `staging/<job>/status.json` and shown by `offsite status`.
//!
//! Written atomically after every backup, upload or prune run (temp file,
//! fsync, rename), so a crash leaves the previous record, never half of one.
//! `last_run` is the latest run whatever came of it; `last_full` and
//! `last_incremental` are the latest that succeeded, so a failed night
//! never hides the backup there is.
//!
//! [`health`] is what `offsite status --check` reports: a pure function of
//! the record, the job's `max_age` and the time.

use crate::staging::{read_json_state, write_json_state};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The file in a job's staging folder that holds its [`JobStatus`].
pub const STATUS_NAME: &str = "status.json";

/// The record of a job's runs, as `status.json` holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job's name (the caller's, whatever the file says).
    pub job: String,
    /// The host that keeps this record (`host_id`).
    #[serde(default)]
    pub host: Option<String>,
    /// The latest backup or upload run, whatever came of it; None before the
    /// first.
    pub last_run: Option<LastRun>,
    /// The latest full backup that succeeded.
    #[serde(default)]
    pub last_full: Option<BackupRun>,
    /// The latest incremental backup that succeeded.
    #[serde(default)]
    pub last_incremental: Option<BackupRun>,
    /// Each destination's latest upload, by destination name.
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationStatus>,
    /// The last prune (after a backup, `prune`, or the daemon's), dry runs aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune: Option<LastPrune>,
}

/// How the last prune ended: `ok`, or `failed` with each destination's error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastPrune {
    /// `ok`, or `failed` when a destination's prune failed.
    pub status: String,
    /// When it ended, in RFC 3339 (UTC, to the second).
    pub finished_at: String,
    /// One line per destination whose prune failed (`destination: error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Records a prune's outcome in the job's status: `errors` holds one line
/// per destination whose prune failed (empty: it went well).
pub fn record_prune(job_dir: &Path, job: &str, errors: Vec<String>) -> Result<()> {
    let mut s = read(job_dir, job)?;
    s.last_prune = Some(LastPrune {
        status: if errors.is_empty() { "ok" } else { "failed" }.to_string(),
        finished_at: now_rfc3339(),
        errors,
    });
    write(job_dir, &s)
}

/// The latest backup or upload run of a job, whatever came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRun {
    /// `backup` or `upload`.
    pub command: String,
    /// The backup's id; None when the run failed before one was staged.
    pub backup: Option<String>,
    /// How it ended: `ok`, `partial`, `interrupted`, `failed` or `skipped`.
    pub status: String,
    /// When it ended, in RFC 3339 (UTC, to the second).
    pub finished_at: String,
    /// How long it took, in seconds; absent for an `upload` and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Why the run failed before any upload; None otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LastRun {
    /// `backup 20261201T021500Z-full-db1 at 2026-12-01T02:16:40Z: failed: why`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} at {}: {}{}",
            self.command,
            self.backup
                .as_deref()
                .unwrap_or("before a backup was staged"),
            self.finished_at,
            self.status,
            self.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )
    }
}

/// One backup run (stage and upload), as `status` shows the last full and
/// the last incremental.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRun {
    /// The backup's id.
    pub backup: Option<String>,
    /// When the run started, in RFC 3339 (UTC, to the second); for an `upload`,
    /// which records no start, when it ended.
    pub started_at: String,
    /// When it ended, in RFC 3339 (UTC, to the second).
    pub finished_at: String,
    /// How long it took, in seconds (0 for an `upload`, which records no
    /// start).
    pub seconds: f64,
    /// Files packed into the backup's volumes; None in an older record of a
    /// run that failed before staging finished.
    pub files: Option<u64>,
    /// Their bytes, before compression; None as `files` is.
    pub bytes: Option<u64>,
    /// What the backup's volumes take as stored, in bytes; None as `files` is.
    pub stored_bytes: Option<u64>,
    /// How it ended: `ok` in what this version writes, which records only runs
    /// that succeeded.
    pub status: String,
    /// Why the run failed, in older records that kept failed runs; None
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The latest upload to one destination, and the newest backup it holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// How the upload ended: `ok`, `failed` or `interrupted`.
    pub status: String,
    /// The backup it was of.
    pub backup: Option<String>,
    /// When it ended, in RFC 3339 (UTC, to the second).
    pub finished_at: String,
    /// Why it failed; None when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the newest backup the destination holds finished uploading; None
    /// when no backup has reached it.
    pub last_success_at: Option<String>,
    /// The id of the newest backup that reached the destination.
    pub last_success_backup: Option<String>,
    /// The bytes the latest upload sent (every part the destination
    /// acknowledged); absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
}

/// Where the status of the job whose staging folder is `job_dir` is kept.
pub fn status_path(job_dir: &Path) -> PathBuf {
    job_dir.join(STATUS_NAME)
}

/// The time now in RFC 3339, UTC, to the second (`2026-12-01T02:16:40Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The job's status, or an empty one if it never ran.
pub fn read(job_dir: &Path, job: &str) -> Result<JobStatus> {
    let mut s: JobStatus = read_json_state(job_dir, STATUS_NAME, "the next run writes a new one")?;
    s.job = job.to_string();
    Ok(s)
}

/// Writes the job's status into `job_dir`, atomically.
pub fn write(job_dir: &Path, status: &JobStatus) -> Result<()> {
    write_json_state(job_dir, STATUS_NAME, status)
}

/// Something `status --check` finds wrong with a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The job's name.
    pub job: String,
    /// The destination it concerns, when it is one destination's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// `failed`, `partial`, `interrupted`, `prune_failed`, `stale`, `never`,
    /// or `partial_set` (a cluster job's newest judged set is partial).
    pub status: String,
    /// What is wrong and what it means, for people to read.
    pub why: String,
}

fn parse_time(t: &str) -> Option<jiff::Timestamp> {
    t.parse().ok()
}

fn age_text(d: std::time::Duration) -> String {
    let h = d.as_secs() / 3600;
    if h >= 48 {
        format!("{} days", h / 24)
    } else if h >= 1 {
        format!("{h} hours")
    } else {
        format!("{} minutes", d.as_secs() / 60)
    }
}

/// What is wrong with a job, as of `now`: its last run failed, was partial
/// or was stopped; its last prune failed; or a destination has no backup,
/// or its newest complete backup is older than `max_age` (`None`:
/// destinations are not checked). At most one problem per destination;
/// none means healthy.
pub fn health(
    job: &str,
    destinations: &[String],
    s: &JobStatus,
    max_age: Option<std::time::Duration>,
    now: jiff::Timestamp,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let job_problem = |status: &str, why: String| Problem {
        job: job.to_string(),
        destination: None,
        status: status.to_string(),
        why,
    };
    match &s.last_run {
        None => out.push(job_problem(
            "never",
            "no run is recorded here yet: run `offsite backup` (or start the daemon)".into(),
        )),
        Some(r) if r.status != "ok" => out.push(job_problem(
            &r.status,
            format!("the last run ended {}: {}", r.status, r.describe()),
        )),
        Some(_) => {}
    }
    if let Some(p) = &s.last_prune
        && p.status != "ok"
    {
        out.push(job_problem(
            "prune_failed",
            format!(
                "the last prune at {} failed, so old backups are piling up: {}",
                p.finished_at,
                p.errors.join("; ")
            ),
        ));
    }
    let Some(max_age) = max_age else {
        return out;
    };
    for d in destinations {
        let last = s.destinations.get(d).and_then(|x| {
            let at = x.last_success_at.as_deref()?;
            Some((at, x.last_success_backup.clone()))
        });
        let problem = match last {
            None => Some((
                "never".to_string(),
                "no backup has reached it yet".to_string(),
            )),
            Some((at, backup)) => match parse_time(at) {
                None => Some((
                    "stale".into(),
                    format!("its last success time {at:?} cannot be read"),
                )),
                Some(uploaded) => {
                    // A backup's age is from when it was made (its id says),
                    // not from when a late upload finished.
                    let t = backup
                        .as_deref()
                        .and_then(crate::retention::time_of_id)
                        .map_or(uploaded, |made| made.min(uploaded));
                    let elapsed = crate::retention::elapsed(now, t);
                    let age = elapsed.unsigned_abs();
                    (elapsed.is_positive() && age > max_age).then(|| {
                        (
                            "stale".to_string(),
                            format!(
                                "its newest complete backup ({}, uploaded {at}) is {} old, more than max_age ({})",
                                backup.as_deref().unwrap_or("-"),
                                age_text(age),
                                age_text(max_age)
                            ),
                        )
                    })
                }
            },
        };
        if let Some((status, why)) = problem {
            out.push(Problem {
                job: job.to_string(),
                destination: Some(d.clone()),
                status,
                why,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_to(dests: &[(&str, &str)]) -> JobStatus {
        let mut s = JobStatus {
            last_run: Some(LastRun {
                command: "backup".into(),
                backup: Some("b".into()),
                status: "ok".into(),
                finished_at: "2026-12-01T02:10:00Z".into(),
                seconds: None,
                error: None,
            }),
            ..JobStatus::default()
        };
        for (d, at) in dests {
            s.destinations.insert(
                d.to_string(),
                DestinationStatus {
                    status: "ok".into(),
                    last_success_at: Some(at.to_string()),
                    last_success_backup: Some("b".into()),
                    ..DestinationStatus::default()
                },
            );
        }
        s
    }

    #[test]
    fn health_names_each_failed_run_and_each_stale_destination() {
        let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().expect("time");
        let day = std::time::Duration::from_secs(86_400);
        let dests = vec!["nas".to_string(), "s3".to_string()];
        type Row<'a> = (
            &'a str,
            JobStatus,
            Option<std::time::Duration>,
            Vec<(&'a str, Option<&'a str>)>,
        );
        let table: Vec<Row> = vec![
            (
                "fresh",
                ok_to(&[
                    ("nas", "2026-12-02T02:10:00Z"),
                    ("s3", "2026-12-02T02:10:00Z"),
                ]),
                Some(day),
                vec![],
            ),
            (
                "one stale",
                ok_to(&[
                    ("nas", "2026-12-02T02:10:00Z"),
                    ("s3", "2026-11-30T02:10:00Z"),
                ]),
                Some(day),
                vec![("stale", Some("s3"))],
            ),
            (
                "never reached",
                ok_to(&[("nas", "2026-12-02T02:10:00Z")]),
                Some(day),
                vec![("never", Some("s3"))],
            ),
            ("age not checked", ok_to(&[]), None, vec![]),
            (
                "never run",
                JobStatus::default(),
                None,
                vec![("never", None)],
            ),
            (
                "an old backup uploaded late is as old as it was made",
                {
                    let mut s = ok_to(&[("nas", "2026-12-02T11:00:00Z")]);
                    if let Some(d) = s.destinations.get_mut("nas") {
                        d.last_success_backup = Some("20261125T021000Z-full-db1".into());
                    }
                    s
                },
                Some(day),
                vec![("stale", Some("nas")), ("never", Some("s3"))],
            ),
            (
                "prune failed",
                {
                    let mut s = ok_to(&[]);
                    s.last_prune = Some(LastPrune {
                        status: "failed".into(),
                        finished_at: "2026-12-02T02:11:00Z".into(),
                        errors: vec!["nas: damaged manifest".into()],
                    });
                    s
                },
                None,
                vec![("prune_failed", None)],
            ),
            (
                "last run failed",
                {
                    let mut s = ok_to(&[
                        ("nas", "2026-12-02T02:10:00Z"),
                        ("s3", "2026-12-02T02:10:00Z"),
                    ]);
                    if let Some(r) = s.last_run.as_mut() {
                        r.status = "failed".into();
                        r.error = Some("boom".into());
                    }
                    s
                },
                Some(day),
                vec![("failed", None)],
            ),
            (
                "last run partial",
                {
                    let mut s = ok_to(&[
                        ("nas", "2026-12-02T02:10:00Z"),
                        ("s3", "2026-12-02T02:10:00Z"),
                    ]);
                    if let Some(r) = s.last_run.as_mut() {
                        r.status = "partial".into();
                    }
                    s
                },
                None,
                vec![("partial", None)],
            ),
        ];
        for (what, s, max_age, want) in table {
            let got: Vec<(String, Option<String>)> = health("db", &dests, &s, max_age, now)
                .into_iter()
                .map(|p| (p.status, p.destination))
                .collect();
            let want: Vec<(String, Option<String>)> = want
                .into_iter()
                .map(|(st, d)| (st.to_string(), d.map(str::to_string)))
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }
}
