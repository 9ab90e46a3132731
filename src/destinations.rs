//! The configured destinations and their backends, built and wrapped the
//! same way for every kind: bandwidth limit inside, retries outside (so a
//! retried part is paced too).
//!
//! Adding a destination kind: its backend module in `offsite-backends`
//! (with its `…Settings`), one variant here with its arms in
//! `bare_backend` and `DestinationKind::secret_variables`, one arm in
//! `config::resolve_kind`.

use std::sync::Arc;

use offsite_backends::azure::{AzureBackend, AzureOptions};
use offsite_backends::ftp::{FtpBackend, FtpOptions};
use offsite_backends::glacier::{GlacierBackend, GlacierOptions};
use offsite_backends::path::PathBackend;
use offsite_backends::s3::{S3Backend, S3Options};
use offsite_backends::sftp::{SftpBackend, SftpOptions};
use offsite_backends::{Backend, Capabilities, RetryPolicy, Retrying, Throttled};

use crate::format::layout::Layout;
use crate::retention::Policy;

/// One `[destination.NAME]` of the configuration, resolved.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The `NAME` of `[destination.NAME]`.
    pub name: String,
    /// The kind, with the options its backend takes.
    pub kind: DestinationKind,
    /// Key prefix on the destination, without slashes at either end; may be empty.
    pub prefix: String,
    /// The bandwidth limit in bytes per second; None: no limit.
    pub bwlimit: Option<u64>,
    /// The size of an upload part in bytes (default 16 MiB): what a resume may
    /// have to resend.
    pub part_size: u64,
    /// How many parts are in flight at once (default 4).
    pub concurrency: usize,
    /// Retries of a request that failed for a temporary reason.
    pub retries: u32,
    /// Replaces the job's retention policy on this destination.
    pub retention: Option<Policy>,
}

/// A destination's kind, with the options its backend takes.
#[derive(Debug, Clone)]
pub enum DestinationKind {
    /// A local or mounted folder (NFS, SMB).
    Path {
        /// The folder backups are written into; it must exist.
        path: std::path::PathBuf,
    },
    /// Amazon S3 or an S3-compatible store (credentials from the AWS chain).
    S3(S3Options),
    /// An SFTP server (secrets read when connecting).
    Sftp(SftpOptions),
    /// An FTP or FTPS server (the password read when connecting).
    Ftp(FtpOptions),
    /// Azure Blob Storage (the key or SAS read when connecting).
    Azure(AzureOptions),
    /// An Amazon Glacier vault (the legacy API); its catalog is kept in the staging folder.
    Glacier(GlacierOptions),
}

impl DestinationKind {
    /// The environment variables these settings read secrets from.
    pub fn secret_variables(&self) -> Vec<&str> {
        match self {
            DestinationKind::Sftp(o) => o.secret_variables(),
            DestinationKind::Ftp(o) => o.secret_variables(),
            DestinationKind::Azure(o) => o.secret_variables(),
            DestinationKind::Path { .. } | DestinationKind::S3(_) | DestinationKind::Glacier(_) => {
                Vec::new()
            }
        }
    }
}

impl Destination {
    /// What this destination's backend can do (building one makes no request).
    pub fn capabilities(&self) -> Capabilities {
        bare_backend(self).capabilities()
    }
}

/// A destination ready to receive: its settings and its (wrapped) backend.
#[derive(Debug, Clone)]
pub struct Target {
    /// The destination's settings.
    pub config: Destination,
    /// Its backend, wrapped with its bandwidth limit, retries and checks.
    pub backend: Arc<dyn Backend>,
}

impl Target {
    /// A target for `d`, with its own retries.
    pub fn new(d: &Destination) -> Target {
        Target {
            config: d.clone(),
            backend: backend_for(d),
        }
    }

    /// Where this destination's backups are: its keys under its prefix.
    pub fn layout(&self) -> Layout<'_> {
        Layout::new(&self.config.prefix)
    }
}

/// The backend of `d`, wrapped with its bandwidth limit and its own retries
/// (see [`backend_with_retries`]).
pub fn backend_for(d: &Destination) -> Arc<dyn Backend> {
    backend_with_retries(d, d.retries)
}

/// How often `check` retries: once, for a blip. A person is waiting, and a
/// wrong host or port should fail in a second, not after the half minute a
/// backup's retries give a restarting server.
pub const CHECK_RETRIES: u32 = 1;

