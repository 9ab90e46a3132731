//! `offsite backup`: stage a backup of each job and upload it; and the
//! report of one run, which `upload` prints too.

use std::sync::Arc;

use offsite::config::Config;
use offsite::error::Error;
use offsite::format::manifest::BackupKind;
use offsite::job::{self, RunReport};
use offsite::outcome::{Exit, Status};
use offsite_backends::units::human_bytes;

use super::progress::TermProgress;
use super::{Out, stop_on_signals};

/// What the command line asks `backup` for.
pub struct Request<'a> {
    pub job: Option<&'a str>,
    pub kind: BackupKind,
    pub set: Option<&'a str>,
    pub upload: bool,
}

pub async fn run(
    out: &Out,
    cfg: &Config,
    req: Request<'_>,
    progress: Arc<TermProgress>,
) -> Result<Exit, Error> {
    let stop = stop_on_signals();
    let runs =
        job::backup_jobs(cfg, req.job, req.kind, req.set, req.upload, progress, &stop).await?;
    if out.json {
        match &runs.jobs[..] {
            [one] => out.doc(one),
            _ => out.doc(&runs),
        }
        return Ok(runs.status.into());
    }
    for o in &runs.jobs {
        for e in &o.earlier {
            print_run(e, out.verbose);
            say!("{}", final_line(e));
        }
        print_run(&o.report, out.verbose);
    }
    // The last lines are the verdicts: a partial run never ends on a success line.
    for o in &runs.jobs {
        say!("{}", final_line(&o.report));
    }
    Ok(runs.status.into())
}

pub(super) fn print_run(r: &RunReport, verbose: bool) {
    let id = r.backup.as_deref().unwrap_or("-");
    if let Some(s) = &r.staged {
        say!(
            "job {}: backup {id}: {} files, {} packed into {} in {:.1}s",
            r.job,
            s.files,
            human_bytes(s.bytes),
            human_bytes(s.stored_bytes),
            s.seconds
        );
    }
    if !r.changed.is_empty() {
        say!(
            "  warning: {} file(s) changed while read: {}",
            r.changed.len(),
            r.changed.join(", ")
        );
    }
    // Notes went to stderr as they came (the progress reporter); the
    // commands' error output is kept here, and shown whole with -v as it came.
    for c in &r.stderr {
        if !verbose {
            say!("  {} said on stderr: {}", c.command, last_lines(&c.tail, 3));
        }
    }
    for u in &r.unreadable {
        say!("  unreadable, left out: {u}");
    }
    for d in &r.destinations {
        match &d.error {
            None => say!(
                "  {}: ok, sent {} (already there: {}) in {:.1}s",
                d.name,
                human_bytes(d.bytes_sent),
                human_bytes(d.bytes_resumed),
                d.seconds
            ),
            Some(e) => say!(
                "  {}: FAILED after sending {}: {e}",
                d.name,
                human_bytes(d.bytes_sent)
            ),
        }
        for n in &d.notes {
            say!("  {}: note: {n}", d.name);
        }
    }
    if let Some(e) = &r.error {
        say!("  error: {e}");
    }
    for p in &r.prune {
        let deleted = p.deleted.len();
        match &p.error {
            None => say!(
                "  {}: retention kept {}, deleted {deleted}",
                p.destination,
                p.decisions.len() - deleted
            ),
            Some(e) => say!(
                "  {}: retention FAILED (the backup itself is fine): {e}",
                p.destination
            ),
        }
    }
}

/// The last `n` lines of `text`, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

pub(super) fn final_line(r: &RunReport) -> String {
    let id = r.backup.as_deref().unwrap_or("-");
    let n = r.destinations.len();
    let ok = r
        .destinations
        .iter()
        .filter(|d| d.status == Status::Ok)
        .count();
    match r.status {
        Status::Ok if n == 0 => format!(
            "job {}: backup {id} staged (not uploaded); run `offsite upload --job {}`",
            r.job, r.job
        ),
        Status::Ok => format!("job {}: backup {id} ok on all {n} destination(s)", r.job),
        Status::Partial => format!(
            "job {}: PARTIAL: backup {id} is on {ok} of {n} destinations and stays staged; fix the failures above, then run `offsite upload --job {}`",
            r.job, r.job
        ),
        Status::Failed if r.staged.is_some() => format!(
            "job {}: FAILED: backup {id} is staged but on no destination; fix the failures above, then run `offsite upload --job {}`",
            r.job, r.job
        ),
        Status::Interrupted if r.staged.is_some() => format!(
            "job {}: STOPPED on request: backup {id} stays staged; `offsite upload --job {}` resumes it",
            r.job, r.job
        ),
        Status::Interrupted => format!(
            "job {}: STOPPED on request before anything was staged",
            r.job
        ),
        Status::Skipped => format!(
            "job {}: skipped: {}",
            r.job,
            r.notes.last().map_or("nothing to do here", String::as_str)
        ),
        Status::Failed | Status::Pending => format!("job {}: FAILED: nothing was shipped", r.job),
    }
}
