//! The restore's file writers: small files, read and checked by the
//! thread that reads the archive, are created, written and given their
//! metadata on a few threads at once.
//!
//! Why: a restore of many small files is almost all kernel work (each
//! file a new inode and a folder entry; on ext4, finding a free inode
//! that was not freed a moment ago). One thread does it one file at a
//! time, on one core, and `tar -x` does too: with two writers a restore
//! of 50,000 files of 200 bytes uses both cores of the bench machine.
//!
//! Only a file's final version goes through the pool, never a version a
//! later backup's changed blocks are written over (those are written in
//! chain order by the reading thread), and the restore waits for the pool
//! ([`WritePool::finish`]) before it makes links, sets the folders' times
//! and syncs. Memory: at most [`QUEUED_PER_THREAD`] files of at most
//! [`SMALL_FILE`] bytes per writer wait, and one more per writer is being
//! written.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::format::manifest::FileEntry;

use super::{FileSink, Meta, create_restored, rename_into};

/// The largest file written by the pool; larger ones are streamed to disk
/// by the reading thread, never held whole in memory.
pub(super) const SMALL_FILE: u64 = 256 << 10;

/// How many files may wait per writer.
const QUEUED_PER_THREAD: usize = 8;

/// A checked file's bytes and where they go.
pub(super) struct SmallFile {
    /// Its name in the restore folder.
    pub(super) path: PathBuf,
    /// The temp name it is written to first (a restore with --force).
    pub(super) tmp: Option<PathBuf>,
    pub(super) data: Vec<u8>,
    pub(super) entry: FileEntry,
}

/// A buffer that keeps the first `cap` bytes written to it and counts the
/// rest away: a damaged archive whose entry is longer than the manifest
/// says cannot make the restore hold it.
pub(super) struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Capped {
    pub(super) fn new(cap: usize) -> Self {
        Capped {
            buf: Vec::with_capacity(cap),
            cap,
        }
    }

    pub(super) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let room = self.cap - self.buf.len();
        self.buf.extend_from_slice(&b[..room.min(b.len())]);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the writers share: the first failure, which stops them writing.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<Error>>,
}

/// Writer threads fed through a bounded queue.
pub(super) struct WritePool {
    queue: Option<SyncSender<SmallFile>>,
    threads: Vec<JoinHandle<()>>,
    failure: Arc<Failure>,
}

