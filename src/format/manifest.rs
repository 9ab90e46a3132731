//! `manifest.json`: the description of one backup, and its commit marker.
//!
//! A backup on a destination is complete exactly when its manifest is there;
//! the manifest is written last, after every volume. The format is versioned
//! and a reader refuses a format it does not know rather than guess:
//! - format 1: names as plain UTF-8;
//! - format 2: names in the encoding of [`crate::format::names`] (any
//!   byte a file name may hold), the writing host, the backup's root folder,
//!   hard links, sparse files, and the source check's verdict;
//! - format 3: format 2 with files stored as their changed blocks (`delta`,
//!   see [`crate::format::blocks`]). Written only by an incremental that holds
//!   such a file, so every other backup stays readable by versions that know
//!   format 2.
//!
//! Format-1 manifests are read into the same structure, their names brought
//! into the format-2 encoding. Every path it lists is checked by
//! [`Manifest::validate`] before any of it is trusted: a manifest comes from
//! a remote store and may be damaged or hostile.

use std::collections::HashSet;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::blocks::Delta;
use crate::format::digest::Digest;

/// The format this version writes, unless a file is stored as its changed
/// blocks ([`FORMAT_DELTA`]).
pub const FORMAT: u32 = 2;
/// The format of a manifest that has a file stored as its changed blocks;
/// the newest this version reads.
pub const FORMAT_DELTA: u32 = 3;
/// The oldest format this version reads.
pub const OLDEST_FORMAT: u32 = 1;
/// The manifest's file name, in a staged backup's folder and beside the volumes
/// on a destination.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Whether a backup holds every file or builds on a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Every file's bytes are in this backup's own volumes.
    Full,
    /// An incremental: only new and changed files are packed, the unchanged
    /// ones point into the parent's chain.
    Incr,
}

impl BackupKind {
    /// The kind as backup ids and the manifest write it (`full`, `incr`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incr => "incr",
        }
    }
}

/// The description of one backup, as `manifest.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The format it is written in, from [`OLDEST_FORMAT`] to [`FORMAT`] (a
    /// format-1 manifest is read as format 2).
    pub format: u32,
    /// The offsite version that wrote it.
    pub tool: String,
    /// The name of the job that made the backup.
    pub job: String,
    /// The backup's id (`20261201T021500Z-full-db1`: UTC start time, kind,
    /// host; ids made before ids carried their host end at the kind).
    pub id: String,
    /// The host that wrote the backup (its `host_id`); absent in backups
    /// written before origins were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The cluster set the backup is its host's part of (`host` is the
    /// member); absent for a single-host job's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Full, or incremental on `parent`.
    pub kind: BackupKind,
    /// The id of the backup an incremental builds on; None for a full backup.
    pub parent: Option<String>,
    /// RFC 3339, UTC. Ordering uses this, never the id.
    pub created_at: String,
    /// What was backed up.
    pub source: SourceInfo,
    /// The backup's root folder (a `dir` source's folder): its mode, owner
    /// and time are given to the folder a restore writes into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootMeta>,
    /// How the volumes are compressed.
    pub compression: Compression,
    /// None in clear; in an encrypted backup, the sealed part (scheme, mode and
    /// the encrypted file list, see [`crate::format::crypt`]).
    pub encryption: Option<serde_json::Value>,
    /// The volumes this backup wrote, in order.
    pub volumes: Vec<Volume>,
    /// Every entry of the backup's file state, an incremental's unchanged files
    /// included; empty in a sealed manifest, whose list is in the encrypted
    /// payload.
    pub files: Vec<FileEntry>,
    /// Paths deleted since the parent (incrementals).
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Files that changed while they were read.
    #[serde(default)]
    pub changed: Vec<String>,
    /// What staging packed, and how long it took.
    pub stats: Stats,
    /// Set when the source check found the source degenerate (empty, or
    /// shrunk past the job's `shrink_limit`) and the job allowed it anyway:
    /// what it saw. Retention never deletes the newest backup without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degenerate: Option<String>,
    /// Read from format 1: the names of an encrypted file list, still
    /// sealed, are in the old form (see [`crate::format::crypt::open_manifest`]).
    #[serde(skip)]
    pub legacy_names: bool,
}

