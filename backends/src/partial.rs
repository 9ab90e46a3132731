//! The partial-file upload protocol of the file-tree backends (path, SFTP,
//! FTP), written once.
//!
//! An upload is a hidden file `.<name>.<upload>.partial` beside its target
//! (see [`crate::files::partial_name`]). Each part is written at its
//! offset; completion checks that the file holds every part, cuts what an
//! interrupted longer attempt left past the end, and moves it into place
//! without ever replacing an object. A small object (`put`) goes the same
//! way through a hidden temp file. Nothing here retries: the caller's
//! [`crate::Retrying`] does.
//!
//! Like OpenDAL's position writer, the protocol is generic over a few
//! blocking file primitives ([`FileOps`]) that each backend provides on one
//! connection; the backend keeps only what is its own (how a rename
//! refuses to replace, how a folder is made, FTP's check that REST was
//! honoured).

use crate::files::{contiguous_size, partial_name, receipt_for, temp_name, unique_id, upload_gone};
use crate::{Error, ErrorKind, Part, PartReceipt, Result, UploadId, validate_key};

/// The blocking file operations a file-tree backend offers on one
/// connection. Paths are keys: relative to the destination's root, `/`
/// separated; the backend maps them to its own.
pub(crate) trait FileOps {
    /// Creates the folders above the file `path` (below the root, which
    /// must exist).
    fn make_parents(&mut self, path: &str) -> Result<()>;

    /// Creates `path` holding `body`, durably; never replaces a file (a
    /// fresh random name is used, so a clash is an error).
    fn write_new(&mut self, path: &str, body: &[u8]) -> Result<()>;

    /// The size of the file `path`; `None` when there is none.
    fn size(&mut self, path: &str) -> Result<Option<u64>>;

    /// Writes `body` at `offset` of the existing file `path`, durably.
    fn write_at(&mut self, path: &str, offset: u64, body: &[u8]) -> Result<()>;

    /// Cuts the file `path` to `len` bytes, durably.
    fn truncate(&mut self, path: &str, len: u64) -> Result<()>;

    /// Moves `from` to `to` unless `to` exists ([`ErrorKind::AlreadyExists`]).
    fn rename_new(&mut self, from: &str, to: &str) -> Result<()>;

    /// Removes the file `path`; nothing to do when it is gone.
    fn remove(&mut self, path: &str) -> Result<()>;
}

