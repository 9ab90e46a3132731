//! Amazon S3 and S3-compatible stores, on the official `aws-sdk-s3`.
//!
//! Why aws-sdk-s3 and not object_store (both are named by the design card):
//! object_store's `MultipartStore` would resume uploads, but it has no
//! RestoreObject (needed to read the GLACIER and DEEP_ARCHIVE storage
//! classes), and its multipart calls do not expose the per-part SHA-256
//! checksum S3 verifies. aws-sdk-s3 does all of it, and the standard AWS
//! credential chain comes with it (aws-config).
//!
//! How the trait maps to S3:
//! - `create_upload` → CreateMultipartUpload (storage class, CRC32C
//!   checksums); `put_part` → UploadPart with `x-amz-checksum-crc32c` of the
//!   part, which S3 verifies (BadDigest otherwise); the receipt is
//!   `"<etag> <checksum>"`, journaled by the caller, so a resume needs no
//!   ListParts; `complete_upload` → CompleteMultipartUpload with every
//!   part's ETag and checksum (NoSuchUpload → [`ErrorKind::NotFound`]: the
//!   caller restarts).
//! - **Checksums.** CRC32C runs in hardware at GB/s; SHA-256, which earlier
//!   versions used, took more CPU than the upload itself on CPUs without
//!   the SHA extensions. The upload id offsite journals carries the
//!   algorithm (`crc32c:<id>`); an id without it is an upload an earlier
//!   version started with SHA-256, and its remaining parts keep SHA-256.
//!   Over HTTPS the payload is not signed again (`UNSIGNED-PAYLOAD`): TLS
//!   and the checksum cover it, and signing would hash every byte with
//!   SHA-256 once more. Over plain HTTP it is signed, since a CRC alone
//!   does not stop a body altered on the way.
//! - `put` (manifests) → PutObject with its CRC32C, always in STANDARD,
//!   so `list` and `prune` never need a restore or pay a retrieval fee.
//!   `storage_class` applies to volumes only.
//! - `prepare_read` → HeadObject; a GLACIER or DEEP_ARCHIVE object that is
//!   not retrieved yet gets RestoreObject (`restore_tier`, `restore_days`)
//!   and answers Pending until its `x-amz-restore` says it is readable.
//! - `get` → GetObject with a Range; `list` → ListObjectsV2 pages; `delete` →
//!   DeleteObject (with `object_lock`, every version of the key);
//!   `abort_upload` → AbortMultipartUpload.
//! - **`put_only`**: the backup path calls only PutObject,
//!   CreateMultipartUpload, UploadPart and CompleteMultipartUpload (with
//!   `object_lock`, also PutObjectRetention after a completion). The
//!   capabilities then rule out reads, lists and deletes, which
//!   [`crate::Checked`] refuses before any request with this backend's
//!   `refusal`, naming the policy they need; `probe` makes no request at all.
//!
//! Retries are the caller's ([`crate::Retrying`]): the SDK's own are off, so
//! a part is never sent more often than the journal knows.

mod settings;

pub use settings::DEFAULT_RESTORE_DAYS;
pub use settings::S3Settings;

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, GlacierJobParameters,
    ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
    RestoreRequest, StorageClass, Tier,
};
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

pub use crate::aws::StaticCredentials;
use crate::aws::{Failure, failure, load_config, no_retries};
use crate::error::causes;
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, ListStream, ObjectMeta, Operation, Part,
    PartReceipt, Readiness, Result, UploadId,
};

/// An S3 destination's settings.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The bucket; offsite never creates it.
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    /// An S3-compatible store (path-style addressing is used).
    pub endpoint: Option<String>,
    /// The storage class of volumes; manifests stay in STANDARD.
    pub storage_class: Option<String>,
    /// Credentials that may only write (the uploader policy): the
    /// capabilities then rule out reads, lists and deletes.
    pub put_only: bool,
    /// A profile of the shared AWS config files, instead of the default chain.
    pub profile: Option<String>,
    /// Set by tests and embedders; the configuration uses the AWS chain.
    pub credentials: Option<StaticCredentials>,
    /// The retrieval tier RestoreObject asks for: one of [`RESTORE_TIERS`].
    pub restore_tier: String,
    /// How many days a retrieved copy stays readable (and billed as STANDARD).
    pub restore_days: i32,
    /// Connect timeout, and the longest wait for the next bytes of an answer.
    pub timeout: std::time::Duration,
    /// S3 Object Lock: every object offsite writes is locked this way (the
    /// bucket must have Object Lock enabled).
    pub object_lock: Option<ObjectLock>,
}