/// The mode, owner and modification time of the backup's root folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootMeta {
    /// Permission bits, setuid, setgid and sticky included (`mode & 0o7777`).
    pub mode: u32,
    /// The numeric owner.
    pub uid: u32,
    /// The numeric group.
    pub gid: u32,
    /// The modification time, in seconds since the Unix epoch.
    pub mtime: i64,
    /// The nanoseconds of the modification time.
    #[serde(default)]
    pub mtime_nsec: u32,
}

/// Where a backup's files came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// `dir` or `command`.
    pub kind: String,
    /// The folder's path or the command line; `(encrypted)` in a sealed
    /// manifest.
    pub description: String,
}

/// How a backup's volumes are compressed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// The compressor: `zstd` in everything this version writes.
    pub algorithm: String,
    /// The zstd level, from the job's `compression_level`.
    pub level: i32,
}

/// One volume of a backup: a piece of its compressed tar stream, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The file name, `vol-000000.tar.zst`, with `.age` added when encrypted.
    pub name: String,
    /// The size in bytes as stored (compressed, and encrypted when it is).
    pub size: u64,
    /// The hash of the volume as stored: one of the two (see [`crate::format::digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The other of the two: the BLAKE3 hash, what this version writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

impl Volume {
    /// A volume record of `size` bytes whose hash goes in the field of
    /// `digest`'s algorithm.
    pub fn new(name: String, size: u64, digest: Digest) -> Volume {
        let (sha256, blake3) = Digest::into_fields(Some(digest));
        Volume {
            name,
            size,
            sha256,
            blake3,
        }
    }

    /// The recorded hash (`validate` makes sure there is exactly one).
    pub fn digest(&self) -> Option<Digest> {
        Digest::from_fields(&self.sha256, &self.blake3)
    }
}

/// What an entry of a backup's file list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file, its bytes in a volume.
    File,
    /// A folder.
    Dir,
    /// A symbolic link; `target` says where it points.
    Symlink,
    /// A second name of a file already in the backup (`target` names it):
    /// stored once, restored as a hard link.
    Hardlink,
}

/// One entry of a backup's file list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative, `/`-separated, in the encoding of [`crate::format::names`].
    pub path: String,
    /// File, folder, symlink or hard link.
    pub kind: EntryKind,
    /// The file's size in bytes; 0 for folders, symlinks and hard links.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// The nanoseconds of the modification time (change detection, and
    /// restored).
    #[serde(default)]
    pub mtime_nsec: u32,
    /// Permission bits, setuid, setgid and sticky included (`mode & 0o7777`).
    pub mode: u32,
    /// The numeric owner.
    pub uid: u32,
    /// The numeric group.
    pub gid: u32,
    /// The hash of the content (files only): one of the two (see [`crate::format::digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The other of the two: the BLAKE3 hash, what this version writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// A symlink's target, or the path a hard link shares its file with
    /// (encoded as paths are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The file had holes (fewer blocks allocated than its size): a restore
    /// leaves its zero blocks unwritten.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Index of the volume where the entry starts.
    pub volume: u32,
    /// The backup that holds the bytes (this one, for a full backup).
    pub backup: String,
    /// Set when `backup` holds only the blocks that changed since the
    /// version in `delta.base` (format 3): the archive entry is those blocks,
    /// and `size` and the hash are the whole file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

impl FileEntry {
    /// The recorded content hash (files only; `validate` checks it).
    pub fn digest(&self) -> Option<Digest> {
        Digest::from_fields(&self.sha256, &self.blake3)
    }

