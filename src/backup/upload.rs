//! The upload engine: sends one staged backup to every destination at once.
//!
//! Per destination, volumes go in order and the manifest last, so a backup is
//! visible (complete) only once every volume is there. Within a volume, parts
//! go up to `concurrency` at a time where the backend allows any order, one
//! after the other where it does not (the next part is read while one is
//! sent). Every step is journaled
//! ([`crate::backup::journal`]) so a later run sends only what is missing. Memory is
//! bounded by part size × concurrency per destination: parts are read from the
//! staged file when they are sent, never the whole volume.
//!
//! A destination's failure never stops the others: each gets its own report.
//!
//! On a requested stop ([`Stop`]) no new volume or part is started; parts in
//! flight finish and are journaled, and the destination reports `interrupted`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use offsite_backends::{Capabilities, ErrorKind, FileBody, Part, PartReceipt};
use serde::Serialize;

use crate::backup::journal::UploadJournal;
use crate::cluster::SetMember;
use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::digest::Hasher;
use crate::format::manifest::{MANIFEST_NAME, Manifest, Volume};
use crate::outcome::Status;
use crate::progress::Progress;
use crate::stop::Stop;

/// What happened on one destination.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationReport {
    /// The destination's name.
    pub name: String,
    /// `ok`, `failed`, or `interrupted` when a stop was requested.
    pub status: Status,
    /// Bytes sent by this run.
    pub bytes_sent: u64,
    /// Bytes an earlier run had already sent, not sent again.
    pub bytes_resumed: u64,
    /// How long the upload to this destination took, in seconds.
    pub seconds: f64,
    /// What the operator should know besides the outcome (an FTP server
    /// that made offsite send volumes whole), each said once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why it failed or stopped; None when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The part size for an object of `size` bytes: the configured one, raised
/// to the backend's minimum and as far as needed to stay within its maximum
/// number of parts.
pub fn part_size_for(configured: u64, size: u64, caps: &Capabilities) -> u64 {
    let mut ps = configured.max(caps.min_part_size).max(1);
    let max_parts = caps.max_parts.max(1) as u64;
    if size.div_ceil(ps) > max_parts {
        ps = size.div_ceil(max_parts).next_multiple_of(1 << 20);
    }
    ps.min(caps.max_part_size.max(1))
}

/// Uploads the staged backup in `dir` to every target concurrently.
///
/// A cluster set member's backup (`member`) also writes the set's markers
/// on each destination: `members.json` and its `started` marker before the
/// first volume, its `done` marker after the manifest (see
/// [`crate::cluster`]); a destination is complete only once that is there.
pub async fn upload_backup(
    dir: &Path,
    manifest: &Manifest,
    member: Option<&SetMember<'_>>,
    targets: &[Target],
    progress: &dyn Progress,
    stop: &Stop,
) -> Vec<DestinationReport> {
    let runs = targets.iter().map(|t| async move {
        let started = Instant::now();
        let counters = Counters::default();
        let result = upload_to(dir, manifest, member, t, progress, &counters, stop).await;
        progress.upload_finished(&t.config.name, result.is_ok());
        DestinationReport {
            name: t.config.name.clone(),
            status: match &result {
                Ok(()) => Status::Ok,
                Err(Error::Stopped(_)) => Status::Interrupted,
                Err(_) => Status::Failed,
            },
            bytes_sent: counters.sent.load(Ordering::Relaxed),
            bytes_resumed: counters.resumed.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            notes: counters.notes.lock().map(|n| n.clone()).unwrap_or_default(),
            error: result.err().map(|e| e.to_string()),
        }
    });
    futures::future::join_all(runs).await
}

