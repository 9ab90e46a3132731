//! `offsite restore`: a backup into a folder, every hash checked.

use std::path::Path;

use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use offsite::remote::catalog::Which;
use offsite::remote::restore::{self, RestoreReport};
use offsite_backends::units::human_bytes;
use serde::Serialize;

use super::Out;

/// What the command line asks to restore, and where.
pub struct Request<'a> {
    pub job: &'a str,
    pub destination: Option<&'a str>,
    pub which: Which<'a>,
    pub to: &'a Path,
    pub force: bool,
    pub identity: Option<&'a Path>,
}

#[derive(Serialize)]
struct Restored<'a> {
    status: Status,
    restore: &'a RestoreReport,
}

pub async fn run(out: &Out, cfg: &Config, req: Request<'_>) -> Result<Exit, Error> {
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
    Ok(Status::Ok.into())
}