impl WritePool {
    /// Starts a writer per core (two at least, eight at most).
    pub(super) fn new(meta: &Meta) -> Result<Self> {
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        let (queue, rx) = sync_channel(n * QUEUED_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        let failure = Arc::new(Failure::default());
        let mut pool = WritePool {
            queue: Some(queue),
            threads: Vec::with_capacity(n),
            failure,
        };
        for i in 0..n {
            let (rx, failure, meta) = (rx.clone(), pool.failure.clone(), meta.clone());
            let t = std::thread::Builder::new()
                .name(format!("offsite-restore-{i}"))
                .spawn(move || work(&rx, &failure, &meta))
                .map_err(|e| Error::io("cannot start the restore's file writers", e))?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Queues `file` (waiting while the queue is full); fails with the
    /// first writer's failure, once, if one failed since.
    pub(super) fn write(&self, file: SmallFile) -> Result<()> {
        self.failed()?;
        let stopped = || Error::Failed("the restore's file writers stopped".into());
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(file)
            .map_err(|_| stopped())
    }

    /// Waits until every queued file is written; the first failure, unless
    /// [`WritePool::write`] already answered it.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.queue = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                return Err(Error::Failed(
                    "a restore file writer panicked; the restore is not complete".into(),
                ));
            }
        }
        self.failed()
    }

    fn failed(&self) -> Result<()> {
        match self.failure.first.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for WritePool {
    /// No writer outlives the restore, whatever stopped it.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// A writer: takes files from the queue until it closes. After a failure
/// (its own or another's) it writes nothing more.
fn work(rx: &Mutex<Receiver<SmallFile>>, failure: &Failure, meta: &Meta) {
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(file) = next else {
            return;
        };
        if failure.failed.load(Ordering::Acquire) {
            continue;
        }
        if let Err(e) = write_one(&file, meta)
            && !failure.failed.swap(true, Ordering::AcqRel)
            && let Ok(mut first) = failure.first.lock()
        {
            *first = Some(e);
        }
    }
}

/// Creates `f`'s file, writes its bytes, gives it its metadata and, when
/// it was written under a temp name, renames it into place.
fn write_one(f: &SmallFile, meta: &Meta) -> Result<()> {
    let at = f.tmp.as_deref().unwrap_or(&f.path);
    let file = create_restored(at, f.tmp.is_some())?;
    let mut sink = FileSink {
        file: &file,
        sparse: f.entry.sparse,
        offset: 0,
    };
    let written = sink.write_all(&f.data).and_then(|_| {
        if f.entry.sparse {
            file.set_len(f.data.len() as u64)
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(at);
        return Err(Error::io(format!("restoring {}", f.entry.path), e));
    }
    meta.file(&file, at, &f.entry)?;
    if let Some(tmp) = &f.tmp {
        rename_into(tmp, &f.path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::EntryKind;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn entry(path: &str, size: usize) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: EntryKind::File,
            size: size as u64,
            mtime: 1_000_000_000,
            mtime_nsec: 5,
            mode: 0o640,
            uid: 0,
            gid: 0,
            sha256: None,
            blake3: None,
            target: None,
            sparse: false,
            volume: 0,
            backup: "b".into(),
            delta: None,
        }
    }

    fn meta() -> Meta {
        Meta {
            chown: false,
            owner_failures: Default::default(),
        }
    }

    fn small(dir: &std::path::Path, name: &str, data: &[u8]) -> SmallFile {
        SmallFile {
            path: dir.join(name),
            tmp: None,
            data: data.to_vec(),
            entry: entry(name, data.len()),
        }
    }

    #[test]
    fn every_queued_file_is_written_with_its_metadata_before_finish_returns() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut pool = WritePool::new(&meta()).expect("pool");
        for i in 0..300 {
            let data = format!("file {i}").repeat(i % 7);
            pool.write(small(d.path(), &format!("f{i}"), data.as_bytes()))
                .expect("queued");
        }
        pool.finish().expect("finished");
        for i in 0..300 {
            let p = d.path().join(format!("f{i}"));
            let want = format!("file {i}").repeat(i % 7);
            assert_eq!(std::fs::read(&p).expect("read"), want.as_bytes());
            let m = std::fs::metadata(&p).expect("stat");
            assert_eq!(m.permissions().mode() & 0o7777, 0o640);
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 5));
        }
    }

    #[test]
    fn a_file_with_a_temp_name_is_renamed_over_the_one_there() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a"), b"old").expect("write");
        let mut pool = WritePool::new(&meta()).expect("pool");
        let mut f = small(d.path(), "a", b"new");
        f.tmp = Some(d.path().join(".offsite-1-1.tmp"));
        pool.write(f).expect("queued");
        pool.finish().expect("finished");
        assert_eq!(std::fs::read(d.path().join("a")).expect("read"), b"new");
        assert!(!d.path().join(".offsite-1-1.tmp").exists());
    }

    #[test]
    fn the_first_failure_is_answered_once_and_stops_the_writers() {
        let d = tempfile::tempdir().expect("tempdir");
        // A folder holds the name: the rename onto it fails.
        std::fs::create_dir(d.path().join("taken")).expect("mkdir");
        let mut pool = WritePool::new(&meta()).expect("pool");
        let mut f = small(d.path(), "taken", b"x");
        f.tmp = Some(d.path().join(".offsite-1-1.tmp"));
        pool.write(f).expect("queued");
        // Later files: once the failure is seen, write answers it (once).
        let mut answered = Vec::new();
        for i in 0..1000 {
            if let Err(e) = pool.write(small(d.path(), &format!("g{i}"), b"y")) {
                answered.push(e.to_string());
            }
        }
        if let Err(e) = pool.finish() {
            answered.push(e.to_string());
        }
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert!(
            answered[0].contains("exists and is a folder"),
            "{answered:?}"
        );
        assert!(answered[0].contains("taken"), "{answered:?}");
        assert!(!d.path().join(".offsite-1-1.tmp").exists());
        assert!(pool.finish().is_ok(), "finish again: nothing more to say");
    }

    #[test]
    fn capped_keeps_its_first_bytes_and_counts_the_rest_away() {
        let mut c = Capped::new(4);
        assert_eq!(c.write(b"abc").expect("write"), 3);
        assert_eq!(c.write(b"defgh").expect("write"), 5);
        assert_eq!(c.into_inner(), b"abcd");
    }
}
