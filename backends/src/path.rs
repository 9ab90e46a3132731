//! `kind = "path"`: a folder, typically a mounted NFS or SMB share.
//!
//! Guarantees:
//! - The root folder must already exist. An absent mount point is an error,
//!   never created: creating it would silently fill the local disk instead of
//!   the share.
//! - Uploads grow a hidden partial file (`.<name>.<upload>.partial`) beside
//!   the target, each part written at its offset and fsync'd before its
//!   receipt is returned, so a journaled receipt is on stable storage. Parts
//!   may come in any order. Completion cuts what a longer attempt left
//!   (fsync'd), renames into place, then fsyncs the folder: readers never
//!   see a half-written object under its final name. (The protocol is
//!   `crate::partial`'s, shared with SFTP and FTP.)
//! - `put` writes a hidden temp file and renames it the same way.
//! - Nothing is overwritten: completion and `put` move the file into place
//!   with `renameat2(RENAME_NOREPLACE)`, which fails when the name is taken
//!   ([`ErrorKind::AlreadyExists`]), atomically. A file system without it
//!   (some network file systems) gets `link` then `unlink`, as atomic; one
//!   without hard links either gets a check then a rename, which two
//!   writers racing within the same moment can both pass.
//! - `list` never shows partial or temp files.
//! - Files are created mode 0600 (owner only), whatever the umask.
//!
//! Every filesystem call runs on tokio's blocking pool, never on the async
//! runtime's threads.

mod settings;

pub use settings::PathSettings;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::files::{
    Found, blocking_stream, clamp_range, enters, file_tree_capabilities, folder_of,
    on_blocking_pool, upload_gone,
};
use crate::partial::{self, FileOps};
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, ListStream, ObjectMeta, Part, PartReceipt,
    Readiness, Result, UploadId, validate_key,
};

/// Backups hold a database's data: their files are readable by their owner
/// only, whatever the umask.
const FILE_MODE: u32 = 0o600;

/// A folder destination (a mounted share, or a local folder).
#[derive(Debug, Clone)]
pub struct PathBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    root: PathBuf,
}

impl PathBackend {
    /// A backend named `name` (the destination's name) storing under `root`.
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        PathBackend {
            inner: Arc::new(Inner {
                name: name.into(),
                root: root.into(),
            }),
        }
    }

    /// The folder objects are stored under.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        on_blocking_pool(&self.inner.name, key, move || f(&inner)).await
    }
}

impl Inner {
    fn check_root(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{} is not a folder", self.root.display()),
            )
            .with_hint("point `path` at the mounted share's folder")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{} does not exist", self.root.display()),
            )
            .with_hint(
                "mount the share (offsite never creates the root folder, so an absent mount \
                 cannot fill the local disk), or create the folder if it is meant to be local",
            )),
            Err(e) => Err(Error::from_io(
                format!("cannot reach {}", self.root.display()),
                e,
            )),
        }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Creates the folder holding `key` below the (existing) root if needed.
    fn make_parents(&self, key: &str) -> Result<()> {
        self.check_root()?;
        let path = self.path_of(key)?;
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent)
            .map_err(|e| Error::from_io(format!("cannot create folder {}", parent.display()), e))
    }
}

/// Moves `from` to `to` unless `to` exists (then `AlreadyExists`), atomically
/// where the file system can: `renameat2(RENAME_NOREPLACE)`, else a hard
/// link and an unlink, else (no hard links) a check and a rename.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("a path with a NUL byte"))
    };
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    ) {
        return Err(err);
    }
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
            ) =>
        {
            if fs::symlink_metadata(to).is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e),
    }
}

/// The error of a create-only move into `target`.
fn taken_or(e: std::io::Error, target: &Path) -> Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} already exists; it is never overwritten",
                target.display()
            ),
        )
    } else {
        Error::from_io(format!("cannot rename into {}", target.display()), e)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::from_io(format!("cannot sync folder {}", dir.display()), e))
}

/// The folder's files, for the partial-file protocol.
struct LocalFiles<'a>(&'a Inner);

impl FileOps for LocalFiles<'_> {
    fn make_parents(&mut self, path: &str) -> Result<()> {
        self.0.make_parents(path)
    }

    fn write_new(&mut self, path: &str, body: &[u8]) -> Result<()> {
        let p = self.0.path_of(path)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&p)
            .map_err(|e| Error::from_io(format!("cannot create {}", p.display()), e))?;
        if let Err(e) = f.write_all(body).and_then(|()| f.sync_all()) {
            let _ = fs::remove_file(&p);
            return Err(Error::from_io(format!("cannot write {}", p.display()), e));
        }
        sync_dir(p.parent().unwrap_or(&self.0.root))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>> {
        let p = self.0.path_of(path)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_io(format!("cannot stat {}", p.display()), e)),
        }
    }

    fn write_at(&mut self, path: &str, offset: u64, body: &[u8]) -> Result<()> {
        let p = self.0.path_of(path)?;
        let f = match OpenOptions::new().write(true).open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(upload_gone(path)),
            Err(e) => return Err(Error::from_io(format!("cannot open {}", p.display()), e)),
        };
        f.write_all_at(body, offset)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::from_io(format!("cannot write {}", p.display()), e))
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<()> {
        let p = self.0.path_of(path)?;
        OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
            .map_err(|e| Error::from_io(format!("cannot cut {}", p.display()), e))
    }

    fn rename_new(&mut self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.0.path_of(from)?, self.0.path_of(to)?);
        rename_no_replace(&from, &to).map_err(|e| taken_or(e, &to))?;
        sync_dir(to.parent().unwrap_or(&self.0.root))
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let p = self.0.path_of(path)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_io(format!("cannot remove {}", p.display()), e)),
        }
    }
}

