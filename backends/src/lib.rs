//! `offsite-backends`: the storage destinations of offsite behind one small
//! async trait.
//!
//! Every destination kind implements [`Backend`]; the pipeline and the shared
//! [`conformance`] suite branch on [`Backend::capabilities`], never on a
//! backend's name. Resumable uploads are plain data ([`UploadId`],
//! [`PartReceipt`]) so the caller can journal them and resume in another
//! process, the way object_store's `MultipartStore` does.
//!
//! Wrappers compose around any backend: [`Throttled`] enforces a bandwidth
//! limit, [`Retrying`] retries temporary errors with backoff, and
//! [`Checked`], outermost, validates keys, refuses the calls a backend's
//! capabilities rule out and names the destination and key in every error.
//! Retrying lives only in [`Retrying`], never inside a backend; the
//! application stacks them as `Checked(Retrying(Throttled(backend)))`.
//!
//! Keys are relative, `/`-separated strings (`db/orders/20261122T021500Z-full/manifest.json`);
//! [`Checked`] refuses keys with empty, `.` or `..` components, and the
//! file-tree backends check them again where a key becomes a path.

#![warn(missing_docs)]

#[cfg(any(feature = "s3", feature = "glacier"))]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
mod checked;
pub mod conformance;
mod error;
mod files;
#[cfg(feature = "ftp")]
pub mod ftp;
#[cfg(feature = "glacier")]
pub mod glacier;
mod partial;
#[cfg(feature = "path")]
pub mod path;
mod retry;
#[cfg(feature = "s3")]
pub mod s3;
mod secret;
pub mod settings;
#[cfg(feature = "sftp")]
pub mod sftp;
mod throttle;
#[cfg(feature = "glacier")]
pub mod treehash;
pub mod units;

use std::fmt::Debug;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

pub use checked::Checked;
pub use error::{Error, ErrorKind, Result};
pub use retry::{RetryPolicy, Retrying};
pub use secret::Secret;
pub use throttle::{RateLimiter, Throttled};

/// A stream of bytes read from a destination.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A stream of listed objects.
pub type ListStream = Pin<Box<dyn Stream<Item = Result<ObjectMeta>> + Send>>;

/// What a backend can do. The pipeline reads it to choose how to upload
/// (parallel parts or one after the other), and the conformance suite reads
/// it to know which behaviours to demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Resumable uploads made of parts (`create_upload` .. `complete_upload`).
    pub multipart: bool,
    /// Parts may be sent in any order and concurrently. When false the caller
    /// sends parts one after the other, in index order (append-only protocols).
    pub parts_out_of_order: bool,
    /// An unfinished upload is a partial object grown at an offset (path, FTP, SFTP).
    pub offset_resume: bool,
    /// Completion is an atomic rename: nobody sees a half-written object.
    pub atomic_rename: bool,
    /// A create-only write is exclusive: of two writers racing for one key
    /// exactly one wins, the other gets `AlreadyExists` (S3 and Azure
    /// `If-None-Match: *`, a rename that never replaces). FTP can only look
    /// before it moves, and a vault's keys live in a local catalog: a
    /// cluster's slot cannot be claimed there.
    pub exclusive_create: bool,
    /// `list` is allowed (false on a put-only destination).
    pub list: bool,
    /// `delete` and `abort_upload` are allowed (false on a put-only destination).
    pub delete: bool,
    /// `get` and `prepare_read` are allowed (false on a put-only destination).
    pub read: bool,
    /// Objects must be restored (rehydrated) before they can be read.
    pub cold_storage: bool,
    /// Smallest part except the last.
    pub min_part_size: u64,
    /// Largest part.
    pub max_part_size: u64,
    /// Most parts in one upload.
    pub max_parts: u32,
    /// Largest object, when the store has a limit.
    pub max_object_size: Option<u64>,
    /// Objects are locked (S3 Object Lock) for this long when written: they
    /// cannot be deleted or replaced before; see [`Backend::extend_retention`].
    pub retention: Option<Duration>,
}

impl Capabilities {
    /// Whether a destination with these capabilities may make `op`; when
    /// not, [`Checked`] answers [`Backend::refusal`] without calling the
    /// backend.
    pub fn allows(&self, op: Operation) -> bool {
        match op {
            Operation::Get | Operation::PrepareRead => self.read,
            Operation::List => self.list,
            Operation::Delete | Operation::AbortUpload => self.delete,
            // Without locks there is nothing to read: the answer is `None`.
            Operation::RetainedUntil => self.read || self.retention.is_none(),
        }
    }
}

