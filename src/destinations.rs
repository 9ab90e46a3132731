//! Builds each configured destination's backend, wrapped the same way for
//! every kind: bandwidth limit inside, retries outside (so a retried part is
//! paced too).

use std::sync::Arc;

use offsite_backends::azure::AzureBackend;
use offsite_backends::ftp::FtpBackend;
use offsite_backends::glacier::GlacierBackend;
use offsite_backends::path::PathBackend;
use offsite_backends::s3::S3Backend;
use offsite_backends::sftp::SftpBackend;
use offsite_backends::{Backend, RetryPolicy, Retrying, Throttled};

use crate::config::{Config, Destination, DestinationKind, Job};
use crate::error::{Error, Result};
use crate::format::layout::Layout;

/// A destination ready to receive: its settings and its (wrapped) backend.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: Destination,
    pub backend: Arc<dyn Backend>,
}

impl Target {
    /// Where this destination's backups are: its keys under its prefix.
    pub fn layout(&self) -> Layout<'_> {
        Layout::new(&self.config.prefix)
    }
}

pub fn backend_for(d: &Destination) -> Arc<dyn Backend> {
    backend_with_retries(d, d.retries)
}

/// How often `check` retries: once, for a blip. A person is waiting, and a
/// wrong host or port should fail in a second, not after the half minute a
/// backup's retries give a restarting server.
pub const CHECK_RETRIES: u32 = 1;

/// [`backend_for`], with `retries` instead of the destination's own.
pub fn backend_with_retries(d: &Destination, retries: u32) -> Arc<dyn Backend> {
    let raw: Arc<dyn Backend> = match &d.kind {
        DestinationKind::Path { path } => Arc::new(PathBackend::new(&d.name, path)),
        DestinationKind::S3(options) => Arc::new(S3Backend::new(&d.name, options.clone())),
        DestinationKind::Sftp(options) => Arc::new(SftpBackend::new(&d.name, options.clone())),
        DestinationKind::Ftp(options) => Arc::new(FtpBackend::new(&d.name, options.clone())),
        DestinationKind::Azure(options) => Arc::new(AzureBackend::new(&d.name, options.clone())),
        DestinationKind::Glacier(options) => {
            Arc::new(GlacierBackend::new(&d.name, options.clone()))
        }
    };
    let paced: Arc<dyn Backend> = match d.bwlimit {
        Some(rate) => Arc::new(Throttled::new(raw, rate)),
        None => raw,
    };
    let policy = RetryPolicy {
        attempts: retries + 1,
        ..RetryPolicy::default()
    };
    Arc::new(Retrying::new(paced, policy))
}

pub fn target(config: &Config, name: &str) -> Result<Target> {
    let d = config.destinations.get(name).ok_or_else(|| {
        Error::Usage(format!(
            "no destination named {name:?} in {} (destinations: {})",
            config.file.display(),
            config
                .destinations
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(Target {
        config: d.clone(),
        backend: backend_for(d),
    })
}

/// The job's destinations, or only `only` (which must be one of them).
pub fn job_targets(config: &Config, job: &Job, only: Option<&str>) -> Result<Vec<Target>> {
    if let Some(o) = only
        && !job.destinations.iter().any(|d| d == o)
    {
        return Err(Error::Usage(format!(
            "destination {o:?} is not one of job {:?}'s destinations ({})",
            job.name,
            job.destinations.join(", ")
        )));
    }
    job.destinations
        .iter()
        .filter(|d| only.is_none_or(|o| o == d.as_str()))
        .map(|d| target(config, d))
        .collect()
}
