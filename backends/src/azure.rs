//! `kind = "azure"`: block blobs in an Azure Blob Storage container, on the
//! official `azure_storage_blob` 1.x.
//!
//! **Why this crate.** The design card names `azure_storage_blobs`; that crate
//! sits on the Azure SDK's legacy branch (0.21, no further updates planned).
//! Its maintained successor is `azure_storage_blob` 1.x (and `azure_core`
//! 1.x). object_store's azure module was the other candidate, but it chooses
//! block ids itself, cannot read a block list, and sets an access tier only
//! on single-shot puts, so neither a resume in a new process nor `Archive`
//! volumes would work. `azure_storage_blob` does block staging with our own
//! block ids, access tiers at commit and Set Blob Tier; SAS tokens go in the
//! URL. It has no shared-key signing built in: `SharedKeyPolicy` below
//! signs each try (the Shared Key scheme of the Storage REST API).
//!
//! How the trait maps to Azure:
//! - `create_upload` makes no request: the upload id is a random 16-hex-digit
//!   nonce. Block ids are `<nonce><index, 8 digits>`, 24 bytes, so every
//!   block of a blob has an id of the same length (the service requires it)
//!   and two attempts at one blob never mix their blocks.
//! - `put_part` → Put Block with `Content-MD5`, which the service verifies
//!   (`Md5Mismatch` otherwise); the receipt is the block id, journaled by the
//!   caller, so a resume sends only the blocks that are missing.
//! - `complete_upload` → Put Block List (`Latest`) with `access_tier`.
//!   Uncommitted blocks expire after seven days: the service then answers
//!   `InvalidBlockList`, reported as [`ErrorKind::NotFound`], and the caller
//!   sends that volume again from its first block.
//! - `put` (manifests) → one verified block and a commit, always in `Hot`, so
//!   `list` and `prune` never wait for a rehydration.
//! - `prepare_read` → Get Blob Properties; an `Archive` blob that is not being
//!   rehydrated gets Set Blob Tier `Hot` with `rehydrate_priority`, and
//!   answers Pending until it is readable (the blob then stays in Hot).
//! - `get` → Get Blob with a range; `list` → List Blobs pages; `delete` →
//!   Delete Blob (with its snapshots). `abort_upload` drops uncommitted blocks
//!   by committing an empty list on a blob that does not exist (`If-None-Match: *`)
//!   and deleting it.
//! - **`put_only`**: with a create/write-only SAS (`sp=cw`, Azure's analogue
//!   of S3's put-only policy) the backup calls only Put Block and Put Block
//!   List; the capabilities then rule out every read, list or delete, which
//!   [`crate::Checked`] refuses before any request with this backend's
//!   `refusal`, and `probe` makes none.
//!
//! Secrets (the account key, the SAS token) are read from their environment
//! variables when the client is first built. They never appear in errors,
//! Debug output or logs: transport errors quote the request URL, so every
//! message is scrubbed of the SAS signature before it is shown.
//!
//! Retries are the caller's ([`crate::Retrying`]): the SDK's own are off, so
//! a block is never sent more often than the journal knows.

mod settings;

pub use settings::AzureSettings;

use std::fmt;
use std::num::NonZero;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, Request, RequestContent, RetryOptions, Transport, Url,
};
use azure_core::time::{OffsetDateTime, to_rfc7231};
use azure_storage_blob::models::{
    AccessTier, ArchiveStatus, BlobClientDeleteOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobClientSetTierOptions,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockOptions, BlockLookupList, DeleteSnapshotsOptionType,
    RehydratePriority,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::sync::OnceCell;

use crate::error::causes;
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, ListStream, ObjectMeta, Operation, Part,
    PartReceipt, Readiness, Result, Secret, UploadId,
};

/// Where a secret comes from.
#[derive(Clone)]
pub enum SecretSource {
    /// Read from this environment variable when the client is built.
    Env(String),
    /// Given directly (tests and embedders).
    Value(Secret),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "Env({v:?})"),
            SecretSource::Value(_) => f.write_str("Value(***)"),
        }
    }
}

/// How requests are authorized.
#[derive(Debug, Clone)]
pub enum AzureCredential {
    /// The storage account's access key (base64), signing every request.
    SharedKey(SecretSource),
    /// A SAS token (the query string, with or without its leading `?`).
    Sas(SecretSource),
}

