//! `offsite verify`: download backups and check every hash.

use std::path::Path;

use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use offsite::remote::catalog::Which;
use offsite::remote::verify::{self, VerifyReport};
use offsite_backends::units::human_bytes;

use super::Out;

pub async fn run(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
    which: Which<'_>,
    identity: Option<&Path>,
) -> Result<Exit, Error> {
    let run = verify::verify_jobs(cfg, job, destination, which, identity).await?;
    if out.json {
        out.doc(&run);
        return Ok(run.status.into());
    }
    for r in &run.verified {
        for line in report_lines(r) {
            say!("{line}");
        }
    }
    for v in &run.sets {
        say!("{}", v.describe());
    }
    for e in &run.errors {
        say!("FAILED: {e}");
    }
    for p in &run.pending {
        say!("PENDING: {p}");
    }
    if run.verified.is_empty() && run.errors.is_empty() && run.pending.is_empty() {
        say!("no complete backups to verify");
    }
    say!(
        "{}",
        match run.status {
            Status::Failed => "verify FAILED",
            Status::Pending =>
                "verify PENDING: cold storage is retrieving volumes; run the same command again later",
            Status::Partial =>
                "verify PARTIAL: the backups there are sound, but a set is missing members (named above)",
            _ => "verify ok",
        }
    );
    Ok(run.status.into())
}

fn report_lines(r: &VerifyReport) -> Vec<String> {
    let what = format!("job {} on {}: backup {}", r.job, r.destination, r.backup);
    if r.ok && !r.contents_checked {
        vec![format!(
            "{what} ok as stored: {} encrypted volume(s), {} checked (sizes and hashes; give --identity to check the files inside)",
            r.volumes,
            human_bytes(r.bytes)
        )]
    } else if r.ok {
        vec![format!(
            "{what} ok: {} volume(s), {} files, {} checked",
            r.volumes,
            r.files,
            human_bytes(r.bytes)
        )]
    } else {
        std::iter::once(format!("{what} DAMAGED:"))
            .chain(r.problems.iter().map(|p| format!("  - {p}")))
            .collect()
    }
}
