//! The Amazon Glacier vault API (the legacy one, not the S3 Glacier storage
//! classes), on `aws-sdk-glacier`, for deployments that already keep their
//! backups in a vault. AWS took no new vault customers after December 2025;
//! new deployments should use `kind = "s3"` with a Glacier storage class.
//!
//! How the trait maps to a vault:
//! - **One archive per object.** `put_file` (a volume) and `put` (a
//!   manifest) are each one UploadArchive, with the SHA-256 tree hash
//!   computed here ([`crate::treehash`]) and the key in the archive
//!   description (`offsite:v1:f:<key>`, `offsite:v1:s:<key>`,
//!   percent-encoded where Glacier's printable-ASCII rule needs it). The
//!   vault names the archive; [`catalog`] remembers which id holds which key.
//!   An archive is at most 4 GiB (`volume_size` is capped to that), and the
//!   unit of resume is the archive: a volume cut off by a crash is sent again
//!   whole. Glacier's multipart API is not used: the test server (moto) does
//!   not have it, and untested resume code has no place in a backup tool.
//! - **Streaming upload, signed here.** The SDK's UploadArchive computes the
//!   tree hash itself and, to do so, loads the whole body into memory
//!   (`GlacierTreeHashHeaderInterceptor`), which would hold a 4 GiB volume in
//!   RAM. So the volume is read twice: once to hash it (tree hash and the
//!   linear SHA-256 SigV4 needs), then streamed in a request signed with
//!   `aws-sigv4` (the SDK's signer) and sent with reqwest. Every other call
//!   goes through the SDK.
//! - **The catalog** lives in the staging folder (`catalog_dir`) and is
//!   shipped to the vault as an archive of its own after each run that
//!   changed it ([`Backend::flush`]); the older copy is then deleted.
//!   `list` reads only the catalog. Manifests are small, and a copy of each
//!   is kept beside the catalog, so `list` and `prune` never wait hours for a
//!   retrieval job. [`GlacierBackend::rebuild_catalog`] rebuilds the catalog
//!   from an inventory job when it is lost.
//! - **Reading** needs an archive-retrieval job (`retrieval_tier`):
//!   `prepare_read` starts one and answers Pending until it has succeeded;
//!   `get` downloads the job's output and checks its tree hash against the
//!   catalog's. Jobs are remembered in the catalog, so the next run finds
//!   them. Job outputs stay available for 24 hours.
//! - `delete` is DeleteArchive of every archive holding the key.
//!
//! Retries are the caller's ([`crate::Retrying`]); the SDK's are off.

mod settings;

pub use settings::GlacierSettings;

pub mod catalog;

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_glacier::Client;
use aws_sdk_glacier::config::http::HttpResponse;
use aws_sdk_glacier::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glacier::types::{JobParameters, StatusCode};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use self::catalog::{Archive, Catalog, Described, Inventory, Job, RebuildCount, Store};
use crate::aws::{StaticCredentials, failure, load_config, no_credentials, no_retries};
use crate::error::causes;
use crate::treehash::TreeHasher;
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, FileBody, ListStream, Part, PartReceipt,
    Readiness, Result, UploadId,
};

/// The largest archive one UploadArchive takes.
pub const MAX_ARCHIVE: u64 = 4 << 30;

/// The retrieval tiers, as written in the configuration.
pub const RETRIEVAL_TIERS: &[&str] = &["Standard", "Bulk", "Expedited"];

/// The longest a retrieval with `tier` usually takes, as AWS documents it.
pub fn retrieval_time(tier: &str) -> Option<Duration> {
    match tier {
        "Expedited" => Some(Duration::from_secs(5 * 60)),
        "Standard" => Some(Duration::from_secs(5 * 3600)),
        "Bulk" => Some(Duration::from_secs(12 * 3600)),
        _ => None,
    }
}

const API_VERSION: &str = "2012-06-01";
const BLOCK: usize = 1 << 20;

/// A vault destination's settings.
#[derive(Debug, Clone)]
pub struct GlacierOptions {
    /// The vault's name; offsite never creates it.
    pub vault: String,
    /// The AWS region the vault is in.
    pub region: String,
    /// Another endpoint than AWS's (a test server).
    pub endpoint: Option<String>,
    /// A profile of the shared AWS config files, instead of the default chain.
    pub profile: Option<String>,
    /// Set by tests and embedders; the configuration uses the AWS chain.
    pub credentials: Option<StaticCredentials>,
    /// The tier of archive-retrieval jobs: one of [`RETRIEVAL_TIERS`].
    pub retrieval_tier: String,
    /// Where the catalog is kept (in the staging folder).
    pub catalog_dir: PathBuf,
    /// Connect timeout, and the longest wait for the next bytes of an answer.
    pub timeout: Duration,
}