    /// The bytes its archive entry holds: the file's size, or the size of
    /// its changed blocks when it is stored as a patch.
    pub fn stored_size(&self) -> u64 {
        match &self.delta {
            Some(d) => d.stored_bytes(self.size),
            None => self.size,
        }
    }

    /// The hash of its archive entry's bytes: the file's, or its changed
    /// blocks' when it is stored as a patch.
    pub fn stored_digest(&self) -> Option<Digest> {
        match &self.delta {
            Some(d) => Some(d.digest()),
            None => self.digest(),
        }
    }

    /// Records `digest` in its field and clears the other (None clears both).
    pub fn set_digest(&mut self, digest: Option<Digest>) {
        (self.sha256, self.blake3) = Digest::into_fields(digest);
    }
}

/// What staging packed into a backup, and how long it took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// The files packed into this backup's volumes (not an incremental's
    /// unchanged files).
    pub files: u64,
    /// Their bytes, before compression (of a file stored as its changed
    /// blocks, those blocks).
    pub bytes: u64,
    /// The volumes' total size as stored, in bytes.
    pub stored_bytes: u64,
    /// How long staging took, hooks included, in seconds.
    pub seconds: f64,
}

/// Checks a relative archive path: no root, no `..`, no `.`, no empty parts.
pub fn safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Whether a symlink at `link` pointing to `target` stays inside the tree.
pub fn symlink_stays_inside(link: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// A backup id is one key component: no `/`, not empty, not `.` or `..`.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && !id.contains('/')
        && !id.contains('\\')
        && !id.contains('\0')
}