/// What one destination got: counted as each part is acknowledged, so a
/// destination that fails later still reports what reached it.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    resumed: AtomicU64,
    /// What the destination's report says besides its outcome, each once.
    notes: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn note_once(&self, note: String) {
        if let Ok(mut n) = self.notes.lock()
            && !n.contains(&note)
        {
            n.push(note);
        }
    }

    fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    fn resumed(&self, n: u64) {
        self.resumed.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a create-only write was meant to store, to recognise it when the
/// key turns out to be taken.
enum Expected<'a> {
    /// A staged volume: its size and recorded hash.
    Volume(&'a Volume),
    /// The manifest's exact bytes.
    Bytes(&'a [u8]),
}

/// Whether the object at `key`, which a create-only write found taken, is
/// this upload's own: an earlier attempt that landed although its answer
/// was lost (`ambiguous`: the retry wrapper or the journal says an attempt
/// went unanswered). Where the destination can be read the content decides;
/// where it cannot (put-only), only an unanswered attempt of our own can
/// explain it.
async fn taken_by_us(
    target: &Target,
    key: &str,
    expected: Expected<'_>,
    ambiguous: bool,
) -> Result<bool> {
    let backend = target.backend.as_ref();
    if !backend.capabilities().read {
        return Ok(ambiguous);
    }
    match expected {
        Expected::Bytes(want) => match offsite_backends::get_bytes(backend, key).await {
            Ok(have) => Ok(have == want),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        },
        Expected::Volume(v) => {
            let Some(want) = v.digest() else {
                return Ok(false);
            };
            let mut stream = match backend.get(key, None).await {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let mut hasher = Hasher::new(want.algorithm);
            let mut size = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                size += chunk.len() as u64;
                if size > v.size {
                    return Ok(false);
                }
                hasher.update(&chunk);
            }
            Ok(size == v.size && hasher.finish() == want)
        }
    }
}

/// The error for a key another writer holds: nothing was overwritten.
async fn taken_by_another(target: &Target, manifest: &Manifest, key: &str) -> Error {
    let backend = target.backend.as_ref();
    // Whose is it? Where it can be read, the other backup's manifest says.
    let manifest_key = target.layout().manifest(&manifest.job, &manifest.id);
    let who = if backend.capabilities().read {
        match offsite_backends::get_bytes(backend, &manifest_key).await {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v["host"]
                        .as_str()
                        .map(|h| format!("host {h:?} (its manifest says so)"))
                })
                .unwrap_or_else(|| "a writer whose manifest names no host".into()),
            Err(_) => "another writer".into(),
        }
    } else {
        "another writer".into()
    };
    Error::Failed(format!(
        "destination \"{}\": {key} already exists, written by {who}; nothing was overwritten and backup {} is not complete there. Two hosts with the same host_id ({:?}) and job, or someone else holding this destination's credentials, can cause this: give each host its own host_id",
        target.config.name,
        manifest.id,
        manifest.host.as_deref().unwrap_or("-"),
    ))
}

async fn upload_to(
    dir: &Path,
    manifest: &Manifest,
    member: Option<&SetMember<'_>>,
    target: &Target,
    progress: &dyn Progress,
    counters: &Counters,
    stop: &Stop,
) -> Result<()> {
    let name = target.config.name.as_str();
    let journal = Arc::new(UploadJournal::open(dir, name)?);
    let manifest_bytes = std::fs::read(dir.join(MANIFEST_NAME)).map_err(|e| {
        Error::io(
            format!("cannot read {}", dir.join(MANIFEST_NAME).display()),
            e,
        )
    })?;
    let total: u64 =
        manifest.volumes.iter().map(|v| v.size).sum::<u64>() + manifest_bytes.len() as u64;
    let manifest_key = target.layout().manifest(&manifest.job, &manifest.id);
    let already = already_sent(&journal, target, manifest, manifest_bytes.len() as u64);
    progress.upload_started(name, total, already);
    if journal.manifest_done(&manifest_key) {
        counters.resumed(total);
        // A catalog copy an earlier run could not ship goes now (nothing to do elsewhere).
        target.backend.flush().await?;
        return Ok(());
    }
    if let Some(m) = member {
        put_markers(
            target,
            m.start_objects(target.layout(), &manifest.job, manifest),
        )
        .await?;
    }
    for volume in &manifest.volumes {
        let key = target
            .layout()
            .key(&manifest.job, &manifest.id, &volume.name);
        let path = dir.join(&volume.name);
        let staged = StagedVolume {
            volume,
            key: &key,
            path: &path,
        };
        upload_volume(
            target, &journal, manifest, &staged, progress, counters, stop,
        )
        .await?;
    }
    stopped(target, stop)?;
    let len = manifest_bytes.len() as u64;
    journal.sending(&manifest_key)?;
    match target
        .backend
        .put(&manifest_key, Bytes::from(manifest_bytes.clone()))
        .await
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let ambiguous = e.after_lost_answer() || journal.sent_by_an_earlier_run(&manifest_key);
            if !taken_by_us(
                target,
                &manifest_key,
                Expected::Bytes(&manifest_bytes),
                ambiguous,
            )
            .await?
            {
                journal.refused(&manifest_key)?;
                return Err(taken_by_another(target, manifest, &manifest_key).await);
            }
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(m) = member {
        put_markers(
            target,
            vec![m.done_object(target.layout(), &manifest.job, manifest)],
        )
        .await?;
    }
    journal.set_manifest_done(&manifest_key)?;
    counters.sent(len);
    progress.upload_advanced(name, len);
    // The Glacier vault ships its catalog now; the other kinds keep nothing beside the objects.
    target.backend.flush().await?;
    Ok(())
}