/// An Azure destination's settings.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// The storage account's name.
    pub account: String,
    /// The container the blobs go in; offsite never creates it.
    pub container: String,
    /// The blob service endpoint; default `https://<account>.blob.core.windows.net`.
    /// Azurite and sovereign clouds set it (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
    pub endpoint: Option<String>,
    /// How requests are authorized: the account key or a SAS token.
    pub credential: AzureCredential,
    /// The access tier of volumes (one of [`ACCESS_TIERS`]); `None`: the account's default.
    pub access_tier: Option<String>,
    /// How fast an Archive blob is rehydrated: one of [`REHYDRATE_PRIORITIES`].
    pub rehydrate_priority: String,
    /// Only Put Block and Put Block List during a backup (a create/write-only SAS).
    pub put_only: bool,
    /// Connect timeout, and the longest wait for the next bytes of an answer.
    pub timeout: Duration,
}

/// The access tiers a block blob takes, as written in the configuration.
pub const ACCESS_TIERS: &[&str] = &["Hot", "Cool", "Cold", "Archive"];

/// The rehydration priorities of Set Blob Tier, as written in the configuration.
pub const REHYDRATE_PRIORITIES: &[&str] = &["Standard", "High"];

/// The longest a rehydration from Archive usually takes, as Azure documents
/// it (High: under an hour for blobs below 10 GiB).
pub fn rehydration_time(priority: &str) -> Option<Duration> {
    match priority {
        "Standard" => Some(Duration::from_secs(15 * 3600)),
        "High" => Some(Duration::from_secs(3600)),
        _ => None,
    }
}

const MIB: u64 = 1 << 20;
/// Put Block's limit (service versions from 2019-12-12).
const MAX_BLOCK: u64 = 4000 * MIB;
const MAX_BLOCKS: u32 = 50_000;
/// Bytes of a block id before base64: a 16-digit nonce and an 8-digit index.
const NONCE_LEN: usize = 16;

/// An Azure Blob Storage destination: block blobs in one container.
pub struct AzureBackend {
    name: String,
    options: AzureOptions,
    client: OnceCell<Client>,
}

/// The container client, what makes blob clients, and the SAS to scrub from messages.
struct Client {
    container: BlobContainerClient,
    container_url: Url,
    blob_options: BlobClientOptions,
    sas: Option<Secret>,
}

impl Client {
    /// A client for blob `key`. The key's `/` stay literal in the URL path
    /// (the SDK's `blob_client` would send them as `%2F`), as every Azure
    /// tool writes blob names, so what Shared Key signs is the plain path.
    fn blob(&self, key: &str) -> Result<BlobClient, azure_core::Error> {
        let mut url = self.container_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(key.split('/'));
        }
        BlobClient::new(url, None, Some(self.blob_options.clone()))
    }
}

impl fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBackend")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

/// Which Azure call, for messages and the error mapping.
#[derive(Clone, Copy)]
enum Call {
    ListBlobs,
    PutBlock,
    PutBlockList,
    GetBlobProperties,
    SetBlobTier,
    GetBlob,
    DeleteBlob,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::ListBlobs => "List Blobs",
            Call::PutBlock => "Put Block",
            Call::PutBlockList => "Put Block List",
            Call::GetBlobProperties => "Get Blob Properties",
            Call::SetBlobTier => "Set Blob Tier",
            Call::GetBlob => "Get Blob",
            Call::DeleteBlob => "Delete Blob",
        }
    }

    /// The SAS permission letter the call needs.
    fn sas_permission(self) -> &'static str {
        match self {
            Call::ListBlobs => "l (list)",
            Call::PutBlock | Call::PutBlockList => "w (write) and c (create)",
            Call::GetBlobProperties | Call::GetBlob => "r (read)",
            Call::SetBlobTier => "t (tag) or w (write)",
            Call::DeleteBlob => "d (delete)",
        }
    }
}

impl AzureBackend {
    /// A backend named `name` (the destination's name); it makes no
    /// request and reads no secret until its first call.
    pub fn new(name: impl Into<String>, options: AzureOptions) -> AzureBackend {
        AzureBackend {
            name: name.into(),
            options,
            client: OnceCell::new(),
        }
    }

