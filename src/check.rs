//! `offsite check`: what a backup run will meet, found before it runs. Each
//! job's source, staging folder and encryption keys are read; each
//! destination is reached read-only (and, with a write test, written, read
//! back and cleaned up).

use std::path::PathBuf;

use bytes::Bytes;
use offsite_backends::{Backend, ErrorKind, Part};
use serde::Serialize;

use crate::config::{self, Config, Job};
use crate::destinations::{self, Destination};
use crate::error::{Error, Result};
use crate::format::crypt::{Identities, Key};
use crate::outcome::{Exit, Status};
use crate::staging;

/// `offsite check`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `ok` when every check passed, else `failed`.
    pub status: Status,
    /// The configuration file checked.
    pub config: PathBuf,
    /// One entry per job, then one per destination.
    pub checks: Vec<Check>,
    /// A job's settings are wrong (a configuration error, exit 2), not
    /// something the machine or a destination refused.
    #[serde(skip)]
    pub invalid: bool,
}

impl CheckReport {
    /// How the command ends.
    pub fn exit(&self) -> Exit {
        if self.invalid {
            Exit::Invalid
        } else {
            self.status.into()
        }
    }
}

/// One check: a job's or a destination's.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Check {
    /// A job: its source, staging folder and encryption.
    Job {
        /// The job's name.
        job: String,
        /// It passed.
        ok: bool,
        /// Why it did not.
        error: Option<String>,
    },
    /// A destination: reached, and with a write test written to.
    Destination {
        /// The destination's name.
        destination: String,
        /// It passed.
        ok: bool,
        /// Why it did not.
        error: Option<String>,
        /// What the write test found that is no failure.
        notes: Vec<String>,
    },
}

/// What a backup of `job` reads before it stages anything, read now.
fn check_job(config: &Config, job: &Job) -> Result<()> {
    staging::check_overlap(config, job)?;
    if let config::Source::Dir { path, .. } = &job.source
        && !path.is_dir()
    {
        return Err(Error::Failed(format!(
            "job {:?}: source {} is not a readable folder",
            job.name,
            path.display()
        )));
    }
    // What encryption reads at backup (and restore) time.
    if let Some(e) = &job.encryption {
        if !e.recipients.is_empty() || e.recipients_file.is_some() || e.passphrase_env.is_some() {
            Key::for_backup(e, &job.name)?;
        }
        if let Some(f) = &e.identity_file {
            Identities::from_file(f)?;
        }
    }
    Ok(())
}

/// Reaches `d` as a backup would, retrying once; with `write_test` also
/// writes to it. A destination that claims a cluster job's slots
/// (`claims_for`, `run = "one"`) is always tried with a create-if-absent
/// write, which it must refuse the second time. Answers the notes.
async fn check_destination(
    d: &Destination,
    write_test: bool,
    claims_for: Option<&str>,
) -> Result<Vec<String>> {
    let retries = d.retries.min(destinations::CHECK_RETRIES);
    let backend = destinations::backend_with_retries(d, retries);
    backend.probe().await?;
    if write_test {
        return write_probe(backend.as_ref(), &d.prefix, claims_for).await;
    }
    if let Some(job) = claims_for {
        let key = probe_key(&d.prefix, "claim");
        let exclusive = probe_exclusive(backend.as_ref(), &key).await?;
        if backend.capabilities().delete {
            backend.delete(&key).await?;
        }
        if !exclusive {
            return Err(not_exclusive(backend.as_ref(), &key, job));
        }
    }
    Ok(Vec::new())
}

/// The error of a destination that let a second create of `key` through
/// while job `job` claims its slots there.
fn not_exclusive(backend: &dyn Backend, key: &str, job: &str) -> Error {
    Error::Failed(format!(
        "destination \"{}\": a second create of {key} was accepted: it ignores create-if-absent writes (If-None-Match), so it cannot claim the slots of job {job:?} (run = \"one\"): two members would both own one; use a store that honours it, or run = \"all\"",
        backend.name()
    ))
}

