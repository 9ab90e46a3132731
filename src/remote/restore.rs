//! `restore`: rebuilds a backup (an incremental from its chain) into a
//! folder, reading it as [`super::read`] does and stopping at the first
//! problem.
//!
//! Restore never writes outside `--to`: paths are checked (relative, no `..`),
//! no path component may be a symlink, symlinks are created last and only
//! when they stay inside. Into a folder written with `--force`, files are
//! written to a temp name and renamed into place once their hash is right;
//! into one the restore made or found empty, under their own name (a file
//! whose hash is wrong is removed, and the restore fails).
//!
//! Files of up to 256 KiB in their final version are read into memory,
//! checked, and written by a few threads at once (`pool`): creating many
//! small files is kernel work one thread cannot spread over the cores.
//! Larger files are streamed to disk by the thread that reads the
//! archive. Memory is bounded by the pool's queue (8 files per writer)
//! and one read buffer.
//!
//! Durability: nothing is synced file by file; once everything is written
//! and its metadata set, one `syncfs` flushes the file system the restore
//! folder is on, before the restore reports success. A restore that did not
//! report success is not to be trusted: run it again (`--force`).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::digest::Digest;
use serde::Serialize;

use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::crypt::{self, Identities};
use crate::format::manifest::{self, FileEntry, Manifest, RootMeta};

use super::catalog::{self, Which, check_set_arg};
use super::read::{EntrySink, ensure_readable, hash_stream, read_backup};
use crate::cluster::{SetStatus, SetVerdict};
use crate::config::Config;
use crate::staging::{JobLock, JobStaging};

mod pool;

/// What a restore wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The job's name.
    pub job: String,
    /// The destination it was read from.
    pub destination: String,
    /// The id of the backup restored.
    pub backup: String,
    /// The host that made the backup, when it recorded one.
    pub host: Option<String>,
    /// The folder it was restored into.
    pub to: PathBuf,
    /// Files written and their hashes checked, across the backup's whole chain.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// What did not stop the restore but needs a look (owners not set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Writes entries under `root`, refusing any path through a symlink.
struct TreeWriter {
    root: PathBuf,
    /// The backup's root folder's metadata, given to `root` at the end.
    root_meta: Option<RootMeta>,
    /// `root` was made by the restore or found empty: it gets the backup
    /// root's mode and owner too, not only its time.
    root_fresh: bool,
    dirs: Vec<FileEntry>,
    links: Vec<FileEntry>,
    hardlinks: Vec<FileEntry>,
    meta: Meta,
    /// Writes small files on other threads, several at once.
    pool: pool::WritePool,
    /// Numbers the temp names, which stay short (see [`TreeWriter::temp_name`]).
    temps: u64,
    /// The folders this restore made (mode 0700, its own): not checked again
    /// for every file written into them.
    made: std::collections::HashSet<PathBuf>,
    /// Files rebuilt from a version and the changed blocks of later
    /// backups: the backups that hold their stages, oldest first, and how
    /// many were written. A file gets its metadata, and its whole hash is
    /// checked, at its last stage.
    stages: Stages,
}

/// The file system's path of the encoded relative path `rel` under `root`.
fn path_under(root: &Path, rel: &str) -> Result<PathBuf> {
    crate::format::names::join(root, rel)
        .ok_or_else(|| Error::Failed(format!("{rel:?} is not a name in the manifest's encoding")))
}

/// Sets the modification time of `path` to `sec`.`nsec` (before 1970 too),
/// leaving its access time; a symlink's own time when `follow` is false.
fn set_mtime(path: &Path, sec: i64, nsec: u32, follow: bool) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("a path with a NUL byte"))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec.min(999_999_999) as libc::c_long,
        },
    ];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: `c` is NUL-terminated and `times` holds the two entries
    // utimensat reads; both outlive the call.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a file's restored bytes go: written in order, or, for a file
/// that had holes, with its all-zero blocks left unwritten so it stays
/// sparse (its size is set at the end).
struct FileSink<'a> {
    file: &'a File,
    sparse: bool,
    offset: u64,
}

/// The block a sparse file's holes are found by.
const HOLE_BLOCK: usize = 4096;

