//! The record of each job's last run, per destination, kept in
//! `staging/<job>/status.json` and shown by `offsite status`.
//!
//! Written atomically after every backup or upload run (temp file, fsync,
//! rename), so a crash leaves the previous record, never half of one.

use crate::stage::{read_json_state, write_json_state};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
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
    let mut s: JobStatus = read_json_state(job_dir, STATUS_NAME, "the next run writes a new one")?;
    s.job = job.to_string();
    Ok(s)
}

pub fn write(job_dir: &Path, status: &JobStatus) -> Result<()> {
    write_json_state(job_dir, STATUS_NAME, status)
}
