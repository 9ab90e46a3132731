//! The upload journal: what one destination already holds of one staged
//! backup, so a run after a crash sends only what is missing.
//!
//! It is an append-only file of JSON lines in the staged backup's folder
//! (`.journal/<destination>.jsonl`), each line fsync'd before the step it
//! records is relied upon: an upload id is written before any part is sent,
//! a part's receipt after the server acknowledged it. A crash can at worst
//! leave a torn last line, which is dropped (and cut off) when the journal
//! is opened again: the part it described is simply sent again.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use offsite_backends::{PartReceipt, UploadId};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The folder of a staged backup that holds its journals, one file per
/// destination.
pub const JOURNAL_DIR: &str = ".journal";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    /// An upload of `volume` to `key` was created.
    Started {
        volume: String,
        key: String,
        upload: UploadId,
        part_size: u64,
    },
    /// A part of the current upload of `volume` is stored.
    Part {
        volume: String,
        receipt: PartReceipt,
    },
    /// The upload of `volume` is gone on the server; start it again.
    Restarted { volume: String },
    /// `volume` is complete on the destination under `key`.
    VolumeDone { volume: String, key: String },
    /// The manifest is on the destination under `key`: the backup is complete there.
    ManifestDone { key: String },
    /// A create-only write of `key` (a volume's completion, the manifest)
    /// is about to be sent. If no answer is journaled after it (`VolumeDone`,
    /// `ManifestDone` or `Refused` of that key), a later run that finds `key`
    /// taken knows the write may have been its own.
    Sending { key: String },
    /// The create-only write of `key` was refused: another writer holds it.
    /// A later run must not take that object for its own.
    Refused { key: String },
}

/// The current upload of one volume.
#[derive(Debug, Clone)]
pub struct OpenUpload {
    /// The key the volume is being uploaded to.
    pub key: String,
    /// The backend's id of the multipart upload.
    pub upload: UploadId,
    /// The part size in bytes the upload was started with.
    pub part_size: u64,
    /// The receipts of the parts the server acknowledged, by part index.
    pub parts: BTreeMap<u32, PartReceipt>,
}

/// What the journal says of one volume on its destination.
#[derive(Debug, Clone, Default)]
pub struct VolumeState {
    /// Its multipart upload in progress; None when none is open.
    pub upload: Option<OpenUpload>,
    /// The key the volume was completed under, if it was.
    pub done_key: Option<String>,
}

impl VolumeState {
    /// Whether the volume is complete under `key` (a changed prefix means it is not).
    pub fn done_at(&self, key: &str) -> bool {
        self.done_key.as_deref() == Some(key)
    }
}

#[derive(Debug, Default)]
struct State {
    volumes: HashMap<String, VolumeState>,
    manifest_key: Option<String>,
    /// Keys a create-only write was sent for and no answer journaled.
    sending: std::collections::HashSet<String>,
}

impl State {
    fn apply(&mut self, e: Event) {
        match e {
            Event::Started {
                volume,
                key,
                upload,
                part_size,
            } => {
                let v = self.volumes.entry(volume).or_default();
                v.upload = Some(OpenUpload {
                    key,
                    upload,
                    part_size,
                    parts: BTreeMap::new(),
                });
                v.done_key = None;
            }
            Event::Part { volume, receipt } => {
                if let Some(u) = self.volumes.entry(volume).or_default().upload.as_mut() {
                    u.parts.insert(receipt.index, receipt);
                }
            }
            Event::Restarted { volume } => {
                self.volumes.insert(volume, VolumeState::default());
            }
            Event::VolumeDone { volume, key } => {
                self.sending.remove(&key);
                let v = self.volumes.entry(volume).or_default();
                v.done_key = Some(key);
                v.upload = None;
            }
            Event::ManifestDone { key } => {
                self.sending.remove(&key);
                self.manifest_key = Some(key);
            }
            Event::Sending { key } => {
                self.sending.insert(key);
            }
            Event::Refused { key } => {
                self.sending.remove(&key);
            }
        }
    }
}

/// The journal of one staged backup on one destination, open for appending.
#[derive(Debug)]
pub struct UploadJournal {
    path: PathBuf,
    inner: Mutex<(File, State)>,
    /// The keys an earlier run sent a create-only write for (its answer
    /// may have been lost with that run).
    sent_earlier: std::collections::HashSet<String>,
}

