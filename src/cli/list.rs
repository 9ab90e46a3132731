//! `offsite list`: the complete backups on each destination, oldest first,
//! and the incomplete and damaged ones.

use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::Exit;
use offsite::remote::catalog::{self, JobListing, ListedBackup};
use offsite_backends::units::human_bytes;

use super::Out;

pub async fn run(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
) -> Result<Exit, Error> {
    let report = catalog::list_jobs(cfg, job, destination).await?;
    if out.json {
        out.doc(&report);
        return Ok(report.status.into());
    }
    for l in &report.listings {
        match l {
            JobListing::Listed {
                job,
                destination,
                backups,
                incomplete,
                damaged,
            } => {
                say!(
                    "job {job} on {destination}: {} complete backup(s)",
                    backups.len()
                );
                for b in backups {
                    say!("  {}", backup_line(b));
                }
                for i in incomplete {
                    say!("  {i}  incomplete (no manifest: an upload in progress or interrupted)");
                }
                for d in damaged {
                    say!("  {}  DAMAGED: {}", d.id, d.error);
                }
            }
            JobListing::Sets {
                job,
                destination,
                sets,
            } => {
                say!("job {job} on {destination}: {} set(s)", sets.len());
                for v in sets {
                    say!("  {}", v.describe());
                }
            }
            JobListing::Failed {
                job,
                destination,
                error,
            } => say!("job {job} on {destination}: FAILED: {error}"),
        }
    }
    Ok(report.status.into())
}

fn backup_line(b: &ListedBackup) -> String {
    let kind = match &b.parent {
        Some(p) => format!("incr on {p}"),
        None => "full".to_string(),
    };
    format!(
        "{}  {kind}  host {}  created {}  {} files  {} -> {}{}",
        b.id,
        b.host.as_deref().unwrap_or("(not recorded)"),
        b.created_at,
        b.files,
        human_bytes(b.bytes),
        human_bytes(b.stored_bytes),
        b.degenerate
            .as_ref()
            .map(|d| format!("  DEGENERATE SOURCE: {d}"))
            .unwrap_or_default()
    )
}