/// A [`Backend`] call that [`Capabilities`] can rule out (see
/// [`Capabilities::allows`]); every other call is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// [`Backend::get`]: needs `read`.
    Get,
    /// [`Backend::prepare_read`]: needs `read`.
    PrepareRead,
    /// [`Backend::list`]: needs `list`.
    List,
    /// [`Backend::delete`]: needs `delete`.
    Delete,
    /// [`Backend::abort_upload`]: dropping an upload's parts is a delete.
    AbortUpload,
    /// [`Backend::retained_until`]: reading a lock is a read, where objects are locked.
    RetainedUntil,
}

impl Operation {
    /// The trait method's name, as a message shows it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::PrepareRead => "prepare_read",
            Operation::List => "list",
            Operation::Delete => "delete",
            Operation::AbortUpload => "abort_upload",
            Operation::RetainedUntil => "retained_until",
        }
    }
}

/// One object found by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The full key, including the listed prefix.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A hidden file an unfinished upload or put left (see [`Backend::list_leftovers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its key, as `delete` takes it.
    pub key: String,
    /// When it was last written, where the server says.
    pub modified: Option<std::time::SystemTime>,
}

/// The id of an unfinished upload; opaque to the caller, who only stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadId(pub String);

/// One part of an upload: its index (from 0), its offset in the object and
/// its bytes. Every part but the last has the same size.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its index in the upload, from 0.
    pub index: u32,
    /// Where its bytes start in the object.
    pub offset: u64,
    /// Its bytes.
    pub body: Bytes,
}

/// What the server gave back for a stored part (an ETag, a block id, a tree
/// hash); the caller journals it and passes it back to `complete_upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartReceipt {
    /// The part's index, from 0.
    pub index: u32,
    /// Where the part's bytes start in the object.
    pub offset: u64,
    /// The part's size in bytes.
    pub size: u64,
    /// The server's receipt for the part, as the backend needs it at completion.
    pub tag: String,
}

/// A staged file stored as one object by [`Backend::put_file`], for
/// backends without multipart uploads (the Glacier vault). The backend reads
/// it as often as it needs (a hash pass, then the upload), never whole into
/// memory; [`Throttled`] attaches its rate limiter here.
#[derive(Debug, Clone)]
pub struct FileBody {
    /// Where the staged file is.
    pub path: PathBuf,
    /// Its size as staged: reading another size is an error.
    pub size: u64,
    pace: Option<Arc<RateLimiter>>,
}

impl FileBody {
    /// The staged file at `path`, `size` bytes long, read at full speed.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> FileBody {
        FileBody {
            path: path.into(),
            size,
            pace: None,
        }
    }

    /// The same file, its reads held to `limiter`'s rate.
    pub fn paced(mut self, limiter: Arc<RateLimiter>) -> FileBody {
        self.pace = Some(limiter);
        self
    }

    /// Waits until `n` more bytes may be sent, when a limiter is attached.
    pub async fn pace(&self, n: u64) {
        if let Some(p) = &self.pace {
            p.acquire(n).await;
        }
    }

    /// The file's bytes in blocks of `block` bytes, paced when a limiter is
    /// attached. Fails if the file is not `size` bytes long: a staged file
    /// that changed is never sent.
    pub fn stream(&self, block: usize) -> ByteStream {
        stream_file(self.clone(), block.max(1))
    }
}

fn stream_file(body: FileBody, block: usize) -> ByteStream {
    use tokio::io::AsyncReadExt;
    struct State {
        file: Option<tokio::fs::File>,
        body: FileBody,
        sent: u64,
    }
    let state = State {
        file: None,
        body,
        sent: 0,
    };
    Box::pin(futures::stream::try_unfold(
        state,
        move |mut st| async move {
            let path = st.body.path.display().to_string();
            if st.file.is_none() {
                let f = tokio::fs::File::open(&st.body.path)
                    .await
                    .map_err(|e| Error::from_io(format!("cannot open staged {path}"), e))?;
                st.file = Some(f);
            }
            let left = st.body.size - st.sent;
            let mut buf = vec![0u8; block.min(left.max(1) as usize)];
            let Some(file) = st.file.as_mut() else {
                return Ok(None);
            };
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| Error::from_io(format!("cannot read staged {path}"), e))?;
            if n == 0 || left == 0 {
                if n != 0 || st.sent != st.body.size {
                    return Err(Error::new(
                        ErrorKind::Precondition,
                        format!(
                            "staged {path} is no longer {} bytes long: it changed after staging; stage the backup again",
                            st.body.size
                        ),
                    ));
                }
                return Ok(None);
            }
            buf.truncate(n);
            if let Some(p) = &st.body.pace {
                p.acquire(n as u64).await;
            }
            st.sent += n as u64;
            Ok(Some((Bytes::from(buf), st)))
        },
    ))
}

