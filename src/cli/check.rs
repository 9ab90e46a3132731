//! `offsite check`: the configuration, and every destination reached.

use offsite::check::{self, Check};
use offsite::config::Config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};

use super::Out;

pub async fn run(out: &Out, cfg: &Config, write_test: bool) -> Result<Exit, Error> {
    let report = check::check(cfg, write_test).await;
    if out.json {
        out.doc(&report);
        return Ok(report.exit());
    }
    say!("configuration {}: valid", cfg.file.display());
    for c in &report.checks {
        let (what, error, notes) = match c {
            Check::Job { job, error, .. } => (format!("job {job:?}"), error, &[][..]),
            Check::Destination {
                destination,
                error,
                notes,
                ..
            } => (format!("destination {destination:?}"), error, &notes[..]),
        };
        match error {
            None => say!("  {what}: ok"),
            Some(e) => say!("  {what}: FAILED: {e}"),
        }
        for n in notes {
            say!("    note: {n}");
        }
    }
    say!(
        "{}",
        if report.status == Status::Ok {
            "check ok"
        } else {
            "check FAILED"
        }
    );
    Ok(report.exit())
}