/// How objects are locked when written (S3 Object Lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Who may lift the lock early.
    pub mode: LockMode,
    /// How long after it is written an object stays locked.
    pub retain: std::time::Duration,
}

/// S3's two retention modes: governance can be lifted by a user with
/// s3:BypassGovernanceRetention; compliance by nobody, not even the root
/// account, until it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Lifted early only with s3:BypassGovernanceRetention.
    Governance,
    /// Never lifted early.
    Compliance,
}

impl LockMode {
    fn sdk(self) -> ObjectLockMode {
        match self {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        }
    }

    fn retention_sdk(self) -> ObjectLockRetentionMode {
        match self {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        }
    }
}

/// The retrieval tiers RestoreObject takes, as written in the configuration.
pub const RESTORE_TIERS: &[&str] = &["Standard", "Bulk", "Expedited"];

/// The longest a retrieval of `class` with `tier` usually takes, as AWS
/// documents it; None when the combination does not exist.
pub fn retrieval_time(class: &str, tier: &str) -> Option<std::time::Duration> {
    let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
    match (class, tier) {
        ("GLACIER", "Expedited") => Some(std::time::Duration::from_secs(5 * 60)),
        ("GLACIER", "Standard") => hours(5),
        ("GLACIER", "Bulk") => hours(12),
        ("DEEP_ARCHIVE", "Standard") => hours(12),
        ("DEEP_ARCHIVE", "Bulk") => hours(48),
        _ => None,
    }
}

/// The storage classes S3 accepts, as written in the configuration.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
];

/// Whether objects of `class` must be restored before they can be read.
pub fn needs_restore(class: &str) -> bool {
    matches!(class, "GLACIER" | "DEEP_ARCHIVE")
}

const MIB: u64 = 1 << 20;

/// An S3 (or S3-compatible) destination: objects in one bucket.
pub struct S3Backend {
    name: String,
    options: S3Options,
    client: OnceCell<Client>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

impl S3Backend {
    /// A backend named `name` (the destination's name); it makes no
    /// request until its first call.
    pub fn new(name: impl Into<String>, options: S3Options) -> S3Backend {
        S3Backend {
            name: name.into(),
            options,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let o = &self.options;
                let shared =
                    load_config(&o.region, o.profile.as_deref(), o.credentials.as_ref()).await;
                let (retries, timeouts) = no_retries(o.timeout);
                let mut b = aws_sdk_s3::config::Builder::from(&shared)
                    .retry_config(retries)
                    .timeout_config(timeouts);
                if let Some(ep) = &o.endpoint {
                    b = b
                        .endpoint_url(ep.trim_end_matches('/'))
                        .force_path_style(true);
                }
                Client::from_conf(b.build())
            })
            .await
    }

    fn bucket(&self) -> &str {
        &self.options.bucket
    }

    fn class_for_volumes(&self) -> Option<StorageClass> {
        self.options
            .storage_class
            .as_deref()
            .map(StorageClass::from)
    }

    /// Manifests (the only objects `put` writes) stay in STANDARD.
    /// Whether bodies go without a payload signature: over HTTPS (AWS, or
    /// an `https://` endpoint) only; see the module doc.
    fn unsigned_payload(&self) -> bool {
        self.options
            .endpoint
            .as_deref()
            .is_none_or(|e| e.starts_with("https://"))
    }

    fn class_for_put(&self) -> Option<StorageClass> {
        None
    }

    /// The lock an object written now gets: its mode and retain-until date.
    fn lock_now(&self) -> Option<(LockMode, aws_smithy_types::DateTime)> {
        let l = self.options.object_lock?;
        let until = std::time::SystemTime::now() + l.retain;
        Some((l.mode, aws_smithy_types::DateTime::from(until)))
    }