    fn endpoint(&self) -> String {
        match &self.options.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{}.blob.core.windows.net", self.options.account),
        }
    }

    fn read_secret(&self, source: &SecretSource, what: &str) -> Result<Secret> {
        match source {
            SecretSource::Value(s) => Ok(s.clone()),
            // Keys and SAS tokens have no spaces: a trailing newline (from
            // a file) is dropped.
            SecretSource::Env(var) => crate::secret::from_env(var, what)
                .map(|s| Secret::new(s.expose().trim()))
                .map_err(|e| e.with_destination(&self.name)),
        }
    }

    async fn client(&self) -> Result<&Client> {
        self.client.get_or_try_init(|| self.build_client()).await
    }

    async fn build_client(&self) -> Result<Client> {
        let o = &self.options;
        let config_error =
            |msg: String| Error::new(ErrorKind::ConfigInvalid, msg).with_destination(&self.name);
        let mut url = Url::parse(&format!("{}/", self.endpoint()))
            .map_err(|e| config_error(format!("invalid endpoint {:?}: {e}", self.endpoint())))?;
        url.path_segments_mut()
            .map_err(|()| config_error(format!("invalid endpoint {:?}", self.endpoint())))?
            .pop_if_empty()
            .push(&o.container);
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        let mut sas = None;
        match &o.credential {
            AzureCredential::SharedKey(source) => {
                let key = self.read_secret(source, "the storage account key")?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(key.expose())
                    .map_err(|_| {
                        Error::new(
                            ErrorKind::Unauthenticated,
                            "the storage account key is not base64 (it is the 88-character key the portal shows under Access keys)",
                        )
                        .with_destination(&self.name)
                    })?;
                per_try.push(Arc::new(SharedKeyPolicy {
                    account: o.account.clone(),
                    key: decoded,
                }));
            }
            AzureCredential::Sas(source) => {
                let token = self.read_secret(source, "the SAS token")?;
                let token = token.expose().trim_start_matches('?').to_string();
                url.set_query(Some(&token));
                sas = Some(Secret::new(token));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(o.timeout)
            .read_timeout(o.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .gzip(false)
            .deflate(false)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("cannot set up the HTTP client: {e}"),
                )
                .with_destination(&self.name)
            })?;
        let client_options = ClientOptions {
            per_try_policies: per_try,
            retry: RetryOptions::none(),
            transport: Some(Transport::new(Arc::new(http))),
            ..Default::default()
        };
        let blob_options = BlobClientOptions {
            client_options: client_options.clone(),
            ..Default::default()
        };
        let options = BlobContainerClientOptions {
            client_options,
            ..Default::default()
        };
        let container =
            BlobContainerClient::new(url.clone(), None, Some(options)).map_err(|e| {
                config_error(format!(
                    "invalid endpoint {:?}: {}",
                    self.endpoint(),
                    scrub(&e.to_string(), sas.as_ref())
                ))
            })?;
        Ok(Client {
            container,
            container_url: url,
            blob_options,
            sas,
        })
    }

    fn tier_for_volumes(&self) -> Option<AccessTier> {
        self.options.access_tier.as_deref().map(tier_from)
    }

    fn err(
        &self,
        call: Call,
        key: Option<&str>,
        sas: Option<&Secret>,
        err: azure_core::Error,
    ) -> Error {
        use ErrorKind::*;
        use azure_core::error::ErrorKind as Az;
        let container = &self.options.container;
        let (kind, temporary, detail) = match err.kind() {
            Az::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let status = u16::from(*status);
                let mut code = error_code.clone().unwrap_or_default();
                // Azurite reports a Content-MD5 mismatch as a generic
                // InvalidOperation; its message says what it is.
                if code == "InvalidOperation"
                    && raw_response.as_ref().is_some_and(|r| {
                        String::from_utf8_lossy(r.body().as_ref())
                            .to_ascii_lowercase()
                            .contains("md5")
                    })
                {
                    code = "Md5Mismatch".into();
                }
                let (kind, temporary) = classify(status, &code);
                let detail = if code.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("{code}, HTTP {status}")
                };
                (kind, temporary, detail)
            }
            Az::Connection | Az::Io => (Unexpected, true, causes(&err)),
            Az::Credential => (Unauthenticated, false, causes(&err)),
            _ => (Unexpected, false, causes(&err)),
        };
        let detail = scrub(&detail, sas);
        let mut e = Error::new(
            kind,
            format!(
                "{} in container {container:?} failed ({detail})",
                call.name()
            ),
        )
        .with_destination(&self.name);
        if temporary {
            e = e.temporary();
        }
        if let Some(k) = key {
            e = e.with_key(k);
        }
        let by_sas = matches!(self.options.credential, AzureCredential::Sas(_));
        match kind {
            Unauthenticated if by_sas => e.with_hint(
                "the SAS token was refused: check that it is for this account and container, has not expired (se=) and is copied whole, and that the account's network rules admit this host; the token itself is never printed",
            ),
            Unauthenticated => e.with_hint(format!(
                "the account key was refused: check `account` ({:?}) and the key in the environment variable (Access keys in the portal), and that the account's network rules admit this host; the key itself is never printed",
                self.options.account
            )),
            PermissionDenied if by_sas => e.with_hint(format!(
                "the SAS token does not allow {}: it needs the permission {}",
                call.name(),
                call.sas_permission()
            )),
            PermissionDenied => e.with_hint(format!(
                "the credentials may not make {} on container {container:?}",
                call.name()
            )),
            ConfigInvalid => e.with_hint(format!(
                "container {container:?} does not exist in account {:?}: check `container`, `account` and `endpoint`",
                self.options.account
            )),
            Unsupported => e.with_hint(
                "the blob is in the Archive tier and must be rehydrated first: `offsite restore` and `offsite verify` request it and exit 4 until it is readable",
            ),
            _ => e,
        }
    }

    /// The client for blob `key`, or the error of `call` on it.
    fn blob(&self, client: &Client, call: Call, key: &str) -> Result<BlobClient> {
        client
            .blob(key)
            .map_err(|e| self.err(call, Some(key), client.sas.as_ref(), e))
    }

    /// Commits `ids` (looked up among uncommitted and committed blocks) as `key`.
    async fn commit(
        &self,
        key: &str,
        ids: Vec<Vec<u8>>,
        tier: Option<AccessTier>,
        only_if_absent: bool,
    ) -> Result<()> {
        let client = self.client().await?;
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let body: RequestContent<BlockLookupList, _> =
            list.try_into().map_err(|e: azure_core::Error| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("cannot encode the block list: {e}"),
                )
                .with_destination(&self.name)
                .with_key(key)
            })?;
        let options = BlockBlobClientCommitBlockListOptions {
            tier,
            if_none_match: only_if_absent.then(|| azure_core::http::Etag::from("*")),
            ..Default::default()
        };
        self.blob(client, Call::PutBlockList, key)?
            .block_blob_client()
            .commit_block_list(body, Some(options))
            .await
            .map_err(|e| self.err(Call::PutBlockList, Some(key), client.sas.as_ref(), e))?;
        Ok(())
    }

    async fn stage(&self, key: &str, id: &[u8], body: Bytes) -> Result<()> {
        let client = self.client().await?;
        let md5 = Md5::digest(&body).to_vec();
        let options = BlockBlobClientStageBlockOptions {
            transactional_content_md5: Some(md5),
            ..Default::default()
        };
        let len = body.len() as u64;
        self.blob(client, Call::PutBlock, key)?
            .block_blob_client()
            .stage_block(id, len, body.into(), Some(options))
            .await
            .map_err(|e| self.err(Call::PutBlock, Some(key), client.sas.as_ref(), e))?;
        Ok(())
    }
}

