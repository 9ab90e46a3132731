//! The outermost wrapper: what every call must pass before it reaches a
//! store, and what every error must say when it leaves.
//!
//! For any backend it wraps, [`Checked`] guarantees:
//! - every key is checked with [`validate_key`] (a listed prefix: without
//!   its trailing `/`) before the backend sees it;
//! - a call the backend's [`Capabilities`] rule out ([`Capabilities::allows`]:
//!   a put-only destination's reads, lists and deletes) never reaches it:
//!   the answer is the backend's own [`Backend::refusal`], which names the
//!   request it would have made and what to do instead;
//! - every error, from a call or from a stream the call returned, names the
//!   destination and the call's key, unless it names its own already.
//!
//! It goes outside [`crate::Retrying`], so a bad key or a refusal is never
//! retried.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;

use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, FileBody, Leftover, ListStream, Operation,
    Part, PartReceipt, Readiness, Result, UploadId, validate_key,
};

/// A backend whose keys are checked, whose calls its capabilities rule out
/// are refused before any request, and whose errors name the destination
/// and the key.
#[derive(Debug, Clone)]
pub struct Checked {
    inner: Arc<dyn Backend>,
}

impl Checked {
    /// `inner`, checked.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Checked { inner }
    }

    /// Names this destination, and `key` (when not empty), in an error that
    /// does not name them yet.
    fn context(&self, key: &str) -> impl Fn(Error) -> Error + Send + Sync + 'static {
        let (name, key) = (self.name().to_string(), key.to_string());
        move |e| e.or_destination(&name).or_key(&key)
    }

    /// Runs `call`, an inner call on `key` (which does nothing until
    /// awaited), if the capabilities allow `op` and the key is `valid`;
    /// every error names the destination and `key`.
    async fn guarded<T>(
        &self,
        op: Option<Operation>,
        key: &str,
        valid: Result<()>,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let named = self.context(key);
        if let Some(op) = op
            && !self.inner.capabilities().allows(op)
        {
            return Err(named(self.inner.refusal(op)));
        }
        valid.map_err(&named)?;
        call.await.map_err(named)
    }

    /// [`Checked::guarded`] for a call on `key`.
    async fn keyed<T>(
        &self,
        op: Option<Operation>,
        key: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.guarded(op, key, validate_key(key), call).await
    }

    /// [`Checked::guarded`] for a call on a `prefix` (a key, or a folder
    /// ending in `/`; empty for everything), whose errors name the
    /// destination only.
    async fn under<T>(
        &self,
        op: Option<Operation>,
        prefix: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.guarded(op, "", validate_prefix(prefix), call).await
    }
}

/// A prefix is empty, or a key with or without one trailing `/`.
fn validate_prefix(prefix: &str) -> Result<()> {
    let key = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() || validate_key(key).is_ok() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::ConfigInvalid,
        format!(
            "invalid prefix {prefix:?}: a prefix is a key, or a key and '/', with no empty, '.' or '..' parts"
        ),
    ))
}

#[async_trait]
impl Backend for Checked {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn refusal(&self, op: Operation) -> Error {
        self.inner.refusal(op)
    }

    async fn probe(&self) -> Result<()> {
        self.inner.probe().await.map_err(self.context(""))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.keyed(None, key, self.inner.put(key, body)).await
    }

    async fn create_upload(&self, key: &str, part_size: u64) -> Result<UploadId> {
        self.keyed(None, key, self.inner.create_upload(key, part_size))
            .await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.keyed(None, key, self.inner.put_part(key, upload, part))
            .await
    }

    async fn write_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.keyed(None, key, self.inner.write_part(key, upload, part))
            .await
    }

    async fn sync_part(&self, key: &str, upload: &UploadId, receipt: &PartReceipt) -> Result<()> {
        self.keyed(None, key, self.inner.sync_part(key, upload, receipt))
            .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        self.keyed(None, key, self.inner.complete_upload(key, upload, parts))
            .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        let call = self.inner.abort_upload(key, upload);
        self.keyed(Some(Operation::AbortUpload), key, call).await
    }

    async fn put_file(&self, key: &str, file: FileBody) -> Result<()> {
        self.keyed(None, key, self.inner.put_file(key, file)).await
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await.map_err(self.context(""))
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        let call = self.inner.prepare_read(key);
        self.keyed(Some(Operation::PrepareRead), key, call).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let stream = self
            .keyed(Some(Operation::Get), key, self.inner.get(key, range))
            .await?;
        Ok(Box::pin(stream.map_err(self.context(key))))
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let stream = self
            .under(Some(Operation::List), prefix, self.inner.list(prefix))
            .await?;
        Ok(Box::pin(stream.map_err(self.context(""))))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.keyed(Some(Operation::Delete), key, self.inner.delete(key))
            .await
    }

    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<Leftover>> {
        self.under(None, prefix, self.inner.list_leftovers(prefix))
            .await
    }

    async fn retained_until(&self, key: &str) -> Result<Option<SystemTime>> {
        let call = self.inner.retained_until(key);
        self.keyed(Some(Operation::RetainedUntil), key, call).await
    }

    async fn extend_retention(&self, key: &str, until: SystemTime) -> Result<()> {
        self.keyed(None, key, self.inner.extend_retention(key, until))
            .await
    }
}

