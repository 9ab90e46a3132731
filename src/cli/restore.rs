//! `offsite restore`: a backup into a folder, every hash checked.

use std::path::Path;

use offsite::cluster::SetStatus;
use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use offsite::remote::catalog::Which;
use offsite::remote::restore::{self, RestoreReport, SetRestore};
use offsite_backends::units::human_bytes;
use serde::Serialize;

use super::Out;

/// What the command line asks to restore, and where.
pub struct Request<'a> {
    pub job: &'a str,
    pub destination: Option<&'a str>,
    pub which: Which<'a>,
    pub member: Option<&'a str>,
    pub allow_partial: bool,
    pub to: &'a Path,
    pub force: bool,
    pub identity: Option<&'a Path>,
}

#[derive(Serialize)]
struct Restored<'a> {
    status: Status,
    restore: &'a RestoreReport,
}

#[derive(Serialize)]
struct SetRestored<'a> {
    status: Status,
    #[serde(flatten)]
    restored: &'a SetRestore,
}

pub async fn run(out: &Out, cfg: &Config, req: Request<'_>) -> Result<Exit, Error> {
    if let Some(set) = req.which.set {
        return run_set(out, cfg, &req, set).await;
    }
    let r = restore::restore_job(
        cfg,
        req.job,
        req.destination,
        req.which,
        req.to,
        req.force,
        req.identity,
    )
    .await?;
    if out.json {
        out.doc(&Restored {
            status: Status::Ok,
            restore: &r,
        });
    } else {
        print_restored(&r);
    }
    Ok(Status::Ok.into())
}

fn print_restored(r: &RestoreReport) {
    say!(
        "restored backup {} of job {} (made by {}) from {} into {}: {} files, {}; every hash checked",
        r.backup,
        r.job,
        r.host.as_deref().unwrap_or("a host it does not name"),
        r.destination,
        r.to.display(),
        r.files,
        human_bytes(r.bytes)
    );
    for w in &r.warnings {
        say!("warning: {w}");
    }
}

/// `restore --set`: a cluster set's members; partial (exit 3) when
/// `--allow-partial` restored a set that is not complete.
async fn run_set(out: &Out, cfg: &Config, req: &Request<'_>, set: &str) -> Result<Exit, Error> {
    let request = restore::SetRequest {
        job: req.job,
        destination: req.destination,
        set,
        member: req.member,
        allow_partial: req.allow_partial,
        to: req.to,
        force: req.force,
        identity: req.identity,
    };
    let r = restore::restore_set(cfg, request).await?;
    let status = if req.member.is_none() && r.set.status != SetStatus::Complete {
        Status::Partial
    } else {
        Status::Ok
    };
    if out.json {
        out.doc(&SetRestored {
            status,
            restored: &r,
        });
    } else {
        for one in &r.restores {
            print_restored(one);
        }
        if status == Status::Partial {
            say!("PARTIAL: {}", r.set.describe());
        }
    }
    Ok(status.into())
}
