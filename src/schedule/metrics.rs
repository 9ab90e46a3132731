//! The metrics a monitoring stack reads: every job's status record, in
//! node_exporter's textfile format (`metrics_file`), replaced atomically
//! (temporary file, fsync, rename) after each run and each `status
//! --check`, so the collector never reads half a file. Names follow
//! Prometheus' conventions (`offsite_…`, `_seconds`, `_bytes`,
//! `_timestamp_seconds`); every metric is a gauge.
//!
//! An alert-ready pair: `offsite_job_problems > 0` (what `status --check`
//! reports) and `offsite_destination_newest_backup_age_seconds` against a
//! threshold of your own.

use std::fmt::Write as _;
use std::path::Path;

use jiff::Timestamp;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::schedule::status::{self, BackupRun, JobStatus};
use crate::staging::JobStaging;

/// One metric family: its name, help, and samples (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn render(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", self.name, labels.join(","));
        }
    }
}

/// A label value as the text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds since the epoch of an RFC 3339 time.
fn seconds_of(t: &str) -> Option<f64> {
    t.parse::<Timestamp>().ok().map(|t| t.as_second() as f64)
}

/// The metrics of every job of `config` as of `now`, in the text format.
pub fn render(config: &Config, now: Timestamp) -> Result<String> {
    let mut last_ok = Family::new(
        "offsite_last_run_success",
        "Whether the job's last run succeeded (1) or not (0): failed, partial or stopped.",
    );
    let mut last_at = Family::new(
        "offsite_last_run_timestamp_seconds",
        "When the job's last run ended.",
    );
    let mut last_took = Family::new(
        "offsite_last_run_duration_seconds",
        "How long the job's last backup run took.",
    );
    let mut success_at = Family::new(
        "offsite_last_success_timestamp_seconds",
        "When the job's last successful backup of this kind ended.",
    );
    let mut staged = Family::new(
        "offsite_last_backup_staged_bytes",
        "The bytes the job's last successful backup of this kind read from its source.",
    );
    let mut stored = Family::new(
        "offsite_last_backup_stored_bytes",
        "The bytes its volumes take, compressed (and encrypted).",
    );
    let mut dest_ok = Family::new(
        "offsite_destination_last_upload_success",
        "Whether the latest upload to the destination succeeded (1) or not (0).",
    );
    let mut dest_at = Family::new(
        "offsite_destination_last_success_timestamp_seconds",
        "When the newest backup the destination holds finished uploading.",
    );
    let mut sent = Family::new(
        "offsite_destination_last_upload_sent_bytes",
        "The bytes the latest upload to the destination sent.",
    );
    let mut age = Family::new(
        "offsite_destination_newest_backup_age_seconds",
        "How old the newest backup the destination holds is, from when it was made.",
    );
    let mut problems = Family::new(
        "offsite_job_problems",
        "How many problems `offsite status --check` finds with the job (0: healthy).",
    );
    for job in &config.jobs {
        let record = status::read(&JobStaging::new(config, &job.name).job_dir, &job.name)?;
        let j = || vec![("job", job.name.clone())];
        if let Some(r) = &record.last_run {
            let ok = matches!(r.status.as_str(), "ok" | "skipped");
            last_ok.add(j(), if ok { 1.0 } else { 0.0 });
            if let Some(t) = seconds_of(&r.finished_at) {
                last_at.add(j(), t);
            }
            if let Some(s) = r.seconds {
                last_took.add(j(), s);
            }
        }
        for (kind, run) in [
            ("full", &record.last_full),
            ("incremental", &record.last_incremental),
        ] {
            let Some(run) = run else { continue };
            let labels = || vec![("job", job.name.clone()), ("kind", kind.to_string())];
            backup_run(run, labels, &mut success_at, &mut staged, &mut stored);
        }
        destinations(
            job.name.as_str(),
            &job.destinations,
            &record,
            now,
            &mut [&mut dest_ok, &mut dest_at, &mut sent, &mut age],
        );
        let found = status::health(
            &job.name,
            &job.destinations,
            &record,
            job.max_age_at(now),
            now,
        );
        problems.add(j(), found.len() as f64);
    }
    let mut out = String::new();
    for f in [
        &last_ok,
        &last_at,
        &last_took,
        &success_at,
        &staged,
        &stored,
        &dest_ok,
        &dest_at,
        &sent,
        &age,
        &problems,
    ] {
        f.render(&mut out);
    }
    Ok(out)
}

/// A successful backup run's samples.
fn backup_run(
    run: &BackupRun,
    labels: impl Fn() -> Vec<(&'static str, String)>,
    success_at: &mut Family,
    staged: &mut Family,
    stored: &mut Family,
) {
    if let Some(t) = seconds_of(&run.finished_at) {
        success_at.add(labels(), t);
    }
    if let Some(b) = run.bytes {
        staged.add(labels(), b as f64);
    }
    if let Some(b) = run.stored_bytes {
        stored.add(labels(), b as f64);
    }
}

/// Each destination's samples: [upload ok, last success time, bytes sent,
/// newest backup's age].
fn destinations(
    job: &str,
    names: &[String],
    record: &JobStatus,
    now: Timestamp,
    families: &mut [&mut Family; 4],
) {
    for d in names {
        let Some(ds) = record.destinations.get(d) else {
            continue;
        };
        let labels = || vec![("job", job.to_string()), ("destination", d.clone())];
        families[0].add(labels(), if ds.status == "ok" { 1.0 } else { 0.0 });
        if let Some(t) = ds.last_success_at.as_deref().and_then(seconds_of) {
            families[1].add(labels(), t);
            // A backup's age is from when it was made (its id says).
            let made = ds
                .last_success_backup
                .as_deref()
                .and_then(crate::retention::time_of_id)
                .map_or(t, |m| (m.as_second() as f64).min(t));
            families[3].add(labels(), (now.as_second() as f64 - made).max(0.0));
        }
        if let Some(b) = ds.bytes_sent {
            families[2].add(labels(), b as f64);
        }
    }
}

/// Writes the metrics to `config`'s `metrics_file`, atomically; nothing
/// when it has none.
pub fn refresh(config: &Config) -> Result<()> {
    let Some(path) = &config.metrics_file else {
        return Ok(());
    };
    let text = render(config, Timestamp::now())?;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n.to_string_lossy().into_owned()),
        _ => {
            return Err(Error::Config(format!(
                "metrics_file {} is not a file's path",
                path.display()
            )));
        }
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    crate::staging::write_file_atomic(dir, &name, text.as_bytes()).map_err(|e| match e {
        Error::Io { context, source } => Error::Io {
            context: format!("metrics_file: {context}"),
            source,
        },
        e => e,
    })
}