    /// PutObjectRetention: `key` (its current version) locked until `until`.
    async fn put_retention(
        &self,
        key: &str,
        mode: LockMode,
        until: aws_smithy_types::DateTime,
    ) -> Result<()> {
        self.client()
            .await
            .put_object_retention()
            .bucket(self.bucket())
            .key(key)
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode.retention_sdk())
                    .retain_until_date(until)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("PutObjectRetention", Some(key), e))?;
        Ok(())
    }

    /// The lock on one version of `key` (HeadObject: moto has no
    /// GetObjectRetention), as the time it ends; `None` when unlocked.
    async fn lock_of(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<std::time::SystemTime>> {
        let head = self
            .client()
            .await
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.err("HeadObject", Some(key), e))?;
        let until = head
            .object_lock_retain_until_date()
            .and_then(|d| std::time::SystemTime::try_from(*d).ok());
        let held = head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On);
        Ok(match until {
            Some(t) if t > std::time::SystemTime::now() => Some(t),
            _ if held => Some(
                std::time::SystemTime::now() + std::time::Duration::from_secs(86_400 * 365 * 100),
            ),
            _ => None,
        })
    }

    /// Deletes every version of `key` (and its delete markers): on a bucket
    /// with Object Lock (versioned), a plain DeleteObject only hides an
    /// object behind a delete marker. A version still locked stops it with
    /// [`ErrorKind::Retained`], naming until when.
    async fn delete_versions(&self, key: &str) -> Result<()> {
        let out = self
            .client()
            .await
            .list_object_versions()
            .bucket(self.bucket())
            .prefix(key)
            .send()
            .await
            .map_err(|e| self.err("ListObjectVersions", Some(key), e))?;
        let mut ids: Vec<String> = Vec::new();
        for v in out.versions() {
            if v.key() == Some(key) {
                ids.extend(v.version_id().map(str::to_string));
            }
        }
        for m in out.delete_markers() {
            if m.key() == Some(key) {
                ids.extend(m.version_id().map(str::to_string));
            }
        }
        for id in ids {
            let res = self
                .client()
                .await
                .delete_object()
                .bucket(self.bucket())
                .key(key)
                .version_id(&id)
                .send()
                .await;
            if let Err(e) = res {
                let err = self.err("DeleteObject", Some(key), e);
                if err.kind() == ErrorKind::PermissionDenied
                    && let Ok(Some(until)) = self.lock_of(key, Some(&id)).await
                {
                    return Err(Error::new(
                        ErrorKind::Retained,
                        format!("retained until {} by Object Lock", rfc3339(until)),
                    )
                    .with_destination(&self.name)
                    .with_key(key));
                }
                return Err(err);
            }
        }
        Ok(())
    }

    fn err<E>(&self, call: &str, key: Option<&str>, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let Failure {
            status,
            code,
            detail,
            transport,
        } = match failure(&err, call, &self.name, key) {
            Ok(f) => f,
            Err(no_credentials) => return no_credentials,
        };
        use ErrorKind::*;
        // The two calls offsite makes create-only (`If-None-Match: *`).
        let create_only = matches!(call, "PutObject" | "CompleteMultipartUpload");
        let (kind, temporary) = match (code.as_deref(), status) {
            _ if transport => (Unexpected, true),
            (Some("PreconditionFailed"), _) | (None, Some(412)) if create_only => {
                (AlreadyExists, false)
            }
            // Another conditional write to the key was in flight: try again.
            (Some("ConditionalRequestConflict"), _) | (None, Some(409)) if create_only => {
                (Unexpected, true)
            }
            (Some("NotImplemented"), _) | (_, Some(501)) => (Unsupported, false),
            // HTTP 403 too, but not a permission problem: the object is cold.
            (Some("InvalidObjectState"), _) => (Unsupported, false),
            (Some("NoSuchBucket"), _) => (ConfigInvalid, false),
            (Some("NoSuchKey" | "NoSuchUpload" | "NotFound"), _) | (None, Some(404)) => {
                (NotFound, false)
            }
            (
                Some(
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "TokenRefreshRequired",
                ),
                _,
            ) => (Unauthenticated, false),
            (Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem"), _) | (_, Some(403)) => {
                (PermissionDenied, false)
            }
            (
                Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"),
                _,
            )
            | (_, Some(429 | 503)) => (RateLimited, true),
            (Some("InternalError" | "RequestTimeout"), _) | (_, Some(500 | 502 | 504)) => {
                (Unexpected, true)
            }
            (
                Some(
                    "EntityTooSmall" | "InvalidPart" | "InvalidPartOrder" | "BadDigest"
                    | "InvalidDigest" | "PreconditionFailed" | "InvalidRange",
                ),
                _,
            ) => (Precondition, false),
            _ => (Unexpected, false),
        };
        let mut e = Error::new(
            kind,
            format!("{call} in bucket {:?} failed ({detail})", self.bucket()),
        )
        .with_destination(&self.name);
        if temporary {
            e = e.temporary();
        }
        if let Some(k) = key {
            e = e.with_key(k);
        }
        match kind {
            Unauthenticated => e.with_hint(
                "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile, or the instance role); the secret itself is never printed",
            ),
            PermissionDenied => e.with_hint(format!(
                "the credentials may not make {call} on arn:aws:s3:::{}; check their IAM policy",
                self.bucket()
            )),
            ConfigInvalid => e.with_hint(format!(
                "bucket {:?} does not exist in region {:?}: check `bucket`, `region` and `endpoint`",
                self.bucket(),
                self.options.region
            )),
            AlreadyExists => e.with_hint("it is never overwritten"),
            Unsupported
                if create_only
                    && (status == Some(501) || code.as_deref() == Some("NotImplemented")) =>
            {
                e.with_hint(
                    "this S3-compatible store does not take conditional writes (If-None-Match), which offsite sends so that nothing is ever overwritten; use a store that does (AWS S3, MinIO, Ceph RGW recent versions)",
                )
            }
            Unsupported if status == Some(501) || code.as_deref() == Some("NotImplemented") => {
                e.with_hint(format!(
                    "this S3-compatible store does not implement {call}, which this needs"
                ))
            }
            Unsupported if code.as_deref() == Some("InvalidObjectState") => e.with_hint(
                "the object is in a cold storage class (GLACIER or DEEP_ARCHIVE) and must be retrieved first: `offsite restore` and `offsite verify` request the retrieval and exit 4 until it is readable",
            ),
            _ => e,
        }
    }
}

