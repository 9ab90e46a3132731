//! `offsite policy s3`: prints the IAM policy or lifecycle configuration as
//! JSON (with or without --json: the document is the output), notes on stderr.

use offsite::config::Config;
use offsite::error::Error;
use offsite::iam::{self, Document, Role};
use offsite::outcome::{Exit, Status};

use super::Out;
use super::args::PolicyRole;

pub fn run(
    out: &Out,
    cfg: &Config,
    destination: &str,
    role: Option<PolicyRole>,
    expire_after: Option<u32>,
    abort_after: u32,
) -> Result<Exit, Error> {
    let document = match role {
        Some(PolicyRole::Uploader) => Document::Role(Role::Uploader),
        Some(PolicyRole::Pruner) => Document::Role(Role::Pruner),
        Some(PolicyRole::Restorer) => Document::Role(Role::Restorer),
        Some(PolicyRole::Lifecycle) => Document::Lifecycle,
        None => Document::All,
    };
    let (doc, notes) = iam::s3_document(cfg, destination, document, expire_after, abort_after)?;
    out.doc(&doc);
    for n in &notes {
        warn!("note: {n}");
    }
    Ok(Status::Ok.into())
}
