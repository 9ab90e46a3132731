//! Reading a backup back from a destination, shared by `verify` and
//! `restore`: the volumes in order as one stream, each volume's size and
//! hash (BLAKE3, or SHA-256 for older backups) checked when it ends, every
//! archive entry matched against the manifest (an entry the manifest does
//! not list is an error), every file's content hashed and handed to an
//! `EntrySink`. Cold storage is asked for every volume first
//! ([`ensure_readable`]). Decompression runs on a thread of its own, a few
//! pieces ahead of the reader (`PIECE` × `PIECES_AHEAD`, 2 MiB): memory is
//! bounded by those and one read buffer.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use crate::format::digest::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures::StreamExt;
use offsite_backends::{Backend, ByteStream, ErrorKind, Readiness};

use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::crypt::{self, Identities};
use crate::format::manifest::{self, EntryKind, FileEntry, Manifest, Volume};

/// The volumes of a backup read one after the other as a single stream
/// (decrypted volume by volume when the backup is encrypted).
struct VolumeChain {
    rt: tokio::runtime::Handle,
    backend: Arc<dyn Backend>,
    volumes: Vec<(String, Volume)>,
    next: usize,
    current: Option<Box<dyn Read + Send>>,
    problems: Problems,
    /// The name of the volume being read, for messages.
    position: Arc<Mutex<String>>,
    ids: Option<Arc<Identities>>,
}

/// ` (in volume X)`, for a problem found while reading volume X.
pub(super) fn at(position: &Arc<Mutex<String>>) -> String {
    match position.lock() {
        Ok(p) if !p.is_empty() => format!(" (in {})", *p),
        _ => String::new(),
    }
}

/// What a read of a backup found wrong, shared by the volumes being
/// streamed and the archive read from them.
#[derive(Clone, Default)]
pub(super) struct Problems(Arc<Mutex<Found>>);

#[derive(Default)]
struct Found {
    list: Vec<String>,
    /// A volume is not on the destination: the stream breaks there.
    volume_missing: bool,
}

impl Problems {
    fn note(&self, p: String) {
        if let Ok(mut f) = self.0.lock() {
            f.list.push(p);
        }
    }

    /// Notes that a volume is missing, which breaks the stream.
    fn note_missing_volume(&self, p: String) {
        if let Ok(mut f) = self.0.lock() {
            f.list.push(p);
            f.volume_missing = true;
        }
    }

    /// Whether anything was found (a poisoned lock counts as found).
    fn any(&self) -> bool {
        self.0.lock().map(|f| !f.list.is_empty()).unwrap_or(true)
    }

    fn volume_missing(&self) -> bool {
        self.0.lock().map(|f| f.volume_missing).unwrap_or(true)
    }

    fn has(&self, text: &str) -> bool {
        self.0
            .lock()
            .map(|f| f.list.iter().any(|p| p == text))
            .unwrap_or(true)
    }

    fn list(&self) -> Vec<String> {
        self.0.lock().map(|f| f.list.clone()).unwrap_or_default()
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
    problems: Problems,
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
                        self.problems.note(format!(
                            "volume {} is {} bytes, the manifest says {} (truncated or damaged)",
                            v.name, self.size, v.size
                        ));
                    } else if let Some(want) = v.digest()
                        && hash.as_ref() != Some(&want)
                    {
                        self.problems.note(format!(
                            "volume {}: {} does not match the manifest (damaged)",
                            v.name,
                            want.algorithm.label()
                        ));
                    }
                }
            }
        }
    }
}

