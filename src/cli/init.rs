//! `offsite init [DIR]`: a commented example configuration, never overwriting.

use std::path::{Path, PathBuf};

use offsite::config;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use serde::Serialize;

use super::Out;

#[derive(Serialize)]
struct Written {
    status: Status,
    written: PathBuf,
}

pub fn run(out: &Out, dir: Option<&Path>) -> Result<Exit, Error> {
    let dir = dir.unwrap_or(Path::new("."));
    let path = config::write_example(dir)?;
    if out.json {
        out.doc(&Written {
            status: Status::Ok,
            written: path,
        });
    } else {
        say!(
            "wrote {}; edit it, then run `offsite --config {} check`",
            path.display(),
            path.display()
        );
    }
    Ok(Status::Ok.into())
}
