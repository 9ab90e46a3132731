//! `verify` and `restore`: stream a backup's volumes from a destination
//! through zstd and tar, checking every hash on the way.
//!
//! Both read the same way: the volumes in order as one stream, each volume's
//! size and hash (BLAKE3, or SHA-256 for older backups) checked when it ends, every archive entry matched against
//! the manifest (an entry the manifest does not list is an error), every
//! file's content hashed. `verify` collects every problem and writes nothing;
//! `restore` stops at the first one.
//!
//! Restore never writes outside `--to`: paths are checked (relative, no `..`),
//! no path component may be a symlink, symlinks are created last and only
//! when they stay inside, and files are written to a temp name and renamed
//! into place once their hash is right. Memory is bounded by one read buffer.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::digest::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures::StreamExt;
use offsite_backends::{Backend, ByteStream, ErrorKind, Readiness};
use serde::Serialize;

use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::crypt::{self, Identities};
use crate::format::manifest::{self, EntryKind, FileEntry, Manifest, RootMeta, Volume};

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub job: String,
    pub destination: String,
    pub backup: String,
    pub ok: bool,
    pub files: u64,
    pub bytes: u64,
    pub volumes: u64,
    /// False when only the stored (encrypted) volumes were checked, without an identity.
    pub contents_checked: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub job: String,
    pub destination: String,
    pub backup: String,
    /// The host that made the backup, when it recorded one.
    pub host: Option<String>,
    pub to: PathBuf,
    pub files: u64,
    pub bytes: u64,
    /// What did not stop the restore but needs a look (owners not set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The volumes of a backup read one after the other as a single stream
/// (decrypted volume by volume when the backup is encrypted).
struct VolumeChain {
    rt: tokio::runtime::Handle,
    backend: Arc<dyn Backend>,
    volumes: Vec<(String, Volume)>,
    next: usize,
    current: Option<Box<dyn Read + Send>>,
    problems: Arc<Mutex<Vec<String>>>,
    /// The name of the volume being read, for messages.
    position: Arc<Mutex<String>>,
    ids: Option<Arc<Identities>>,
}

/// ` (in volume X)`, for a problem found while reading volume X.
fn at(position: &Arc<Mutex<String>>) -> String {
    match position.lock() {
        Ok(p) if !p.is_empty() => format!(" (in {})", *p),
        _ => String::new(),
    }
}

fn note(problems: &Arc<Mutex<Vec<String>>>, p: String) {
    if let Ok(mut v) = problems.lock() {
        v.push(p);
    }
}

/// One volume's stored bytes as they stream in, hashed; at the end its size
/// and hash are checked against the manifest.
struct StoredVolume {
    rt: tokio::runtime::Handle,
    stream: ByteStream,
    buf: Bytes,
    /// Of the volume's recorded algorithm; taken when the volume ends.
    hasher: Option<Hasher>,
    size: u64,
    volume: Volume,
    problems: Arc<Mutex<Vec<String>>>,
    ended: bool,
}

impl Read for StoredVolume {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.buf.is_empty() {
                let n = out.len().min(self.buf.len());
                out[..n].copy_from_slice(&self.buf[..n]);
                self.buf = self.buf.slice(n..);
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(chunk)) => {
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    self.size += chunk.len() as u64;
                    self.buf = chunk;
                }
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                None => {
                    self.ended = true;
                    let v = &self.volume;
                    let hash = self.hasher.take().map(Hasher::finish);
                    if self.size != v.size {
                        note(
                            &self.problems,
                            format!(
                                "volume {} is {} bytes, the manifest says {} (truncated or damaged)",
                                v.name, self.size, v.size
                            ),
                        );
                    } else if let Some(want) = v.digest()
                        && hash.as_ref() != Some(&want)
                    {
                        note(
                            &self.problems,
                            format!(
                                "volume {}: {} does not match the manifest (damaged)",
                                v.name,
                                want.algorithm.label()
                            ),
                        );
                    }
                }
            }
        }
    }
}