/// Test support for the backends whose capabilities rule calls out:
/// asserts that `b`, put-only, answers `list` with `list_refusal` word for
/// word, and refuses get, prepare_read, delete and abort_upload, each
/// naming the request it would have made (`requests`, in that order).
/// There is no server: a call that got through would fail otherwise.
#[cfg(all(test, any(feature = "s3", feature = "azure")))]
pub(crate) async fn assert_put_only_refusals(b: &Checked, list_refusal: &str, requests: [&str; 4]) {
    let err = b.list("db/").await.err().expect("list refused");
    assert_eq!(err.to_string(), list_refusal);
    let key = "db/j/1/vol-000000.tar.zst";
    let upload = UploadId("u".into());
    let refused = [
        b.get(key, None).await.err(),
        b.prepare_read(key).await.err(),
        b.delete(key).await.err(),
        b.abort_upload(key, &upload).await.err(),
    ];
    for (request, err) in requests.into_iter().zip(refused) {
        let err = err.expect(request);
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        let start = format!(
            "destination \"{}\": {key}: {request} is not made on a put_only",
            b.name()
        );
        assert!(err.to_string().starts_with(&start), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A store that records each call it gets and answers every one with an
    /// error naming neither destination nor key; its capabilities are a
    /// put-only destination's, or a path's.
    #[derive(Debug)]
    struct Recorder {
        calls: Mutex<Vec<&'static str>>,
        put_only: bool,
    }

    impl Recorder {
        fn new(put_only: bool) -> Arc<Recorder> {
            Arc::new(Recorder {
                calls: Mutex::new(Vec::new()),
                put_only,
            })
        }

        fn answer<T>(&self, call: &'static str) -> Result<T> {
            self.calls.lock().expect("calls").push(call);
            Err(Error::new(ErrorKind::Unexpected, format!("{call} failed")))
        }

        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().expect("calls").clone()
        }
    }

    #[async_trait]
    impl Backend for Recorder {
        fn name(&self) -> &str {
            "rec"
        }

        fn capabilities(&self) -> Capabilities {
            let mut caps = crate::files::file_tree_capabilities(true);
            if self.put_only {
                (caps.read, caps.list, caps.delete) = (false, false, false);
                caps.retention = Some(std::time::Duration::from_secs(60));
            }
            caps
        }

        fn refusal(&self, op: Operation) -> Error {
            Error::new(ErrorKind::PermissionDenied, format!("no {}", op.name()))
                .with_hint("use the reader's credentials")
        }

        async fn probe(&self) -> Result<()> {
            self.answer("probe")
        }

        async fn put(&self, _: &str, _: Bytes) -> Result<()> {
            self.answer("put")
        }

        async fn create_upload(&self, _: &str, _: u64) -> Result<UploadId> {
            self.answer("create_upload")
        }

        async fn put_part(&self, _: &str, _: &UploadId, _: Part) -> Result<PartReceipt> {
            self.answer("put_part")
        }

        async fn write_part(&self, _: &str, _: &UploadId, _: Part) -> Result<PartReceipt> {
            self.answer("write_part")
        }

        async fn sync_part(&self, _: &str, _: &UploadId, _: &PartReceipt) -> Result<()> {
            self.answer("sync_part")
        }

        async fn complete_upload(&self, _: &str, _: &UploadId, _: &[PartReceipt]) -> Result<()> {
            self.answer("complete_upload")
        }

        async fn abort_upload(&self, _: &str, _: &UploadId) -> Result<()> {
            self.answer("abort_upload")
        }

        async fn put_file(&self, _: &str, _: FileBody) -> Result<()> {
            self.answer("put_file")
        }

        async fn prepare_read(&self, _: &str) -> Result<Readiness> {
            self.answer("prepare_read")
        }

        async fn get(&self, _: &str, _: Option<Range<u64>>) -> Result<ByteStream> {
            // The call succeeds; its stream fails.
            let broken = self.answer("get");
            Ok(Box::pin(futures::stream::iter([broken])))
        }

        async fn list(&self, _: &str) -> Result<ListStream> {
            self.answer("list")
        }

        async fn delete(&self, _: &str) -> Result<()> {
            self.answer("delete")
        }

        async fn list_leftovers(&self, _: &str) -> Result<Vec<Leftover>> {
            self.answer("list_leftovers")
        }

        async fn retained_until(&self, _: &str) -> Result<Option<SystemTime>> {
            self.answer("retained_until")
        }

        async fn extend_retention(&self, _: &str, _: SystemTime) -> Result<()> {
            self.answer("extend_retention")
        }
    }

    /// Every call that takes a key, on `key`; each error with its call's name.
    async fn every_keyed_call(b: &dyn Backend, key: &str) -> Vec<(&'static str, Error)> {
        let id = UploadId("u".into());
        let part = Part {
            index: 0,
            offset: 0,
            body: Bytes::from_static(b"x"),
        };
        let file = FileBody::new("/nonexistent", 1);
        let now = SystemTime::now();
        let mut out = Vec::new();
        let mut note = |call, r: Result<()>| out.push((call, r.expect_err(call)));
        note("put", b.put(key, Bytes::new()).await);
        note("create_upload", b.create_upload(key, 1).await.map(drop));
        note(
            "put_part",
            b.put_part(key, &id, part.clone()).await.map(drop),
        );
        note("write_part", b.write_part(key, &id, part).await.map(drop));
        let receipt = PartReceipt {
            index: 0,
            offset: 0,
            size: 1,
            tag: String::new(),
        };
        note("sync_part", b.sync_part(key, &id, &receipt).await);
        note("complete_upload", b.complete_upload(key, &id, &[]).await);
        note("abort_upload", b.abort_upload(key, &id).await);
        note("put_file", b.put_file(key, file).await);
        note("prepare_read", b.prepare_read(key).await.map(drop));
        let got = match b.get(key, None).await {
            Ok(mut stream) => stream.try_next().await.map(drop),
            Err(e) => Err(e),
        };
        note("get", got);
        note("delete", b.delete(key).await);
        note("retained_until", b.retained_until(key).await.map(drop));
        note("extend_retention", b.extend_retention(key, now).await);
        out
    }

    #[tokio::test]
    async fn a_bad_key_never_reaches_the_backend() {
        let rec = Recorder::new(false);
        let checked = Checked::new(rec.clone());
        for bad in ["../escape", "/abs", "a//b", ""] {
            for (call, err) in every_keyed_call(&checked, bad).await {
                assert_eq!(
                    err.kind(),
                    ErrorKind::ConfigInvalid,
                    "{call} {bad:?}: {err}"
                );
                assert_eq!(err.destination(), Some("rec"), "{call}: {err}");
            }
        }
        for bad in ["../", "a//", "/"] {
            let err = checked.list(bad).await.err().expect("a bad prefix");
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad:?}: {err}");
            let err = checked.list_leftovers(bad).await.expect_err("a bad prefix");
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad:?}: {err}");
        }
        assert_eq!(rec.calls(), Vec::<&str>::new());
        // What callers pass: a folder with its slash, a key, everything.
        for good in ["db/orders/", "db/orders/x/vol-000000.tar.zst", ""] {
            assert!(checked.list(good).await.is_err());
        }
        assert_eq!(rec.calls(), ["list", "list", "list"]);
    }

    #[tokio::test]
    async fn every_error_names_the_destination_and_the_key() {
        let rec = Recorder::new(false);
        let checked = Checked::new(rec.clone());
        let key = "db/orders/x/manifest.json";
        // get's error comes from its stream.
        for (call, err) in every_keyed_call(&checked, key).await {
            assert_eq!(
                err.to_string(),
                format!("destination \"rec\": {key}: {call} failed")
            );
        }
        let err = checked.list("db/").await.err().expect("list");
        assert_eq!(err.to_string(), "destination \"rec\": list failed");
        let err = checked.probe().await.expect_err("probe");
        assert_eq!(err.to_string(), "destination \"rec\": probe failed");
    }

    #[tokio::test]
    async fn a_call_the_capabilities_rule_out_never_reaches_the_backend() {
        let rec = Recorder::new(true);
        let checked = Checked::new(rec.clone());
        let key = "db/orders/x/vol-000000.tar.zst";
        let refused = [
            "abort_upload",
            "prepare_read",
            "get",
            "delete",
            "retained_until",
        ];
        for (call, err) in every_keyed_call(&checked, key).await {
            if !refused.contains(&call) {
                continue;
            }
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{call}: {err}");
            assert_eq!(err.destination(), Some("rec"), "{call}: {err}");
            assert_eq!(err.key(), Some(key), "{call}: {err}");
            assert_eq!(err.hint(), Some("use the reader's credentials"));
        }
        let err = checked.list("db/").await.err().expect("list refused");
        assert_eq!(
            err.to_string(),
            "destination \"rec\": no list; use the reader's credentials"
        );
        assert_eq!(
            rec.calls(),
            [
                "put",
                "create_upload",
                "put_part",
                "write_part",
                "sync_part",
                "complete_upload",
                "put_file",
                "extend_retention"
            ],
            "only the writes reach a put-only store"
        );
    }

    #[cfg(feature = "path")]
    #[tokio::test]
    async fn a_checked_folder_stores_and_reads_back() {
        use crate::path::PathBackend;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Checked::new(Arc::new(PathBackend::new("nas", dir.path())));
        b.put("j/1/manifest.json", Bytes::from_static(b"{}"))
            .await
            .expect("put");
        let back = crate::get_bytes(&b, "j/1/manifest.json")
            .await
            .expect("get");
        assert_eq!(back, b"{}");
        let listed = crate::list_all(&b, "j/").await.expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        b.delete("j/1/manifest.json").await.expect("delete");
        let err = b.get("j/1/manifest.json", None).await.err().expect("gone");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(err.destination(), Some("nas"));
        assert_eq!(err.key(), Some("j/1/manifest.json"));
    }
}
