//! The conformance suite every backend runs against its real server.
//!
//! One function per behaviour, each taking a [`Fixture`]: a way to make a
//! fresh client for the destination (so "resume after the process died" can
//! use a second client) and a prefix no other test uses. A backend's test file
//! is one macro call:
//!
//! ```text
//! offsite_backends::conformance_tests!(|t| my_fixture(t).await; parts, out_of_order);
//! ```
//!
//! Each behaviour uses its clients wrapped in [`Checked`], as the
//! application stacks every backend, so key checks, refusals and the
//! destination and key in errors are demanded of the stack, not repeated in
//! each backend.
//!
//! The behaviours every backend has are always registered; the others come
//! in groups named after what the backend declares in its [`Capabilities`]:
//! `parts` (multipart uploads), `out_of_order` (parts in any order) and
//! `whole` (no parts: `put_file`). The macro call names the groups
//! (`conformance_tests!(|t| fixture(t); parts, out_of_order)`), and a
//! generated `declared_capabilities` test fails when they differ from what
//! the backend says, so no behaviour returns early for want of a
//! capability.
//!
//! These functions panic on failure: they are test code, shipped in the crate
//! so every backend's tests (and later backends' crates) share one copy.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    Backend, Capabilities, Checked, ErrorKind, FileBody, Part, PartReceipt, Readiness, UploadId,
    get_bytes, list_all,
};

/// A destination under test.
pub struct Fixture {
    /// Makes a new, independent client for the same destination.
    pub connect: Box<dyn Fn() -> Arc<dyn Backend> + Send + Sync>,
    /// A prefix unique to this test, without a trailing slash.
    pub prefix: String,
}

