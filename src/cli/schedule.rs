//! `offsite daemon` (its log lines) and `offsite status` (last runs and next
//! scheduled runs).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use offsite::config::{Config, Job};
use offsite::daemon::{self, Event, RunLog};
use offsite::error::Error;
use offsite::schedule::{JobSchedule, Task};
use offsite::size::human_bytes;
use offsite::stage::{self, JobStaging};
use offsite::status::{self, BackupRun};
use offsite::upload::Status;
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
        stage::check_overlap(cfg, j)?;
    }
    let stop = stop_on_signals();
    let json = out.json;
    let zones: std::collections::HashMap<String, TimeZone> = scheduled
        .iter()
        .filter_map(|j| Some((j.name.clone(), j.schedule.as_ref()?.timezone.clone())))
        .collect();
    let say = |v: serde_json::Value, text: String| {
        if json {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            println!("{text}");
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

pub fn status_cmd(out: &Out, cfg: &Config, job: Option<&str>) -> Result<i32, Error> {
    let mut docs = Vec::new();
    let daemon_pid = daemon::running_daemon(&cfg.staging.dir);
    let now = Timestamp::now();
    for j in cfg.select_jobs(job)? {
        let staging = JobStaging::new(cfg, &j.name);
        let s = status::read(&staging.job_dir, &j.name)?;
        let staged = staging.staged_backups()?;
        let next = j.schedule.as_ref().map(|sch| next_runs(sch, now));
        if !out.json {
            if s.last_run.is_none() {
                println!("job {}: never run", j.name);
            } else {
                println!("job {}:", j.name);
            }
            for (what, run) in [("full", &s.last_full), ("incremental", &s.last_incremental)] {
                match run {
                    None => println!("  last {what}: none"),
                    Some(r) => println!("  last {what}: {}", run_text(r)),
                }
            }
            if let Some(r) = &s.last_run {
                println!(
                    "  last run: {} {} at {}: {}{}",
                    r.command,
                    r.backup.as_deref().unwrap_or("-"),
                    r.finished_at,
                    r.status,
                    r.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            for d in &j.destinations {
                match s.destinations.get(d) {
                    None => println!("  {d}: never uploaded to"),
                    Some(ds) => println!(
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
                println!("  staged locally: {}", staged.join(", "));
            }
            match &next {
                None => println!("  schedule: none (the daemon does not run this job)"),
                Some((_, text)) => println!(
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
            "status": s,
            "staged": staged,
            "schedule": next.map(|(doc, _)| doc),
        }));
    }
    if out.json {
        out.doc(&json!({"status": "ok", "daemon": {"running": daemon_pid.is_some(), "pid": daemon_pid}, "jobs": docs}));
    } else {
        match &daemon_pid {
            Some(pid) => println!("daemon: running (pid {pid})"),
            None => println!("daemon: not running"),
        }
    }
    Ok(0)
}