/// The journal file of `destination` in the staged backup `backup_dir`.
pub fn journal_path(backup_dir: &Path, destination: &str) -> PathBuf {
    backup_dir
        .join(JOURNAL_DIR)
        .join(format!("{destination}.jsonl"))
}

fn read_state(path: &Path) -> Result<(State, u64)> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .map_err(|e| Error::io(format!("cannot read journal {}", path.display()), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot open journal {}", path.display()),
                e,
            ));
        }
    }
    let mut state = State::default();
    let mut good_len = 0u64;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break; // torn by a crash mid-write
        }
        match serde_json::from_str::<Event>(line.trim_end()) {
            Ok(e) => state.apply(e),
            Err(_) => break,
        }
        good_len += line.len() as u64;
    }
    Ok((state, good_len))
}

/// Whether the journal of `destination` in the staged backup `backup_dir` says
/// the backup is complete there.
pub fn is_complete(backup_dir: &Path, destination: &str) -> bool {
    read_state(&journal_path(backup_dir, destination))
        .map(|(s, _)| s.manifest_key.is_some())
        .unwrap_or(false)
}

impl UploadJournal {
    /// Opens the journal of `destination` in `backup_dir` (created if missing),
    /// cutting off a torn last line.
    pub fn open(backup_dir: &Path, destination: &str) -> Result<UploadJournal> {
        let path = journal_path(backup_dir, destination);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        let (state, good_len) = read_state(&path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open journal {}", path.display()), e))?;
        file.set_len(good_len)
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()))
            .map_err(|e| Error::io(format!("cannot repair journal {}", path.display()), e))?;
        Ok(UploadJournal {
            path,
            sent_earlier: state.sending.clone(),
            inner: Mutex::new((file, state)),
        })
    }

    fn append(&self, e: Event) -> Result<()> {
        let mut line =
            serde_json::to_vec(&e).map_err(|e| Error::Failed(format!("journal: {e}")))?;
        line.push(b'\n');
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| Error::Failed(format!("journal {} is poisoned", self.path.display())))?;
        let (file, state) = &mut *guard;
        file.write_all(&line)
            .and_then(|_| file.sync_data())
            .map_err(|err| {
                Error::io(format!("cannot write journal {}", self.path.display()), err)
            })?;
        state.apply(e);
        Ok(())
    }

    fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        match self.inner.lock() {
            Ok(g) => f(&g.1),
            Err(p) => f(&p.into_inner().1),
        }
    }

    /// What the journal says of `volume`: the default (nothing sent) when it
    /// says nothing.
    pub fn volume(&self, volume: &str) -> VolumeState {
        self.with_state(|s| s.volumes.get(volume).cloned().unwrap_or_default())
    }

    /// Whether the manifest is on the destination under `key`.
    pub fn manifest_done(&self, key: &str) -> bool {
        self.with_state(|s| s.manifest_key.as_deref() == Some(key))
    }

    /// Records a new multipart upload of `volume` to `key`, replacing any
    /// earlier one.
    pub fn started(
        &self,
        volume: &str,
        key: &str,
        upload: &UploadId,
        part_size: u64,
    ) -> Result<()> {
        self.append(Event::Started {
            volume: volume.into(),
            key: key.into(),
            upload: upload.clone(),
            part_size,
        })
    }

    /// Records a part of `volume`'s current upload that the server
    /// acknowledged.
    pub fn part(&self, volume: &str, receipt: &PartReceipt) -> Result<()> {
        self.append(Event::Part {
            volume: volume.into(),
            receipt: receipt.clone(),
        })
    }

    /// Records that `volume`'s upload is gone on the server: it starts again
    /// from nothing.
    pub fn restarted(&self, volume: &str) -> Result<()> {
        self.append(Event::Restarted {
            volume: volume.into(),
        })
    }

    /// Records that `volume` is complete on the destination under `key`.
    pub fn volume_done(&self, volume: &str, key: &str) -> Result<()> {
        self.append(Event::VolumeDone {
            volume: volume.into(),
            key: key.into(),
        })
    }

    /// Records that the manifest is stored under `key`: the backup is complete
    /// on the destination.
    pub fn set_manifest_done(&self, key: &str) -> Result<()> {
        self.append(Event::ManifestDone { key: key.into() })
    }

    /// Records that a create-only write of `key` is about to be sent.
    pub fn sending(&self, key: &str) -> Result<()> {
        self.append(Event::Sending { key: key.into() })
    }

    /// Records that the create-only write of `key` was refused: the key is
    /// another writer's.
    pub fn refused(&self, key: &str) -> Result<()> {
        self.append(Event::Refused { key: key.into() })
    }

    /// Whether an earlier run sent a create-only write of `key` and may
    /// not have heard its answer.
    pub fn sent_by_an_earlier_run(&self, key: &str) -> bool {
        self.sent_earlier.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(i: u32) -> PartReceipt {
        PartReceipt {
            index: i,
            offset: i as u64 * 10,
            size: 10,
            tag: format!("etag-{i}"),
        }
    }

    #[test]
    fn state_survives_reopening() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let j = UploadJournal::open(d.path(), "nas").expect("open");
            j.started("vol-0", "k/vol-0", &UploadId("u1".into()), 10)
                .expect("started");
            j.part("vol-0", &receipt(0)).expect("part");
            j.part("vol-0", &receipt(2)).expect("part");
            j.volume_done("vol-1", "k/vol-1").expect("done");
        }
        let j = UploadJournal::open(d.path(), "nas").expect("reopen");
        let v = j.volume("vol-0");
        let u = v.upload.expect("open upload");
        assert_eq!(u.upload, UploadId("u1".into()));
        assert_eq!(u.parts.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
        assert!(j.volume("vol-1").done_at("k/vol-1"));
        assert!(
            !j.volume("vol-1").done_at("other-prefix/vol-1"),
            "a changed prefix is not done"
        );
        assert!(!j.manifest_done("k/manifest.json"));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_off() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let j = UploadJournal::open(d.path(), "nas").expect("open");
            j.started("v", "k/v", &UploadId("u".into()), 10)
                .expect("started");
            j.part("v", &receipt(0)).expect("part");
        }
        let path = journal_path(d.path(), "nas");
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(b"{\"event\":\"part\",\"volume\":\"v\",\"rec")
            .expect("torn write");
        drop(f);
        let j = UploadJournal::open(d.path(), "nas").expect("reopen");
        assert_eq!(j.volume("v").upload.expect("upload").parts.len(), 1);
        j.part("v", &receipt(1)).expect("append after repair");
        let j = UploadJournal::open(d.path(), "nas").expect("reopen again");
        assert_eq!(j.volume("v").upload.expect("upload").parts.len(), 2);
    }

    #[test]
    fn restart_forgets_the_upload() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = UploadJournal::open(d.path(), "nas").expect("open");
        j.started("v", "k/v", &UploadId("u".into()), 10)
            .expect("started");
        j.part("v", &receipt(0)).expect("part");
        j.sending("k/v").expect("sending");
        assert!(
            !j.sent_by_an_earlier_run("k/v"),
            "sent by this run, whose answers it hears"
        );
        j.restarted("v").expect("restarted");
        assert!(j.volume("v").upload.is_none());
        let again = UploadJournal::open(d.path(), "nas").expect("reopen");
        assert!(
            again.sent_by_an_earlier_run("k/v"),
            "a restart does not forget it"
        );
        j.set_manifest_done("k/manifest.json").expect("manifest");
        assert!(j.manifest_done("k/manifest.json"));
        assert!(is_complete(d.path(), "nas"));
    }

    #[test]
    fn only_an_unanswered_write_is_ambiguous_to_a_later_run() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = UploadJournal::open(d.path(), "nas").expect("open");
        for key in ["k/refused", "k/done", "k/manifest.json", "k/lost"] {
            j.sending(key).expect("sending");
        }
        j.refused("k/refused").expect("refused");
        j.volume_done("v", "k/done").expect("done");
        j.set_manifest_done("k/manifest.json").expect("manifest");
        let later = UploadJournal::open(d.path(), "nas").expect("reopen");
        assert!(later.sent_by_an_earlier_run("k/lost"), "no answer heard");
        for key in ["k/refused", "k/done", "k/manifest.json"] {
            assert!(!later.sent_by_an_earlier_run(key), "{key} was answered");
        }
        // Sent again after a refusal and unanswered this time: ambiguous again.
        later.sending("k/refused").expect("sending again");
        let last = UploadJournal::open(d.path(), "nas").expect("reopen");
        assert!(last.sent_by_an_earlier_run("k/refused"));
    }
}
