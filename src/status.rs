//! The record of each job's last run, per destination, kept in
//! `staging/<job>/status.json` and shown by `offsite status`.
//!
//! Written atomically after every backup or upload run (temp file, fsync,
//! rename), so a crash leaves the previous record, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::upload::Status;

pub const STATUS_NAME: &str = "status.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub last_run: Option<LastRun>,
    #[serde(default)]
    pub last_full: Option<BackupRun>,
    #[serde(default)]
    pub last_incremental: Option<BackupRun>,
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRun {
    pub command: String,
    pub backup: Option<String>,
    pub status: String,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One backup run (stage and upload), as `status` shows the last full and
/// the last incremental.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRun {
    pub backup: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    /// Files and bytes in the backup, and what they packed into (absent when
    /// the run failed before staging finished).
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub status: String,
    pub backup: Option<String>,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub last_success_at: Option<String>,
    pub last_success_backup: Option<String>,
}

pub fn status_path(job_dir: &Path) -> PathBuf {
    job_dir.join(STATUS_NAME)
}

pub fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Partial => "partial",
        Status::Interrupted => "interrupted",
        Status::Failed => "failed",
    }
}

pub fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

/// The job's status, or an empty one if it never ran.
pub fn read(job_dir: &Path, job: &str) -> Result<JobStatus> {
    let path = status_path(job_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::Failed(format!(
                "{}: not a valid status file ({e}); delete it, the next run writes a new one",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobStatus {
            job: job.to_string(),
            ..Default::default()
        }),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

pub fn write(job_dir: &Path, status: &JobStatus) -> Result<()> {
    fs::create_dir_all(job_dir)
        .map_err(|e| Error::io(format!("cannot create {}", job_dir.display()), e))?;
    let mut bytes =
        serde_json::to_vec_pretty(status).map_err(|e| Error::Failed(format!("status: {e}")))?;
    bytes.push(b'\n');
    crate::stage::write_file_atomic(job_dir, STATUS_NAME, &bytes)
}
