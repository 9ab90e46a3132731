//! `offsite keygen FILE`: a new age identity in FILE; the public key on stdout.

use std::path::{Path, PathBuf};

use offsite::error::Error;
use offsite::outcome::{Exit, Status};
use serde::Serialize;

use super::Out;

#[derive(Serialize)]
struct Made<'a> {
    status: Status,
    identity_file: &'a Path,
    recipient: String,
}

pub fn run(out: &Out, file: &PathBuf) -> Result<Exit, Error> {
    let recipient = offsite::format::crypt::keygen(file)?;
    if out.json {
        out.doc(&Made {
            status: Status::Ok,
            identity_file: file,
            recipient,
        });
    } else {
        say!("{recipient}");
        warn!(
            "wrote the identity to {} (mode 0600). Put the public key above in the job's encryption = {{ recipients = [...] }} on the database host; keep the identity file on the restore host and a copy offline: without it no backup encrypted to this key can be read.",
            file.display()
        );
    }
    Ok(Status::Ok.into())
}