/// Whether an object can be read now; see [`Backend::prepare_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// `get` can read the object now.
    Ready,
    /// A retrieval from cold storage is under way; read again later.
    Pending {
        /// This call asked for the retrieval (false: an earlier call did).
        requested: bool,
        /// Where the object is and how it comes back, e.g. `GLACIER, Standard tier`.
        detail: String,
        /// The longest such a retrieval usually takes, as the provider documents it.
        expected: Option<Duration>,
    },
}

/// A storage destination.
///
/// # Behavior shared by every implementation
///
/// - Writes are create-only: `put`, `complete_upload` and `put_file` never
///   replace an object; onto a key that exists they fail with
///   [`ErrorKind::AlreadyExists`]. They are atomic: a reader sees the whole
///   object or nothing.
/// - `complete_upload` fails with [`ErrorKind::NotFound`] when the upload no
///   longer exists (expired, aborted, cleaned up, or completed by an earlier
///   attempt whose answer was lost): the caller tells which, and restarts
///   that object when it is not there.
/// - [`Retrying`] marks an error that follows an unanswered attempt of a
///   create-only write ([`Error::after_lost_answer`]): the key may be taken
///   by that attempt itself.
/// - `delete` of a missing key succeeds.
/// - `list` of a missing prefix yields nothing, not an error; it never yields
///   unfinished uploads.
/// - `get` of a missing key fails with [`ErrorKind::NotFound`].
///
/// # What [`Checked`] adds
///
/// A backend is used behind [`Checked`], which checks every key with
/// [`validate_key`], answers [`Backend::refusal`] for a call the
/// capabilities rule out ([`Capabilities::allows`]) before the backend sees
/// it, and names the destination and the key in every error that does not
/// name them yet. A backend need not repeat any of it.
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// The destination's name, as the configuration calls it.
    fn name(&self) -> &str;

    /// What this destination can do; building it makes no request.
    fn capabilities(&self) -> Capabilities;

    /// The error for `op`, which this destination's capabilities rule out
    /// (called only then, by [`Checked`], which adds the destination and
    /// the key). A backend says here which request it would have made and
    /// what to do instead (S3 and Azure on a put-only destination);
    /// wrappers pass it through. The default says the destination cannot.
    fn refusal(&self, op: Operation) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!("{} is not possible on this destination", op.name()),
        )
    }

    /// Reaches the destination with the read-only calls a backup depends on
    /// (the folder exists, the credentials are accepted) without writing.
    async fn probe(&self) -> Result<()>;

    /// Stores a small object in one call.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;

    /// Starts a resumable upload of `key`, made of parts of `part_size` bytes
    /// (the last may be shorter).
    async fn create_upload(&self, key: &str, part_size: u64) -> Result<UploadId>;

    /// Stores one part of `upload` and returns its receipt, which the
    /// caller journals for `complete_upload`.
    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt>;

    /// Writes one part of `upload` like `put_part`, but may answer before
    /// the part is durable: [`Backend::sync_part`] then makes it so, and
    /// only then is the receipt journaled. The upload engine uses the pair
    /// where parts go in order (`parts_out_of_order` false), so one part's
    /// sync overlaps the next part's transfer. The default is `put_part`
    /// (durable at once).
    async fn write_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.put_part(key, upload, part).await
    }

    /// Makes the part `receipt` names, written by [`Backend::write_part`],
    /// durable; fails if its bytes are no longer all there. Safe to call
    /// again after a failure. The default does nothing: its `write_part`
    /// was durable already.
    async fn sync_part(&self, key: &str, upload: &UploadId, receipt: &PartReceipt) -> Result<()> {
        let _ = (key, upload, receipt);
        Ok(())
    }

    /// Makes the object visible under `key`, made of exactly `parts` in index order.
    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()>;

    /// Drops an unfinished upload; a missing upload is not an error.
    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()>;

    /// Stores a staged file as `key` in one request, streamed; atomic like
    /// `put`. Only backends without multipart (`capabilities().multipart`
    /// false) implement it: the upload engine calls it for them instead of
    /// the upload calls, and the others refuse it.
    async fn put_file(&self, key: &str, file: FileBody) -> Result<()> {
        let _ = file;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} stores large objects in parts; put_file is for backends without multipart uploads", self.name()),
        )
        .with_destination(self.name())
        .with_key(key))
    }

    /// Writes what the backend keeps beside the objects (the Glacier vault's
    /// catalog) to the destination. Called once a run's puts or deletes are
    /// done; backends that keep nothing beside the objects do nothing.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Makes `key` readable. Cold storage (S3 Glacier classes, Azure
    /// Archive, Glacier vaults) asks for a retrieval when none is under way
    /// and answers [`Readiness::Pending`] until `get` can read the object;
    /// every other backend answers [`Readiness::Ready`] without a request.
    /// A missing key may answer `Ready` (the `get` that follows reports it)
    /// or fail with [`ErrorKind::NotFound`].
    async fn prepare_read(&self, key: &str) -> Result<Readiness>;

    /// Reads `key`, or the byte `range` of it.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<ListStream>;

    /// Removes `key`; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The hidden files unfinished uploads and puts left under `prefix`: a
    /// file-tree backend's partial and temp files, which `list` never
    /// shows. `delete` removes one, and folders it leaves empty. Stores
    /// that keep unfinished uploads out of the namespace (S3, Azure, a
    /// vault) have none.
    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<Leftover>> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// Until when `key` is locked against deletion (S3 Object Lock), if it
    /// is locked now. Backends without locks answer `None`.
    async fn retained_until(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        let _ = key;
        Ok(None)
    }

    /// Keeps `key` locked until at least `until` (never shortens a lock).
    /// Only backends whose capabilities have `retention` implement it.
    async fn extend_retention(&self, key: &str, until: std::time::SystemTime) -> Result<()> {
        let _ = until;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} locks no object", self.name()),
        )
        .with_destination(self.name())
        .with_key(key))
    }
}