/// `2026-12-01T02:15:00Z`.
fn rfc3339(t: std::time::SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("{t:?}"))
}

fn sha256_b64(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

fn crc32c_b64(body: &[u8]) -> String {
    // CRC-32/ISCSI is CRC32C; the value fits in 32 bits.
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, body) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Marks the upload ids of uploads started with CRC32C part checksums.
const CRC32C_UPLOAD: &str = "crc32c:";

/// The server's upload id, and whether its parts carry CRC32C (else SHA-256).
fn upload_of(upload: &UploadId) -> (&str, bool) {
    match upload.0.strip_prefix(CRC32C_UPLOAD) {
        Some(id) => (id, true),
        None => (&upload.0, false),
    }
}

fn part_number(index: u32) -> Result<i32> {
    i32::try_from(index + 1)
        .ok()
        .filter(|n| *n <= 10_000)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("part {index} is past S3's 10,000 parts"),
            )
        })
}

#[async_trait]
impl Backend for S3Backend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        let readable = !self.options.put_only;
        Capabilities {
            multipart: true,
            parts_out_of_order: true,
            offset_resume: false,
            atomic_rename: false,
            exclusive_create: true,
            list: readable,
            delete: readable,
            read: readable,
            cold_storage: self
                .options
                .storage_class
                .as_deref()
                .is_some_and(needs_restore),
            min_part_size: 5 * MIB,
            max_part_size: 5 << 30,
            max_parts: 10_000,
            max_object_size: Some(5 << 40),
            retention: self.options.object_lock.map(|l| l.retain),
        }
    }

    /// Only `put_only` rules calls out: the request `op` would have made,
    /// and the policy that may make it.
    fn refusal(&self, op: Operation) -> Error {
        let call = match op {
            Operation::Get => "GetObject",
            Operation::PrepareRead | Operation::RetainedUntil => "HeadObject",
            Operation::List => "ListObjectsV2",
            Operation::Delete => "DeleteObject",
            Operation::AbortUpload => "AbortMultipartUpload",
        };
        Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{call} is not made on a put_only destination (its credentials may only write to bucket {:?})",
                self.bucket()
            ),
        )
        .with_hint(
            "run list, verify, restore and prune from a host whose destination has put_only = false and credentials with the restorer or pruner policy (s3:ListBucket, s3:GetObject, s3:DeleteObject)",
        )
    }

    async fn probe(&self) -> Result<()> {
        // A put-only key may not even HeadBucket: nothing to check without writing.
        if self.options.put_only {
            return Ok(());
        }
        self.client()
            .await
            .head_bucket()
            .bucket(self.bucket())
            .send()
            .await
            .map_err(|e| self.err("HeadBucket", None, e))?;
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let sum = crc32c_b64(&body);
        let op = self
            .client()
            .await
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .set_storage_class(self.class_for_put())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(sum)
            // Create-only: 412 when the key exists; needs no permission beyond s3:PutObject.
            .if_none_match("*")
            .set_object_lock_mode(self.lock_now().map(|l| l.0.sdk()))
            .set_object_lock_retain_until_date(self.lock_now().map(|l| l.1))
            .body(SdkStream::from(body))
            .customize();
        let op = if self.unsigned_payload() {
            op.disable_payload_signing()
        } else {
            op
        };
        op.send()
            .await
            .map_err(|e| self.err("PutObject", Some(key), e))?;
        Ok(())
    }

    async fn create_upload(&self, key: &str, _part_size: u64) -> Result<UploadId> {
        let out = self
            .client()
            .await
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .set_storage_class(self.class_for_volumes())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .set_object_lock_mode(self.lock_now().map(|l| l.0.sdk()))
            .set_object_lock_retain_until_date(self.lock_now().map(|l| l.1))
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", Some(key), e))?;
        let id = out.upload_id().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "CreateMultipartUpload returned no upload id",
            )
            .with_destination(&self.name)
            .with_key(key)
        })?;
        Ok(UploadId(format!("{CRC32C_UPLOAD}{id}")))
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        let number =
            part_number(part.index).map_err(|e| e.with_destination(&self.name).with_key(key))?;
        let size = part.body.len() as u64;
        let (id, crc32c) = upload_of(upload);
        let req = self
            .client()
            .await
            .upload_part()
            .bucket(self.bucket())
            .key(key)
            .upload_id(id)
            .part_number(number);
        let (req, sum) = if crc32c {
            let sum = crc32c_b64(&part.body);
            let req = req
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .checksum_crc32_c(&sum);
            (req, sum)
        } else {
            let sum = sha256_b64(&part.body);
            let req = req
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&sum);
            (req, sum)
        };
        let op = req.body(SdkStream::from(part.body)).customize();
        let op = if self.unsigned_payload() {
            op.disable_payload_signing()
        } else {
            op
        };
        let out = op
            .send()
            .await
            .map_err(|e| self.err("UploadPart", Some(key), e))?;
        let etag = out.e_tag().ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "UploadPart returned no ETag")
                .with_destination(&self.name)
                .with_key(key)
        })?;
        Ok(PartReceipt {
            index: part.index,
            offset: part.offset,
            size,
            tag: format!("{etag} {sum}"),
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        let (id, crc32c) = upload_of(upload);
        let mut done = Vec::with_capacity(parts.len());
        for p in parts {
            let (etag, sum) = p.tag.rsplit_once(' ').ok_or_else(|| {
                Error::new(
                    ErrorKind::Precondition,
                    format!("part {} has a receipt this backend did not write", p.index),
                )
                .with_destination(&self.name)
                .with_key(key)
            })?;
            let part = CompletedPart::builder()
                .part_number(part_number(p.index)?)
                .e_tag(etag);
            done.push(if crc32c {
                part.checksum_crc32_c(sum).build()
            } else {
                part.checksum_sha256(sum).build()
            });
        }
        self.client()
            .await
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(id)
            // Create-only, as PutObject: 412 when the key exists.
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", Some(key), e))?;
        // Some servers (moto) ignore the lock given at CreateMultipartUpload:
        // set it on the object now, as AWS would have. Retried here, and
        // never as part of the completion: completing again would find the
        // upload gone and leave the object unlocked without a word.
        if let Some((mode, until)) = self.lock_now() {
            crate::retry::with_retries(&crate::RetryPolicy::default(), || {
                self.put_retention(key, mode, until)
            })
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("{key} is stored but its Object Lock could not be set: {e}"),
                )
                .with_destination(&self.name)
                .with_key(key)
                .with_hint("check s3:PutObjectRetention in the uploader's policy (`offsite policy s3 --role uploader`), then lock the object by hand or delete it and back up again")
            })?;
        }
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        match self
            .client()
            .await
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_of(upload).0)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.err("AbortMultipartUpload", Some(key), e);
                if e.kind() == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// HeadObject; for a GLACIER or DEEP_ARCHIVE object not yet retrieved,
    /// RestoreObject with the configured tier and days.
    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        let client = self.client().await;
        let head = client
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("HeadObject", Some(key), e))?;
        let class = match head.storage_class() {
            Some(c) if needs_restore(c.as_str()) => c.as_str().to_string(),
            _ => return Ok(Readiness::Ready),
        };
        let tier = self.options.restore_tier.as_str();
        let pending = |requested: bool| Readiness::Pending {
            requested,
            detail: format!("{class}, {tier} tier"),
            expected: retrieval_time(&class, tier),
        };
        // `x-amz-restore`: ongoing-request="true" while retrieving,
        // ongoing-request="false", expiry-date="..." once readable.
        match head.restore() {
            Some(r) if r.contains("ongoing-request=\"false\"") => return Ok(Readiness::Ready),
            Some(r) if r.contains("ongoing-request=\"true\"") => return Ok(pending(false)),
            _ => {}
        }
        if retrieval_time(&class, tier).is_none() {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{class} objects cannot be retrieved with the {tier} tier"),
            )
            .with_destination(&self.name)
            .with_key(key)
            .with_hint("set restore_tier = \"Standard\" or \"Bulk\" on this destination"));
        }
        let params = GlacierJobParameters::builder()
            .tier(Tier::from(tier))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Unexpected, format!("RestoreObject request: {e}"))
                    .with_destination(&self.name)
            })?;
        let request = RestoreRequest::builder()
            .days(self.options.restore_days)
            .glacier_job_parameters(params)
            .build();
        match client
            .restore_object()
            .bucket(self.bucket())
            .key(key)
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(pending(true)),
            Err(e) if e.code() == Some("RestoreAlreadyInProgress") => Ok(pending(false)),
            Err(e) => Err(self.err("RestoreObject", Some(key), e)),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let out = self
            .client()
            .await
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)))
            .send()
            .await
            .map_err(|e| self.err("GetObject", Some(key), e))?;
        let name = self.name.clone();
        let key = key.to_string();
        let stream = futures::stream::unfold(Some(out.body), move |state| {
            let name = name.clone();
            let key = key.clone();
            async move {
                let mut body = state?;
                match body.next().await {
                    None => None,
                    Some(Ok(chunk)) => Some((Ok(chunk), Some(body))),
                    Some(Err(e)) => Some((
                        Err(Error::new(
                            ErrorKind::Unexpected,
                            format!("reading the object failed: {}", causes(&e)),
                        )
                        .temporary()
                        .with_destination(name)
                        .with_key(key)),
                        None,
                    )),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let pages = self
            .client()
            .await
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .into_paginator()
            .send();
        let this = (self.name.clone(), self.bucket().to_string());
        let stream = futures::stream::unfold(
            (Some(pages), VecDeque::new(), this),
            move |(mut pages, mut ready, this)| async move {
                loop {
                    if let Some(m) = ready.pop_front() {
                        return Some((Ok(m), (pages, ready, this)));
                    }
                    let p = pages.as_mut()?;
                    match p.next().await {
                        None => return None,
                        Some(Ok(page)) => {
                            for o in page.contents() {
                                if let Some(k) = o.key() {
                                    ready.push_back(ObjectMeta {
                                        key: k.to_string(),
                                        size: o.size().unwrap_or(0).max(0) as u64,
                                    });
                                }
                            }
                        }
                        Some(Err(e)) => {
                            let err = Error::new(
                                ErrorKind::Unexpected,
                                format!(
                                    "ListObjectsV2 in bucket {:?} failed ({})",
                                    this.1,
                                    e.code().map(str::to_string).unwrap_or_else(|| causes(&e))
                                ),
                            )
                            .with_destination(this.0.clone());
                            return Some((Err(err), (None, ready, this)));
                        }
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn retained_until(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        if self.options.object_lock.is_none() {
            return Ok(None);
        }
        match self.lock_of(key, None).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            other => other,
        }
    }

    async fn extend_retention(&self, key: &str, until: std::time::SystemTime) -> Result<()> {
        let Some(lock) = self.options.object_lock else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this destination has no object_lock",
            )
            .with_destination(&self.name)
            .with_key(key));
        };
        if self
            .lock_of(key, None)
            .await?
            .is_some_and(|now| now >= until)
        {
            return Ok(());
        }
        self.put_retention(key, lock.mode, aws_smithy_types::DateTime::from(until))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if self.options.object_lock.is_some() {
            return self.delete_versions(key).await;
        }
        self.client()
            .await
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", Some(key), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720's
    /// polynomial); S3 wants its 4 bytes, big-endian, in base64.
    #[test]
    fn crc32c_is_the_iscsi_crc_in_base64() {
        assert_eq!(crc32c_b64(b"123456789"), "4waSgw==");
        assert_eq!(crc32c_b64(b""), "AAAAAA==");
    }

    #[test]
    fn upload_ids_say_their_checksum() {
        assert_eq!(upload_of(&UploadId("crc32c:abc".into())), ("abc", true));
        assert_eq!(upload_of(&UploadId("abc".into())), ("abc", false));
    }

    #[test]
    fn part_numbers_start_at_one_and_stop_at_ten_thousand() {
        assert_eq!(part_number(0).ok(), Some(1));
        assert_eq!(part_number(9_999).ok(), Some(10_000));
        assert!(part_number(10_000).is_err());
    }

    fn options(storage_class: Option<&str>, put_only: bool) -> S3Options {
        S3Options {
            bucket: "b".into(),
            region: "us-east-1".into(),
            endpoint: None,
            storage_class: storage_class.map(Into::into),
            put_only,
            profile: None,
            credentials: None,
            restore_tier: "Standard".into(),
            restore_days: 1,
            timeout: std::time::Duration::from_secs(60),
            object_lock: None,
        }
    }

    #[test]
    fn manifests_stay_in_standard_and_volumes_take_the_class() {
        let b = |class: &str| S3Backend::new("s3", options(Some(class), false));
        assert_eq!(b("DEEP_ARCHIVE").class_for_put(), None);
        assert_eq!(b("GLACIER").class_for_put(), None);
        assert_eq!(b("STANDARD_IA").class_for_put(), None);
        assert_eq!(
            b("GLACIER").class_for_volumes(),
            Some(StorageClass::Glacier)
        );
        assert!(b("GLACIER").capabilities().cold_storage);
    }

    /// Refused by [`crate::Checked`] before any request, each naming the
    /// request and the policy to use instead.
    #[tokio::test]
    async fn a_put_only_destination_refuses_reads_lists_and_deletes() {
        let b = S3Backend::new("s3", options(None, true));
        let b = crate::Checked::new(std::sync::Arc::new(b));
        crate::checked::assert_put_only_refusals(
            &b,
            "destination \"s3\": ListObjectsV2 is not made on a put_only destination (its credentials may only write to bucket \"b\"); run list, verify, restore and prune from a host whose destination has put_only = false and credentials with the restorer or pruner policy (s3:ListBucket, s3:GetObject, s3:DeleteObject)",
            ["GetObject", "HeadObject", "DeleteObject", "AbortMultipartUpload"],
        )
        .await;
        // Without Object Lock there is no lock to read: answered, not refused.
        let unlocked = b.retained_until("db/j/1/manifest.json").await;
        assert_eq!(unlocked.expect("no lock"), None);
    }

    #[test]
    fn the_sha256_is_base64_as_s3_wants_it() {
        // echo -n abc | openssl dgst -sha256 -binary | base64
        assert_eq!(
            sha256_b64(b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