#[async_trait]
impl Backend for PathBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        file_tree_capabilities(true)
    }

    async fn probe(&self) -> Result<()> {
        self.blocking("", |inner| {
            inner.check_root()?;
            let c = std::ffi::CString::new(inner.root.as_os_str().as_encoded_bytes()).map_err(
                |_| Error::new(ErrorKind::ConfigInvalid, "the path contains a NUL byte"),
            )?;
            // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                return Err(Error::from_io(
                    format!("{} is not writable", inner.root.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner| {
            partial::put(&mut LocalFiles(inner), &key_owned, &body)
        })
        .await
    }

    async fn create_upload(&self, key: &str, _part_size: u64) -> Result<UploadId> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner| {
            partial::create(&mut LocalFiles(inner), &key_owned)
        })
        .await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner| {
            // An unmounted share is a configuration error, not an upload
            // gone: the journal keeps the parts already sent.
            inner.check_root()?;
            partial::write_part(&mut LocalFiles(inner), &key_owned, &upload, &part, false)
        })
        .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        let parts = parts.to_vec();
        self.blocking(key, move |inner| {
            inner.check_root()?;
            partial::complete(&mut LocalFiles(inner), &key_owned, &upload, &parts)
        })
        .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner| {
            partial::abort(&mut LocalFiles(inner), &key_owned, &upload)
        })
        .await
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        validate_key(key)?;
        Ok(Readiness::Ready)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let key_owned = key.to_string();
        let (file, len) = self
            .blocking(key, move |inner| {
                inner.check_root()?;
                let path = inner.path_of(&key_owned)?;
                let mut f = File::open(&path)
                    .map_err(|e| Error::from_io(format!("cannot open {}", path.display()), e))?;
                let size = f
                    .metadata()
                    .map_err(|e| Error::from_io(format!("cannot stat {}", path.display()), e))?
                    .len();
                let (start, end) = clamp_range(range, size);
                f.seek(SeekFrom::Start(start))
                    .map_err(|e| Error::from_io(format!("cannot seek {}", path.display()), e))?;
                Ok((f, end.saturating_sub(start)))
            })
            .await?;
        Ok(blocking_stream(
            file.take(len),
            self.inner.name.clone(),
            key.to_string(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let prefix_owned = prefix.to_string();
        let items = self
            .blocking(prefix, move |inner| {
                inner.check_root()?;
                let start = inner.root.join(folder_of(&prefix_owned)?);
                let mut out = Vec::new();
                walk(&inner.root, &start, &prefix_owned, &mut out)?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await?;
        Ok(Box::pin(futures::stream::iter(items.into_iter().map(Ok))))
    }

    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<crate::Leftover>> {
        let prefix_owned = prefix.to_string();
        self.blocking(prefix, move |inner| {
            inner.check_root()?;
            let start = inner.root.join(folder_of(&prefix_owned)?);
            let mut out = Vec::new();
            walk_for(
                &inner.root,
                &start,
                &prefix_owned,
                &mut Found::Leftovers(&mut out),
            )?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner| {
            inner.check_root()?;
            let path = inner.path_of(&key_owned)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(Error::from_io(
                        format!("cannot delete {}", path.display()),
                        e,
                    ));
                }
            }
            // Tidy folders left empty, never the root; a folder still in use stays.
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == inner.root || !d.starts_with(&inner.root) || fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    walk_for(root, dir, prefix, &mut Found::Objects(out))
}

fn walk_for(root: &Path, dir: &Path, prefix: &str, out: &mut Found) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
        Err(e) => return Err(Error::from_io(format!("cannot list {}", dir.display()), e)),
    };
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::from_io(format!("cannot list {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel = match path.strip_prefix(root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => continue,
        };
        let ft = entry
            .file_type()
            .map_err(|e| Error::from_io(format!("cannot stat {}", path.display()), e))?;
        if ft.is_dir() {
            if enters(&rel, prefix) {
                walk_for(root, &path, prefix, out)?;
            }
        } else if ft.is_file() && rel.starts_with(prefix) {
            let md = entry
                .metadata()
                .map_err(|e| Error::from_io(format!("cannot stat {}", path.display()), e))?;
            out.file(&name, rel, md.len(), || md.modified().ok());
        }
    }
    Ok(())
}