impl Write for FileSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.sparse {
            self.file.write_all_at(buf, self.offset)?;
            self.offset += buf.len() as u64;
            return Ok(buf.len());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            // Up to the next block boundary of the file, so holes line up.
            let to_boundary = HOLE_BLOCK - (self.offset % HOLE_BLOCK as u64) as usize;
            let n = rest.len().min(to_boundary);
            let (chunk, tail) = rest.split_at(n);
            if chunk.iter().any(|b| *b != 0) {
                self.file.write_all_at(chunk, self.offset)?;
            }
            self.offset += n as u64;
            rest = tail;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Gives restored entries their recorded metadata.
#[derive(Clone)]
struct Meta {
    /// Owners are set (the restore runs as root).
    chown: bool,
    /// How many owners could not be set, and the first refusal.
    owner_failures: Arc<Mutex<(u64, String)>>,
}

impl Meta {
    /// Gives `path` the owner (as root), mode and modification time recorded for it.
    fn apply(&self, path: &Path, uid: u32, gid: u32, mode: u32, mtime: (i64, u32)) -> Result<()> {
        if self.chown {
            self.owner(path, uid, gid);
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|err| Error::io(format!("cannot set mode of {}", path.display()), err))?;
        set_mtime(path, mtime.0, mtime.1, true)
            .map_err(|err| Error::io(format!("cannot set time of {}", path.display()), err))
    }

    /// Gives `path` its recorded owner. A file system that refuses (an NFS
    /// share squashing root) does not stop the restore: the refusals are
    /// counted for the report.
    fn owner(&self, path: &Path, uid: u32, gid: u32) {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            && let Ok(mut w) = self.owner_failures.lock()
        {
            if w.0 == 0 {
                w.1 = format!("{}: {e}", path.display());
            }
            w.0 += 1;
        }
    }