impl VolumeChain {
    /// The volumes of `manifest` on `target`, read in order (decrypted with
    /// `ids` when given); what goes wrong is noted in `problems`, with the
    /// volume being read in `position`.
    fn new(
        rt: tokio::runtime::Handle,
        target: &Target,
        manifest: &Manifest,
        problems: &Problems,
        position: &Arc<Mutex<String>>,
        ids: Option<Arc<Identities>>,
    ) -> VolumeChain {
        VolumeChain {
            rt,
            backend: target.backend.clone(),
            volumes: volume_keys(target, manifest),
            next: 0,
            current: None,
            problems: problems.clone(),
            position: position.clone(),
            ids,
        }
    }

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
                self.problems.note_missing_volume(msg.clone());
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

/// Pieces of decompressed stream handed over at a time, and how many may
/// wait: memory stays bounded (under glibc's mmap threshold, see main.rs).
const PIECE: usize = 256 << 10;
const PIECES_AHEAD: usize = 8;

/// A backup's tar stream, decompressed on a thread of its own while the
/// caller parses, hashes and writes it: like `zstd -dc | tar -x`, the
/// decompression and the writes each get a core.
struct Decompressed {
    rx: Option<std::sync::mpsc::Receiver<io::Result<Vec<u8>>>>,
    piece: Vec<u8>,
    pos: usize,
    /// Answers the volume chain where decompression stopped, for the rest
    /// of the volumes to be read (and their hashes checked).
    thread: Option<std::thread::JoinHandle<Option<io::BufReader<VolumeChain>>>>,
}

impl Decompressed {
    /// Starts decompressing `chain`.
    fn start(chain: VolumeChain) -> io::Result<Decompressed> {
        let mut decoder = zstd::stream::read::Decoder::new(chain)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(PIECES_AHEAD);
        let thread = std::thread::Builder::new()
            .name("offsite-unzstd".into())
            .spawn(move || {
                loop {
                    let mut piece = vec![0u8; PIECE];
                    let mut got = 0;
                    let res = loop {
                        match decoder.read(&mut piece[got..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                got += n;
                                if got == PIECE {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    piece.truncate(got);
                    let end = got < PIECE || res.is_err();
                    if got > 0 && tx.send(Ok(piece)).is_err() {
                        break;
                    }
                    if let Err(e) = res {
                        let _ = tx.send(Err(e));
                    }
                    if end {
                        break;
                    }
                }
                Some(decoder.finish())
            })?;
        Ok(Decompressed {
            rx: Some(rx),
            piece: Vec::new(),
            pos: 0,
            thread: Some(thread),
        })
    }

    /// Stops decompressing and answers the rest of the volumes.
    fn into_chain(mut self) -> Option<io::BufReader<VolumeChain>> {
        self.rx = None;
        self.thread.take()?.join().ok().flatten()
    }
}

impl Read for Decompressed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.piece.len() {
            let Some(rx) = &self.rx else {
                return Ok(0);
            };
            match rx.recv() {
                Ok(Ok(piece)) => {
                    self.piece = piece;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The thread is done: the stream ended.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.piece.len() - self.pos);
        out[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What to do with each entry as it streams by.
pub(super) trait EntrySink {
    /// Called for each file with its content; returns its size and its
    /// hash, in the algorithm the manifest recorded for it.
    fn file(&mut self, entry: &FileEntry, content: &mut dyn Read) -> Result<(u64, Digest)>;
    fn dir(&mut self, entry: &FileEntry) -> Result<()>;
    fn symlink(&mut self, entry: &FileEntry) -> Result<()>;
    fn hardlink(&mut self, entry: &FileEntry) -> Result<()>;
}

pub(super) struct HashOnly;

/// Reads `content` to its end (copying it to `out`), hashed as `entry`'s
/// recorded hash is.
pub(super) fn hash_stream(
    entry: &FileEntry,
    content: &mut dyn Read,
    mut out: Option<&mut dyn Write>,
) -> io::Result<(u64, Digest)> {
    let algorithm = entry
        .stored_digest()
        .map_or(Algorithm::CURRENT, |d| d.algorithm);
    let mut hasher = Hasher::new(algorithm);
    // As large as the file (a page at least, 1 MiB at most): a small file
    // must not cost the allocation, and the mapping, of a 1 MiB buffer.
    let mut buf = vec![0u8; (entry.stored_size() as usize).clamp(4096, 1 << 20)];
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

pub(super) struct Outcome {
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) problems: Vec<String>,
}

/// The entries of `archive` whose bytes it holds itself (all of a full's;
/// an incremental's changed files, folders and symlinks).
pub(super) fn own_entries(archive: &Manifest) -> HashMap<String, FileEntry> {
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
pub(super) fn read_backup(
    rt: tokio::runtime::Handle,
    target: &Target,
    manifest: &Manifest,
    ids: Option<Arc<Identities>>,
    wanted: &HashMap<String, FileEntry>,
    sink: &mut dyn EntrySink,
    stop_early: bool,
) -> Outcome {
    let problems = Problems::default();
    let position = Arc::new(Mutex::new(String::new()));
    let ids = ids.filter(|_| crypt::is_encrypted(manifest));
    let chain = VolumeChain::new(rt, target, manifest, &problems, &position, ids);
    let mut read = ArchiveRead {
        manifest,
        expected: manifest
            .files
            .iter()
            .filter(|f| f.backup == manifest.id)
            .map(|f| (f.path.as_str(), f))
            .collect(),
        wanted,
        sink,
        problems: problems.clone(),
        position,
        stop_early,
        seen: HashSet::new(),
        files: 0,
        bytes: 0,
    };
    match Decompressed::start(chain) {
        Err(e) => problems.note(format!("cannot start decompression: {e}")),
        Ok(stream) => {
            let mut archive = tar::Archive::new(stream);
            let broken = read.entries(&mut archive);
            if !read.stopped() {
                read.finish(archive.into_inner(), broken);
            }
        }
    }
    Outcome {
        files: read.files,
        bytes: read.bytes,
        problems: problems.list(),
    }
}

/// One read of a backup's archive: checks each entry against the manifest
/// and hands the wanted ones to the sink.
struct ArchiveRead<'a> {
    manifest: &'a Manifest,
    /// The entries `manifest` holds the bytes of, by path.
    expected: HashMap<&'a str, &'a FileEntry>,
    wanted: &'a HashMap<String, FileEntry>,
    sink: &'a mut dyn EntrySink,
    problems: Problems,
    /// The volume being read, for messages.
    position: Arc<Mutex<String>>,
    stop_early: bool,
    /// The paths met so far.
    seen: HashSet<String>,
    files: u64,
    bytes: u64,
}

impl<'a> ArchiveRead<'a> {
    /// Whether the read ends here (a restore stops at its first problem).
    fn stopped(&self) -> bool {
        self.stop_early && self.problems.any()
    }

    /// Reads every entry; answers whether the stream broke on the way.
    fn entries<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> bool {
        let entries = match archive.entries() {
            Ok(entries) => entries,
            Err(e) => {
                self.problems
                    .note(format!("the archive cannot be read: {e}"));
                return true;
            }
        };
        for entry in entries {
            if self.stopped() {
                break;
            }
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.problems.note(format!(
                        "the archive stream is broken{}: {e}",
                        at(&self.position)
                    ));
                    return true;
                }
            };
            let Some(fe) = self.admit(&entry) else {
                continue;
            };
            if let Err(e) = self.take(fe, &mut entry) {
                // A broken stream surfaces here as a read error of the file.
                self.problems.note(format!("{e}{}", at(&self.position)));
                if self.problems.volume_missing() {
                    return true;
                }
            }
        }
        false
    }

    /// The manifest entry to read `entry` as, when it is one of the wanted
    /// ones and agrees with the manifest; every disagreement is a problem.
    fn admit<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Option<&'a FileEntry> {
        let raw = entry.path_bytes().into_owned();
        let name = crate::format::names::encode(&raw);
        let name = name.trim_end_matches('/').to_string();
        if !manifest::safe_relative_path(&name) {
            self.problems
                .note(format!("archive entry {name:?} is an unsafe path; refused"));
            return None;
        }
        let Some(held) = self.expected.get(name.as_str()) else {
            self.problems.note(format!(
                "archive entry {name:?} is not in the manifest; refused"
            ));
            return None;
        };
        let Some(fe) = self.wanted.get(name.as_str()) else {
            // Held here but not part of what is read now (a later backup replaced it).
            self.seen.insert(name);
            return None;
        };
        if fe.kind != held.kind {
            self.problems.note(format!(
                "{name:?} is a {:?} in {} but a {:?} in the backup being restored",
                held.kind, self.manifest.id, fe.kind
            ));
            return None;
        }
        if !self.seen.insert(name.clone()) {
            self.problems
                .note(format!("archive entry {name:?} appears twice"));
            return None;
        }
        let et = entry.header().entry_type();
        let kind_ok = match fe.kind {
            EntryKind::File => et.is_file(),
            EntryKind::Dir => et.is_dir(),
            EntryKind::Symlink => et.is_symlink(),
            EntryKind::Hardlink => et.is_hard_link(),
        };
        if !kind_ok {
            self.problems.note(format!(
                "archive entry {name:?} is not a {:?} as the manifest says",
                fe.kind
            ));
            return None;
        }
        Some(fe)
    }

    /// Hands an admitted entry to the sink and checks what it read.
    fn take<R: Read>(&mut self, fe: &FileEntry, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let name = &fe.path;
        match fe.kind {
            EntryKind::File => {
                let (size, hash) = self.sink.file(fe, entry)?;
                let what = if fe.delta.is_some() {
                    "the changed blocks of file"
                } else {
                    "file"
                };
                if size != fe.stored_size() {
                    self.problems.note(format!(
                        "{what} {name:?}: {size} bytes, the manifest says {}",
                        fe.stored_size()
                    ));
                } else if Some(&hash) != fe.stored_digest().as_ref() {
                    self.problems.note(format!(
                        "{what} {name:?}: {} does not match the manifest (damaged)",
                        hash.algorithm.label()
                    ));
                } else {
                    self.files += 1;
                    self.bytes += size;
                }
                Ok(())
            }
            EntryKind::Dir => self.sink.dir(fe),
            EntryKind::Symlink | EntryKind::Hardlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| crate::format::names::encode(&b));
                if target.as_deref() != fe.target.as_deref() {
                    self.problems.note(format!(
                        "link {name:?} points elsewhere than the manifest says"
                    ));
                    Ok(())
                } else if fe.kind == EntryKind::Symlink {
                    self.sink.symlink(fe)
                } else {
                    self.sink.hardlink(fe)
                }
            }
        }
    }

    /// Reads to the very end, so every volume's size and hash are checked:
    /// past the tar trailer, and past a point where decompression broke;
    /// then names what the manifest has and the archive had not.
    fn finish(&mut self, mut stream: Decompressed, broken: bool) {
        if !broken && let Err(e) = io::copy(&mut stream, &mut io::sink()) {
            self.problems.note(format!(
                "the compressed stream is damaged{}: {e}",
                at(&self.position)
            ));
        }
        if let Some(mut chain) = stream.into_chain() {
            let _ = io::copy(&mut chain, &mut io::sink());
        }
        if broken {
            return;
        }
        for f in self.wanted.values() {
            if !self.seen.contains(&f.path) {
                self.problems.note(format!(
                    "{:?} is in the manifest but not in the archive",
                    f.path
                ));
            }
        }
    }
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

/// Reads every volume of `manifest` as stored and checks its size and
/// hash; nothing is decrypted or unpacked (verify without the identity).
pub(super) fn read_stored(
    rt: tokio::runtime::Handle,
    target: &Target,
    manifest: &Manifest,
) -> Outcome {
    let problems = Problems::default();
    let position = Arc::new(Mutex::new(String::new()));
    let mut chain = VolumeChain::new(rt, target, manifest, &problems, &position, None);
    let mut counted = Counted(0);
    // A missing volume is noted; go on with the next one.
    while let Err(e) = io::copy(&mut chain, &mut counted) {
        let text = e.to_string();
        if !problems.has(&text) {
            problems.note(format!("{text}{}", at(&position)));
        }
        chain.current = None;
    }
    Outcome {
        files: 0,
        bytes: counted.0,
        problems: problems.list(),
    }
}

/// A sink that counts what it is given.
struct Counted(u64);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
