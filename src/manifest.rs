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
    pub sha256: String,
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
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// SHA-256 of the content (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target (symlinks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Index of the volume where the entry starts.
    pub volume: u32,
    /// The backup that holds the bytes (this one, for a full backup).
    pub backup: String,
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
        let mut names = HashSet::new();
        for v in &self.volumes {
            if !safe_relative_path(&v.name) || v.name.contains('/') || v.name == MANIFEST_NAME {
                return bad(format!("volume name {:?}", v.name));
            }
            if !names.insert(&v.name) {
                return bad(format!("volume {:?} is listed twice", v.name));
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
            if f.volume as usize >= self.volumes.len().max(1) {
                return bad(format!(
                    "{:?} names volume {} of {}",
                    f.path,
                    f.volume,
                    self.volumes.len()
                ));
            }
            match f.kind {
                EntryKind::File if f.sha256.is_none() => {
                    return bad(format!("file {:?} has no hash", f.path));
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