impl VolumeChain {
    /// Opens volume `index` as stored (no decryption).
    fn open_stored(&self, index: usize) -> io::Result<StoredVolume> {
        let (key, v) = &self.volumes[index];
        if let Ok(mut p) = self.position.lock() {
            *p = v.name.clone();
        }
        match self.rt.block_on(self.backend.get(key, None)) {
            Ok(stream) => Ok(StoredVolume {
                rt: self.rt.clone(),
                stream,
                buf: Bytes::new(),
                hasher: v.digest().map(|d| Hasher::new(d.algorithm)),
                size: 0,
                volume: v.clone(),
                problems: self.problems.clone(),
                ended: false,
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let msg = format!("volume {} is missing on the destination", v.name);
                note(&self.problems, msg.clone());
                Err(io::Error::other(msg))
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

impl Read for VolumeChain {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = self.current.as_mut() {
                let n = cur.read(out)?;
                if n > 0 || out.is_empty() {
                    return Ok(n);
                }
                self.current = None;
                continue;
            }
            if self.next >= self.volumes.len() {
                return Ok(0);
            }
            let index = self.next;
            self.next += 1;
            let stored = self.open_stored(index)?;
            self.current = Some(match &self.ids {
                None => Box::new(stored),
                Some(ids) => Box::new(ids.decrypt(stored).map_err(io::Error::other)?),
            });
        }
    }
}

/// What to do with each entry as it streams by.
trait EntrySink {
    /// Called for each file with its content; returns its size and its
    /// hash, in the algorithm the manifest recorded for it.
    fn file(&mut self, entry: &FileEntry, content: &mut dyn Read) -> Result<(u64, Digest)>;
    fn dir(&mut self, entry: &FileEntry) -> Result<()>;
    fn symlink(&mut self, entry: &FileEntry) -> Result<()>;
    fn hardlink(&mut self, entry: &FileEntry) -> Result<()>;
}

struct HashOnly;

/// Reads `content` to its end (copying it to `out`), hashed as `entry`'s
/// recorded hash is.
fn hash_stream(
    entry: &FileEntry,
    content: &mut dyn Read,
    mut out: Option<&mut dyn Write>,
) -> io::Result<(u64, Digest)> {
    let algorithm = entry.digest().map_or(Algorithm::CURRENT, |d| d.algorithm);
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = content.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(f) = out.as_deref_mut() {
            f.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    Ok((total, hasher.finish()))
}

impl EntrySink for HashOnly {
    fn file(&mut self, entry: &FileEntry, content: &mut dyn Read) -> Result<(u64, Digest)> {
        hash_stream(entry, content, None)
            .map_err(|e| Error::io(format!("reading {}", entry.path), e))
    }
    fn dir(&mut self, _: &FileEntry) -> Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _: &FileEntry) -> Result<()> {
        Ok(())
    }
    fn hardlink(&mut self, _: &FileEntry) -> Result<()> {
        Ok(())
    }
}

struct Outcome {
    files: u64,
    bytes: u64,
    problems: Vec<String>,
}

/// The entries of `archive` whose bytes it holds itself (all of a full's;
/// an incremental's changed files, folders and symlinks).
fn own_entries(archive: &Manifest) -> HashMap<String, FileEntry> {
    archive
        .files
        .iter()
        .filter(|f| f.backup == archive.id)
        .map(|f| (f.path.clone(), f.clone()))
        .collect()
}

/// Streams `archive`'s volumes. Every archive entry must be one `archive`'s
/// manifest says it holds; of those, the `wanted` ones (path → the entry to
/// check against and restore with) go to `sink`, the others are skipped.
/// With `stop_early` the first problem ends the read (restore); otherwise
/// every problem found is collected (verify).
fn read_backup(
    rt: tokio::runtime::Handle,
    target: &Target,
    manifest: &Manifest,
    ids: Option<Arc<Identities>>,
    wanted: &HashMap<String, FileEntry>,
    sink: &mut dyn EntrySink,
    stop_early: bool,
) -> Outcome {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let position = Arc::new(Mutex::new(String::new()));
    let mut out = Outcome {
        files: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    let volumes = volume_keys(target, manifest);
    let ids = ids.filter(|_| crypt::is_encrypted(manifest));
    let chain = VolumeChain {
        rt,
        backend: target.backend.clone(),
        volumes,
        next: 0,
        current: None,
        problems: problems.clone(),
        position: position.clone(),
        ids,
    };
    let push = |p: String| {
        if let Ok(mut v) = problems.lock() {
            v.push(p);
        }
    };
    let stop = |problems: &Arc<Mutex<Vec<String>>>| {
        stop_early && problems.lock().map(|v| !v.is_empty()).unwrap_or(true)
    };

    let expected: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .filter(|f| f.backup == manifest.id)
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let decoder = match zstd::stream::read::Decoder::new(chain) {
        Ok(d) => d,
        Err(e) => {
            push(format!("cannot start decompression: {e}"));
            out.problems = problems.lock().map(|v| v.clone()).unwrap_or_default();
            return out;
        }
    };
    let mut archive = tar::Archive::new(decoder);
    let mut broken = false;
    match archive.entries() {
        Err(e) => {
            push(format!("the archive cannot be read: {e}"));
            broken = true;
        }
        Ok(entries) => {
            for entry in entries {
                if stop(&problems) {
                    break;
                }
                let mut entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        push(format!(
                            "the archive stream is broken{}: {e}",
                            at(&position)
                        ));
                        broken = true;
                        break;
                    }
                };
                let raw = entry.path_bytes().into_owned();
                let name = crate::format::names::encode(&raw);
                let name = name.trim_end_matches('/').to_string();
                if !manifest::safe_relative_path(&name) {
                    push(format!("archive entry {name:?} is an unsafe path; refused"));
                    continue;
                }
                let Some(held) = expected.get(name.as_str()) else {
                    push(format!(
                        "archive entry {name:?} is not in the manifest; refused"
                    ));
                    continue;
                };
                let Some(fe) = wanted.get(name.as_str()) else {
                    // Held here but not part of what is read now (a later backup replaced it).
                    seen.insert(name.clone());
                    continue;
                };
                if fe.kind != held.kind {
                    push(format!(
                        "{name:?} is a {:?} in {} but a {:?} in the backup being restored",
                        held.kind, manifest.id, fe.kind
                    ));
                    continue;
                }
                if !seen.insert(name.clone()) {
                    push(format!("archive entry {name:?} appears twice"));
                    continue;
                }
                let et = entry.header().entry_type();
                let kind_ok = match fe.kind {
                    EntryKind::File => et.is_file(),
                    EntryKind::Dir => et.is_dir(),
                    EntryKind::Symlink => et.is_symlink(),
                    EntryKind::Hardlink => et.is_hard_link(),
                };
                if !kind_ok {
                    push(format!(
                        "archive entry {name:?} is not a {:?} as the manifest says",
                        fe.kind
                    ));
                    continue;
                }
                let res = match fe.kind {
                    EntryKind::File => match sink.file(fe, &mut entry) {
                        Ok((size, hash)) => {
                            if size != fe.size {
                                push(format!(
                                    "file {name:?} is {size} bytes, the manifest says {}",
                                    fe.size
                                ));
                            } else if Some(&hash) != fe.digest().as_ref() {
                                push(format!(
                                    "file {name:?}: {} does not match the manifest (damaged)",
                                    hash.algorithm.label()
                                ));
                            } else {
                                out.files += 1;
                                out.bytes += size;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    EntryKind::Dir => sink.dir(fe),
                    EntryKind::Symlink | EntryKind::Hardlink => {
                        let target = entry
                            .link_name_bytes()
                            .map(|b| crate::format::names::encode(&b));
                        if target.as_deref() != fe.target.as_deref() {
                            push(format!(
                                "link {name:?} points elsewhere than the manifest says"
                            ));
                            Ok(())
                        } else if fe.kind == EntryKind::Symlink {
                            sink.symlink(fe)
                        } else {
                            sink.hardlink(fe)
                        }
                    }
                };
                if let Err(e) = res {
                    // A broken stream surfaces here as a read error of the file.
                    push(format!("{e}{}", at(&position)));
                    if problems
                        .lock()
                        .map(|v| v.iter().any(|p| p.contains("missing")))
                        .unwrap_or(false)
                    {
                        broken = true;
                        break;
                    }
                }
            }
        }
    }
    if !stop(&problems) {
        // Read to the very end, so every volume's size and hash are checked:
        // past the tar trailer, and past a point where decompression broke.
        let mut decoder = archive.into_inner();
        if !broken && let Err(e) = io::copy(&mut decoder, &mut io::sink()) {
            push(format!(
                "the compressed stream is damaged{}: {e}",
                at(&position)
            ));
        }
        let mut chain = decoder.finish();
        let _ = io::copy(&mut chain, &mut io::sink());
        if !broken {
            for f in wanted.values() {
                if !seen.contains(&f.path) {
                    push(format!(
                        "{:?} is in the manifest but not in the archive",
                        f.path
                    ));
                }
            }
        }
    }
    out.problems = problems.lock().map(|v| v.clone()).unwrap_or_default();
    out
}

/// How many volumes are asked about at once by [`ensure_readable`].
const READINESS_CONCURRENCY: usize = 8;

/// Makes every volume of `manifests` readable on `target` before any is
/// read: cold storage starts the retrievals it needs, all in one pass, so
/// one later run finds them all ready. [`Error::Pending`] (exit 4) while any
/// is still being retrieved; a missing volume is left to the read that
/// follows, which reports it like any other damage.
pub async fn ensure_readable(target: &Target, manifests: &[&Manifest]) -> Result<()> {
    let keys: Vec<(String, String)> = manifests
        .iter()
        .flat_map(|m| {
            m.volumes
                .iter()
                .map(move |v| (m.id.clone(), target.layout().key(&m.job, &m.id, &v.name)))
        })
        .collect();
    let total = keys.len();
    let answers: Vec<_> = futures::stream::iter(keys)
        .map(|(id, key)| async move {
            let r = target.backend.prepare_read(&key).await;
            (id, r)
        })
        .buffer_unordered(READINESS_CONCURRENCY)
        .collect()
        .await;
    let mut pending = 0usize;
    let mut requested = 0usize;
    let mut detail = String::new();
    let mut longest: Option<std::time::Duration> = None;
    for (_, answer) in answers {
        match answer {
            Ok(Readiness::Ready) => {}
            Ok(Readiness::Pending {
                requested: now,
                detail: d,
                expected,
            }) => {
                pending += 1;
                requested += usize::from(now);
                detail = d;
                longest = longest.max(expected);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    if pending == 0 {
        return Ok(());
    }
    let ids: std::collections::BTreeSet<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let what = match requested {
        0 => format!("retrieval already under way for {pending} of {total} volume(s)"),
        r if r == pending => format!("retrieval requested for {pending} of {total} volume(s)"),
        r => format!(
            "retrieval requested for {r} more volume(s); {pending} of {total} are being retrieved"
        ),
    };
    let when = match longest {
        Some(d) => format!("ready in about {}", human_wait(d)),
        None => "ready later".to_string(),
    };
    Err(Error::Pending(format!(
        "destination \"{}\": backup {} is in cold storage ({detail}): {what}; {when}; run the same command again then",
        target.config.name,
        ids.join(", ")
    )))
}

/// "5 minutes", "5 hours", "2 days": a wait as a person says it.
fn human_wait(d: std::time::Duration) -> String {
    let mins = d.as_secs().div_ceil(60);
    match mins {
        0..=1 => "a minute".to_string(),
        2..=119 => format!("{mins} minutes"),
        _ => format!("{} hours", mins.div_ceil(60)),
    }
}

/// Downloads `manifest`'s backup from `target` and checks every hash. An
/// encrypted backup without `ids` is checked as stored: every volume's size
/// and hash (of the ciphertext), not the files inside.
pub async fn verify(
    target: &Target,
    manifest: &Manifest,
    ids: Option<Arc<Identities>>,
) -> Result<VerifyReport> {
    ensure_readable(target, &[manifest]).await?;
    let rt = tokio::runtime::Handle::current();
    let target2 = target.clone();
    let sealed = crypt::is_encrypted(manifest) && ids.is_none();
    let m = if sealed {
        manifest.clone()
    } else {
        crypt::open_manifest(manifest, ids.as_deref())?
    };
    let outcome = tokio::task::spawn_blocking(move || {
        if sealed {
            return verify_stored(rt, &target2, &m);
        }
        let own = own_entries(&m);
        read_backup(rt, &target2, &m, ids, &own, &mut HashOnly, false)
    })
    .await
    .map_err(|e| Error::Failed(format!("verify task failed: {e}")))?;
    Ok(VerifyReport {
        job: manifest.job.clone(),
        destination: target.config.name.clone(),
        backup: manifest.id.clone(),
        ok: outcome.problems.is_empty(),
        files: outcome.files,
        bytes: outcome.bytes,
        volumes: manifest.volumes.len() as u64,
        contents_checked: !sealed,
        problems: outcome.problems,
    })
}

/// Reads every volume of `manifest` as stored and checks its size and
/// hash; nothing is decrypted or unpacked.
fn verify_stored(rt: tokio::runtime::Handle, target: &Target, manifest: &Manifest) -> Outcome {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut chain = VolumeChain {
        rt,
        backend: target.backend.clone(),
        volumes: volume_keys(target, manifest),
        next: 0,
        current: None,
        problems: problems.clone(),
        position: Arc::new(Mutex::new(String::new())),
        ids: None,
    };
    let mut bytes = 0;
    loop {
        match io::copy(&mut chain, &mut io::sink()) {
            Ok(n) => {
                bytes += n;
                break;
            }
            // A missing volume is noted; go on with the next one.
            Err(e) => {
                let text = e.to_string();
                if !problems.lock().map(|v| v.contains(&text)).unwrap_or(true) {
                    note(&problems, format!("{text}{}", at(&chain.position)));
                }
                chain.current = None;
            }
        }
    }
    Outcome {
        files: 0,
        bytes,
        problems: problems.lock().map(|v| v.clone()).unwrap_or_default(),
    }
}

/// Each volume of `manifest` with its key on `target`.
fn volume_keys(target: &Target, manifest: &Manifest) -> Vec<(String, Volume)> {
    manifest
        .volumes
        .iter()
        .map(|v| {
            (
                target.layout().key(&manifest.job, &manifest.id, &v.name),
                v.clone(),
            )
        })
        .collect()
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
    chown: bool,
    /// How many owners could not be set, and the first refusal.
    owner_failures: Arc<Mutex<(u64, String)>>,
    /// Numbers the temp names, which stay short (see [`TreeWriter::temp_name`]).
    temps: u64,
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

impl TreeWriter {
    /// Creates the folders of `rel` (a relative path) under the root, refusing symlinks and files in the way.
    fn ensure_dir(&self, rel: &str) -> Result<PathBuf> {
        let mut p = self.root.clone();
        if rel.is_empty() {
            return Ok(p);
        }
        for comp in rel.split('/') {
            p = path_under(&p, comp)?;
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
                }
                Err(e) => return Err(Error::io(format!("cannot stat {}", p.display()), e)),
            }
        }
        Ok(p)
    }

    /// Gives `path` the owner (as root), mode and modification time recorded for it.
    fn apply_meta(
        &self,
        path: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
        mtime: (i64, u32),
    ) -> Result<()> {
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

    fn apply_entry_meta(&self, path: &Path, e: &FileEntry) -> Result<()> {
        self.apply_meta(path, e.uid, e.gid, e.mode, (e.mtime, e.mtime_nsec))
    }

    /// A short temp name for a file being written into a folder: at most
    /// 30 bytes whatever the file's name, so a name as long as the file
    /// system allows (255 bytes) restores too.
    fn temp_name(&mut self) -> String {
        self.temps += 1;
        format!(".offsite-{:x}-{:x}.tmp", std::process::id(), self.temps)
    }

    fn split(rel: &str) -> (&str, &str) {
        match rel.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", rel),
        }
    }

    /// Where a link named by `rel` goes: its folder made, whatever is
    /// there already (with --force) removed, unless it is a folder.
    fn link_path(&self, rel: &str) -> Result<PathBuf> {
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

    fn finish(&mut self) -> Result<()> {
        for l in &self.hardlinks {
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
        for l in &self.links {
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
            if self.chown {
                self.owner(&path, l.uid, l.gid);
            }
            set_mtime(&path, l.mtime, l.mtime_nsec, false)
                .map_err(|e| Error::io(format!("cannot set time of {}", path.display()), e))?;
        }
        // Deepest first, so a read-only parent does not block its children,
        // and a folder's time is set after everything inside it is written.
        self.dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for d in &self.dirs {
            let path = self.ensure_dir(&d.path)?;
            self.apply_entry_meta(&path, d)?;
        }
        match &self.root_meta {
            Some(r) if self.root_fresh => {
                self.apply_meta(&self.root, r.uid, r.gid, r.mode, (r.mtime, r.mtime_nsec))?;
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
        let (dir, name) = Self::split(&entry.path);
        let parent = self.ensure_dir(dir)?;
        let tmp = parent.join(self.temp_name());
        let _ = fs::remove_file(&tmp);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
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
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(format!("restoring {}", entry.path), e));
            }
        };
        if size != entry.size || Some(&hash) != entry.digest().as_ref() {
            let _ = fs::remove_file(&tmp);
            return Ok((size, hash));
        }
        f.sync_all()
            .map_err(|e| Error::io(format!("cannot sync {}", tmp.display()), e))?;
        self.apply_entry_meta(&tmp, entry)?;
        let path = path_under(&parent, name)?;
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Failed(format!(
                "{} exists and is a folder",
                path.display()
            )));
        }
        fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("cannot rename into {}", path.display()), e))?;
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

/// The backups whose archives hold `manifest`'s bytes, oldest first and the
/// backup itself last, each with the entries to take from it; `others` are
/// the manifests on the destination to find the chain in.
fn chain_of(
    target: &Target,
    manifest: &Manifest,
    others: &[Manifest],
    ids: Option<&Identities>,
) -> Result<Vec<(Manifest, HashMap<String, FileEntry>)>> {
    let mut by_holder: std::collections::BTreeMap<&str, HashMap<String, FileEntry>> =
        Default::default();
    for f in &manifest.files {
        by_holder
            .entry(f.backup.as_str())
            .or_default()
            .insert(f.path.clone(), f.clone());
    }
    by_holder.entry(manifest.id.as_str()).or_default();
    let mut out = Vec::new();
    for (holder, wanted) in by_holder {
        let m = if holder == manifest.id {
            manifest.clone()
        } else {
            let found = others.iter().find(|m| m.id == holder).ok_or_else(|| {
                Error::Failed(format!(
                    "destination \"{}\": backup {} needs the files held by {holder}, which is not complete there; restore another backup, or from another destination",
                    target.config.name, manifest.id
                ))
            })?;
            crypt::open_manifest(found, ids)?
        };
        out.push((m, wanted));
    }
    // The backup itself reads last, so its folders' metadata is what stays.
    out.sort_by_key(|(m, _)| (m.id == manifest.id, m.created_at.clone(), m.id.clone()));
    Ok(out)
}

/// Restores `manifest`'s backup from `target` into `to`, which must be empty
/// (or missing) unless `force`. An incremental is rebuilt from its chain,
/// found among `others` (the destination's complete backups).
pub async fn restore(
    target: &Target,
    manifest: &Manifest,
    others: &[Manifest],
    to: &Path,
    force: bool,
    ids: Option<Arc<Identities>>,
) -> Result<RestoreReport> {
    // An encrypted backup is opened (or refused) before anything is asked or written.
    let manifest = &crypt::open_manifest(manifest, ids.as_deref())?;
    let chain = chain_of(target, manifest, others, ids.as_deref())?;
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
    let (outcome, finished) = tokio::task::spawn_blocking(move || {
        let mut writer = TreeWriter {
            root: root2,
            root_meta,
            root_fresh: fresh,
            dirs: Vec::new(),
            links: Vec::new(),
            hardlinks: Vec::new(),
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
            owner_failures: owner_failures2,
            temps: 0,
        };
        let mut outcome = Outcome {
            files: 0,
            bytes: 0,
            problems: Vec::new(),
        };
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
            outcome.files += o.files;
            outcome.bytes += o.bytes;
            outcome.problems.extend(o.problems.into_iter().map(|p| {
                if archive.id == chain.last().map(|(m, _)| m.id.as_str()).unwrap_or("") {
                    p
                } else {
                    format!("in {}: {p}", archive.id)
                }
            }));
            if !outcome.problems.is_empty() {
                break;
            }
        }
        let finished = if outcome.problems.is_empty() {
            writer.finish()
        } else {
            Ok(())
        };
        (outcome, finished)
    })
    .await
    .map_err(|e| Error::Failed(format!("restore task failed: {e}")))?;
    if !outcome.problems.is_empty() {
        return Err(Error::Failed(format!(
            "destination \"{}\": restore of {} refused: {}; nothing was written outside {}, but {} may hold part of the backup",
            target.config.name,
            manifest.id,
            outcome.problems.join("; "),
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
        files: outcome.files,
        bytes: outcome.bytes,
        warnings,
    })
}