/// A probe object's key under `prefix`, unique to this process.
fn probe_key(prefix: &str, what: &str) -> String {
    let name = format!(".offsite-check-{}-{what}", std::process::id());
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// Writes `key` create-only twice: whether the second write was refused.
async fn probe_exclusive(backend: &dyn Backend, key: &str) -> Result<bool> {
    backend
        .put(key, Bytes::from_static(b"offsite write test\n"))
        .await?;
    match backend.put(key, Bytes::from_static(b"second\n")).await {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(true),
        Ok(()) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The job whose slots are claimed on destination `name`: a `run = "one"`
/// cluster job whose first destination with exclusive creates it is.
fn claims_on<'a>(config: &'a Config, name: &str) -> Option<&'a str> {
    config.jobs.iter().find_map(|j| {
        let c = j.cluster.as_ref()?;
        if c.run != crate::cluster::RunBy::One {
            return None;
        }
        let first = j.destinations.iter().find(|n| {
            config
                .destinations
                .get(*n)
                .is_some_and(|d| d.capabilities().exclusive_create)
        })?;
        (first == name).then_some(j.name.as_str())
    })
}

/// Checks every job and every destination of `config`.
pub async fn check(config: &Config, write_test: bool) -> CheckReport {
    let mut checks = Vec::new();
    let mut invalid = false;
    for job in &config.jobs {
        let res = check_job(config, job);
        invalid |= matches!(res, Err(Error::Config(_)));
        checks.push(Check::Job {
            job: job.name.clone(),
            ok: res.is_ok(),
            error: res.err().map(|e| e.to_string()),
        });
    }
    for (name, d) in &config.destinations {
        let res = check_destination(d, write_test, claims_on(config, name)).await;
        checks.push(Check::Destination {
            destination: name.clone(),
            ok: res.is_ok(),
            notes: res.as_ref().map(Vec::clone).unwrap_or_default(),
            error: res.err().map(|e| e.to_string()),
        });
    }
    let failed = checks.iter().any(|c| match c {
        Check::Job { ok, .. } | Check::Destination { ok, .. } => !ok,
    });
    CheckReport {
        status: if failed { Status::Failed } else { Status::Ok },
        config: config.file.clone(),
        checks,
        invalid,
    }
}

/// `check --write-test` on one destination: writes a small object, reads it
/// back and deletes it (where the credentials may), and finds out what a
/// backup will meet there: whether a second write of the same key is
/// refused (write once: a store that ignores If-None-Match would let one
/// backup overwrite another), and whether an upload in parts can be resumed
/// (an FTP server may refuse REST; volumes then go whole). What it finds
/// that is not a failure comes back as notes.
async fn write_probe(
    backend: &dyn Backend,
    prefix: &str,
    claims_for: Option<&str>,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let key = probe_key(prefix, "put");
    let body = Bytes::from_static(b"offsite write test\n");
    if !probe_exclusive(backend, &key).await? {
        if let Some(job) = claims_for {
            if backend.capabilities().delete {
                let _ = backend.delete(&key).await;
            }
            return Err(not_exclusive(backend, &key, job));
        }
        notes.push(format!(
            "destination \"{}\": a second write of {key} was accepted: this store ignores create-only writes (If-None-Match), so write once is not enforced there; use a store that honours it",
            backend.name()
        ));
    }
    let caps = backend.capabilities();
    if !caps.read {
        // put_only: the write is what this host may do; the object stays (it is tiny).
        return Ok(notes);
    }
    let back = offsite_backends::get_bytes(backend, &key).await?;
    backend.delete(&key).await?;
    if back != body {
        return Err(Error::Integrity(format!(
            "destination \"{}\": {key}: read back different bytes than were written (a second write replaced the first)",
            backend.name()
        )));
    }
    // Resuming at an offset, where parts may be a byte long (file trees).
    if caps.multipart && caps.min_part_size <= 1 {
        notes.extend(probe_parts(backend, &probe_key(prefix, "parts")).await?);
    }
    Ok(notes)
}

/// Uploads `key` in two one-byte parts and reads it back; a server that
/// cannot resume at an offset is a note, not a failure.
async fn probe_parts(backend: &dyn Backend, key: &str) -> Result<Vec<String>> {
    let id = backend.create_upload(key, 1).await?;
    let mut receipts = Vec::new();
    for (index, byte) in [b'a', b'b'].into_iter().enumerate() {
        let part = Part {
            index: index as u32,
            offset: index as u64,
            body: Bytes::from(vec![byte]),
        };
        match backend.put_part(key, &id, part).await {
            Ok(r) => receipts.push(r),
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                let _ = backend.abort_upload(key, &id).await;
                return Ok(vec![e.to_string()]);
            }
            Err(e) => return Err(e.into()),
        }
    }
    backend.complete_upload(key, &id, &receipts).await?;
    let back = offsite_backends::get_bytes(backend, key).await?;
    backend.delete(key).await?;
    if back != b"ab" {
        return Err(Error::Integrity(format!(
            "destination \"{}\": {key}: an upload in two parts read back as {back:?}, not \"ab\"",
            backend.name()
        )));
    }
    Ok(Vec::new())
}