/// The backend of `d`'s kind, unwrapped.
fn bare_backend(d: &Destination) -> Arc<dyn Backend> {
    match &d.kind {
        DestinationKind::Path { path } => Arc::new(PathBackend::new(&d.name, path)),
        DestinationKind::S3(options) => Arc::new(S3Backend::new(&d.name, options.clone())),
        DestinationKind::Sftp(options) => Arc::new(SftpBackend::new(&d.name, options.clone())),
        DestinationKind::Ftp(options) => Arc::new(FtpBackend::new(&d.name, options.clone())),
        DestinationKind::Azure(options) => Arc::new(AzureBackend::new(&d.name, options.clone())),
        DestinationKind::Glacier(options) => {
            Arc::new(GlacierBackend::new(&d.name, options.clone()))
        }
    }
}

/// [`backend_for`], with `retries` instead of the destination's own:
/// `Checked(Retrying(Throttled(backend)))`, so a refused call or a bad key
/// is never retried and every error names the destination and the key.
pub fn backend_with_retries(d: &Destination, retries: u32) -> Arc<dyn Backend> {
    let raw = bare_backend(d);
    let paced: Arc<dyn Backend> = match d.bwlimit {
        Some(rate) => Arc::new(Throttled::new(raw, rate)),
        None => raw,
    };
    let policy = RetryPolicy {
        attempts: retries + 1,
        ..RetryPolicy::default()
    };
    let retried = Arc::new(Retrying::new(paced, policy));
    Arc::new(offsite_backends::Checked::new(retried))
}

/// `offsite glacier inventory`, as `--json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InventoryReport {
    /// The vault's destination name.
    pub destination: String,
    /// `pending` while an inventory or manifest retrieval job runs, `ok`
    /// once the catalog is whole.
    pub status: crate::outcome::Status,
    /// Where the rebuilt catalog is kept.
    pub catalog: std::path::PathBuf,
    /// What the inventory held, once it is read.
    pub count: Option<offsite_backends::glacier::catalog::RebuildCount>,
    /// What happened and what to do next, for a person.
    pub message: String,
}

/// One step of rebuilding the lost catalog of the Glacier vault `target`.
pub async fn glacier_inventory(target: &Target) -> crate::Result<InventoryReport> {
    use crate::outcome::Status;
    use offsite_backends::glacier::Rebuild;
    let destination = &target.config.name;
    let DestinationKind::Glacier(options) = &target.config.kind else {
        return Err(crate::Error::Usage(format!(
            "destination {destination:?} is not a Glacier vault; `offsite glacier inventory` is for kind = \"glacier\" only"
        )));
    };
    // The bare backend: the rebuild is a conversation with the vault's job
    // API, stepped by the operator, not an upload to retry.
    let vault = GlacierBackend::new(destination, options.clone());
    let step = vault.rebuild_catalog().await?;
    let catalog = vault.catalog_dir().join("catalog.json");
    let (status, message, count) = match step {
        Rebuild::InventoryPending { job, requested } => (
            Status::Pending,
            format!(
                "{} an inventory job on vault {:?} (job {job}); AWS takes about 3 to 5 hours: run this command again later",
                if requested {
                    "started"
                } else {
                    "still waiting for"
                },
                options.vault
            ),
            None,
        ),
        Rebuild::ManifestsPending {
            count,
            waiting,
            requested,
        } => (
            Status::Pending,
            format!(
                "catalog rebuilt in {}: {} keys in {} archives ({} not written by offsite, left alone); waiting for {waiting} manifest retrieval jobs ({requested} started now, {} tier): run this command again later",
                catalog.display(),
                count.keys,
                count.archives,
                count.foreign,
                options.retrieval_tier
            ),
            Some(count),
        ),
        Rebuild::Done { count } => (
            Status::Ok,
            format!(
                "catalog of vault {:?} is whole in {}: {} keys in {} archives ({} not written by offsite, left alone); `offsite list` reads it",
                options.vault,
                catalog.display(),
                count.keys,
                count.archives,
                count.foreign
            ),
            Some(count),
        ),
    };
    Ok(InventoryReport {
        destination: destination.clone(),
        status,
        catalog,
        count,
        message,
    })
}