/// The error kind and retry status of an HTTP error from the Blob service.
fn classify(status: u16, code: &str) -> (ErrorKind, bool) {
    use ErrorKind::*;
    match (code, status) {
        // HTTP 409, but not a conflict: the blob is in the Archive tier.
        ("BlobArchived" | "BlobBeingRehydrated", _) => (Unsupported, false),
        ("ContainerNotFound" | "ContainerBeingDeleted" | "AccountIsDisabled", _) => {
            (ConfigInvalid, false)
        }
        // The uncommitted blocks are gone (expired after seven days, or
        // discarded): the upload no longer exists.
        ("BlobNotFound" | "InvalidBlockList", _) | ("", 404) => (NotFound, false),
        // Azurite answers AuthorizationFailure to a wrong key or an expired
        // SAS; Azure uses it for a host its network rules refuse.
        (
            "AuthenticationFailed"
            | "AuthorizationFailure"
            | "InvalidAuthenticationInfo"
            | "NoAuthenticationInformation",
            _,
        ) => (Unauthenticated, false),
        (_, 401) => (Unauthenticated, false),
        (_, 403) => (PermissionDenied, false),
        ("BlobAlreadyExists", _) => (AlreadyExists, false),
        // Damaged in transit: sending the same bytes again is the cure.
        ("Md5Mismatch" | "Crc64Mismatch" | "InvalidMd5", _) => (Precondition, true),
        ("ConditionNotMet" | "InvalidRange" | "InvalidBlobTier" | "InvalidBlockId", _)
        | (_, 412 | 416) => (Precondition, false),
        ("ServerBusy" | "OperationTimedOut" | "InternalError", _) | (_, 500 | 502 | 504) => {
            (Unexpected, true)
        }
        (_, 429 | 503) => (RateLimited, true),
        _ => (Unexpected, false),
    }
}