struct Clients {
    sdk: Client,
    config: SdkConfig,
}

/// An Amazon Glacier vault destination: each object one archive, found
/// through the catalog offsite keeps beside the staging folder.
pub struct GlacierBackend {
    name: String,
    options: GlacierOptions,
    store: Store,
    clients: OnceCell<Clients>,
    http: OnceCell<reqwest::Client>,
}

impl fmt::Debug for GlacierBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlacierBackend")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

/// Where [`GlacierBackend::rebuild_catalog`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuild {
    /// The inventory job is under way.
    InventoryPending {
        /// The inventory job's id.
        job: String,
        /// This call started the job (false: an earlier call did).
        requested: bool,
    },
    /// The catalog is rebuilt; the manifests' copies are being retrieved.
    ManifestsPending {
        /// What the inventory held.
        count: RebuildCount,
        /// Manifests whose retrieval job has not finished.
        waiting: usize,
        /// Of those, the retrievals this call started.
        requested: usize,
    },
    /// The catalog is whole again.
    Done {
        /// What the inventory held.
        count: RebuildCount,
    },
}

impl GlacierBackend {
    /// A backend named `name` (the destination's name), its catalog under
    /// `options.catalog_dir`; it makes no request until its first call.
    pub fn new(name: impl Into<String>, options: GlacierOptions) -> GlacierBackend {
        let store = Store::new(&options.catalog_dir, &options.vault);
        GlacierBackend {
            name: name.into(),
            options,
            store,
            clients: OnceCell::new(),
            http: OnceCell::new(),
        }
    }