impl Fixture {
    /// A new client, wrapped in [`Checked`] as the application wraps every
    /// backend: the suite tests what the pipeline sees.
    pub fn client(&self) -> Arc<dyn Backend> {
        Arc::new(Checked::new((self.connect)()))
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

/// Deterministic, poorly compressible test bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn part_size_for(caps: &Capabilities) -> usize {
    caps.min_part_size.max(64 * 1024) as usize
}

async fn upload_parts(
    b: &dyn Backend,
    key: &str,
    id: &UploadId,
    data: &[u8],
    part_size: usize,
    order: &[usize],
) -> Vec<PartReceipt> {
    let mut receipts: Vec<PartReceipt> = Vec::new();
    for &i in order {
        let start = i * part_size;
        let end = (start + part_size).min(data.len());
        let r = b
            .put_part(
                key,
                id,
                Part {
                    index: i as u32,
                    offset: start as u64,
                    body: Bytes::copy_from_slice(&data[start..end]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("put_part {i} of {key}: {e}"));
        assert_eq!(r.index, i as u32);
        assert_eq!(r.size, (end - start) as u64);
        receipts.push(r);
    }
    receipts.sort_by_key(|r| r.index);
    receipts
}

/// Stores `data` as `key` the way the upload engine would: in parts where
/// the backend has multipart uploads, else with `put_file` from a file.
async fn store_large(b: &dyn Backend, key: &str, data: &[u8], ps: usize) {
    if b.capabilities().multipart {
        let id = b
            .create_upload(key, ps as u64)
            .await
            .expect("create_upload");
        let order: Vec<usize> = (0..parts_of(data.len(), ps)).collect();
        let receipts = upload_parts(b, key, &id, data, ps, &order).await;
        b.complete_upload(key, &id, &receipts)
            .await
            .expect("complete");
    } else {
        let dir = tempfile_dir();
        let path = dir.join("staged");
        std::fs::write(&path, data).expect("write the staged file");
        b.put_file(key, FileBody::new(&path, data.len() as u64))
            .await
            .expect("put_file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A fresh folder under the system's temporary folder.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "offsite-conformance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

/// Reads `key` whole; on cold storage, asks for it and waits (a test
/// server's retrievals take seconds) until it is readable.
async fn read_back(b: &dyn Backend, key: &str) -> Vec<u8> {
    if b.capabilities().cold_storage {
        let mut waited = 0;
        while let Readiness::Pending { .. } = b.prepare_read(key).await.expect("prepare_read") {
            assert!(waited < 120, "{key}: still not readable after 120 s");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            waited += 1;
        }
    }
    get_bytes(b, key).await.expect("get")
}

fn parts_of(len: usize, part_size: usize) -> usize {
    len.div_ceil(part_size).max(1)
}

/// put, get, list and delete of one small object.
pub async fn put_get_list_delete(f: &Fixture) {
    let b = f.client();
    let key = f.key("small.bin");
    let data = pattern(1000, 1);
    b.put(&key, Bytes::from(data.clone())).await.expect("put");
    assert_eq!(get_bytes(b.as_ref(), &key).await.expect("get"), data);
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, 1000);
    b.delete(&key).await.expect("delete");
    let err = get_bytes(b.as_ref(), &key)
        .await
        .expect_err("get after delete");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Writes are create-only: a `put` onto a key that exists fails with
/// `AlreadyExists` naming the destination and the key, and the object there
/// keeps its bytes (uploads: `completing_onto_an_object_is_refused`,
/// `put_file_onto_an_object_is_refused`).
pub async fn writes_never_overwrite(f: &Fixture) {
    let b = f.client();
    let key = f.key("once");
    b.put(&key, Bytes::from_static(b"first version"))
        .await
        .expect("put 1");
    let err = b
        .put(&key, Bytes::from_static(b"second"))
        .await
        .expect_err("a second put of the same key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(
        err.to_string().contains(&key) && err.to_string().contains(b.name()),
        "the error names the destination and the key: {err}"
    );
    assert_eq!(
        read_back(b.as_ref(), &key).await,
        b"first version",
        "the first object is intact"
    );
}

/// Completing an upload onto a key that exists fails with `AlreadyExists`
/// and leaves the object there as it was.
pub async fn completing_onto_an_object_is_refused(f: &Fixture) {
    let b = f.client();
    let caps = b.capabilities();
    assert!(caps.multipart, "registered for backends with parts");
    let key = f.key("once");
    b.put(&key, Bytes::from_static(b"first version"))
        .await
        .expect("put");
    let ps = part_size_for(&caps);
    let data = pattern(ps + 10, 21);
    let id = b
        .create_upload(&key, ps as u64)
        .await
        .expect("create_upload");
    let receipts = upload_parts(b.as_ref(), &key, &id, &data, ps, &[0, 1]).await;
    let err = b
        .complete_upload(&key, &id, &receipts)
        .await
        .expect_err("completing onto an existing key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let _ = b.abort_upload(&key, &id).await;
    assert_eq!(read_back(b.as_ref(), &key).await, b"first version");
}

/// `put_file` onto a key that exists fails with `AlreadyExists` and
/// leaves the object there as it was.
pub async fn put_file_onto_an_object_is_refused(f: &Fixture) {
    let b = f.client();
    let caps = b.capabilities();
    assert!(!caps.multipart, "registered for backends without parts");
    let key = f.key("once");
    b.put(&key, Bytes::from_static(b"first version"))
        .await
        .expect("put");
    let data = pattern(part_size_for(&caps) + 10, 21);
    let dir = tempfile_dir();
    let path = dir.join("staged");
    std::fs::write(&path, &data).expect("write");
    let err = b
        .put_file(&key, FileBody::new(&path, data.len() as u64))
        .await
        .expect_err("put_file onto an existing key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(read_back(b.as_ref(), &key).await, b"first version");
}

/// Completing an upload a second time (its first answer lost on the way)
/// never damages the object: it succeeds again, or fails with `NotFound`
/// (the upload is gone) or `AlreadyExists` (the key is taken), which the
/// caller resolves by finding the object there its own.
pub async fn completing_twice_changes_nothing(f: &Fixture) {
    let b = f.client();
    let caps = b.capabilities();
    assert!(caps.multipart, "registered for backends with parts");
    let ps = part_size_for(&caps);
    let data = pattern(ps * 2 + 5, 22);
    let key = f.key("twice.bin");
    let id = b
        .create_upload(&key, ps as u64)
        .await
        .expect("create_upload");
    let receipts = upload_parts(b.as_ref(), &key, &id, &data, ps, &[0, 1, 2]).await;
    b.complete_upload(&key, &id, &receipts)
        .await
        .expect("complete");
    // Another process, from the journal: the same id and receipts.
    let again = f.client();
    match again.complete_upload(&key, &id, &receipts).await {
        Ok(()) => {}
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists),
            "a second completion is Ok, NotFound or AlreadyExists: {e}"
        ),
    }
    assert_eq!(read_back(again.as_ref(), &key).await, data);
    let listed = list_all(again.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "one object, nothing beside it: {listed:?}");
    assert_no_leftovers(again.as_ref(), f).await;
}

/// No hidden partial or temp file is left under the fixture's prefix
/// (`list` never shows them; `list_leftovers` does).
async fn assert_no_leftovers(b: &dyn Backend, f: &Fixture) {
    let left = b
        .list_leftovers(&format!("{}/", f.prefix))
        .await
        .expect("list_leftovers");
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

/// Empty objects exist and read back empty.
pub async fn zero_length(f: &Fixture) {
    let b = f.client();
    let key = f.key("empty");
    b.put(&key, Bytes::new()).await.expect("put empty");
    assert!(get_bytes(b.as_ref(), &key).await.expect("get").is_empty());
    let listed = list_all(b.as_ref(), &key).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 0);
}

/// A multi-part upload in order, with a short last part; on a backend
/// without multipart, the same object stored from a file with `put_file`.
pub async fn large_multipart(f: &Fixture) {
    let b = f.client();
    let ps = part_size_for(&b.capabilities());
    let data = pattern(ps * 3 + ps / 3, 2);
    let key = f.key("large.bin");
    store_large(b.as_ref(), &key, &data, ps).await;
    assert_eq!(read_back(b.as_ref(), &key).await, data);
}

/// A backend with multipart uploads refuses `put_file`: volumes go in parts.
pub async fn multipart_refuses_put_file(f: &Fixture) {
    let b = f.client();
    assert!(
        b.capabilities().multipart,
        "registered for backends with parts"
    );
    let dir = tempfile_dir();
    let path = dir.join("staged");
    std::fs::write(&path, pattern(5000, 11)).expect("write");
    let err = b
        .put_file(&f.key("whole.bin"), FileBody::new(&path, 5000))
        .await
        .expect_err("put_file on a multipart backend");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `put_file` is what a backend without multipart offers instead, and only
/// that: it stores a file whole, refuses a file whose size is not the one
/// given (a staged file that changed), and the multipart calls are refused.
pub async fn put_file_stores_whole_files(f: &Fixture) {
    let b = f.client();
    assert!(
        !b.capabilities().multipart,
        "registered for backends without parts"
    );
    let dir = tempfile_dir();
    let path = dir.join("staged");
    std::fs::write(&path, pattern(5000, 11)).expect("write");
    let key = f.key("whole.bin");
    let err = b
        .put_file(&key, FileBody::new(&path, 4000))
        .await
        .expect_err("a file of another size than staged");
    assert_ne!(err.kind(), ErrorKind::Unsupported, "{err}");
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert!(
        listed.is_empty(),
        "nothing stored from a changed file: {listed:?}"
    );
    let err = b
        .create_upload(&key, 1 << 20)
        .await
        .expect_err("create_upload without multipart");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    b.put_file(&key, FileBody::new(&path, 5000))
        .await
        .expect("put_file");
    assert_eq!(read_back(b.as_ref(), &key).await, pattern(5000, 11));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Parts sent out of order (where the backend allows it) assemble in index order.
pub async fn multipart_out_of_order(f: &Fixture) {
    let b = f.client();
    let caps = b.capabilities();
    assert!(
        caps.multipart && caps.parts_out_of_order,
        "registered for backends whose parts go in any order"
    );
    let ps = part_size_for(&caps);
    let data = pattern(ps * 3 + 17, 3);
    let key = f.key("shuffled.bin");
    let id = b
        .create_upload(&key, ps as u64)
        .await
        .expect("create_upload");
    let order: Vec<usize> = vec![3, 1, 0, 2];
    let receipts = upload_parts(b.as_ref(), &key, &id, &data, ps, &order).await;
    b.complete_upload(&key, &id, &receipts)
        .await
        .expect("complete");
    assert_eq!(get_bytes(b.as_ref(), &key).await.expect("get"), data);
}

/// Parts written with `write_part` and made durable with `sync_part`, each
/// sync running while the next part is written (as the upload engine sends
/// in-order uploads), complete into the object; a sync may be repeated.
pub async fn written_parts_synced_while_the_next_is_written(f: &Fixture) {
    let b = f.client();
    let ps = part_size_for(&b.capabilities());
    let data = pattern(ps * 2 + ps / 2, 6);
    let key = f.key("synced.bin");
    let id = b
        .create_upload(&key, ps as u64)
        .await
        .expect("create_upload");
    let part = |i: usize| Part {
        index: i as u32,
        offset: (i * ps) as u64,
        body: Bytes::copy_from_slice(&data[i * ps..((i + 1) * ps).min(data.len())]),
    };
    let mut receipts = vec![b.write_part(&key, &id, part(0)).await.expect("write 0")];
    for i in 1..3 {
        let last = receipts.last().expect("a part").clone();
        let (synced, written) = futures::join!(
            b.sync_part(&key, &id, &last),
            b.write_part(&key, &id, part(i))
        );
        synced.unwrap_or_else(|e| panic!("sync_part {} of {key}: {e}", i - 1));
        receipts.push(written.unwrap_or_else(|e| panic!("write_part {i} of {key}: {e}")));
    }
    for r in &receipts {
        b.sync_part(&key, &id, r)
            .await
            .unwrap_or_else(|e| panic!("sync_part {} of {key}: {e}", r.index));
    }
    let sizes: Vec<u64> = receipts.iter().map(|r| r.size).collect();
    assert_eq!(sizes, [ps as u64, ps as u64, (ps / 2) as u64]);
    b.complete_upload(&key, &id, &receipts)
        .await
        .expect("complete");
    assert_eq!(read_back(b.as_ref(), &key).await, data);
}

/// What one client stored whole, a new one (another process) lists and
/// reads: without parts, the unit of resume is the object.
pub async fn resume_whole_objects(f: &Fixture) {
    let caps = f.client().capabilities();
    assert!(!caps.multipart, "registered for backends without parts");
    let ps = part_size_for(&caps);
    let data = pattern(ps * 3, 4);
    let key = f.key("resumed.bin");
    store_large(f.client().as_ref(), &key, &data, ps).await;
    let b = f.client();
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(read_back(b.as_ref(), &key).await, data);
}

/// An upload started by one client (then dropped, as if the process died) is
/// finished by another from the journaled id and receipts alone.
pub async fn resume_after_drop(f: &Fixture) {
    let caps = f.client().capabilities();
    assert!(caps.multipart, "registered for backends with parts");
    let ps = part_size_for(&caps);
    let data = pattern(ps * 3, 4);
    let key = f.key("resumed.bin");
    let (id, first) = {
        let b = f.client();
        let id = b
            .create_upload(&key, ps as u64)
            .await
            .expect("create_upload");
        let first = upload_parts(b.as_ref(), &key, &id, &data, ps, &[0]).await;
        (id, first)
    };
    // The id and receipts survive as plain data, as in the journal.
    let id: UploadId = serde_json::from_str(&serde_json::to_string(&id).expect("ser")).expect("de");
    let b = f.client();
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert!(
        listed.is_empty(),
        "an unfinished upload must not be listed: {listed:?}"
    );
    let mut rest = upload_parts(b.as_ref(), &key, &id, &data, ps, &[1, 2]).await;
    let mut all = first;
    all.append(&mut rest);
    b.complete_upload(&key, &id, &all).await.expect("complete");
    assert_eq!(get_bytes(b.as_ref(), &key).await.expect("get"), data);
}

/// After abort the upload is gone: completing it is NotFound and nothing is listed.
pub async fn abort_discards(f: &Fixture) {
    let b = f.client();
    assert!(
        b.capabilities().multipart,
        "registered for backends with parts"
    );
    let ps = part_size_for(&b.capabilities());
    let data = pattern(ps, 5);
    let key = f.key("aborted.bin");
    let id = b
        .create_upload(&key, ps as u64)
        .await
        .expect("create_upload");
    let receipts = upload_parts(b.as_ref(), &key, &id, &data, ps, &[0]).await;
    b.abort_upload(&key, &id).await.expect("abort");
    b.abort_upload(&key, &id)
        .await
        .expect("abort twice is not an error");
    let err = b
        .complete_upload(&key, &id, &receipts)
        .await
        .expect_err("complete after abort");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert!(listed.is_empty(), "{listed:?}");
}

/// Listing a prefix with nothing under it yields nothing, not an error.
pub async fn list_missing_prefix(f: &Fixture) {
    let b = f.client();
    let listed = list_all(b.as_ref(), &f.key("nothing/here/"))
        .await
        .expect("list");
    assert!(listed.is_empty());
}

/// Listing is by key prefix, recursive, and only under the prefix.
pub async fn list_is_recursive_and_bounded(f: &Fixture) {
    let b = f.client();
    // Different bodies: a server may name objects by their content (moto's Glacier does).
    for k in ["a/1", "a/b/2", "ab/3", "c/4"] {
        b.put(&f.key(k), Bytes::from(k.as_bytes().to_vec()))
            .await
            .expect("put");
    }
    let keys: Vec<String> = list_all(b.as_ref(), &f.key("a/"))
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, vec![f.key("a/1"), f.key("a/b/2")]);
}

/// Deleting a key that does not exist succeeds.
pub async fn delete_missing_key(f: &Fixture) {
    let b = f.client();
    b.delete(&f.key("never-written"))
        .await
        .expect("delete of a missing key");
}

/// Reading a key that does not exist is NotFound and names the key.
pub async fn get_missing_key(f: &Fixture) {
    let b = f.client();
    let key = f.key("absent");
    let err = get_bytes(b.as_ref(), &key)
        .await
        .expect_err("get of a missing key");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let text = err.to_string();
    assert!(text.contains(b.name()) && text.contains("absent"), "{text}");
}

/// A byte range reads exactly those bytes.
pub async fn ranged_get(f: &Fixture) {
    let b = f.client();
    let key = f.key("ranged");
    let data = pattern(10_000, 6);
    b.put(&key, Bytes::from(data.clone())).await.expect("put");
    read_back(b.as_ref(), &key).await;
    let mut got = Vec::new();
    let mut s = b.get(&key, Some(1234..5678)).await.expect("get range");
    use futures::TryStreamExt;
    while let Some(c) = s.try_next().await.expect("read") {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, &data[1234..5678]);
}

/// Names with spaces and non-ASCII characters round-trip and list as written.
pub async fn names_with_spaces_and_unicode(f: &Fixture) {
    let b = f.client();
    let key = f.key("dir with space/Ünïcødé 名前 #1.tar.zst");
    b.put(&key, Bytes::from_static(b"data")).await.expect("put");
    assert_eq!(get_bytes(b.as_ref(), &key).await.expect("get"), b"data");
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    let ps = part_size_for(&b.capabilities());
    let big_key = f.key("dir with space/part é.bin");
    let data = pattern(ps + 5, 7);
    store_large(b.as_ref(), &big_key, &data, ps).await;
    assert_eq!(read_back(b.as_ref(), &big_key).await, data);
}

/// Keys that could escape the destination's root are refused before any I/O.
pub async fn escaping_keys_are_refused(f: &Fixture) {
    let b = f.client();
    for bad in ["../escape", "/abs", "a/../../b"] {
        let err = b.put(bad, Bytes::from_static(b"x")).await.expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad}: {err}");
    }
}

/// The destination answers its read-only probe.
pub async fn probe_succeeds(f: &Fixture) {
    f.client().probe().await.expect("probe");
}

/// A write the destination does not allow (credentials without the right,
/// a folder the login user may not write) fails with `PermissionDenied`
/// at once (not temporary: retrying cannot help) and names the destination
/// and the key; an upload is refused at its first write; nothing is left
/// for `f`'s client to see. `denied` is a client for a place under `f`'s
/// prefix, or for the same bucket, that may not write.
///
/// Not a macro behaviour: each backend's test file makes its `denied`
/// client the way its server allows (a read-only key, SAS or FTP user, a
/// folder owned by another user) and calls this.
pub async fn writes_without_permission_are_denied(f: &Fixture, denied: Arc<dyn Backend>) {
    let denied = Checked::new(denied);
    let key = f.key("denied.bin");
    let err = denied
        .put(&key, Bytes::from_static(b"not allowed"))
        .await
        .expect_err("a put without the right to write");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.is_temporary(), "retrying cannot help: {err}");
    let text = err.to_string();
    assert!(
        text.contains(denied.name()) && text.contains("denied.bin"),
        "the error names the destination and the key: {text}"
    );
    let caps = denied.capabilities();
    if caps.multipart {
        let ps = part_size_for(&caps);
        let refused = match denied.create_upload(&key, ps as u64).await {
            Err(e) => e,
            Ok(id) => denied
                .put_part(
                    &key,
                    &id,
                    Part {
                        index: 0,
                        offset: 0,
                        body: Bytes::from(pattern(ps, 23)),
                    },
                )
                .await
                .expect_err("a part without the right to write"),
        };
        assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
        assert!(!refused.is_temporary(), "{refused}");
    }
    let b = f.client();
    let listed = list_all(b.as_ref(), &format!("{}/", f.prefix))
        .await
        .expect("list");
    assert!(listed.is_empty(), "nothing written: {listed:?}");
    assert_no_leftovers(b.as_ref(), f).await;
}

/// The capability groups a backend's test file declares are the ones its
/// [`Capabilities`] say, so every behaviour it has is tested.
pub async fn declared_capabilities(f: &Fixture, declared: &[&str]) {
    let caps = f.client().capabilities();
    let has = |group: &str| declared.contains(&group);
    assert_eq!(has("parts"), caps.multipart, "parts: {caps:?}");
    assert_eq!(has("whole"), !caps.multipart, "whole: {caps:?}");
    assert_eq!(
        has("out_of_order"),
        caps.parts_out_of_order,
        "out_of_order: {caps:?}"
    );
}

/// Generates one `#[tokio::test]` per conformance behaviour: those every
/// backend has, and those of each capability group named after the `;`
/// (`parts`, `out_of_order`, `whole`). `$fixture` is an expression (it may
/// `.await`) producing a [`Fixture`]; it is evaluated afresh in each test
/// with the test's name available as `$name: &str`.
#[macro_export]
macro_rules! conformance_tests {
    (|$name:ident| $fixture:expr; $($group:ident),+) => {
        $crate::conformance_tests!(@each |$name| $fixture;
            put_get_list_delete, writes_never_overwrite, zero_length, large_multipart,
            list_missing_prefix, list_is_recursive_and_bounded, delete_missing_key,
            get_missing_key, ranged_get, names_with_spaces_and_unicode,
            escaping_keys_are_refused, probe_succeeds);
        $( $crate::conformance_tests!(@group $group |$name| $fixture); )+
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn declared_capabilities() {
            let $name: &str = "declared_capabilities";
            let fixture: $crate::conformance::Fixture = $fixture;
            $crate::conformance::declared_capabilities(&fixture, &[$(stringify!($group)),+]).await;
        }
    };
    (@group parts |$name:ident| $fixture:expr) => {
        $crate::conformance_tests!(@each |$name| $fixture;
            multipart_refuses_put_file, resume_after_drop, abort_discards,
            completing_onto_an_object_is_refused, completing_twice_changes_nothing,
            written_parts_synced_while_the_next_is_written);
    };
    (@group out_of_order |$name:ident| $fixture:expr) => {
        $crate::conformance_tests!(@each |$name| $fixture; multipart_out_of_order);
    };
    (@group whole |$name:ident| $fixture:expr) => {
        $crate::conformance_tests!(@each |$name| $fixture;
            put_file_stores_whole_files, resume_whole_objects, put_file_onto_an_object_is_refused);
    };
    (@each |$name:ident| $fixture:expr; $($t:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $t() {
                let $name: &str = stringify!($t);
                let fixture: $crate::conformance::Fixture = $fixture;
                $crate::conformance::$t(&fixture).await;
            }
        )*
    };
}