/// Checks that `key` is a relative `/`-separated key with no empty, `.` or
/// `..` component, so no backend can be made to write outside its root.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!("invalid key {key:?}: keys are relative and have no empty, '.' or '..' parts"),
        ));
    }
    Ok(())
}

/// Reads a whole object into memory; for small objects (manifests) only.
pub async fn get_bytes(backend: &dyn Backend, key: &str) -> Result<Vec<u8>> {
    use futures::TryStreamExt;
    let mut stream = backend.get(key, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Lists everything under `prefix` into a vector.
pub async fn list_all(backend: &dyn Backend, prefix: &str) -> Result<Vec<ObjectMeta>> {
    use futures::TryStreamExt;
    backend.list(prefix).await?.try_collect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(body: &FileBody) -> Result<Vec<u8>> {
        use futures::TryStreamExt;
        let mut out = Vec::new();
        let mut s = body.stream(1000);
        while let Some(b) = s.try_next().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_body_is_paced_and_refuses_a_changed_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vol");
        std::fs::write(&path, vec![7u8; 3000]).expect("write");
        let paced = FileBody::new(&path, 3000).paced(Arc::new(RateLimiter::new(1000)));
        let start = tokio::time::Instant::now();
        assert_eq!(read_all(&paced).await.expect("read"), vec![7u8; 3000]);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "3000 bytes at 1000 B/s"
        );
        for size in [2000, 4000] {
            let err = read_all(&FileBody::new(&path, size))
                .await
                .expect_err("another size than staged");
            assert_eq!(err.kind(), ErrorKind::Precondition, "{size}: {err}");
        }
    }

    #[test]
    fn keys_that_could_escape_are_refused() {
        for bad in ["", "/abs", "a//b", "a/../b", "..", "./a", "a/", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "a",
            "a/b c/ünï.tar.zst",
            "db/job/20261122T021500Z-full/manifest.json",
        ] {
            assert!(validate_key(good).is_ok(), "{good:?} should be accepted");
        }
    }
}
