//! `manifest.json`: the description of one backup, and its commit marker.
//!
//! A backup on a destination is complete exactly when its manifest is there;
//! the manifest is written last, after every volume. The format is versioned
//! (`format: 1`); a reader refuses a format it does not know rather than
//! guess. Every path it lists is checked by [`Manifest::validate`] before any
//! of it is trusted: a manifest comes from a remote store and may be damaged
//! or hostile.

use std::collections::HashSet;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const FORMAT: u32 = 1;
pub const MANIFEST_NAME: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incr,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incr => "incr",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The offsite version that wrote it.
    pub tool: String,
    pub job: String,
    pub id: String,
    pub kind: BackupKind,
    pub parent: Option<String>,
    /// RFC 3339, UTC. Ordering uses this, never the id.
    pub created_at: String,
    pub source: SourceInfo,
    pub compression: Compression,
    pub encryption: Option<serde_json::Value>,
    pub volumes: Vec<Volume>,
    pub files: Vec<FileEntry>,
    /// Paths deleted since the parent (incrementals).
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Files that changed while they were read.
    #[serde(default)]
    pub changed: Vec<String>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    pub kind: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    pub size: u64,
    /// The hash of the volume as stored: one of the two (see [`crate::digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

impl Volume {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// The nanoseconds of the modification time (for change detection).
    #[serde(default)]
    pub mtime_nsec: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The hash of the content (files only): one of the two (see [`crate::digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Symlink target (symlinks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Index of the volume where the entry starts.
    pub volume: u32,
    /// The backup that holds the bytes (this one, for a full backup).
    pub backup: String,
}

impl FileEntry {
    /// The recorded content hash (files only; `validate` checks it).
    pub fn digest(&self) -> Option<Digest> {
        Digest::from_fields(&self.sha256, &self.blake3)
    }

    pub fn set_digest(&mut self, digest: Option<Digest>) {
        (self.sha256, self.blake3) = Digest::into_fields(digest);
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub stored_bytes: u64,
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
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Failed(format!("{origin}: the manifest is not valid: {e}")))?;
        m.validate(origin)?;
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Refuses a manifest whose format is unknown or whose names could
    /// escape a restore folder.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Failed(format!(
                "{origin}: the manifest is not valid: {what}"
            )))
        };
        if self.format != FORMAT {
            return bad(format!(
                "format {} is not known to this offsite (it reads format {FORMAT}); use a newer offsite",
                self.format
            ));
        }
        if !safe_id(&self.id) || self.parent.as_deref().is_some_and(|p| !safe_id(p)) {
            return bad(format!(
                "unsafe backup id {:?} or parent {:?}",
                self.id, self.parent
            ));
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
            if !safe_relative_path(&f.path) {
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
            match f.kind {
                EntryKind::File if f.digest().is_none() => {
                    return bad(format!(
                        "file {:?} needs one hash (sha256 or blake3)",
                        f.path
                    ));
                }
                EntryKind::Symlink => match &f.target {
                    Some(t) if symlink_stays_inside(&f.path, t) => {}
                    _ => return bad(format!("symlink {:?} points outside the backup", f.path)),
                },
                _ => {}
            }
        }
        Ok(())
    }
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
            kind,
            parent: parent.map(str::to_string),
            created_at: "2026-11-22T02:15:00Z".into(),
            source: SourceInfo {
                kind: "dir".into(),
                description: "/d".into(),
            },
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
            volume,
            backup: backup.into(),
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
}