/// `name` in the folder of `key`.
fn beside(key: &str, name: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

/// The file name of `key`.
fn file_name(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// The hidden file the unfinished `upload` of `key` grows.
pub(crate) fn partial_key(key: &str, upload: &UploadId) -> Result<String> {
    validate_key(key)?;
    Ok(beside(key, &partial_name(file_name(key), upload)?))
}

/// Stores `body` as `key`: written to a hidden temp file, then moved into
/// place; the temp file is removed when anything fails.
pub(crate) fn put(fs: &mut impl FileOps, key: &str, body: &[u8]) -> Result<()> {
    validate_key(key)?;
    fs.make_parents(key)?;
    let tmp = beside(key, &temp_name(file_name(key)));
    let stored = fs
        .write_new(&tmp, body)
        .and_then(|()| fs.rename_new(&tmp, key));
    if let Err(e) = stored {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    check_placed(fs, key, body.len() as u64).map_err(Error::temporary)
}

/// Starts an upload of `key`: an empty hidden partial file.
pub(crate) fn create(fs: &mut impl FileOps, key: &str) -> Result<UploadId> {
    validate_key(key)?;
    fs.make_parents(key)?;
    let id = UploadId(unique_id());
    fs.write_new(&partial_key(key, &id)?, &[])?;
    Ok(id)
}

/// Writes `part` into the upload's partial file. With `in_order` (a
/// protocol that appends), every byte before the part must be there.
pub(crate) fn write_part(
    fs: &mut impl FileOps,
    key: &str,
    upload: &UploadId,
    part: &Part,
    in_order: bool,
) -> Result<PartReceipt> {
    let partial = partial_key(key, upload)?;
    let Some(size) = fs.size(&partial)? else {
        return Err(upload_gone(&partial));
    };
    if in_order && size < part.offset {
        return Err(damaged(
            &partial,
            &format!(
                "holds {size} bytes but part {} starts at {}",
                part.index, part.offset
            ),
        ));
    }
    fs.write_at(&partial, part.offset, &part.body)?;
    Ok(receipt_for(part))
}

/// Completes the upload: the partial file must hold every part; it is cut
/// to their total and moved into place, where its size is checked.
///
/// A partial file that is gone answers [`upload_gone`]: completed by an
/// earlier attempt whose answer was lost, or removed. The caller tells
/// which (the object is there, and its own, or not).
pub(crate) fn complete(
    fs: &mut impl FileOps,
    key: &str,
    upload: &UploadId,
    parts: &[PartReceipt],
) -> Result<()> {
    let partial = partial_key(key, upload)?;
    let total = contiguous_size(parts)?;
    let Some(size) = fs.size(&partial)? else {
        return Err(upload_gone(&partial));
    };
    if size < total {
        return Err(damaged(
            &partial,
            &format!("holds {size} bytes, the parts say {total}"),
        ));
    }
    if size > total {
        fs.truncate(&partial, total)?;
    }
    fs.rename_new(&partial, key)?;
    check_placed(fs, key, total)
}

/// A partial file that does not hold what the journal says (a server that
/// lost acknowledged writes, an attempt that wrote more): `NotFound`, so
/// the caller sends the volume again from its first part instead of
/// failing the same way at every run.
pub(crate) fn damaged(partial: &str, detail: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{partial} {detail}: the unfinished upload was damaged"),
    )
    .with_hint("the upload will be restarted from its first part")
}

/// Removes the upload's partial file, if it is still there.
pub(crate) fn abort(fs: &mut impl FileOps, key: &str, upload: &UploadId) -> Result<()> {
    fs.remove(&partial_key(key, upload)?)
}

/// Moves the hidden file `hidden` into place as `key` and checks it holds
/// `size` bytes; `hidden` is removed when the move fails (whole-file
/// uploads, which have no upload to resume).
pub(crate) fn place(fs: &mut impl FileOps, hidden: &str, key: &str, size: u64) -> Result<()> {
    if let Err(e) = fs.rename_new(hidden, key) {
        let _ = fs.remove(hidden);
        return Err(e);
    }
    check_placed(fs, key, size)
}

/// `key` holds `size` bytes where it now lies.
fn check_placed(fs: &mut impl FileOps, key: &str, size: u64) -> Result<()> {
    match fs.size(key)? {
        Some(n) if n == size => Ok(()),
        other => Err(Error::new(
            ErrorKind::Unexpected,
            format!(
                "{key} is {} after it was moved into place, expected {size}",
                other.map_or("missing".to_string(), |n| format!("{n} bytes"))
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;

    /// Files in memory: enough to check the protocol's decisions.
    #[derive(Default)]
    struct Mem {
        files: BTreeMap<String, Vec<u8>>,
    }

    impl FileOps for Mem {
        fn make_parents(&mut self, _path: &str) -> Result<()> {
            Ok(())
        }
        fn write_new(&mut self, path: &str, body: &[u8]) -> Result<()> {
            if self.files.contains_key(path) {
                return Err(Error::new(ErrorKind::AlreadyExists, path));
            }
            self.files.insert(path.to_string(), body.to_vec());
            Ok(())
        }
        fn size(&mut self, path: &str) -> Result<Option<u64>> {
            Ok(self.files.get(path).map(|f| f.len() as u64))
        }
        fn write_at(&mut self, path: &str, offset: u64, body: &[u8]) -> Result<()> {
            let f = self
                .files
                .get_mut(path)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, path))?;
            let end = offset as usize + body.len();
            if f.len() < end {
                f.resize(end, 0);
            }
            f[offset as usize..end].copy_from_slice(body);
            Ok(())
        }
        fn truncate(&mut self, path: &str, len: u64) -> Result<()> {
            if let Some(f) = self.files.get_mut(path) {
                f.truncate(len as usize);
            }
            Ok(())
        }
        fn rename_new(&mut self, from: &str, to: &str) -> Result<()> {
            if self.files.contains_key(to) {
                return Err(Error::new(ErrorKind::AlreadyExists, to));
            }
            let body = self
                .files
                .remove(from)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, from))?;
            self.files.insert(to.to_string(), body);
            Ok(())
        }
        fn remove(&mut self, path: &str) -> Result<()> {
            self.files.remove(path);
            Ok(())
        }
    }

    fn part(index: u32, offset: u64, body: &'static [u8]) -> Part {
        Part {
            index,
            offset,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn partial_files_sit_beside_their_target() {
        let id = UploadId("abc123".into());
        assert_eq!(
            partial_key("job/x/vol.tar.zst", &id).expect("ok"),
            "job/x/.vol.tar.zst.abc123.partial"
        );
        assert_eq!(partial_key("a", &id).expect("ok"), ".a.abc123.partial");
        assert!(partial_key("../a", &id).is_err());
    }

    #[test]
    fn an_upload_grows_beside_its_target_and_moves_into_place() {
        let mut fs = Mem::default();
        let id = create(&mut fs, "db/v1").expect("create");
        let partial = partial_key("db/v1", &id).expect("partial");
        assert!(partial.starts_with("db/.v1."), "{partial}");
        let a = write_part(&mut fs, "db/v1", &id, &part(0, 0, b"abc"), true).expect("a");
        let b = write_part(&mut fs, "db/v1", &id, &part(1, 3, b"de"), true).expect("b");
        complete(&mut fs, "db/v1", &id, &[a, b]).expect("complete");
        assert_eq!(
            fs.files.get("db/v1").map(Vec::as_slice),
            Some(&b"abcde"[..])
        );
        assert_eq!(fs.files.len(), 1, "no partial file is left");
    }

    #[test]
    fn a_longer_partial_file_is_cut_to_the_parts() {
        let mut fs = Mem::default();
        let id = create(&mut fs, "v").expect("create");
        let a = write_part(&mut fs, "v", &id, &part(0, 0, b"abc"), true).expect("a");
        // An attempt that wrote a longer last part before the journal changed.
        write_part(&mut fs, "v", &id, &part(1, 3, b"zzzz"), true).expect("stray");
        let b = write_part(&mut fs, "v", &id, &part(1, 3, b"d"), true).expect("b");
        complete(&mut fs, "v", &id, &[a, b]).expect("complete");
        assert_eq!(fs.files.get("v").map(Vec::as_slice), Some(&b"abcd"[..]));
    }

    #[test]
    fn a_gap_before_an_appended_part_restarts_the_upload() {
        let mut fs = Mem::default();
        let id = create(&mut fs, "v").expect("create");
        let e = write_part(&mut fs, "v", &id, &part(1, 3, b"d"), true).expect_err("gap");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        // Out of order is fine where the protocol writes at offsets.
        write_part(&mut fs, "v", &id, &part(1, 3, b"d"), false).expect("at an offset");
    }

    #[test]
    fn completing_twice_and_completing_onto_an_object_are_told_apart() {
        let mut fs = Mem::default();
        let id = create(&mut fs, "v").expect("create");
        let a = write_part(&mut fs, "v", &id, &part(0, 0, b"abc"), true).expect("a");
        complete(&mut fs, "v", &id, std::slice::from_ref(&a)).expect("first");
        let again = complete(&mut fs, "v", &id, std::slice::from_ref(&a)).expect_err("second");
        assert_eq!(
            again.kind(),
            ErrorKind::NotFound,
            "the caller decides: {again}"
        );

        let other = create(&mut fs, "v").expect("create again");
        let b = write_part(&mut fs, "v", &other, &part(0, 0, b"xyz"), true).expect("b");
        let taken = complete(&mut fs, "v", &other, &[b]).expect_err("taken");
        assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs.files.get("v").map(Vec::as_slice), Some(&b"abc"[..]));
    }

    #[test]
    fn a_put_never_replaces_and_leaves_no_temp_file() {
        let mut fs = Mem::default();
        put(&mut fs, "m/manifest.json", b"one").expect("put");
        let e = put(&mut fs, "m/manifest.json", b"two").expect_err("second put");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs.files.len(), 1);
        assert_eq!(
            fs.files.get("m/manifest.json").map(Vec::as_slice),
            Some(&b"one"[..])
        );
    }

    #[test]
    fn a_short_partial_file_is_not_completed() {
        let mut fs = Mem::default();
        let id = create(&mut fs, "v").expect("create");
        let receipt = PartReceipt {
            index: 0,
            offset: 0,
            size: 10,
            tag: String::new(),
        };
        let e = complete(&mut fs, "v", &id, &[receipt]).expect_err("short");
        assert_eq!(e.kind(), ErrorKind::NotFound, "sent again: {e}");
        assert!(!fs.files.contains_key("v"));
    }
}
