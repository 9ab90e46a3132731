//! What the file-tree backends (path, SFTP, FTP) share: the hidden names of
//! unfinished uploads and temp files, and turning a blocking reader into a
//! [`ByteStream`] without blocking the async runtime.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use crate::{ByteStream, Capabilities, Error, ErrorKind, Part, PartReceipt, Result, UploadId};

pub(crate) const PARTIAL_SUFFIX: &str = ".partial";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// How much one blocking read asks for.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// What a file-tree backend can do: parts written at their offset into a
/// partial file renamed into place, list, read, delete. Network protocols
/// that write one stream at a time take parts in order only.
pub(crate) fn file_tree_capabilities(parts_out_of_order: bool) -> Capabilities {
    Capabilities {
        multipart: true,
        parts_out_of_order,
        offset_resume: true,
        atomic_rename: true,
        exclusive_create: true,
        list: true,
        delete: true,
        read: true,
        cold_storage: false,
        min_part_size: 1,
        max_part_size: 1 << 32,
        max_parts: u32::MAX,
        max_object_size: None,
        retention: None,
    }
}

/// Runs `f` on tokio's blocking pool. Its error names `destination`, and
/// `key` when it names no key of its own.
pub(crate) async fn on_blocking_pool<T, F>(destination: &str, key: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let out = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("worker failed: {e}")));
    out.and_then(|r| r)
        .map_err(|e| e.or_destination(destination).or_key(key))
}

/// Idle network connections kept for reuse (blocking clients: SFTP, FTP).
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    max: usize,
}

impl<C> Pool<C> {
    pub(crate) fn new(max: usize) -> Pool<C> {
        Pool {
            idle: Mutex::new(Vec::new()),
            max,
        }
    }

    /// Runs `f` on an idle connection that `alive` accepts, else on a new one
    /// from `connect`. The connection goes back to the pool unless `f`
    /// failed with a temporary error: it may be half-closed.
    pub(crate) fn with<T>(
        &self,
        connect: impl FnOnce() -> Result<C>,
        alive: impl Fn(&mut C) -> bool,
        f: impl FnOnce(&mut C) -> Result<T>,
    ) -> Result<T> {
        let idle = self.idle.lock().ok().and_then(|mut p| p.pop());
        let mut conn = match idle {
            Some(mut c) => {
                if alive(&mut c) {
                    c
                } else {
                    connect()?
                }
            }
            None => connect()?,
        };
        let out = f(&mut conn);
        if !matches!(&out, Err(e) if e.is_temporary())
            && let Ok(mut p) = self.idle.lock()
            && p.len() < self.max
        {
            p.push(conn);
        }
        out
    }
}

/// The folder a listing of `prefix` starts in: everything before its last
/// `/` ("" for the root), checked like a key.
pub(crate) fn folder_of(prefix: &str) -> Result<&str> {
    let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
    if !dir.is_empty() {
        crate::validate_key(dir)?;
    }
    Ok(dir)
}

/// `range` of an object of `size` bytes, clamped to it; the whole object without one.
pub(crate) fn clamp_range(range: Option<std::ops::Range<u64>>, size: u64) -> (u64, u64) {
    match range {
        Some(r) => (r.start.min(size), r.end.min(size).max(r.start.min(size))),
        None => (0, size),
    }
}

/// A fresh id for an upload or a temp file: hex, unique per process and time.
pub(crate) fn unique_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::time::{SystemTime, UNIX_EPOCH};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// `.<name>.<upload>.partial`: the hidden file an unfinished upload grows,
/// beside its target `name`. The id is checked, since it comes from a journal.
pub(crate) fn partial_name(name: &str, upload: &UploadId) -> Result<String> {
    if upload.0.is_empty() || !upload.0.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::new(
            ErrorKind::Precondition,
            format!("malformed upload id {:?}", upload.0),
        ));
    }
    Ok(format!(".{name}.{}{PARTIAL_SUFFIX}", upload.0))
}

/// `.<name>.<random>.tmp`: where a small object is written before its rename.
pub(crate) fn temp_name(name: &str) -> String {
    format!(".{name}.{}{TEMP_SUFFIX}", unique_id())
}