/// Writes a set's marker objects, create-once: one already there (another
/// member's `members.json`, or this member's marker from an earlier
/// attempt) is left as it is.
pub async fn put_markers(target: &Target, objects: Vec<(String, Vec<u8>)>) -> Result<()> {
    for (key, body) in objects {
        match target.backend.put(&key, Bytes::from(body)).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What earlier runs already put on the destination, for the progress bar.
fn already_sent(
    journal: &UploadJournal,
    target: &Target,
    manifest: &Manifest,
    manifest_len: u64,
) -> u64 {
    let key = |name: &str| target.layout().key(&manifest.job, &manifest.id, name);
    let volumes: u64 = manifest
        .volumes
        .iter()
        .map(|v| {
            let s = journal.volume(&v.name);
            let k = key(&v.name);
            if s.done_at(&k) {
                v.size
            } else {
                s.upload
                    .filter(|u| u.key == k)
                    .map(|u| u.parts.values().map(|p| p.size).sum())
                    .unwrap_or(0)
            }
        })
        .sum();
    if journal.manifest_done(&key(MANIFEST_NAME)) {
        volumes + manifest_len
    } else {
        volumes
    }
}

/// One staged volume and where it goes.
struct StagedVolume<'a> {
    volume: &'a Volume,
    key: &'a str,
    path: &'a Path,
}

/// Sends one volume (or resumes it from the journal), create-only: when its
/// key is taken, the content (or, put-only, the journal) decides whether an
/// earlier attempt of ours landed; another writer's object fails the
/// destination and is never overwritten.
async fn upload_volume(
    target: &Target,
    journal: &Arc<UploadJournal>,
    manifest: &Manifest,
    staged: &StagedVolume<'_>,
    progress: &dyn Progress,
    counters: &Counters,
    stop: &Stop,
) -> Result<()> {
    let StagedVolume { volume, key, path } = *staged;
    let size = volume.size;
    let backend = target.backend.as_ref();
    let name = target.config.name.as_str();
    if journal.volume(&volume.name).done_at(key) {
        counters.resumed(size);
        return Ok(());
    }
    stopped(target, stop)?;
    // An earlier attempt at completing this key went unanswered: finding it
    // taken may mean that attempt landed.
    let mut ambiguous = journal.sent_by_an_earlier_run(key);
    let whole = |ambiguous: bool| async move {
        journal.sending(key)?;
        let result = backend.put_file(key, FileBody::new(path, size)).await;
        finish_volume(target, journal, manifest, volume, key, result, ambiguous).await?;
        counters.sent(size);
        progress.upload_advanced(name, size);
        Ok(())
    };
    if !backend.capabilities().multipart {
        return whole(ambiguous).await;
    }
    let parts = InParts {
        target,
        journal,
        manifest,
        staged,
        progress,
        counters,
        stop,
    };
    match upload_in_parts(&parts, &mut ambiguous).await {
        // The server turned out not to take uploads in parts (an FTP server
        // refusing to resume): this volume, and the next ones, go whole.
        Err(Error::Destination(e))
            if e.kind() == ErrorKind::Unsupported && !backend.capabilities().multipart =>
        {
            counters.note_once(e.to_string());
            progress.note(&e.to_string());
            if let Some(u) = journal.volume(&volume.name).upload {
                let _ = backend.abort_upload(key, &u.upload).await;
            }
            journal.restarted(&volume.name)?;
            whole(ambiguous).await
        }
        other => other,
    }
}

/// What [`upload_in_parts`] works with.
struct InParts<'a> {
    target: &'a Target,
    journal: &'a Arc<UploadJournal>,
    manifest: &'a Manifest,
    staged: &'a StagedVolume<'a>,
    progress: &'a dyn Progress,
    counters: &'a Counters,
    stop: &'a Stop,
}

