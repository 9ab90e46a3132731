//! `offsite status`: each job's last runs, destinations, staged backups and
//! next scheduled runs; with `--check`, its health for monitoring.

use jiff::Timestamp;
use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use offsite::schedule::report::{self, JobReport, StatusReport};
use offsite::schedule::status::BackupRun;
use offsite_backends::units::human_bytes;

use super::{Out, local_text};

/// `status`: exit 1 with `check` when any job has a problem (one line per
/// problem); the top-level JSON status is the worst job's.
pub async fn run(out: &Out, cfg: &Config, job: Option<&str>, check: bool) -> Result<Exit, Error> {
    let report = report::report(cfg, job, Timestamp::now()).await?;
    if check {
        if let Err(e) = offsite::schedule::metrics::refresh(cfg) {
            warn!("offsite: could not write the metrics: {e}");
        }
        for n in report::notify_stale(cfg, &report).await {
            warn!("offsite: {n}");
        }
    }
    let status = if check && !report.problems.is_empty() {
        Status::Failed
    } else {
        Status::Ok
    };
    if out.json {
        out.doc(&report);
        return Ok(status.into());
    }
    for j in &report.jobs {
        print_job(j, &report);
    }
    match &report.daemon.pid {
        Some(pid) => say!("daemon: running (pid {pid})"),
        None => say!("daemon: not running"),
    }
    if check {
        for p in &report.problems {
            match &p.destination {
                Some(d) => say!("PROBLEM: job {} on {d}: {}: {}", p.job, p.status, p.why),
                None => say!("PROBLEM: job {}: {}: {}", p.job, p.status, p.why),
            }
        }
        if report.problems.is_empty() {
            say!(
                "check ok: every job's last run succeeded and every destination's newest backup is recent enough"
            );
        }
    }
    Ok(status.into())
}

fn print_job(j: &JobReport, report: &StatusReport) {
    let s = &j.status;
    if s.last_run.is_none() {
        say!("job {}: never run", j.job);
    } else {
        say!("job {}:", j.job);
    }
    for (what, run) in [("full", &s.last_full), ("incremental", &s.last_incremental)] {
        match run {
            None => say!("  last {what}: none"),
            Some(r) => say!("  last {what}: {}", run_text(r)),
        }
    }
    if let Some(r) = &s.last_run {
        say!("  last run: {}", r.describe());
    }
    if let Some(p) = &s.last_prune {
        say!(
            "  last prune: {} at {}{}",
            p.status,
            p.finished_at,
            if p.errors.is_empty() {
                String::new()
            } else {
                format!(": {}", p.errors.join("; "))
            }
        );
    }
    for d in &j.destinations {
        match s.destinations.get(d) {
            None => say!("  {d}: never uploaded to"),
            Some(ds) => say!(
                "  {d}: {} ({} at {}); last success: {}{}",
                ds.status,
                ds.backup.as_deref().unwrap_or("-"),
                ds.finished_at,
                ds.last_success_at.as_deref().unwrap_or("never"),
                ds.error
                    .as_ref()
                    .map(|e| format!("; error: {e}"))
                    .unwrap_or_default()
            ),
        }
    }
    if !j.staged.is_empty() {
        say!("  staged locally: {}", j.staged.join(", "));
    }
    for d in &j.sets {
        match &d.error {
            Some(e) => say!("  {}: sets cannot be listed: {e}", d.destination),
            None => {
                for v in &d.sets {
                    say!("  {}: {}", d.destination, v.describe());
                }
            }
        }
    }
    match (&j.schedule, &j.timezone) {
        (Some(schedule), Some(tz)) => {
            let text: Vec<String> = schedule
                .iter()
                .map(|(task, n)| match n.next {
                    Some(at) => format!("{task} {} ({})", local_text(at, tz), n.cron),
                    None => format!("{task} never ({})", n.cron),
                })
                .collect();
            say!(
                "  next scheduled: {}{}",
                text.join(", "),
                if report.daemon.running {
                    ""
                } else {
                    " (no daemon is running)"
                }
            );
        }
        _ => say!("  schedule: none (the daemon does not run this job)"),
    }
}

fn run_text(r: &BackupRun) -> String {
    let mut t = format!(
        "{} {} at {} in {:.1}s",
        r.backup.as_deref().unwrap_or("-"),
        r.status,
        r.finished_at,
        r.seconds
    );
    if let (Some(b), Some(s)) = (r.bytes, r.stored_bytes) {
        t.push_str(&format!(
            ", {} packed into {}",
            human_bytes(b),
            human_bytes(s)
        ));
    }
    if let Some(e) = &r.error {
        t.push_str(&format!(": {e}"));
    }
    t
}