    /// [`Meta::entry`] through the open file `f` (at `path`).
    fn file(&self, f: &File, path: &Path, e: &FileEntry) -> Result<()> {
        if self.chown
            && let Err(err) = std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))
            && let Ok(mut w) = self.owner_failures.lock()
        {
            if w.0 == 0 {
                w.1 = format!("{}: {err}", path.display());
            }
            w.0 += 1;
        }
        f.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(|err| Error::io(format!("cannot set mode of {}", path.display()), err))?;
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: e.mtime as libc::time_t,
                tv_nsec: e.mtime_nsec.min(999_999_999) as libc::c_long,
            },
        ];
        // SAFETY: `f` is open for the call and `times` holds the two entries futimens reads.
        if unsafe { libc::futimens(std::os::fd::AsRawFd::as_raw_fd(f), times.as_ptr()) } != 0 {
            return Err(Error::io(
                format!("cannot set time of {}", path.display()),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn entry(&self, path: &Path, e: &FileEntry) -> Result<()> {
        self.apply(path, e.uid, e.gid, e.mode, (e.mtime, e.mtime_nsec))
    }
}

impl TreeWriter {
    /// Creates the folders of `rel` (a relative path) under the root, refusing symlinks and files in the way.
    fn ensure_dir(&mut self, rel: &str) -> Result<PathBuf> {
        let mut p = self.root.clone();
        if rel.is_empty() {
            return Ok(p);
        }
        for comp in rel.split('/') {
            p = path_under(&p, comp)?;
            if self.made.contains(&p) {
                continue;
            }
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Failed(format!(
                        "{} is a symlink; restore does not write through symlinks",
                        p.display()
                    )));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Failed(format!(
                        "{} exists and is not a folder",
                        p.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&p)
                        .map_err(|e| Error::io(format!("cannot create {}", p.display()), e))?;
                    // Owner-writable until the end, when the manifest's mode is applied.
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                    self.made.insert(p.clone());
                }
                Err(e) => return Err(Error::io(format!("cannot stat {}", p.display()), e)),
            }
        }
        Ok(p)
    }

    /// A short temp name for a file being written into a folder: at most
    /// 30 bytes whatever the file's name, so a name as long as the file
    /// system allows (255 bytes) restores too.
    fn temp_name(&mut self) -> String {
        self.temps += 1;
        format!(".offsite-{:x}-{:x}.tmp", std::process::id(), self.temps)
    }

    /// Where the file `rel` goes (its folder made), and the temp name it is
    /// written to first when the restore writes into a folder with --force.
    /// Into a folder the restore made or found empty, a file is written
    /// under its own name: nothing is there to keep whole until it is
    /// replaced, and a rename per file made many small files slow.
    fn place(&mut self, rel: &str) -> Result<(PathBuf, Option<PathBuf>)> {
        let (dir, name) = Self::split(rel);
        let parent = self.ensure_dir(dir)?;
        let path = path_under(&parent, name)?;
        let tmp = (!self.root_fresh).then(|| parent.join(self.temp_name()));
        Ok((path, tmp))
    }

    fn split(rel: &str) -> (&str, &str) {
        match rel.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", rel),
        }
    }

    /// Where a link named by `rel` goes: its folder made, whatever is
    /// there already (with --force) removed, unless it is a folder.
    fn link_path(&mut self, rel: &str) -> Result<PathBuf> {
        let (dir, name) = Self::split(rel);
        let parent = self.ensure_dir(dir)?;
        let path = path_under(&parent, name)?;
        if let Ok(m) = fs::symlink_metadata(&path) {
            if m.is_dir() {
                return Err(Error::Failed(format!(
                    "{} exists and is a folder",
                    path.display()
                )));
            }
            fs::remove_file(&path)
                .map_err(|e| Error::io(format!("cannot replace {}", path.display()), e))?;
        }
        Ok(path)
    }

    /// Writes the changed blocks of `entry` (in `content`) over the version
    /// an earlier stage of this restore wrote; at the last stage, checks the
    /// whole file's hash and gives it its metadata. Answers the size and
    /// hash of the blocks read.
    fn patch(
        &mut self,
        entry: &FileEntry,
        content: &mut dyn Read,
        last: bool,
    ) -> Result<(u64, Digest)> {
        let Some(delta) = &entry.delta else {
            return Err(Error::Failed(format!(
                "{} is not stored as blocks",
                entry.path
            )));
        };
        let (dir, name) = Self::split(&entry.path);
        let path = path_under(&self.ensure_dir(dir)?, name)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| {
                Error::io(
                    format!(
                        "cannot open {} to write its changed blocks from {} (its earlier version was not restored)",
                        path.display(),
                        entry.backup
                    ),
                    e,
                )
            })?;
        let io_err = |e| Error::io(format!("restoring {}", entry.path), e);
        // A file grows only by blocks the patch holds: a size past them is a
        // damaged manifest (and would have the whole-file check read it all).
        let had = f.metadata().map_err(io_err)?.len();
        let ends = delta.ranges(entry.size).last().map_or(0, |(o, l)| o + l);
        if entry.size > had.max(ends) {
            return Err(Error::Integrity(format!(
                "{}: the changed blocks of {} make it {} bytes, but its earlier version has {had} and the blocks end at {ends}; the chain is damaged",
                entry.path, entry.backup, entry.size
            )));
        }
        f.set_len(entry.size).map_err(io_err)?;
        let mut hasher = crate::format::digest::Hasher::new(delta.digest().algorithm);
        let mut buf = vec![0u8; delta.block_size as usize];
        let mut total = 0u64;
        for (offset, len) in delta.ranges(entry.size) {
            let block = &mut buf[..len as usize];
            content.read_exact(block).map_err(io_err)?;
            hasher.update(block);
            f.write_all_at(block, offset).map_err(io_err)?;
            total += len;
        }
        // More bytes than the blocks: counted, so the size check names it.
        total += io::copy(content, &mut io::sink()).map_err(io_err)?;
        let stored = hasher.finish();
        if last && total == entry.stored_size() && Some(&stored) == entry.stored_digest().as_ref() {
            let whole = hash_stream(
                &FileEntry {
                    delta: None,
                    ..entry.clone()
                },
                &mut &f,
                None,
            )
            .map_err(io_err)?;
            if Some(&whole.1) != entry.digest().as_ref() || whole.0 != entry.size {
                return Err(Error::Integrity(format!(
                    "{}: rebuilt from its earlier version and the changed blocks of {}, it does not match the manifest's hash; a backup of the chain is damaged",
                    entry.path, entry.backup
                )));
            }
            self.meta.file(&f, &path, entry)?;
        }
        Ok((total, stored))
    }

    fn finish(&mut self) -> Result<()> {
        let hardlinks = std::mem::take(&mut self.hardlinks);
        for l in &hardlinks {
            let target_rel = l.target.clone().unwrap_or_default();
            let (tdir, tname) = Self::split(&target_rel);
            let target = path_under(&self.ensure_dir(tdir)?, tname)?;
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_file() => {}
                _ => {
                    return Err(Error::Failed(format!(
                        "hard link {} names {}, which was not restored as a file",
                        l.path,
                        target.display()
                    )));
                }
            }
            let path = self.link_path(&l.path)?;
            fs::hard_link(&target, &path)
                .map_err(|e| Error::io(format!("cannot create hard link {}", path.display()), e))?;
        }
        let links = std::mem::take(&mut self.links);
        for l in &links {
            let target = l.target.clone().unwrap_or_default();
            if !manifest::symlink_stays_inside(&l.path, &target) {
                return Err(Error::Failed(format!(
                    "symlink {} -> {target} would leave the restore folder; refused",
                    l.path
                )));
            }
            let raw_target = crate::format::names::decode(&target).ok_or_else(|| {
                Error::Failed(format!(
                    "symlink {}: its target is not in the manifest's encoding",
                    l.path
                ))
            })?;
            let path = self.link_path(&l.path)?;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&raw_target), &path)
                .map_err(|e| Error::io(format!("cannot create symlink {}", path.display()), e))?;
            if self.meta.chown {
                self.meta.owner(&path, l.uid, l.gid);
            }
            set_mtime(&path, l.mtime, l.mtime_nsec, false)
                .map_err(|e| Error::io(format!("cannot set time of {}", path.display()), e))?;
        }
        // Deepest first, so a read-only parent does not block its children,
        // and a folder's time is set after everything inside it is written.
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for d in &dirs {
            let path = self.ensure_dir(&d.path)?;
            self.meta.entry(&path, d)?;
        }
        match &self.root_meta {
            Some(r) if self.root_fresh => {
                self.meta
                    .apply(&self.root, r.uid, r.gid, r.mode, (r.mtime, r.mtime_nsec))?;
            }
            // A folder written into with --force keeps its mode and owner.
            Some(r) => set_mtime(&self.root, r.mtime, r.mtime_nsec, true).map_err(|err| {
                Error::io(format!("cannot set time of {}", self.root.display()), err)
            })?,
            None => {}
        }
        Ok(())
    }
}

