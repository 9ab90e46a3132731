//! `offsite upload`: upload or resume staged backups not yet everywhere.

use std::sync::Arc;

use offsite::config::Config;
use offsite::error::Error;
use offsite::job;
use offsite::outcome::Exit;

use super::backup::{final_line, print_run};
use super::progress::TermProgress;
use super::{Out, stop_on_signals};

pub async fn run(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    progress: Arc<TermProgress>,
) -> Result<Exit, Error> {
    let stop = stop_on_signals();
    let uploads = job::upload_jobs(cfg, job, progress.as_ref(), &stop).await?;
    if out.json {
        out.doc(&uploads);
        return Ok(uploads.status.into());
    }
    if uploads.runs.is_empty() {
        say!("nothing to upload: every staged backup is on all its destinations");
    }
    for r in &uploads.runs {
        print_run(r, out.verbose);
    }
    for r in &uploads.runs {
        say!("{}", final_line(r));
    }
    Ok(uploads.status.into())
}
