//! `offsite daemon` (its log lines) and `offsite status` (last runs and next
//! scheduled runs).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use offsite::config::{Config, Job};
use offsite::error::Error;
use offsite::outcome::Status;
use offsite::schedule::cron::{JobSchedule, Task};
use offsite::schedule::daemon::{self, Event, RunLog};
use offsite::schedule::status::{self, BackupRun};
use offsite::staging::{self, JobStaging};
use offsite_backends::units::human_bytes;
use serde_json::json;

use super::{Out, stop_on_signals};

fn utc_text(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time in the schedule's own zone, as the cron expression reads it.
fn local_text(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

fn status_upper(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Partial => "PARTIAL",
        Status::Interrupted => "STOPPED",
        Status::Failed => "FAILED",
    }
}

/// One line for one run: what ran, for which slot, the result and why.
fn run_line(r: &RunLog) -> String {
    let mut line = format!("{} job {} {}", utc_text(r.started_at), r.job, r.task.word());
    if let Some(o) = &r.backup {
        let rep = &o.report;
        if let Some(id) = &rep.backup {
            line.push_str(&format!(" {id}"));
        }
    }
    line.push_str(&format!(" {} in {:.1}s", status_upper(r.status), r.seconds));
    if r.late {
        line.push_str(&format!(" (late: slot {})", utc_text(r.slot)));
    }
    let mut parts: Vec<String> = Vec::new();
    if let Some(o) = &r.backup {
        let rep = &o.report;
        if let Some(s) = &rep.staged {
            parts.push(format!(
                "{} files, {} packed into {}",
                s.files,
                human_bytes(s.bytes),
                human_bytes(s.stored_bytes)
            ));
        }
        if !o.earlier.is_empty() {
            parts.push(format!("{} earlier backup(s) resumed", o.earlier.len()));
        }
        for d in &rep.destinations {
            match &d.error {
                None => parts.push(format!("{} ok", d.name)),
                Some(e) => parts.push(format!("{} {}: {e}", d.name, status_upper(d.status))),
            }
        }
        if let Some(e) = &rep.error {
            parts.push(e.clone());
        }
        for p in &rep.prune {
            match &p.error {
                None if p.deleted.is_empty() => {}
                None => parts.push(format!("{} pruned {}", p.destination, p.deleted.len())),
                Some(e) => parts.push(format!("{} prune FAILED: {e}", p.destination)),
            }
        }
        parts.extend(rep.notes.iter().cloned());
    }
    if let Some(p) = &r.prune {
        for rep in &p.reports {
            match &rep.error {
                None => parts.push(format!(
                    "{} deleted {} of {}",
                    rep.destination,
                    rep.deleted.len(),
                    rep.decisions.len()
                )),
                Some(e) => parts.push(format!("{} FAILED: {e}", rep.destination)),
            }
        }
    }
    if let Some(e) = &r.error {
        parts.push(e.clone());
    }
    if !parts.is_empty() {
        line.push_str(": ");
        line.push_str(&parts.join("; "));
    }
    line
}

fn next_text(next: &std::collections::BTreeMap<Task, Timestamp>, tz: &TimeZone) -> String {
    if next.is_empty() {
        return "none".into();
    }
    next.iter()
        .map(|(t, at)| format!("{} {}", t.word(), local_text(*at, tz)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn daemon_cmd(out: &Out, cfg: &Config, job: Option<&str>) -> Result<i32, Error> {
    let jobs = cfg.select_jobs(job)?;
    let scheduled: Vec<&Job> = jobs
        .iter()
        .copied()
        .filter(|j| j.schedule.is_some())
        .collect();
    if scheduled.is_empty() {
        return Err(Error::Config(format!(
            "{}: no job{} has a schedule; add schedule = {{ full = \"0 2 * * *\" }} (and optionally incremental, prune) to a [[job]]",
            cfg.file.display(),
            job.map(|j| format!(" named {j:?}")).unwrap_or_default()
        )));
    }
    for j in &scheduled {
        staging::check_overlap(cfg, j)?;
    }
    let stop = stop_on_signals();
    let json = out.json;
    let zones: std::collections::HashMap<String, TimeZone> = scheduled
        .iter()
        .filter_map(|j| Some((j.name.clone(), j.schedule.as_ref()?.timezone.clone())))
        .collect();
    let say = |v: serde_json::Value, text: String| {
        if json {
            say!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            say!("{text}");
        }
    };
    let unscheduled: Vec<&str> = jobs
        .iter()
        .filter(|j| j.schedule.is_none())
        .map(|j| j.name.as_str())
        .collect();
    say(
        json!({"event": "started", "time": Timestamp::now(), "pid": std::process::id(), "unscheduled": unscheduled}),
        format!(
            "{} daemon started (pid {}) for {} job(s){}",
            utc_text(Timestamp::now()),
            std::process::id(),
            scheduled.len(),
            if unscheduled.is_empty() {
                String::new()
            } else {
                format!("; without a schedule, not run: {}", unscheduled.join(", "))
            }
        ),
    );
    let log = |e: Event| {
        let v = serde_json::to_value(&e).unwrap_or_default();
        let text = match &e {
            Event::Watching { job, next } => format!(
                "{} job {job} scheduled: next {}",
                utc_text(Timestamp::now()),
                next_text(next, zones.get(job).unwrap_or(&TimeZone::UTC))
            ),
            Event::Skipped {
                job,
                task,
                slot,
                reason,
            } => format!(
                "{} job {job} {} slot {} skipped: {reason}",
                utc_text(Timestamp::now()),
                task.word(),
                utc_text(*slot)
            ),
            Event::Ran(r) => run_line(r),
            Event::Waiting { job, until } => match until {
                Some(at) => format!(
                    "{} job {job} waits: next task due at {}",
                    utc_text(Timestamp::now()),
                    utc_text(*at)
                ),
                None => format!(
                    "{} job {job} waits: no task is due again",
                    utc_text(Timestamp::now())
                ),
            },
            Event::Warning { job, message } => format!(
                "{} job {job} warning: {message}",
                utc_text(Timestamp::now())
            ),
        };
        say(v, text);
    };
    daemon::run(cfg, &scheduled, &stop, &log).await?;
    say(
        json!({"event": "stopped", "time": Timestamp::now()}),
        format!(
            "{} daemon stopped on request; staged and journaled work resumes on the next run",
            utc_text(Timestamp::now())
        ),
    );
    Ok(0)
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

/// The next slot of each scheduled task after `now`, as JSON and as text.
fn next_runs(s: &JobSchedule, now: Timestamp) -> (serde_json::Value, String) {
    let mut doc = serde_json::Map::new();
    let mut text = Vec::new();
    for (task, at) in s.next_runs(now) {
        let cron = s
            .tasks()
            .find(|(t, _)| *t == task)
            .map(|(_, c)| c.as_str().to_string())
            .unwrap_or_default();
        doc.insert(task.word().into(), json!({"cron": cron, "next": at}));
        text.push(match at {
            Some(at) => format!("{} {} ({cron})", task.word(), local_text(at, &s.timezone)),
            None => format!("{} never ({cron})", task.word()),
        });
    }
    (serde_json::Value::Object(doc), text.join(", "))
}

/// `status`: each job's last runs, destinations and next runs; with
/// `check`, also its health (exit 1 when any job has a problem, one line
/// per problem). The top-level JSON status is the worst job's.
pub fn status_cmd(out: &Out, cfg: &Config, job: Option<&str>, check: bool) -> Result<i32, Error> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let daemon_pid = daemon::running_daemon(&cfg.staging.dir);
    let now = Timestamp::now();
    let mut worst = "ok";
    for j in cfg.select_jobs(job)? {
        let staging = JobStaging::new(cfg, &j.name);
        let s = status::read(&staging.job_dir, &j.name)?;
        let staged = staging.staged_backups()?;
        let next = j.schedule.as_ref().map(|sch| next_runs(sch, now));
        let max_age = j.max_age_at(now);
        let found = status::health(&j.name, &j.destinations, &s, max_age, now);
        let job_status = job_health_word(&found);
        worst = worse(worst, job_status);
        if !out.json {
            if s.last_run.is_none() {
                say!("job {}: never run", j.name);
            } else {
                say!("job {}:", j.name);
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
            if !staged.is_empty() {
                say!("  staged locally: {}", staged.join(", "));
            }
            match &next {
                None => say!("  schedule: none (the daemon does not run this job)"),
                Some((_, text)) => say!(
                    "  next scheduled: {text}{}",
                    if daemon_pid.is_some() {
                        ""
                    } else {
                        " (no daemon is running)"
                    }
                ),
            }
        }
        docs.push(json!({
            "job": j.name,
            "health": job_status,
            "max_age_seconds": max_age.map(|d| d.as_secs()),
            "problems": found,
            "status": s,
            "staged": staged,
            "schedule": next.map(|(doc, _)| doc),
        }));
        problems.extend(found);
    }
    if out.json {
        out.doc(&json!({"status": worst, "host": cfg.host_id, "daemon": {"running": daemon_pid.is_some(), "pid": daemon_pid}, "problems": problems, "jobs": docs}));
    } else {
        match &daemon_pid {
            Some(pid) => say!("daemon: running (pid {pid})"),
            None => say!("daemon: not running"),
        }
        if check {
            for p in &problems {
                match &p.destination {
                    Some(d) => say!("PROBLEM: job {} on {d}: {}: {}", p.job, p.status, p.why),
                    None => say!("PROBLEM: job {}: {}: {}", p.job, p.status, p.why),
                }
            }
            if problems.is_empty() {
                say!(
                    "check ok: every job's last run succeeded and every destination's newest backup is recent enough"
                );
            }
        }
    }
    Ok(if check && !problems.is_empty() { 1 } else { 0 })
}

/// A job's health in one word: `ok`, or the worst of its problems.
fn job_health_word(problems: &[status::Problem]) -> &'static str {
    problems
        .iter()
        .map(|p| match p.status.as_str() {
            "failed" | "interrupted" => "failed",
            // The backups are there; what should remove the old ones is not working.
            "partial" | "prune_failed" => "partial",
            _ => "stale",
        })
        .fold("ok", worse)
}

/// The worse of two health words: failed, partial, stale, ok.
fn worse(a: &'static str, b: &'static str) -> &'static str {
    let rank = |w: &str| match w {
        "failed" => 3,
        "partial" => 2,
        "stale" => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}