impl EntrySink for TreeWriter {
    fn file(&mut self, entry: &FileEntry, content: &mut dyn Read) -> Result<(u64, Digest)> {
        let last = match self.stages.get_mut(&entry.path) {
            Some((holders, done)) => {
                // A version is only ever written over the one before it.
                if holders.get(*done) != Some(&entry.backup) {
                    return Err(Error::Integrity(format!(
                        "{}: its version in {} came before the one it builds on; the chain is damaged",
                        entry.path, entry.backup
                    )));
                }
                *done += 1;
                *done == holders.len()
            }
            None => true,
        };
        if entry.delta.is_some() {
            return self.patch(entry, content, last);
        }
        // A small file in its final version is read into memory, checked,
        // and handed to the pool, which writes several at once: creating
        // files is most of a restore of many small ones, and it is the
        // kernel's work, which one thread cannot spread over the cores.
        if last && entry.size <= pool::SMALL_FILE {
            let mut data = pool::Capped::new(entry.size as usize);
            let (size, hash) = hash_stream(entry, content, Some(&mut data))
                .map_err(|e| Error::io(format!("restoring {}", entry.path), e))?;
            if size != entry.size || Some(&hash) != entry.digest().as_ref() {
                // Damaged: nothing is written, and the caller names it.
                return Ok((size, hash));
            }
            let (path, tmp) = self.place(&entry.path)?;
            self.pool.write(pool::SmallFile {
                path,
                tmp,
                data: data.into_inner(),
                entry: entry.clone(),
            })?;
            return Ok((size, hash));
        }
        let (path, tmp) = self.place(&entry.path)?;
        let at = tmp.as_deref().unwrap_or(&path);
        let f = create_restored(at, tmp.is_some())?;
        let mut sink = FileSink {
            file: &f,
            sparse: entry.sparse,
            offset: 0,
        };
        let res = hash_stream(entry, content, Some(&mut sink)).and_then(|r| {
            if entry.sparse {
                f.set_len(r.0).map(|_| r)
            } else {
                Ok(r)
            }
        });
        let (size, hash) = match res {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_file(at);
                return Err(Error::io(format!("restoring {}", entry.path), e));
            }
        };
        if size != entry.size || Some(&hash) != entry.digest().as_ref() {
            let _ = fs::remove_file(at);
            return Ok((size, hash));
        }
        // Durable at the end, all at once (see `sync_tree`): a file at a time
        // made a restore of many small files fifty times slower than tar.
        // A version later stages patch stays the restore's own (0600) until then.
        if last {
            self.meta.file(&f, at, entry)?;
        }
        if let Some(tmp) = &tmp {
            rename_into(tmp, &path)?;
        }
        Ok((size, hash))
    }

    fn dir(&mut self, entry: &FileEntry) -> Result<()> {
        self.ensure_dir(&entry.path)?;
        self.dirs.push(entry.clone());
        Ok(())
    }

    fn symlink(&mut self, entry: &FileEntry) -> Result<()> {
        self.links.push(entry.clone());
        Ok(())
    }

    fn hardlink(&mut self, entry: &FileEntry) -> Result<()> {
        self.hardlinks.push(entry.clone());
        Ok(())
    }
}

