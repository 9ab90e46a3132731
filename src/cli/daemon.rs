//! `offsite daemon`: runs the schedules in the foreground, one log line
//! (or JSON line) per event.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use offsite::schedule::cron::Task;
use offsite::schedule::daemon::{self, Event, RunLog};
use offsite_backends::units::human_bytes;

use super::{Out, local_text, stop_on_signals, utc_text};

pub async fn run(out: &Out, cfg: &Config, job: Option<&str>) -> Result<Exit, Error> {
    let stop = stop_on_signals();
    let zones: std::collections::HashMap<String, TimeZone> = cfg
        .jobs
        .iter()
        .filter_map(|j| Some((j.name.clone(), j.schedule.as_ref()?.timezone.clone())))
        .collect();
    let json = out.json;
    let log = |e: Event| {
        if json {
            say!("{}", serde_json::to_string(&e).unwrap_or_default());
        } else {
            say!("{}", event_line(&e, &zones));
        }
    };
    daemon::serve(cfg, job, &stop, &log).await?;
    Ok(Status::Ok.into())
}

/// One log line for one event.
fn event_line(e: &Event, zones: &std::collections::HashMap<String, TimeZone>) -> String {
    let now = utc_text(Timestamp::now());
    match e {
        Event::Started {
            pid,
            jobs,
            unscheduled,
            ..
        } => format!(
            "{now} daemon started (pid {pid}) for {} job(s){}",
            jobs.len(),
            if unscheduled.is_empty() {
                String::new()
            } else {
                format!("; without a schedule, not run: {}", unscheduled.join(", "))
            }
        ),
        Event::Watching { job, next } => format!(
            "{now} job {job} scheduled: next {}",
            next_text(next, zones.get(job).unwrap_or(&TimeZone::UTC))
        ),
        Event::Skipped {
            job,
            task,
            slot,
            reason,
        } => format!(
            "{now} job {job} {} slot {} skipped: {reason}",
            task.word(),
            utc_text(*slot)
        ),
        Event::Ran(r) => run_line(r),
        Event::Waiting { job, until } => match until {
            Some(at) => format!("{now} job {job} waits: next task due at {}", utc_text(*at)),
            None => format!("{now} job {job} waits: no task is due again"),
        },
        Event::Warning { job, message } => format!("{now} job {job} warning: {message}"),
        Event::Stopped { .. } => format!(
            "{now} daemon stopped on request; staged and journaled work resumes on the next run"
        ),
    }
}

fn status_upper(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Partial => "PARTIAL",
        Status::Interrupted => "STOPPED",
        Status::Failed => "FAILED",
        Status::Pending => "PENDING",
        Status::Skipped => "skipped",
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
