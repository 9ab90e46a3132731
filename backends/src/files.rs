//! What the file-tree backends (path, SFTP, FTP) share: the hidden names of
//! unfinished uploads and temp files, and turning a blocking reader into a
//! [`ByteStream`] without blocking the async runtime.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use crate::{ByteStream, Error, ErrorKind, Result, UploadId};

pub(crate) const PARTIAL_SUFFIX: &str = ".partial";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// How much one blocking read asks for.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

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

/// Checks that `parts` follow each other from offset 0; their total size.
pub(crate) fn contiguous_size(parts: &[crate::PartReceipt]) -> Result<u64> {
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