/// Creates the file `at` for a restored file's bytes (mode 0600 until its
/// metadata is set, never through a symlink). A `temp` name already there
/// is one an earlier restore left: it is replaced.
fn create_restored(at: &Path, temp: bool) -> Result<File> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(at)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && temp => {
            let _ = fs::remove_file(at);
            create()
        }
        opened => opened,
    }
    .map_err(|e| Error::io(format!("cannot create {}", at.display()), e))
}

/// Moves a file written under the temp name `tmp` to `path` (with --force,
/// over the file there); `tmp` is removed if it cannot be.
fn rename_into(tmp: &Path, path: &Path) -> Result<()> {
    let Err(e) = fs::rename(tmp, path) else {
        return Ok(());
    };
    let _ = fs::remove_file(tmp);
    // rename(2) refuses to put a file over a folder (EISDIR).
    if e.raw_os_error() == Some(libc::EISDIR) {
        return Err(Error::Failed(format!(
            "{} exists and is a folder",
            path.display()
        )));
    }
    Err(Error::io(
        format!("cannot rename into {}", path.display()),
        e,
    ))
}

/// Makes everything written under `root` durable before the restore says
/// it succeeded: one `syncfs` of the file system `root` is on, which
/// flushes every file's data, every rename and every folder at once. A
/// restore that did not report success is not to be trusted, whatever it
/// wrote: run it again.
fn sync_tree(root: &Path) -> Result<()> {
    let dir =
        File::open(root).map_err(|e| Error::io(format!("cannot open {}", root.display()), e))?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(Error::io(
            format!("cannot sync the file system of {}", root.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The backups a restore reads, in order, each with the entries (by path)
/// to take from it.
type Reads = Vec<(Manifest, HashMap<String, FileEntry>)>;

/// Per file rebuilt from several backups: those backups, oldest first, and
/// how many of them were written so far.
type Stages = HashMap<String, (Vec<String>, usize)>;

/// The backups whose archives hold `manifest`'s bytes, oldest first and the
/// backup itself last, each with the entries to take from it; `others` are
/// the manifests on the destination to find the chain in. A file stored as
/// changed blocks is taken from each backup of its own chain in turn (its
/// oldest whole version first): the second answer lists those backups.
fn chain_of(
    target: &Target,
    manifest: &Manifest,
    others: &[&Manifest],
    ids: Option<&Identities>,
) -> Result<(Reads, Stages)> {
    let mut chain = Chain {
        target,
        manifest,
        others,
        ids,
        opened: HashMap::new(),
        index: HashMap::new(),
    };
    let mut by_holder: std::collections::BTreeMap<String, HashMap<String, FileEntry>> =
        Default::default();
    let mut stages = HashMap::new();
    for f in &manifest.files {
        by_holder
            .entry(f.backup.clone())
            .or_default()
            .insert(f.path.clone(), f.clone());
        if f.delta.is_none() {
            continue;
        }
        let mut at = f.clone();
        let mut holders = vec![f.backup.clone()];
        while let Some(d) = &at.delta {
            let e = chain
                .entry(&d.base, &f.path)?
                .filter(|e| e.kind == manifest::EntryKind::File);
            let Some(e) = e else {
                return Err(Error::Integrity(format!(
                    "destination \"{}\": the changed blocks of {} in {} patch its version in {}, which has no such file; the chain is damaged",
                    target.config.name, f.path, at.backup, d.base
                )));
            };
            if holders.contains(&e.backup) {
                return Err(Error::Integrity(format!(
                    "destination \"{}\": the versions of {} in backup {} form a loop; the chain is damaged",
                    target.config.name, f.path, manifest.id
                )));
            }
            holders.push(e.backup.clone());
            by_holder
                .entry(e.backup.clone())
                .or_default()
                .insert(f.path.clone(), e.clone());
            at = e;
        }
        if holders.len() > 1 {
            holders.reverse();
            stages.insert(f.path.clone(), (holders, 0));
        }
    }
    by_holder.entry(manifest.id.clone()).or_default();
    let mut out = Vec::new();
    for (holder, wanted) in by_holder {
        out.push((chain.take(&holder)?, wanted));
    }
    // Oldest first: a version is written before the blocks that patch it,
    // and the backup itself reads last, so its folders' metadata is what stays.
    out.sort_by_key(|(m, _)| (m.id == manifest.id, m.created_at.clone(), m.id.clone()));
    Ok((out, stages))
}

/// The manifests of a restore's chain, opened once each.
struct Chain<'a> {
    target: &'a Target,
    manifest: &'a Manifest,
    others: &'a [&'a Manifest],
    ids: Option<&'a Identities>,
    /// Opened manifests by id.
    opened: HashMap<String, Manifest>,
    /// Where each path is in an opened manifest's files, by id: made only
    /// for the backups a file's changed blocks patch.
    index: HashMap<String, HashMap<String, usize>>,
}

impl Chain<'_> {
    /// Backup `id`'s manifest (opened when sealed), from the destination's
    /// complete backups; it leaves the chain.
    fn take(&mut self, id: &str) -> Result<Manifest> {
        self.load(id)?;
        self.opened
            .remove(id)
            .ok_or_else(|| Error::Failed(format!("backup {id} was not opened")))
    }

    /// Backup `id`'s entry for `path`, if it has one.
    fn entry(&mut self, id: &str, path: &str) -> Result<Option<FileEntry>> {
        self.load(id)?;
        let Some(m) = self.opened.get(id) else {
            return Ok(None);
        };
        let index = self.index.entry(id.to_string()).or_insert_with(|| {
            m.files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.path.clone(), i))
                .collect()
        });
        Ok(index.get(path).and_then(|&i| m.files.get(i)).cloned())
    }

    fn load(&mut self, id: &str) -> Result<()> {
        if self.opened.contains_key(id) {
            return Ok(());
        }
        let m = if id == self.manifest.id {
            self.manifest.clone()
        } else {
            let found = self.others.iter().find(|m| m.id == id).ok_or_else(|| {
                Error::Integrity(format!(
                    "destination \"{}\": backup {} needs the files held by {id}, which is not complete there; restore another backup, or from another destination",
                    self.target.config.name, self.manifest.id
                ))
            })?;
            crypt::open_manifest(found, self.ids)?
        };
        self.opened.insert(id.to_string(), m);
        Ok(())
    }
}