fn tier_from(name: &str) -> AccessTier {
    match name {
        "Hot" => AccessTier::Hot,
        "Cool" => AccessTier::Cool,
        "Cold" => AccessTier::Cold,
        "Archive" => AccessTier::Archive,
        other => AccessTier::UnknownValue(other.to_string()),
    }
}

/// The block id of part `index` of upload `nonce`: the same length for every
/// block of a blob, as the service requires.
fn block_id(nonce: &str, index: u32) -> Result<Vec<u8>> {
    if nonce.len() != NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::new(
            ErrorKind::Precondition,
            format!("upload id {nonce:?} was not made by this backend"),
        ));
    }
    if index >= MAX_BLOCKS {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!("block {index} is past Azure's {MAX_BLOCKS} blocks per blob: raise part_size"),
        ));
    }
    Ok(format!("{nonce}{index:08}").into_bytes())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `text` without the SAS token or any `sig=` value in it (transport errors
/// quote the request URL, query string included).
fn scrub(text: &str, sas: Option<&Secret>) -> String {
    let mut out = match sas {
        Some(s) if !s.expose().is_empty() => text.replace(s.expose(), "***"),
        _ => text.to_string(),
    };
    let mut from = 0;
    while let Some(at) = out[from..].find("sig=").map(|i| from + i) {
        let start = at + "sig=".len();
        let end = out[start..]
            .find(|c: char| c == '&' || c == ')' || c == '"' || c.is_whitespace())
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// Signs every try with the account key (Shared Key authorization of the
/// Storage REST API, versions 2009-09-19 and later).
struct SharedKeyPolicy {
    account: String,
    key: Vec<u8>,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .field("key", &"***")
            .finish()
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", to_rfc7231(&OffsetDateTime::now_utc()));
        let length = request.body().len().unwrap_or(0);
        let to_sign = string_to_sign(&self.account, request, length);
        let signature = hmac_sha256(&self.key, to_sign.as_bytes());
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{}", self.account, b64(&signature)),
        );
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "the signing policy must not be the last in the pipeline",
            )),
        }
    }
}

