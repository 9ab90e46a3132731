//! `offsite glacier inventory`: one step of rebuilding a vault's catalog;
//! exit 4 while a job is under way, 0 once the catalog is whole.

use offsite::config::Config;
use offsite::destinations;
use offsite::error::Error;
use offsite::outcome::Exit;

use super::Out;

pub async fn run(out: &Out, cfg: &Config, destination: &str) -> Result<Exit, Error> {
    let report = destinations::glacier_inventory(&cfg.target(destination)?).await?;
    if out.json {
        out.doc(&report);
    } else {
        say!("{destination}: {}", report.message);
    }
    Ok(report.status.into())
}