/// Restores `manifest`'s backup from `target` into `to`, which must be empty
/// (or missing) unless `force`. An incremental is rebuilt from its chain,
/// found among `others` (the destination's complete backups).
pub async fn restore(
    target: &Target,
    manifest: &Manifest,
    others: &[&Manifest],
    to: &Path,
    force: bool,
    ids: Option<Arc<Identities>>,
) -> Result<RestoreReport> {
    // An encrypted backup is opened (or refused) before anything is asked or
    // written. (A plain one is not copied: 50,000 files make a large manifest.)
    let opened = if crypt::is_encrypted(manifest) {
        Some(crypt::open_manifest(manifest, ids.as_deref())?)
    } else {
        None
    };
    let manifest = opened.as_ref().unwrap_or(manifest);
    let (chain, stages) = chain_of(target, manifest, others, ids.as_deref())?;
    let parts: Vec<&Manifest> = chain.iter().map(|(m, _)| m).collect();
    ensure_readable(target, &parts).await?;
    // The backup's root folder's mode and owner go to a folder the restore
    // made or found empty, never to one it writes into with --force
    // (`--to /srv --force` must not make /srv the database user's, 0700).
    let fresh = match fs::read_dir(to) {
        Ok(mut entries) => {
            let empty = entries.next().is_none();
            if !empty && !force {
                return Err(Error::Usage(format!(
                    "restore target {} is not empty; choose an empty folder or pass --force to write into it",
                    to.display()
                )));
            }
            empty
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(to)
                .map_err(|e| Error::io(format!("cannot create {}", to.display()), e))?;
            true
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", to.display()), e)),
    };
    let root = fs::canonicalize(to)
        .map_err(|e| Error::io(format!("cannot resolve {}", to.display()), e))?;
    let rt = tokio::runtime::Handle::current();
    let target2 = target.clone();
    let root2 = root.clone();
    let root_meta = manifest.root.clone();
    let owner_failures = Arc::new(Mutex::new((0u64, String::new())));
    let owner_failures2 = owner_failures.clone();
    let (problems, finished) = tokio::task::spawn_blocking(move || {
        let meta = Meta {
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
            owner_failures: owner_failures2,
        };
        let mut writer = TreeWriter {
            root: root2,
            root_meta,
            root_fresh: fresh,
            dirs: Vec::new(),
            links: Vec::new(),
            hardlinks: Vec::new(),
            pool: pool::WritePool::new(&meta)?,
            meta,
            temps: 0,
            made: Default::default(),
            stages,
        };
        let mut problems = Vec::new();
        for (archive, wanted) in &chain {
            let o = read_backup(
                rt.clone(),
                &target2,
                archive,
                ids.clone(),
                wanted,
                &mut writer,
                true,
            );
            problems.extend(o.problems.into_iter().map(|p| {
                if archive.id == chain.last().map(|(m, _)| m.id.as_str()).unwrap_or("") {
                    p
                } else {
                    format!("in {}: {p}", archive.id)
                }
            }));
            if !problems.is_empty() {
                break;
            }
        }
        // Every file handed to the writers is written (or failed) before
        // links, folder times and the sync.
        if let Err(e) = writer.pool.finish() {
            problems.push(e.to_string());
        }
        let finished = if problems.is_empty() {
            writer.finish().and_then(|_| sync_tree(&writer.root))
        } else {
            Ok(())
        };
        Ok::<_, Error>((problems, finished))
    })
    .await
    .map_err(|e| Error::Failed(format!("restore task failed: {e}")))??;
    if !problems.is_empty() {
        return Err(Error::Integrity(format!(
            "destination \"{}\": restore of {} refused: {}; nothing was written outside {}, but {} may hold part of the backup",
            target.config.name,
            manifest.id,
            problems.join("; "),
            root.display(),
            root.display()
        )));
    }
    finished?;
    let mut warnings = Vec::new();
    if let Ok(f) = owner_failures.lock()
        && f.0 > 0
    {
        warnings.push(format!(
            "the owner of {} entries could not be set (the first: {}); a database may refuse to start until they are chowned",
            f.0, f.1
        ));
    }
    Ok(RestoreReport {
        job: manifest.job.clone(),
        destination: target.config.name.clone(),
        backup: manifest.id.clone(),
        host: manifest.host.clone(),
        to: root,
        // Each file once at its full size, however many backups of its
        // chain held its blocks.
        files: manifest
            .files
            .iter()
            .filter(|f| f.kind == manifest::EntryKind::File)
            .count() as u64,
        bytes: manifest.state_bytes(),
        warnings,
    })
}

/// `offsite restore`: `which` backup of `job` (default `latest`) into `to`,
/// from the first of its destinations (or `destination`) that has it
/// readable. Destinations that can be read at once go first: a backup also
/// on a NAS is restored from there, without waiting for (or paying) a
/// cold-storage retrieval. Holds the job's lock, so no prune (or backup)
/// of the job runs meanwhile.
pub async fn restore_job(
    config: &Config,
    job: &str,
    destination: Option<&str>,
    which: Which<'_>,
    to: &Path,
    force: bool,
    identity: Option<&Path>,
) -> Result<RestoreReport> {
    let backup = which.backup.unwrap_or("latest");
    catalog::check_backup_arg(backup)?;
    let j = config.job(job)?;
    let ids = Identities::find(identity, j.encryption.as_ref(), &j.name)?.map(Arc::new);
    let mut targets = config.job_targets(j, destination)?;
    targets.sort_by_key(|t| t.backend.capabilities().cold_storage);
    let _lock = JobLock::acquire(&JobStaging::new(config, job), job)?;
    let mut last_err = None;
    let mut pending = None;
    for t in &targets {
        let listing = match catalog::list_job(t, job).await {
            Ok(l) => l,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let chosen = match catalog::select(&listing, job, backup, &config.host_id, which.host) {
            Ok(b) => b,
            // Several hosts' backups and none of ours: the person must say which.
            Err(e @ Error::Usage(_)) => return Err(e),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let others: Vec<&Manifest> = listing.backups.iter().map(|b| &b.manifest).collect();
        match restore(t, &chosen.manifest, &others, to, force, ids.clone()).await {
            // Another destination may have it readable now; this one's
            // retrieval is requested either way.
            Err(e @ Error::Pending(_)) => pending = Some(e),
            done => return done,
        }
    }
    Err(pending.or(last_err).unwrap_or_else(|| {
        Error::Failed(format!("job {job:?} has no destination to restore from"))
    }))
}

/// `offsite restore --set`: the set as judged, and each member's restore.
#[derive(Debug, Clone, Serialize)]
pub struct SetRestore {
    /// The set, judged from its markers on the destination restored from.
    pub set: SetVerdict,
    /// One restore per member restored.
    pub restores: Vec<RestoreReport>,
}

/// What `restore --set` is asked for.
#[derive(Debug, Clone, Copy)]
pub struct SetRequest<'a> {
    /// The cluster job.
    pub job: &'a str,
    /// Only this destination.
    pub destination: Option<&'a str>,
    /// The set's id.
    pub set: &'a str,
    /// Only this member's backup, into `to` itself.
    pub member: Option<&'a str>,
    /// Restore what a partial (or unfinished) set has.
    pub allow_partial: bool,
    /// Where to: each member into `to/<member>/`.
    pub to: &'a Path,
    /// Write into folders that are not empty.
    pub force: bool,
    /// The identity that opens encrypted backups.
    pub identity: Option<&'a Path>,
}

/// `offsite restore --set`: every member's backup of a cluster set (or
/// one member's), from the first destination that has the set. A set that
/// is not complete is refused unless `allow_partial`; then the members
/// there are restored and the verdict names the others.
pub async fn restore_set(config: &Config, req: SetRequest<'_>) -> Result<SetRestore> {
    let j = config.job(req.job)?;
    check_set_arg(&[j], req.set)?;
    let Some(cluster) = &j.cluster else {
        return Err(Error::Usage(format!("job {:?} has no cluster", j.name)));
    };
    let ids = Identities::find(req.identity, j.encryption.as_ref(), &j.name)?.map(Arc::new);
    let mut targets = config.job_targets(j, req.destination)?;
    targets.sort_by_key(|t| t.backend.capabilities().cold_storage);
    let _lock = JobLock::acquire(&JobStaging::new(config, req.job), req.job)?;
    let mut last_err = None;
    for t in &targets {
        let verdict = match catalog::list_sets(t, req.job, cluster, jiff::Timestamp::now()).await {
            Ok(sets) => sets.into_iter().find(|v| v.set == req.set),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let Some(verdict) = verdict else {
            last_err = Some(Error::Integrity(format!(
                "destination \"{}\": job {:?} has no set {}; see `offsite list --job {}`",
                t.config.name, req.job, req.set, req.job
            )));
            continue;
        };
        let members = members_to_restore(t, &verdict, req)?;
        let listing = catalog::list_job(t, req.job).await?;
        let others: Vec<&Manifest> = listing.backups.iter().map(|b| &b.manifest).collect();
        let mut restores = Vec::new();
        for m in &members {
            let backup = others
                .iter()
                .find(|b| b.set.as_deref() == Some(req.set) && b.host.as_deref() == Some(m.as_str()))
                .ok_or_else(|| {
                    Error::Integrity(format!(
                        "destination \"{}\": set {} marks member {m:?} done, but its backup is not complete there",
                        t.config.name, req.set
                    ))
                })?;
            let to = match req.member {
                Some(_) => req.to.to_path_buf(),
                None => req.to.join(m),
            };
            restores.push(restore(t, backup, &others, &to, req.force, ids.clone()).await?);
        }
        return Ok(SetRestore {
            set: verdict,
            restores,
        });
    }
    Err(last_err.unwrap_or_else(|| {
        Error::Failed(format!(
            "job {:?} has no destination to restore from",
            req.job
        ))
    }))
}

/// The members of `verdict`'s set to restore: the one asked for, which
/// must be done there, or every member done, when the set is complete or
/// `allow_partial` says the others may be missing.
fn members_to_restore(
    t: &Target,
    verdict: &SetVerdict,
    req: SetRequest<'_>,
) -> Result<Vec<String>> {
    let not_done = |what: &str| {
        Error::Integrity(format!(
            "destination \"{}\": {what}; {}",
            t.config.name,
            verdict.describe()
        ))
    };
    match req.member {
        Some(m) if verdict.members_ok.iter().any(|x| x == m) => Ok(vec![m.to_string()]),
        Some(m) if !verdict.expected.iter().any(|x| x == m) => Err(Error::Usage(format!(
            "{m:?} is not a member of set {} (its members: {})",
            verdict.set,
            verdict.expected.join(", ")
        ))),
        Some(m) => Err(not_done(&format!(
            "member {m:?} has no complete backup in set {}",
            verdict.set
        ))),
        None if verdict.status == SetStatus::Complete || req.allow_partial => {
            if verdict.members_ok.is_empty() {
                return Err(not_done(&format!(
                    "no member of set {} has a complete backup",
                    verdict.set
                )));
            }
            Ok(verdict.members_ok.clone())
        }
        None => Err(not_done(&format!(
            "set {} is not complete, so it is not restored; pass --allow-partial to restore the {} member(s) there are",
            verdict.set,
            verdict.members_ok.len()
        ))),
    }
}