impl Manifest {
    /// Reads and validates a manifest (a format-1 one brought into format 2);
    /// `origin` names where it came from in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Manifest> {
        let mut m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Integrity(format!("{origin}: the manifest is not valid: {e}")))?;
        if m.format == OLDEST_FORMAT {
            m.upgrade_names();
            // Its names are now in this format's encoding: written out again,
            // it must not be upgraded twice (`50%25` into `50%2525`). The
            // sealed file list, opened later, still is (`legacy_names`).
            m.format = FORMAT;
            m.legacy_names = true;
        }
        m.validate(origin)?;
        Ok(m)
    }

    /// Brings the names of a format-1 manifest (plain UTF-8) into the
    /// encoding of [`crate::format::names`]; see [`crate::format::crypt::open_manifest`] for
    /// a sealed file list.
    pub fn upgrade_names(&mut self) {
        let up = crate::format::names::legacy_to_encoded;
        for f in &mut self.files {
            f.path = up(&f.path);
            if let Some(t) = &f.target {
                f.target = Some(up(t));
            }
        }
        for p in self.deleted.iter_mut().chain(self.changed.iter_mut()) {
            *p = up(p);
        }
    }

    /// The manifest as pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The bytes of every file in the backup's file state (not only those
    /// this backup packed: an incremental lists the whole state).
    pub fn state_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.kind == EntryKind::File)
            .map(|f| f.size)
            .sum()
    }

    /// Refuses a manifest whose format is unknown or whose names could
    /// escape a restore folder.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Integrity(format!(
                "{origin}: the manifest is not valid: {what}"
            )))
        };
        if !(OLDEST_FORMAT..=FORMAT_DELTA).contains(&self.format) {
            return bad(format!(
                "format {} is not known to this offsite (it reads formats {OLDEST_FORMAT} to {FORMAT_DELTA}); use a newer offsite",
                self.format
            ));
        }
        if !safe_id(&self.id) || self.parent.as_deref().is_some_and(|p| !safe_id(p)) {
            return bad(format!(
                "unsafe backup id {:?} or parent {:?}",
                self.id, self.parent
            ));
        }
        if self.host.as_deref().is_some_and(|h| !valid_host_id(h)) {
            return bad(format!("host {:?} is not a valid host id", self.host));
        }
        if (self.kind == BackupKind::Incr) != self.parent.is_some() {
            return bad("an incremental has a parent and a full has none".into());
        }
        let mut names = HashSet::new();
        for v in &self.volumes {
            if !safe_relative_path(&v.name) || v.name.contains('/') || v.name == MANIFEST_NAME {
                return bad(format!("volume name {:?}", v.name));
            }
            if !names.insert(&v.name) {
                return bad(format!("volume {:?} is listed twice", v.name));
            }
            if v.digest().is_none() {
                return bad(format!(
                    "volume {:?} needs one hash (sha256 or blake3)",
                    v.name
                ));
            }
        }
        let mut paths = HashSet::new();
        for f in &self.files {
            if !safe_relative_path(&f.path) || !crate::format::names::is_canonical(&f.path) {
                return bad(format!("unsafe path {:?}", f.path));
            }
            if !paths.insert(&f.path) {
                return bad(format!("path {:?} is listed twice", f.path));
            }
            if !safe_id(&f.backup) {
                return bad(format!(
                    "{:?} names an unsafe backup id {:?}",
                    f.path, f.backup
                ));
            }
            if f.backup != self.id {
                // Bytes held by an earlier backup of the chain: only unchanged files of an incremental.
                if self.kind != BackupKind::Incr || f.kind != EntryKind::File {
                    return bad(format!(
                        "{:?} points at backup {:?}, which only an incremental's files may",
                        f.path, f.backup
                    ));
                }
            } else if f.volume as usize >= self.volumes.len().max(1) {
                return bad(format!(
                    "{:?} names volume {} of {}",
                    f.path,
                    f.volume,
                    self.volumes.len()
                ));
            }
            if f.delta.is_some() && f.kind != EntryKind::File {
                return bad(format!("{:?} has blocks but is not a file", f.path));
            }
            match f.kind {
                EntryKind::File if f.digest().is_none() => {
                    return bad(format!(
                        "file {:?} needs one hash (sha256 or blake3)",
                        f.path
                    ));
                }
                EntryKind::File if f.delta.is_some() => {
                    if let Some(problem) = self.delta_problem(f) {
                        return bad(format!("{:?}: {problem}", f.path));
                    }
                }
                EntryKind::Symlink => match &f.target {
                    Some(t)
                        if symlink_stays_inside(&f.path, t)
                            && crate::format::names::is_canonical(t) => {}
                    _ => return bad(format!("symlink {:?} points outside the backup", f.path)),
                },
                _ => {}
            }
        }
        // A hard link shares the bytes of a file listed in the same manifest.
        let kinds: std::collections::HashMap<&str, EntryKind> = self
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.kind))
            .collect();
        for f in self.files.iter().filter(|f| f.kind == EntryKind::Hardlink) {
            match f.target.as_deref() {
                Some(t) if kinds.get(t) == Some(&EntryKind::File) => {}
                _ => {
                    return bad(format!(
                        "hard link {:?} does not name a file of the backup",
                        f.path
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// What is wrong with a file stored as its changed blocks, if anything:
    /// only a format-3 incremental holds such files, each patching a version
    /// in an earlier backup, with runs that fit the file.
    fn delta_problem(&self, f: &FileEntry) -> Option<String> {
        let d = f.delta.as_ref()?;
        if self.format < FORMAT_DELTA || self.kind != BackupKind::Incr {
            return Some("only a format-3 incremental stores changed blocks".into());
        }
        if !safe_id(&d.base) || d.base == f.backup {
            return Some(format!("its blocks patch an unsafe base {:?}", d.base));
        }
        d.problem(f.size)
    }
}

/// The host a backup id names (`20261201T021500Z-full-db1` → `db1`); none
/// for ids made before ids carried their host.
pub fn host_of_id(id: &str) -> Option<&str> {
    let rest = id.get(17..)?;
    let (_kind, host) = rest.split_once('-')?;
    Some(host).filter(|h| !h.is_empty())
}

/// A host id: what the manifest, the status and backup ids call the host
/// that wrote a backup. 1 to 64 of letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit.
pub fn valid_host_id(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.as_bytes()[0].is_ascii_alphanumeric()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_recognised() {
        for p in ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a", "a/."] {
            assert!(!safe_relative_path(p), "{p:?}");
        }
        for p in ["a", "a/b c/ü.chk", "chunk-000000.000000", "..hidden"] {
            assert!(safe_relative_path(p), "{p:?}");
        }
    }

    #[test]
    fn ids_name_their_host_when_they_have_one() {
        assert_eq!(host_of_id("20261201T021500Z-full-db1"), Some("db1"));
        assert_eq!(
            host_of_id("20261201T021500Z-incr-db-2.example"),
            Some("db-2.example")
        );
        assert_eq!(host_of_id("20261201T021500Z-full"), None);
        assert_eq!(host_of_id("x"), None);
    }

    #[test]
    fn symlinks_must_stay_inside() {
        assert!(symlink_stays_inside("a/link", "../b"));
        assert!(symlink_stays_inside("link", "b/c"));
        assert!(!symlink_stays_inside("link", "../outside"));
        assert!(!symlink_stays_inside("a/link", "../../x"));
        assert!(!symlink_stays_inside("a/link", "/etc"));
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;

    fn manifest(kind: BackupKind, parent: Option<&str>, files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT,
            tool: "offsite test".into(),
            job: "db".into(),
            id: "20261122T021500Z-incr".into(),
            host: None,
            set: None,
            kind,
            parent: parent.map(str::to_string),
            created_at: "2026-11-22T02:15:00Z".into(),
            source: SourceInfo {
                kind: "dir".into(),
                description: "/d".into(),
            },
            root: None,
            compression: Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            volumes: vec![Volume {
                name: "vol-000000.tar.zst".into(),
                size: 1,
                sha256: Some("00".into()),
                blake3: None,
            }],
            files,
            deleted: Vec::new(),
            changed: Vec::new(),
            stats: Stats::default(),
            degenerate: None,
            legacy_names: false,
        }
    }

    fn file(path: &str, backup: &str, volume: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: EntryKind::File,
            size: 1,
            mtime: 0,
            mtime_nsec: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            sha256: Some("00".into()),
            blake3: None,
            target: None,
            sparse: false,
            volume,
            backup: backup.into(),
            delta: None,
        }
    }

    #[test]
    fn an_incremental_may_point_at_its_chain_and_a_full_may_not() {
        let own = "20261122T021500Z-incr";
        let ok = manifest(
            BackupKind::Incr,
            Some("20261121T021500Z-full"),
            vec![file("a", own, 0), file("b", "20261121T021500Z-full", 7)],
        );
        assert!(ok.validate("t").is_ok());
        let full = manifest(
            BackupKind::Full,
            None,
            vec![file("b", "20261121T021500Z-full", 0)],
        );
        assert!(full.validate("t").is_err(), "a full holds all its bytes");
        let escape = manifest(BackupKind::Incr, Some("p"), vec![file("b", "../../etc", 0)]);
        assert!(
            escape.validate("t").is_err(),
            "a backup id is one key component"
        );
        let orphan = manifest(BackupKind::Incr, None, vec![file("a", own, 0)]);
        assert!(
            orphan.validate("t").is_err(),
            "an incremental names its parent"
        );
        let bad_volume = manifest(BackupKind::Incr, Some("p"), vec![file("a", own, 3)]);
        assert!(
            bad_volume.validate("t").is_err(),
            "own files name one of its volumes"
        );
    }

    #[test]
    fn changed_blocks_belong_to_a_format_3_incremental_and_fit_the_file() {
        let id = "20261122T021500Z-incr";
        let delta = |base: &str, blocks: Vec<[u64; 2]>| crate::format::blocks::Delta {
            block_size: 8192,
            base: base.into(),
            blocks,
            blake3: "ab".repeat(32),
        };
        let with = |d: crate::format::blocks::Delta, size: u64| {
            let mut f = file("t", id, 0);
            f.size = size;
            f.delta = Some(d);
            f
        };
        let good = with(delta("p", vec![[0, 2], [5, 1]]), 6 * 8192);
        let mut m = manifest(BackupKind::Incr, Some("p"), vec![good.clone()]);
        m.format = FORMAT_DELTA;
        assert!(m.validate("t").is_ok());
        let cases = [
            ("format 2", FORMAT, BackupKind::Incr, good.clone()),
            ("a full", FORMAT_DELTA, BackupKind::Full, good.clone()),
            (
                "its own base",
                FORMAT_DELTA,
                BackupKind::Incr,
                with(delta(id, vec![[0, 1]]), 8192 * 6),
            ),
            (
                "unsafe base",
                FORMAT_DELTA,
                BackupKind::Incr,
                with(delta("../x", vec![[0, 1]]), 8192 * 6),
            ),
            (
                "past the end",
                FORMAT_DELTA,
                BackupKind::Incr,
                with(delta("p", vec![[5, 2]]), 8192 * 6),
            ),
            (
                "unordered",
                FORMAT_DELTA,
                BackupKind::Incr,
                with(delta("p", vec![[3, 1], [1, 1]]), 8192 * 6),
            ),
            (
                "a folder",
                FORMAT_DELTA,
                BackupKind::Incr,
                FileEntry {
                    kind: EntryKind::Dir,
                    ..good.clone()
                },
            ),
        ];
        for (what, format, kind, f) in cases {
            let parent = (kind == BackupKind::Incr).then_some("p");
            let mut m = manifest(kind, parent, vec![f]);
            m.format = format;
            assert!(m.validate("t").is_err(), "{what}");
        }
        // A format this version does not know is refused by name.
        m.format = FORMAT_DELTA + 1;
        let e = m.validate("t").unwrap_err().to_string();
        assert!(e.contains("use a newer offsite"), "{e}");
    }

    #[test]
    fn a_hard_link_names_a_file_of_the_same_backup() {
        let own = "20261122T021500Z-incr";
        let mut link = file("b", own, 0);
        link.kind = EntryKind::Hardlink;
        link.set_digest(None);
        link.target = Some("a".into());
        let ok = manifest(
            BackupKind::Incr,
            Some("p"),
            vec![file("a", own, 0), link.clone()],
        );
        assert!(ok.validate("t").is_ok(), "{:?}", ok.validate("t").err());
        link.target = Some("missing".into());
        let dangling = manifest(BackupKind::Incr, Some("p"), vec![file("a", own, 0), link]);
        assert!(dangling.validate("t").is_err());
    }

    #[test]
    fn names_must_be_in_their_one_encoded_form() {
        let own = "20261122T021500Z-incr";
        for (path, ok) in [
            ("caf%E9", true),
            ("100%25", true),
            ("%41", false),
            ("50%", false),
        ] {
            let m = manifest(BackupKind::Incr, Some("p"), vec![file(path, own, 0)]);
            assert_eq!(m.validate("t").is_ok(), ok, "{path}");
        }
    }

    #[test]
    fn a_format_1_manifest_is_read_with_its_names_encoded() {
        let own = "20261122T021500Z-incr";
        let mut m = manifest(BackupKind::Incr, Some("p"), vec![file("50% off", own, 0)]);
        m.format = 1;
        m.deleted = vec!["gone%".into()];
        let back = Manifest::from_json(&m.to_json(), "t").expect("format 1 reads");
        assert_eq!(back.files[0].path, "50%25 off");
        assert_eq!(back.deleted, vec!["gone%25".to_string()]);
        assert!(back.legacy_names);
        let again = Manifest::from_json(&back.to_json(), "t").expect("written out and read again");
        assert_eq!(again.files[0].path, "50%25 off", "not upgraded twice");
        m.format = 3;
        assert!(
            Manifest::from_json(&m.to_json(), "t").is_err(),
            "an unknown format is refused"
        );
    }
}