/// [`upload_volume`] in parts: resumes the journaled upload, or starts one.
async fn upload_in_parts(p: &InParts<'_>, ambiguous: &mut bool) -> Result<()> {
    let InParts {
        target,
        journal,
        manifest,
        staged,
        progress,
        counters,
        stop,
    } = *p;
    let StagedVolume { volume, key, path } = *staged;
    let size = volume.size;
    let backend = target.backend.as_ref();
    let name = target.config.name.as_str();
    let caps = backend.capabilities();
    let mut restarted = false;
    loop {
        let state = journal.volume(&volume.name);
        stopped(target, stop)?;
        // An upload journaled under another key (the prefix changed) cannot be reused.
        let open = state.upload.filter(|u| u.key == key);
        let (upload, part_size, have) = match open {
            Some(u) => (u.upload, u.part_size, u.parts),
            None => {
                let ps = part_size_for(target.config.part_size, size, &caps);
                let id = backend.create_upload(key, ps).await?;
                journal.started(&volume.name, key, &id, ps)?;
                (id, ps, Default::default())
            }
        };
        let parts = size.div_ceil(part_size).max(1) as u32;
        counters.resumed(have.values().map(|p| p.size).sum());
        let missing: Vec<u32> = (0..parts).filter(|i| !have.contains_key(i)).collect();
        let in_flight = if caps.parts_out_of_order {
            target.config.concurrency.max(1)
        } else {
            1
        };
        let file = Arc::new(
            std::fs::File::open(path)
                .map_err(|e| Error::io(format!("cannot open staged {}", path.display()), e))?,
        );
        // Each part's read starts when the part is taken from this stream.
        let reads = futures::stream::iter(missing)
            // No new part once a stop is requested; those in flight finish and are journaled.
            .take_while(|_| futures::future::ready(!stop.requested()))
            .map(|index| {
                let offset = index as u64 * part_size;
                let len = part_size.min(size - offset.min(size));
                let body = start_read(file.clone(), path.to_path_buf(), offset, len);
                async move { Ok::<_, Error>((index, offset, body.await?)) }
            });
        let journaled = |receipt: PartReceipt| -> Result<PartReceipt> {
            journal.part(&volume.name, &receipt)?;
            counters.sent(receipt.size);
            progress.upload_advanced(name, receipt.size);
            Ok(receipt)
        };
        let sent: Result<Vec<PartReceipt>> = if in_flight > 1 {
            reads
                .map(|read| async {
                    let (index, offset, body) = read.await?;
                    let part = Part {
                        index,
                        offset,
                        body,
                    };
                    journaled(backend.put_part(key, &upload, part).await?)
                })
                .buffer_unordered(in_flight)
                .try_collect()
                .await
        } else {
            // One part at a time, in order. The next part is read while one
            // is sent (two parts in memory, within part size × concurrency
            // unless concurrency is 1), and one part's sync runs while the
            // next is written: a receipt is journaled once its part is synced.
            let ahead = target.config.concurrency.clamp(1, 2);
            let mut reads = std::pin::pin!(reads.buffered(ahead));
            let mut sent = Vec::new();
            let mut unsynced: Option<PartReceipt> = None;
            loop {
                let synced = async {
                    match unsynced.take() {
                        Some(r) => {
                            backend.sync_part(key, &upload, &r).await?;
                            journaled(r).map(Some)
                        }
                        None => Ok(None),
                    }
                };
                let written = async {
                    // A part read ahead is not started once a stop is requested.
                    if stop.requested() {
                        return Ok(None);
                    }
                    match reads.next().await {
                        Some(read) => {
                            let (index, offset, body) = read?;
                            let part = Part {
                                index,
                                offset,
                                body,
                            };
                            Ok(Some(backend.write_part(key, &upload, part).await?))
                        }
                        None => Ok::<_, Error>(None),
                    }
                };
                let (synced, written) = futures::join!(synced, written);
                match synced {
                    Ok(Some(r)) => sent.push(r),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
                match written {
                    Ok(Some(r)) => unsynced = Some(r),
                    Ok(None) => break Ok(sent),
                    Err(e) => break Err(e),
                }
            }
        };
        let sent = match sent {
            Ok(s) => s,
            Err(Error::Destination(e)) if e.kind() == ErrorKind::NotFound && !restarted => {
                // The unfinished upload expired or was aborted: send this volume again.
                progress.note(&format!("{e}; sending {} again", volume.name));
                journal.restarted(&volume.name)?;
                restarted = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        if have.len() + sent.len() < parts as usize {
            stopped(target, stop)?;
        }
        let mut receipts: Vec<PartReceipt> = have.into_values().chain(sent).collect();
        receipts.sort_by_key(|r| r.index);
        journal.sending(key)?;
        match backend.complete_upload(key, &upload, &receipts).await {
            Err(e) if e.kind() == ErrorKind::NotFound && !restarted => {
                *ambiguous |= e.after_lost_answer();
                // The upload is gone: an earlier completion of ours may have
                // made it gone by landing. Where that can be seen, done.
                if *ambiguous
                    && caps.read
                    && taken_by_us(target, key, Expected::Volume(volume), true).await?
                {
                    journal.volume_done(&volume.name, key)?;
                    return Ok(());
                }
                // Else it expired or was cleaned up: send this volume again.
                progress.note(&format!("{e}; sending {} again", volume.name));
                journal.restarted(&volume.name)?;
                restarted = true;
            }
            result => {
                return finish_volume(target, journal, manifest, volume, key, result, *ambiguous)
                    .await;
            }
        }
    }
}

/// Journals a volume whose create-only write answered `result`: done, done
/// by an earlier attempt of ours, or refused because another writer holds
/// the key.
async fn finish_volume(
    target: &Target,
    journal: &UploadJournal,
    manifest: &Manifest,
    volume: &Volume,
    key: &str,
    result: std::result::Result<(), offsite_backends::Error>,
    ambiguous: bool,
) -> Result<()> {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let ambiguous = ambiguous || e.after_lost_answer();
            if !taken_by_us(target, key, Expected::Volume(volume), ambiguous).await? {
                journal.refused(key)?;
                return Err(taken_by_another(target, manifest, key).await);
            }
        }
        Err(e) => return Err(e.into()),
    }
    journal.volume_done(&volume.name, key)
}

/// An error once a stop is requested.
fn stopped(target: &Target, stop: &Stop) -> Result<()> {
    if stop.requested() {
        return Err(Error::Stopped(format!(
            "destination \"{}\": stopped on request; the journal keeps what was sent, `offsite upload` resumes it",
            target.config.name
        )));
    }
    Ok(())
}

/// Reads `len` bytes of the staged file at `offset` on the blocking pool,
/// starting now: the returned future only waits for them.
fn start_read(
    file: Arc<std::fs::File>,
    path: PathBuf,
    offset: u64,
    len: u64,
) -> impl Future<Output = Result<Bytes>> {
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).map_err(|e| {
            Error::io(
                format!("cannot read staged {} at {offset}", path.display()),
                e,
            )
        })?;
        Ok(Bytes::from(buf))
    });
    async move {
        read.await
            .map_err(|e| Error::Failed(format!("reader task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(min: u64, max_parts: u32) -> Capabilities {
        Capabilities {
            multipart: true,
            parts_out_of_order: true,
            offset_resume: false,
            atomic_rename: false,
            exclusive_create: true,
            list: true,
            delete: true,
            read: true,
            cold_storage: false,
            min_part_size: min,
            max_part_size: 5 << 30,
            max_parts,
            max_object_size: None,
            retention: None,
        }
    }

    #[test]
    fn part_size_respects_minimum_and_part_count() {
        assert_eq!(part_size_for(16 << 20, 1 << 30, &caps(1, 10_000)), 16 << 20);
        assert_eq!(
            part_size_for(1 << 20, 1 << 30, &caps(5 << 20, 10_000)),
            5 << 20
        );
        // 1 TiB in at most 10,000 parts needs parts over 100 MiB.
        let ps = part_size_for(16 << 20, 1 << 40, &caps(5 << 20, 10_000));
        assert!((1u64 << 40).div_ceil(ps) <= 10_000, "{ps}");
    }
}