    /// The catalog's folder.
    pub fn catalog_dir(&self) -> &std::path::Path {
        self.store.dir()
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let o = &self.options;
                let config =
                    load_config(&o.region, o.profile.as_deref(), o.credentials.as_ref()).await;
                let (retries, timeouts) = no_retries(o.timeout);
                let mut b = aws_sdk_glacier::config::Builder::from(&config)
                    .retry_config(retries)
                    .timeout_config(timeouts);
                if let Some(ep) = &o.endpoint {
                    b = b.endpoint_url(ep.trim_end_matches('/'));
                }
                Clients {
                    sdk: Client::from_conf(b.build()),
                    config,
                }
            })
            .await
    }

    async fn sdk(&self) -> &Client {
        &self.clients().await.sdk
    }

    async fn http(&self) -> Result<&reqwest::Client> {
        self.http
            .get_or_try_init(|| async {
                reqwest::Client::builder()
                    .connect_timeout(self.options.timeout)
                    .read_timeout(self.options.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| {
                        self.error(
                            ErrorKind::Unexpected,
                            format!("cannot build the HTTP client: {}", causes(&e)),
                            None,
                        )
                    })
            })
            .await
    }

    fn vault(&self) -> &str {
        &self.options.vault
    }

    fn endpoint(&self) -> String {
        match &self.options.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://glacier.{}.amazonaws.com", self.options.region),
        }
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>, key: Option<&str>) -> Error {
        let e = Error::new(kind, message).with_destination(&self.name);
        match key {
            Some(k) => e.with_key(k),
            None => e,
        }
    }

    /// Maps a Glacier error code and HTTP status to a kind, hint included.
    fn classify(
        &self,
        call: &str,
        key: Option<&str>,
        code: Option<&str>,
        status: Option<u16>,
        detail: String,
        transport: bool,
    ) -> Error {
        use ErrorKind::*;
        let (kind, temporary) = match (code, status) {
            _ if transport => (Unexpected, true),
            // moto answers VaultNotFound (400) where AWS answers ResourceNotFoundException.
            (Some("ResourceNotFoundException" | "VaultNotFound"), _) | (_, Some(404)) => {
                (NotFound, false)
            }
            (
                Some(
                    "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "IncompleteSignature"
                    | "MissingAuthenticationToken"
                    | "ExpiredTokenException"
                    | "InvalidClientTokenId"
                    | "SignatureDoesNotMatch",
                ),
                _,
            )
            | (_, Some(401)) => (Unauthenticated, false),
            (Some("AccessDeniedException" | "PolicyEnforcedException"), _) | (_, Some(403)) => {
                (PermissionDenied, false)
            }
            (Some("ThrottlingException" | "LimitExceededException" | "SlowDown"), _)
            | (_, Some(429)) => (RateLimited, true),
            (Some("RequestTimeoutException" | "ServiceUnavailableException"), _)
            | (_, Some(408 | 500 | 502 | 503 | 504)) => (Unexpected, true),
            (Some("InvalidParameterValueException" | "MissingParameterValueException"), _) => {
                (Precondition, false)
            }
            (Some("InsufficientCapacityException"), _) => (Unsupported, false),
            _ => (Unexpected, false),
        };
        let mut e = self.error(
            kind,
            format!("{call} on vault {:?} failed ({detail})", self.vault()),
            key,
        );
        if temporary {
            e = e.temporary();
        }
        match kind {
            Unauthenticated => e.with_hint(
                "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile, or the instance role); the secret itself is never printed",
            ),
            PermissionDenied => e.with_hint(format!(
                "the credentials may not make {call} on vault {:?} (or a data retrieval policy refused it); check their IAM policy (glacier:{call})",
                self.vault()
            )),
            Unsupported => e.with_hint(
                "no capacity for an Expedited retrieval now: set retrieval_tier = \"Standard\" or buy provisioned capacity",
            ),
            _ => e,
        }
    }

    fn sdk_err<E>(&self, call: &str, key: Option<&str>, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let f = match failure(&err, call, &self.name, key) {
            Ok(f) => f,
            Err(no_credentials) => return no_credentials,
        };
        self.classify(
            call,
            key,
            f.code.as_deref(),
            f.status,
            f.detail,
            f.transport,
        )
    }

    fn not_in_catalog(&self, key: &str) -> Error {
        self.error(
            ErrorKind::NotFound,
            format!(
                "no archive of vault {:?} holds this key in the catalog {}",
                self.vault(),
                self.store.file().display()
            ),
            Some(key),
        )
        .with_hint(
            "if the catalog was lost or this host never wrote to the vault, rebuild it: `offsite glacier inventory --destination NAME`",
        )
    }

    /// Runs `f` off the async threads (file I/O, a file lock, hashing).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            self.error(
                ErrorKind::Unexpected,
                format!("a worker task failed: {e}"),
                None,
            )
        })?
    }

    /// Runs `f` on the catalog under its lock.
    async fn catalog<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        self.blocking(move || store.update(f)).await
    }

    async fn read_catalog(&self) -> Result<Option<Catalog>> {
        let store = self.store.clone();
        self.blocking(move || store.read()).await
    }

    /// Keeps the copy of small archive `id` beside the catalog.
    async fn keep_object(&self, id: &str, body: Bytes) -> Result<()> {
        let (store, id) = (self.store.clone(), id.to_string());
        self.blocking(move || store.keep_object(&id, &body)).await
    }

    async fn entry(&self, key: &str) -> Result<Archive> {
        self.read_catalog()
            .await?
            .and_then(|c| c.newest(key).cloned())
            .ok_or_else(|| self.not_in_catalog(key))
    }

    /// UploadArchive, signed here so the body can stream (see the module doc).
    async fn upload_archive(
        &self,
        key: &str,
        description: &str,
        size: u64,
        tree_hash: &str,
        sha256: &str,
        body: reqwest::Body,
    ) -> Result<String> {
        let call = "UploadArchive";
        let url = format!("{}/-/vaults/{}/archives", self.endpoint(), self.vault());
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        let size_text = size.to_string();
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &host),
            ("x-amz-glacier-version", API_VERSION),
            ("x-amz-archive-description", description),
            ("x-amz-sha256-tree-hash", tree_hash),
            ("x-amz-content-sha256", sha256),
            ("content-length", &size_text),
        ];
        let signed = self.sign("POST", &url, &headers, sha256, key).await?;
        headers.retain(|(n, _)| *n != "host");
        let mut req = self.http().await?.post(&url).body(body);
        for (n, v) in headers.iter().map(|(n, v)| (n.to_string(), v.to_string())) {
            req = req.header(n, v);
        }
        for (n, v) in signed {
            req = req.header(n, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.classify(call, Some(key), None, None, causes(&e), true))?;
        let status = resp.status().as_u16();
        if status == 201 {
            return resp
                .headers()
                .get("x-amz-archive-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| {
                    self.error(
                        ErrorKind::Unexpected,
                        format!("{call}: the vault answered 201 without an archive id"),
                        Some(key),
                    )
                });
        }
        let text = resp.text().await.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let code = parsed["code"].as_str().map(str::to_string);
        let detail = match (&code, parsed["message"].as_str()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => format!("HTTP {status}"),
        };
        Err(self.classify(
            call,
            Some(key),
            code.as_deref(),
            Some(status),
            detail,
            false,
        ))
    }

    /// SigV4 headers for a request whose payload hash is `sha256`.
    async fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        sha256: &str,
        key: &str,
    ) -> Result<Vec<(String, String)>> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let call = "UploadArchive";
        let provider = self
            .clients()
            .await
            .config
            .credentials_provider()
            .ok_or_else(|| no_credentials(call, "no credential provider", &self.name, Some(key)))?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| no_credentials(call, &causes(&e), &self.name, Some(key)))?;
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.options.region)
            .name("glacier")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| {
                self.error(
                    ErrorKind::Unexpected,
                    format!("{call}: cannot sign: {e}"),
                    Some(key),
                )
            })?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Precomputed(sha256.to_string()),
        )
        .and_then(|r| sign(r, &params))
        .map_err(|e| {
            self.error(
                ErrorKind::Unexpected,
                format!("{call}: cannot sign: {e}"),
                Some(key),
            )
        })?;
        let (instructions, _) = request.into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    }

    /// Stores `body` (already in memory) as an archive and records it.
    async fn put_small(&self, key: &str, body: Bytes, what: Described) -> Result<Archive> {
        let description = catalog::describe(&what).map_err(|e| e.with_destination(&self.name))?;
        let mut tree = TreeHasher::new();
        tree.update(&body);
        let tree_hash = tree.finish_hex();
        let sha = hex(&Sha256::digest(&body));
        let size = body.len() as u64;
        let id = self
            .upload_archive(
                key,
                &description,
                size,
                &tree_hash,
                &sha,
                reqwest::Body::from(body.clone()),
            )
            .await?;
        let archive = Archive {
            id,
            key: key.to_string(),
            size,
            tree_hash,
            created: catalog::now(),
            small: true,
        };
        self.keep_object(&archive.id, body).await?;
        Ok(archive)
    }

    /// Records `archive` as the holder of its key, unless another writer
    /// recorded one in the meantime (between [`Self::refuse_taken`] and
    /// now): then the new archive is deleted again and the key refused, so
    /// nobody's archive is ever replaced.
    async fn record(&self, archive: Archive) -> Result<()> {
        let key = archive.key.clone();
        let ours = archive.id.clone();
        let taken = self
            .catalog(move |c| {
                if c.newest(&archive.key).is_some() {
                    return Ok(true);
                }
                c.add(archive);
                Ok(false)
            })
            .await?;
        if taken {
            // Not in the catalog: an archive nobody will read; a failure
            // to delete it costs only its storage.
            let _ = self.delete_archive(&key, &ours).await;
            self.forget_object(&ours).await;
            return Err(self.error(
                ErrorKind::AlreadyExists,
                "another writer recorded an archive under this key first",
                Some(&key),
            ));
        }
        Ok(())
    }

    /// Create-only writes: a key the catalog already holds is refused
    /// ([`ErrorKind::AlreadyExists`]). The vault itself names archives by
    /// ids it assigns, so two writers never collide there; a key is what
    /// could be written twice.
    async fn refuse_taken(&self, key: &str) -> Result<()> {
        let owned = key.to_string();
        let taken = self
            .catalog(move |c| Ok(c.newest(&owned).is_some()))
            .await?;
        if taken {
            return Err(self
                .error(
                    ErrorKind::AlreadyExists,
                    "the catalog already holds an archive under this key".to_string(),
                    Some(key),
                )
                .with_hint("it is never overwritten"));
        }
        Ok(())
    }

    /// Deletes archive `id` from the vault, then from the catalog, with its kept copy.
    async fn drop_archive(&self, key: &str, id: &str) -> Result<()> {
        self.delete_archive(key, id).await?;
        let owned = id.to_string();
        self.catalog(move |c| {
            c.remove(&owned, &catalog::now());
            Ok(())
        })
        .await?;
        self.forget_object(id).await;
        Ok(())
    }

    async fn forget_object(&self, id: &str) {
        let path = self.store.object(id);
        let _ = tokio::fs::remove_file(path).await;
    }

    /// DeleteArchive; an archive already gone is not an error.
    async fn delete_archive(&self, key: &str, id: &str) -> Result<()> {
        match self
            .sdk()
            .await
            .delete_archive()
            .vault_name(self.vault())
            .archive_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.sdk_err("DeleteArchive", Some(key), e);
                if e.kind() == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn initiate_retrieval(&self, key: &str, archive: &str) -> Result<Job> {
        let tier = self.options.retrieval_tier.clone();
        let out = self
            .sdk()
            .await
            .initiate_job()
            .vault_name(self.vault())
            .job_parameters(
                JobParameters::builder()
                    .r#type("archive-retrieval")
                    .archive_id(archive)
                    .tier(&tier)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.sdk_err("InitiateJob", Some(key), e))?;
        let id = out.job_id().map(str::to_string).ok_or_else(|| {
            self.error(
                ErrorKind::Unexpected,
                "InitiateJob answered without a job id",
                Some(key),
            )
        })?;
        Ok(Job {
            id,
            tier,
            started: catalog::now(),
        })
    }

    /// The state of job `id`: Some(true) succeeded, Some(false) under way,
    /// None failed or expired (start another).
    async fn job_state(&self, key: &str, id: &str) -> Result<Option<bool>> {
        match self
            .sdk()
            .await
            .describe_job()
            .vault_name(self.vault())
            .job_id(id)
            .send()
            .await
        {
            Ok(d) => Ok(match d.status_code() {
                Some(StatusCode::Succeeded) => Some(true),
                Some(StatusCode::InProgress) => Some(false),
                _ => None,
            }),
            Err(e) => {
                let e = self.sdk_err("DescribeJob", Some(key), e);
                if e.kind() == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Whether the archive holding `key` can be read now; starts (or
    /// restarts) its retrieval job when needed.
    async fn ready(&self, key: &str, archive: &Archive) -> Result<Readiness> {
        let job = self
            .read_catalog()
            .await?
            .and_then(|c| c.retrievals.get(&archive.id).cloned());
        let pending = |requested: bool, tier: &str| Readiness::Pending {
            requested,
            detail: format!("Glacier vault {:?}, {tier} retrieval job", self.vault()),
            expected: retrieval_time(tier),
        };
        if let Some(job) = job {
            match self.job_state(key, &job.id).await? {
                Some(true) => return Ok(Readiness::Ready),
                Some(false) => return Ok(pending(false, &job.tier)),
                None => {}
            }
        }
        let job = self.initiate_retrieval(key, &archive.id).await?;
        let tier = job.tier.clone();
        let id = archive.id.clone();
        self.catalog(move |c| {
            c.retrievals.insert(id, job);
            Ok(())
        })
        .await?;
        Ok(pending(true, &tier))
    }

    /// The output of the finished retrieval job of `archive`.
    async fn job_output(&self, key: &str, archive: &Archive) -> Result<ByteStream> {
        let job = self
            .read_catalog()
            .await?
            .and_then(|c| c.retrievals.get(&archive.id).cloned())
            .ok_or_else(|| self.not_retrieved(key))?;
        let out = self
            .sdk()
            .await
            .get_job_output()
            .vault_name(self.vault())
            .job_id(&job.id)
            .send()
            .await
            .map_err(|e| {
                let e = self.sdk_err("GetJobOutput", Some(key), e);
                if e.kind() == ErrorKind::NotFound {
                    self.not_retrieved(key)
                } else {
                    e
                }
            })?;
        let name = self.name.clone();
        let key_owned = key.to_string();
        let stream = futures::stream::unfold(out.body, move |mut body| {
            let (name, key) = (name.clone(), key_owned.clone());
            async move {
                match body.next().await {
                    None => None,
                    Some(Ok(b)) => Some((Ok(b), body)),
                    Some(Err(e)) => Some((
                        Err(Error::new(
                            ErrorKind::Unexpected,
                            format!("reading the retrieval job's output failed: {}", causes(&e)),
                        )
                        .temporary()
                        .with_destination(name)
                        .with_key(key)),
                        body,
                    )),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    fn not_retrieved(&self, key: &str) -> Error {
        self.error(
            ErrorKind::Unsupported,
            format!(
                "the archive is not retrieved from vault {:?} (no finished retrieval job, or its output expired after 24 hours)",
                self.vault()
            ),
            Some(key),
        )
        .with_hint(
            "`offsite restore` and `offsite verify` start the retrieval job and exit 4 until it is ready; run them again later",
        )
    }

    /// Checks the bytes of `archive` against its tree hash.
    fn check_tree_hash(&self, archive: &Archive, got: String) -> Result<()> {
        match tree_hash_mismatch(&self.name, archive, &got) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Rebuilds the catalog from the vault when it is lost, in steps a
    /// person (or cron) repeats until [`Rebuild::Done`]: an inventory job
    /// (hours on AWS), then retrieval jobs for the manifests' copies.
    pub async fn rebuild_catalog(&self) -> Result<Rebuild> {
        let now = self.read_catalog().await?;
        let current = now.clone().unwrap_or_else(|| Catalog::new(self.vault()));
        if let Some(job) = current.inventory_job.clone() {
            return match self.job_state("inventory", &job.id).await? {
                Some(false) => Ok(Rebuild::InventoryPending {
                    job: job.id,
                    requested: false,
                }),
                None => self.start_inventory().await,
                Some(true) => {
                    let inventory = self.fetch_inventory(&job.id).await?;
                    let count = self
                        .catalog(move |c| {
                            let (mut rebuilt, count) = c.from_inventory(&inventory);
                            rebuilt.inventory_job = None;
                            *c = rebuilt;
                            Ok(count)
                        })
                        .await?;
                    self.fetch_manifests(count).await
                }
            };
        }
        let missing = self.missing_objects(&current);
        if now.is_some() && current.origin.starts_with("rebuilt") && !missing.is_empty() {
            return self.fetch_manifests(current.count()).await;
        }
        self.start_inventory().await
    }

    /// The small archives (manifests) holding their key whose copy is not kept here.
    fn missing_objects(&self, c: &Catalog) -> Vec<Archive> {
        c.archives
            .iter()
            .filter(|a| a.small && !self.store.object(&a.id).exists())
            .filter(|a| c.newest(&a.key).is_some_and(|n| n.id == a.id))
            .cloned()
            .collect()
    }

    async fn start_inventory(&self) -> Result<Rebuild> {
        let out = self
            .sdk()
            .await
            .initiate_job()
            .vault_name(self.vault())
            .job_parameters(
                JobParameters::builder()
                    .r#type("inventory-retrieval")
                    .format("JSON")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.sdk_err("InitiateJob", None, e))?;
        let id = out.job_id().map(str::to_string).ok_or_else(|| {
            self.error(
                ErrorKind::Unexpected,
                "InitiateJob answered without a job id",
                None,
            )
        })?;
        let job = Job {
            id: id.clone(),
            tier: "Standard".into(),
            started: catalog::now(),
        };
        self.catalog(move |c| {
            c.inventory_job = Some(job);
            Ok(())
        })
        .await?;
        Ok(Rebuild::InventoryPending {
            job: id,
            requested: true,
        })
    }

    async fn fetch_inventory(&self, job: &str) -> Result<Inventory> {
        let out = self
            .sdk()
            .await
            .get_job_output()
            .vault_name(self.vault())
            .job_id(job)
            .send()
            .await
            .map_err(|e| self.sdk_err("GetJobOutput", None, e))?;
        let bytes = out.body.collect().await.map_err(|e| {
            self.error(
                ErrorKind::Unexpected,
                format!("reading the inventory failed: {}", causes(&e)),
                None,
            )
            .temporary()
        })?;
        serde_json::from_slice(&bytes.into_bytes()).map_err(|e| {
            self.error(
                ErrorKind::Unexpected,
                format!(
                    "the inventory of vault {:?} is not the JSON Glacier writes: {e}",
                    self.vault()
                ),
                None,
            )
        })
    }

    /// Downloads the copies of small archives whose retrieval finished, and
    /// starts retrievals for the others.
    async fn fetch_manifests(&self, count: RebuildCount) -> Result<Rebuild> {
        let catalog = self
            .read_catalog()
            .await?
            .unwrap_or_else(|| Catalog::new(self.vault()));
        let mut waiting = 0;
        let mut requested = 0;
        for a in self.missing_objects(&catalog) {
            let readiness = match self.ready(&a.key, &a).await {
                Ok(r) => r,
                // AWS's inventory is up to a day old: it can list an archive
                // deleted since. The vault says it is gone: so is its entry.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let id = a.id.clone();
                    self.catalog(move |c| {
                        c.remove(&id, &catalog::now());
                        Ok(())
                    })
                    .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match readiness {
                Readiness::Ready => {
                    // `get` keeps the copy once its tree hash is checked.
                    crate::get_bytes(self, &a.key).await?;
                }
                Readiness::Pending { requested: r, .. } => {
                    waiting += 1;
                    requested += usize::from(r);
                }
            }
        }
        if waiting > 0 {
            return Ok(Rebuild::ManifestsPending {
                count,
                waiting,
                requested,
            });
        }
        Ok(Rebuild::Done { count })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tree hash and linear SHA-256 of a file, read in 1 MiB blocks.
fn hash_file(path: &std::path::Path, size: u64) -> std::io::Result<(String, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut tree = TreeHasher::new();
    let mut linear = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        tree.update(&buf[..n]);
        linear.update(&buf[..n]);
        total += n as u64;
    }
    if total != size {
        return Err(std::io::Error::other(format!(
            "it is {total} bytes, not the {size} staged: it changed after staging"
        )));
    }
    Ok((tree.finish_hex(), hex(&linear.finalize())))
}

#[async_trait]
impl Backend for GlacierBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multipart: false,
            parts_out_of_order: false,
            offset_resume: false,
            atomic_rename: false,
            exclusive_create: false,
            list: true,
            delete: true,
            read: true,
            cold_storage: true,
            min_part_size: 1,
            max_part_size: MAX_ARCHIVE,
            max_parts: 1,
            max_object_size: Some(MAX_ARCHIVE),
            retention: None,
        }
    }

    async fn probe(&self) -> Result<()> {
        self.sdk()
            .await
            .describe_vault()
            .vault_name(self.vault())
            .send()
            .await
            .map_err(|e| {
                let e = self.sdk_err("DescribeVault", None, e);
                if e.kind() == ErrorKind::NotFound {
                    Error::new(
                        ErrorKind::ConfigInvalid,
                        format!(
                            "vault {:?} does not exist in region {:?}",
                            self.vault(),
                            self.options.region
                        ),
                    )
                    .with_destination(&self.name)
                    .with_hint("create it (aws glacier create-vault --account-id - --vault-name NAME) or check `vault`, `region` and `endpoint`")
                } else {
                    e
                }
            })?;
        // The catalog must be readable (and this vault's) before anything is written.
        self.read_catalog()
            .await
            .map_err(|e| e.with_destination(&self.name))?;
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.refuse_taken(key).await?;
        let what = Described::Object {
            key: key.to_string(),
            small: true,
        };
        let archive = self.put_small(key, body, what).await?;
        self.record(archive).await
    }

    async fn put_file(&self, key: &str, file: FileBody) -> Result<()> {
        self.refuse_taken(key).await?;
        if file.size > MAX_ARCHIVE {
            return Err(self
                .error(
                    ErrorKind::ConfigInvalid,
                    format!(
                        "{} is {} bytes; a Glacier archive holds at most 4 GiB",
                        file.path.display(),
                        file.size
                    ),
                    Some(key),
                )
                .with_hint("set the job's volume_size to 4GiB or less"));
        }
        let description = catalog::describe(&Described::Object {
            key: key.to_string(),
            small: false,
        })
        .map_err(|e| e.with_destination(&self.name))?;
        let (path, size) = (file.path.clone(), file.size);
        let (shown, name, key_owned) = (
            file.path.display().to_string(),
            self.name.clone(),
            key.to_string(),
        );
        let (tree_hash, sha) = self
            .blocking(move || {
                hash_file(&path, size).map_err(|e| {
                    Error::from_io(format!("cannot hash staged {shown}"), e)
                        .with_destination(name)
                        .with_key(key_owned)
                })
            })
            .await?;
        let body = reqwest::Body::wrap_stream(file.stream(BLOCK));
        let id = self
            .upload_archive(key, &description, size, &tree_hash, &sha, body)
            .await?;
        self.record(Archive {
            id,
            key: key.to_string(),
            size,
            tree_hash,
            created: catalog::now(),
            small: false,
        })
        .await
    }

    async fn create_upload(&self, key: &str, _part_size: u64) -> Result<UploadId> {
        Err(self.no_multipart(key))
    }

    async fn put_part(&self, key: &str, _upload: &UploadId, _part: Part) -> Result<PartReceipt> {
        Err(self.no_multipart(key))
    }

    async fn complete_upload(
        &self,
        key: &str,
        _upload: &UploadId,
        _parts: &[PartReceipt],
    ) -> Result<()> {
        Err(self.no_multipart(key))
    }

    async fn abort_upload(&self, _key: &str, _upload: &UploadId) -> Result<()> {
        // There are never unfinished uploads to drop.
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        let Some(c) = self.read_catalog().await? else {
            return Ok(());
        };
        if !c.dirty() {
            return Ok(());
        }
        let generation = c.generation;
        let body = Bytes::from(c.to_copy());
        let key = ".offsite-catalog";
        let copy = self.put_small(key, body, Described::Catalog).await?;
        let older = self
            .catalog(move |c| {
                let older = std::mem::take(&mut c.copies);
                c.copies.push(copy);
                c.shipped = c.shipped.max(generation);
                Ok(older)
            })
            .await?;
        // Drop the copies this one replaces; one that cannot go now goes next time.
        for old in older {
            if self.delete_archive(key, &old.id).await.is_ok() {
                self.forget_object(&old.id).await;
            } else {
                let keep = old.clone();
                self.catalog(move |c| {
                    c.copies.insert(0, keep);
                    Ok(())
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        let archive = self.entry(key).await?;
        if archive.small && self.store.object(&archive.id).exists() {
            return Ok(Readiness::Ready);
        }
        self.ready(key, &archive).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let archive = self.entry(key).await?;
        if archive.small {
            let body = self.small_body(key, &archive).await?;
            let body = match range {
                Some(r) => {
                    let end = (r.end as usize).min(body.len());
                    body.slice((r.start as usize).min(end)..end)
                }
                None => body,
            };
            return Ok(Box::pin(futures::stream::once(async move { Ok(body) })));
        }
        let stream = self.job_output(key, &archive).await?;
        match range {
            // Glacier honours ranges on job outputs, moto does not: cut here.
            Some(r) => Ok(Box::pin(cut_stream(stream, r))),
            // The whole archive: its tree hash is checked at the end.
            None => Ok(Box::pin(verify_at_end(stream, self.name.clone(), archive))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let c = match self.read_catalog().await? {
            Some(c) => c,
            // No catalog: fine for an empty vault, never silently for a full one.
            None if self.vault_is_empty().await? => Catalog::new(self.vault()),
            None => {
                return Err(self
                    .error(
                        ErrorKind::ConfigInvalid,
                        format!(
                            "vault {:?} holds archives, but there is no catalog of it at {}: this host has not written to it, or the catalog was lost",
                            self.vault(),
                            self.store.file().display()
                        ),
                        None,
                    )
                    .with_hint("rebuild the catalog from the vault: `offsite glacier inventory --destination NAME` (run it again until it says done)"));
            }
        };
        let items: Vec<Result<crate::ObjectMeta>> = c.list(prefix).into_iter().map(Ok).collect();
        Ok(Box::pin(futures::stream::iter(items)))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let all = self
            .read_catalog()
            .await?
            .map(|c| c.all_of(key))
            .unwrap_or_default();
        for a in all {
            self.drop_archive(key, &a.id).await?;
        }
        Ok(())
    }
}

impl GlacierBackend {
    /// Whether DescribeVault counts no archives (AWS counts as of the
    /// vault's last inventory, about daily).
    async fn vault_is_empty(&self) -> Result<bool> {
        let d = self
            .sdk()
            .await
            .describe_vault()
            .vault_name(self.vault())
            .send()
            .await
            .map_err(|e| self.sdk_err("DescribeVault", None, e))?;
        Ok(d.number_of_archives() == 0)
    }

    /// The bytes of a small archive: the copy kept beside the catalog, or
    /// (after a rebuild) the finished retrieval job's output, then kept.
    /// Either way checked against the tree hash.
    async fn small_body(&self, key: &str, archive: &Archive) -> Result<Bytes> {
        let path = self.store.object(&archive.id);
        match tokio::fs::read(&path).await {
            Ok(b) => {
                let body = Bytes::from(b);
                self.check_tree_hash(archive, crate::treehash::tree_hash_hex(&body))
                    .map_err(|e| {
                        e.with_hint(format!(
                            "the copy kept in {} is damaged: delete it and run `offsite glacier inventory` to retrieve it again",
                            path.display()
                        ))
                    })?;
                Ok(body)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = self.job_output(key, archive).await?;
                let mut all = Vec::new();
                while let Some(chunk) = s.try_next().await? {
                    all.extend_from_slice(&chunk);
                }
                let body = Bytes::from(all);
                self.check_tree_hash(archive, crate::treehash::tree_hash_hex(&body))?;
                self.keep_object(&archive.id, body.clone()).await?;
                Ok(body)
            }
            Err(e) => Err(Error::from_io(format!("cannot read {}", path.display()), e)
                .with_destination(&self.name)
                .with_key(key)),
        }
    }

    fn no_multipart(&self, key: &str) -> Error {
        self.error(
            ErrorKind::Unsupported,
            "a Glacier vault takes each volume as one archive (put_file), not in parts",
            Some(key),
        )
    }
}

/// The error for bytes of `archive` read with tree hash `got`, if it is not the recorded one.
fn tree_hash_mismatch(destination: &str, archive: &Archive, got: &str) -> Option<Error> {
    if got.eq_ignore_ascii_case(&archive.tree_hash) {
        return None;
    }
    Some(
        Error::new(
            ErrorKind::Precondition,
            format!(
                "archive {} read with tree hash {got}, but the catalog recorded {}",
                archive.id, archive.tree_hash
            ),
        )
        .with_destination(destination)
        .with_key(&archive.key)
        .with_hint("the retrieved bytes are damaged; run the command again to download them again"),
    )
}

/// `stream`, with an error at its end if its bytes do not have `archive`'s tree hash.
fn verify_at_end(
    stream: ByteStream,
    destination: String,
    archive: Archive,
) -> impl futures::Stream<Item = Result<Bytes>> {
    futures::stream::unfold(Some((stream, TreeHasher::new())), move |state| {
        let (destination, archive) = (destination.clone(), archive.clone());
        async move {
            let (mut s, mut tree) = state?;
            match s.next().await {
                Some(Ok(b)) => {
                    tree.update(&b);
                    Some((Ok(b), Some((s, tree))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => tree_hash_mismatch(&destination, &archive, &tree.finish_hex())
                    .map(|e| (Err(e), None)),
            }
        }
    })
}

/// Bytes `range` of a stream that starts at offset 0.
fn cut_stream(stream: ByteStream, range: Range<u64>) -> impl futures::Stream<Item = Result<Bytes>> {
    stream
        .scan(0u64, move |pos, item| {
            let out = item.map(|b| {
                let start = *pos;
                let end = start + b.len() as u64;
                *pos = end;
                let from = range.start.clamp(start, end) - start;
                let to = range.end.clamp(start, end) - start;
                b.slice(from as usize..to as usize)
            });
            futures::future::ready(Some(out))
        })
        .try_filter(|b| futures::future::ready(!b.is_empty()))
}