/// What a walk of a file tree collects: the objects (`list`), or the
/// hidden work files (`list_leftovers`).
pub(crate) enum Found<'a> {
    Objects(&'a mut Vec<crate::ObjectMeta>),
    Leftovers(&'a mut Vec<crate::Leftover>),
}

impl Found<'_> {
    /// Takes the file `name`, at key `rel`, where it belongs: an object, a
    /// work file, or neither. `modified` is asked only for a work file.
    pub(crate) fn file(
        &mut self,
        name: &str,
        rel: String,
        size: u64,
        modified: impl FnOnce() -> Option<std::time::SystemTime>,
    ) {
        match (self, is_hidden_work_file(name)) {
            (Found::Objects(v), false) => v.push(crate::ObjectMeta { key: rel, size }),
            (Found::Leftovers(v), true) => v.push(crate::Leftover {
                key: rel,
                modified: modified(),
            }),
            _ => {}
        }
    }
}

/// Whether a walk looking for keys that start with `prefix` must enter the
/// folder at key `rel`.
pub(crate) fn enters(rel: &str, prefix: &str) -> bool {
    let as_dir = format!("{rel}/");
    as_dir.starts_with(prefix) || prefix.starts_with(&as_dir)
}

/// Partial and temp files, which `list` never shows.
pub(crate) fn is_hidden_work_file(name: &str) -> bool {
    name.starts_with('.') && (name.ends_with(PARTIAL_SUFFIX) || name.ends_with(TEMP_SUFFIX))
}

/// The error for an unfinished upload whose partial file is gone.
pub(crate) fn upload_gone(partial: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("unfinished upload {partial} is gone"),
    )
    .with_hint("the upload will be restarted from its first part")
}

/// The receipt for `part` written into a partial file: its place is all
/// the completion needs (no server tag).
pub(crate) fn receipt_for(part: &Part) -> PartReceipt {
    PartReceipt {
        index: part.index,
        offset: part.offset,
        size: part.body.len() as u64,
        tag: String::new(),
    }
}

/// Checks that `parts` follow each other from offset 0; their total size.
pub(crate) fn contiguous_size(parts: &[PartReceipt]) -> Result<u64> {
    let mut expected = 0u64;
    for (i, p) in parts.iter().enumerate() {
        if p.index as usize != i || p.offset != expected {
            return Err(Error::new(
                ErrorKind::Precondition,
                format!("parts are not contiguous at part {i} (offset {})", p.offset),
            ));
        }
        expected += p.size;
    }
    Ok(expected)
}

/// Streams `reader` in [`READ_CHUNK`]s, each read on tokio's blocking pool.
/// A read error ends the stream after it is reported; errors name `name`
/// (the destination) and `key`.
pub(crate) fn blocking_stream<R>(reader: R, name: String, key: String) -> ByteStream
where
    R: Read + Send + 'static,
{
    let reader = Arc::new(Mutex::new(reader));
    let stream = futures::stream::unfold(reader, move |reader| {
        let name = name.clone();
        let key = key.clone();
        async move {
            let r = reader.clone();
            let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                let mut buf = vec![0u8; READ_CHUNK];
                let mut guard = r
                    .lock()
                    .map_err(|_| std::io::Error::other("reader poisoned"))?;
                let n = guard.read(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            })
            .await;
            match chunk {
                Ok(Ok(buf)) if buf.is_empty() => None,
                Ok(Ok(buf)) => Some((Ok(Bytes::from(buf)), reader)),
                Ok(Err(e)) => Some((
                    Err(Error::from_io("read failed", e)
                        .with_destination(name)
                        .with_key(key)),
                    reader,
                )),
                Err(e) => Some((
                    Err(
                        Error::new(ErrorKind::Unexpected, format!("worker failed: {e}"))
                            .with_destination(name)
                            .with_key(key),
                    ),
                    reader,
                )),
            }
        }
    });
    let stream = stream.scan(false, |failed, item| {
        let stop = *failed;
        *failed = item.is_err();
        futures::future::ready(if stop { None } else { Some(item) })
    });
    Box::pin(stream)
}
