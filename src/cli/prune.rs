//! `offsite prune`: apply the retention policy, every decision with its reason.

use offsite::config::Config;
use offsite::error::Error;
use offsite::job;
use offsite::outcome::{Exit, Status};
use offsite::remote::prune::{self, PruneReport};
use offsite::retention::Action;

use super::Out;

pub async fn run(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
    dry_run: bool,
    now: Option<&str>,
) -> Result<Exit, Error> {
    let now = match now {
        Some(t) => prune::parse_now(t)?,
        None => jiff::Timestamp::now(),
    };
    let runs = job::prune_jobs(cfg, job, destination, now, dry_run).await?;
    for n in &runs.notes {
        warn!("note: {n}");
    }
    if out.json {
        out.doc(&runs);
        return Ok(runs.status.into());
    }
    for r in &runs.prunes {
        print_prune(r);
    }
    for s in &runs.skipped {
        say!("{s}");
    }
    say!(
        "{}",
        if runs.status == Status::Ok {
            "prune ok"
        } else {
            "prune FAILED"
        }
    );
    Ok(runs.status.into())
}

fn print_prune(p: &PruneReport) {
    let verb = if p.dry_run { "would" } else { "will" };
    say!(
        "job {} on {}: prune{}",
        p.job,
        p.destination,
        if p.dry_run {
            " (dry run: nothing deleted)"
        } else {
            ""
        }
    );
    for d in &p.decisions {
        let what = match d.action {
            Action::Keep => "keep  ",
            Action::Delete => "delete",
        };
        let done = if d.action == Action::Delete && p.deleted.contains(&d.id) {
            " (deleted)"
        } else {
            ""
        };
        say!(
            "  {what} {}{}: {}{done}",
            d.id,
            if d.complete { "" } else { " [incomplete]" },
            d.reasons.join("; ")
        );
    }
    for r in &p.retained {
        say!(
            "  retained {}: the policy deletes it, but S3 Object Lock holds it ({}); a prune after that deletes it",
            r.id,
            r.until
        );
    }
    for x in &p.extended {
        say!(
            "  lock of {} extended to {}: kept backups still build on it",
            x.id,
            x.until
        );
    }
    for l in &p.leftovers {
        say!(
            "  {} {l}: left by an interrupted upload, older than incomplete_grace",
            if p.dry_run { "would delete" } else { "deleted" }
        );
    }
    for o in &p.others {
        say!(
            "  other {}{}: made by host {}; left alone (this job prunes its own host's backups: retention origins = \"own\")",
            o.id,
            if o.complete { "" } else { " [incomplete]" },
            o.host
        );
    }
    let deletes = p
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .count();
    match &p.error {
        Some(e) => say!(
            "  FAILED after deleting {} of {deletes}: {e}",
            p.deleted.len()
        ),
        None if !p.retained.is_empty() && !p.dry_run => say!(
            "  deleted {} of {}; {} retained by Object Lock",
            p.deleted.len(),
            p.decisions.len(),
            p.retained.len()
        ),
        None if p.dry_run => say!("  {verb} delete {deletes} of {}", p.decisions.len()),
        None => say!("  deleted {} of {}", p.deleted.len(), p.decisions.len()),
    }
}