/// The Shared Key string-to-sign of `request` (whose body is `length` bytes).
fn string_to_sign(account: &str, request: &Request, length: u64) -> String {
    let headers = request.headers();
    let header = |name: &'static str| {
        headers
            .get_optional_str(&HeaderName::from_static(name))
            .unwrap_or("")
            .to_string()
    };
    let length = if length == 0 {
        // An explicit content-length (Put Block sets it) wins over the body.
        match header("content-length").as_str() {
            "" | "0" => String::new(),
            l => l.to_string(),
        }
    } else {
        length.to_string()
    };
    let mut out = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n",
        request.method().as_ref().to_uppercase(),
        header("content-encoding"),
        header("content-language"),
        length,
        header("content-md5"),
        header("content-type"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-ms-"))
        .map(|(n, v)| (n.as_str().to_lowercase(), v.as_str().trim().to_string()))
        .collect();
    ms.sort();
    for (n, v) in ms {
        out.push_str(&format!("{n}:{v}\n"));
    }
    let url = request.url();
    out.push_str(&format!("/{account}{}", url.path()));
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    let mut i = 0;
    while i < params.len() {
        let name = params[i].0.clone();
        let mut values = Vec::new();
        while i < params.len() && params[i].0 == name {
            values.push(params[i].1.clone());
            i += 1;
        }
        out.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[async_trait]
impl Backend for AzureBackend {
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
            cold_storage: self.options.access_tier.as_deref() == Some("Archive"),
            min_part_size: 1,
            max_part_size: MAX_BLOCK,
            max_parts: MAX_BLOCKS,
            max_object_size: Some(MAX_BLOCK * MAX_BLOCKS as u64),
            retention: None,
        }
    }

    /// Only `put_only` rules calls out: the request `op` would have made,
    /// and the permissions that may make it.
    fn refusal(&self, op: Operation) -> Error {
        let call = match op {
            Operation::Get => Call::GetBlob,
            Operation::PrepareRead | Operation::RetainedUntil => Call::GetBlobProperties,
            Operation::List => Call::ListBlobs,
            Operation::Delete | Operation::AbortUpload => Call::DeleteBlob,
        };
        Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} is not made on a put_only destination (its SAS may only create and write blobs in container {:?})",
                call.name(),
                self.options.container
            ),
        )
        .with_hint(
            "run list, verify, restore and prune from a host whose destination has put_only = false and a key or SAS with read, list and delete permissions (sp=rld at least)",
        )
    }

    async fn probe(&self) -> Result<()> {
        // Building the client reads the secret: a missing variable shows now.
        let client = self.client().await?;
        // A create/write-only SAS may not list: nothing to check without writing.
        if self.options.put_only {
            return Ok(());
        }
        let options = BlobContainerClientListBlobsOptions {
            maxresults: Some(1),
            ..Default::default()
        };
        let mut pager = client
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.err(Call::ListBlobs, None, client.sas.as_ref(), e))?;
        pager
            .try_next()
            .await
            .map_err(|e| self.err(Call::ListBlobs, None, client.sas.as_ref(), e))?;
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let nonce = new_nonce();
        let id = block_id(&nonce, 0)?;
        self.stage(key, &id, body).await?;
        // Create-only (If-None-Match: *): 409 BlobAlreadyExists when the blob exists.
        self.commit(key, vec![id], Some(AccessTier::Hot), true)
            .await
    }

    async fn create_upload(&self, _key: &str, _part_size: u64) -> Result<UploadId> {
        Ok(UploadId(new_nonce()))
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        let id = block_id(&upload.0, part.index)
            .map_err(|e| e.with_destination(&self.name).with_key(key))?;
        let size = part.body.len() as u64;
        self.stage(key, &id, part.body).await?;
        Ok(PartReceipt {
            index: part.index,
            offset: part.offset,
            size,
            tag: b64(&id),
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        let mut ids = Vec::with_capacity(parts.len());
        for p in parts {
            let id = block_id(&upload.0, p.index)
                .map_err(|e| e.with_destination(&self.name).with_key(key))?;
            if p.tag != b64(&id) {
                return Err(Error::new(
                    ErrorKind::Precondition,
                    format!("part {} has a receipt this upload did not write", p.index),
                )
                .with_destination(&self.name)
                .with_key(key));
            }
            ids.push(id);
        }
        // Create-only, as `put`: an existing blob is never replaced.
        self.commit(key, ids, self.tier_for_volumes(), true).await
    }

    async fn abort_upload(&self, key: &str, _upload: &UploadId) -> Result<()> {
        // Committing an empty list discards every uncommitted block; only
        // where no blob exists, so a finished object is never touched.
        match self.commit(key, Vec::new(), None, true).await {
            Ok(()) => self.delete(key).await,
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::Precondition) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Get Blob Properties; for an Archive blob not being rehydrated yet,
    /// Set Blob Tier Hot with the configured priority.
    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        let client = self.client().await?;
        let blob = self.blob(client, Call::GetBlobProperties, key)?;
        let props = blob
            .get_properties(None)
            .await
            .map_err(|e| self.err(Call::GetBlobProperties, Some(key), client.sas.as_ref(), e))?;
        let tier = props.access_tier().ok().flatten();
        if tier.as_deref() != Some("Archive") {
            return Ok(Readiness::Ready);
        }
        let priority = self.options.rehydrate_priority.as_str();
        let pending = |requested: bool| Readiness::Pending {
            requested,
            detail: format!("Archive tier, {priority} rehydration to Hot"),
            expected: rehydration_time(priority),
        };
        match props.archive_status().ok().flatten() {
            Some(
                ArchiveStatus::RehydratePendingToHot
                | ArchiveStatus::RehydratePendingToCool
                | ArchiveStatus::RehydratePendingToCold,
            ) => return Ok(pending(false)),
            Some(ArchiveStatus::UnknownValue(s)) if s.starts_with("rehydrate-pending") => {
                return Ok(pending(false));
            }
            _ => {}
        }
        let options = BlobClientSetTierOptions {
            rehydrate_priority: Some(match priority {
                "High" => RehydratePriority::High,
                _ => RehydratePriority::Standard,
            }),
            ..Default::default()
        };
        match blob.set_tier(AccessTier::Hot, Some(options)).await {
            Ok(_) => Ok(pending(true)),
            Err(e) => {
                let e = self.err(Call::SetBlobTier, Some(key), client.sas.as_ref(), e);
                // Another run asked first (409 BlobBeingRehydrated).
                if e.kind() == ErrorKind::Unsupported {
                    Ok(pending(false))
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let client = self.client().await?;
        let options = BlobClientDownloadOptions {
            range: range.map(Into::into),
            parallel: NonZero::new(1),
            partition_size: NonZero::new(8 << 20),
            ..Default::default()
        };
        let out = self
            .blob(client, Call::GetBlob, key)?
            .download(Some(options))
            .await
            .map_err(|e| self.err(Call::GetBlob, Some(key), client.sas.as_ref(), e))?;
        let (name, key, sas) = (self.name.clone(), key.to_string(), client.sas.clone());
        let stream = out.body.map(move |chunk| {
            chunk.map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!(
                        "reading the blob failed: {}",
                        scrub(&causes(&e), sas.as_ref())
                    ),
                )
                .temporary()
                .with_destination(name.clone())
                .with_key(key.clone())
            })
        });
        Ok(Box::pin(stream))
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let client = self.client().await?;
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            ..Default::default()
        };
        let pager = client
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.err(Call::ListBlobs, None, client.sas.as_ref(), e))?;
        let this = AzureBackend::new(self.name.clone(), self.options.clone());
        let sas = client.sas.clone();
        let stream = pager.filter_map(move |item| {
            let out = match item {
                Ok(blob) => blob.name.map(|key| {
                    Ok(ObjectMeta {
                        key,
                        size: blob.properties.and_then(|p| p.content_length).unwrap_or(0),
                    })
                }),
                Err(e) => Some(Err(this.err(Call::ListBlobs, None, sas.as_ref(), e))),
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(stream))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let client = self.client().await?;
        let options = BlobClientDeleteOptions {
            delete_snapshots: Some(DeleteSnapshotsOptionType::Include),
            ..Default::default()
        };
        match self
            .blob(client, Call::DeleteBlob, key)?
            .delete(Some(options))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.err(Call::DeleteBlob, Some(key), client.sas.as_ref(), e);
                if e.kind() == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// A fresh upload nonce: 16 hex digits.
fn new_nonce() -> String {
    let id = azure_core::Uuid::new_v4().simple().to_string();
    id[..NONCE_LEN].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length_and_refuse_foreign_uploads() {
        let a = block_id("0123456789abcdef", 0).unwrap();
        let b = block_id("0123456789abcdef", 49_999).unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(b64(&a).len(), b64(&b).len());
        assert_eq!(a, b"0123456789abcdef00000000");
        assert!(block_id("0123456789abcdef", 50_000).is_err());
        assert!(block_id("short", 0).is_err());
        assert!(block_id("0123456789abcdeg", 0).is_err());
        assert_eq!(new_nonce().len(), NONCE_LEN);
        assert_ne!(new_nonce(), new_nonce());
    }

    #[test]
    fn scrub_removes_the_sas_and_any_signature() {
        let sas = Secret::new("sv=2024-11-04&sp=cw&sig=abc%2Bdef");
        let text = "error sending request for url (http://h/c/b?comp=block&sv=2024-11-04&sp=cw&sig=abc%2Bdef)";
        let out = scrub(text, Some(&sas));
        assert!(!out.contains("abc%2Bdef"), "{out}");
        let other = scrub("url (http://h/c?se=1&sig=SECRET&sp=r) and sig=TWO", None);
        assert_eq!(other, "url (http://h/c?se=1&sig=***&sp=r) and sig=***");
    }

    #[test]
    fn errors_are_classified_by_code_before_status() {
        assert_eq!(
            classify(409, "BlobArchived"),
            (ErrorKind::Unsupported, false)
        );
        assert_eq!(
            classify(400, "InvalidBlockList"),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            classify(404, "ContainerNotFound"),
            (ErrorKind::ConfigInvalid, false)
        );
        assert_eq!(classify(404, "BlobNotFound"), (ErrorKind::NotFound, false));
        assert_eq!(
            classify(403, "AuthenticationFailed"),
            (ErrorKind::Unauthenticated, false)
        );
        assert_eq!(
            classify(403, "AuthorizationPermissionMismatch"),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(400, "Md5Mismatch"),
            (ErrorKind::Precondition, true)
        );
        assert_eq!(classify(503, "ServerBusy"), (ErrorKind::Unexpected, true));
        assert_eq!(classify(429, ""), (ErrorKind::RateLimited, true));
    }

    /// The example of Microsoft's "Authorize with Shared Key" page, signed
    /// with the same fields: the canonical form must match it line by line.
    #[test]
    fn the_string_to_sign_is_canonical() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c/a%20b.txt?comp=block&blockid=QUJD&timeout=30",
        )
        .unwrap();
        let mut r = Request::new(url, azure_core::http::Method::Put);
        r.insert_header("x-ms-version", "2026-04-06");
        r.insert_header("x-ms-date", "Sun, 22 Nov 2026 08:00:00 GMT");
        r.insert_header("content-md5", "kAFQmDzST7DWlj99KOF/cg==");
        r.insert_header("content-type", "application/octet-stream");
        r.insert_header("x-ms-client-request-id", " abc ");
        let s = string_to_sign("devstoreaccount1", &r, 3);
        assert_eq!(
            s,
            "PUT\n\n\n3\nkAFQmDzST7DWlj99KOF/cg==\napplication/octet-stream\n\n\n\n\n\n\n\
             x-ms-client-request-id:abc\nx-ms-date:Sun, 22 Nov 2026 08:00:00 GMT\nx-ms-version:2026-04-06\n\
             /devstoreaccount1/devstoreaccount1/c/a%20b.txt\nblockid:QUJD\ncomp:block\ntimeout:30"
        );
        // An empty body signs an empty length, not "0".
        let r = Request::new(
            Url::parse("https://acct.blob.core.windows.net/c?restype=container&comp=list").unwrap(),
            azure_core::http::Method::Get,
        );
        assert!(string_to_sign("acct", &r, 0).starts_with("GET\n\n\n\n"));
    }

    /// Refused by [`crate::Checked`] before any request, each naming the
    /// request and the permissions to use instead.
    #[tokio::test]
    async fn a_put_only_destination_refuses_reads_lists_and_deletes() {
        let options = AzureOptions {
            account: "acct".into(),
            container: "c".into(),
            endpoint: None,
            credential: AzureCredential::Sas(SecretSource::Value(Secret::new("sp=cw"))),
            access_tier: None,
            rehydrate_priority: "Standard".into(),
            put_only: true,
            timeout: Duration::from_secs(60),
        };
        let b = crate::Checked::new(Arc::new(AzureBackend::new("blob", options)));
        crate::checked::assert_put_only_refusals(
            &b,
            "destination \"blob\": List Blobs is not made on a put_only destination (its SAS may only create and write blobs in container \"c\"); run list, verify, restore and prune from a host whose destination has put_only = false and a key or SAS with read, list and delete permissions (sp=rld at least)",
            ["Get Blob", "Get Blob Properties", "Delete Blob", "Delete Blob"],
        )
        .await;
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
