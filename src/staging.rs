//! The local staging folder of each job (`staging/<job>/`): its staged
//! backups, the lock one run of the job holds, the copies of recent
//! manifests an incremental builds on, and the small JSON state files
//! (status, schedule) kept beside them.
//!
//! Guarantees:
//! - The staging folder never overlaps a source (neither inside the other):
//!   [`check_overlap`] refuses it before anything is written.
//! - One run per job at a time ([`JobLock`] on `staging/<job>/.lock`).
//! - State files are written by temp file, fsync and rename: a crash leaves
//!   the old one or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::config::{Config, Job, Source};
use crate::error::{Error, Result};
use crate::format::manifest::{MANIFEST_NAME, Manifest};
use offsite_backends::units::human_bytes;

/// A backup being built: `staging/<job>/.work-<id>/`, never uploaded.
pub(crate) const WORK_PREFIX: &str = ".work-";
const LOCK_NAME: &str = ".lock";
const LAST_ID_NAME: &str = ".last-id";
const MANIFESTS_DIR: &str = ".manifests";
const LOCAL_MANIFESTS_KEPT: usize = 20;
/// The ending of a local block map's name (`<id>.blocks`).
const BLOCK_MAP_SUFFIX: &str = ".blocks";

/// Where a job's staged backups live.
#[derive(Debug, Clone)]
pub struct JobStaging {
    /// The job's folder, `<staging dir>/<job>/`.
    pub job_dir: PathBuf,
}

impl JobStaging {
    /// The staging of job `job`, in the configuration's staging folder.
    pub fn new(config: &Config, job: &str) -> JobStaging {
        JobStaging {
            job_dir: config.staging.dir.join(job),
        }
    }

    /// The folder of staged backup `id`, `<staging dir>/<job>/<id>/`.
    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.job_dir.join(id)
    }

    /// Complete staged backups (with a manifest), oldest first.
    pub fn staged_backups(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.job_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot list staging {}", self.job_dir.display()),
                    e,
                ));
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| Error::io(format!("cannot list {}", self.job_dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().join(MANIFEST_NAME).is_file() {
                ids.push(name);
            }
        }
        // Ids start with their UTC creation time, so name order is time order here;
        // remote ordering uses the manifests' created_at instead.
        ids.sort();
        Ok(ids)
    }

    /// Reads and validates the manifest of staged backup `id`.
    pub fn read_manifest(&self, id: &str) -> Result<Manifest> {
        let path = self.backup_dir(id).join(MANIFEST_NAME);
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        Manifest::from_json(&bytes, &path.display().to_string())
    }

    fn manifests_dir(&self) -> PathBuf {
        self.job_dir.join(MANIFESTS_DIR)
    }

    /// The newest backup staged here (its manifest), the parent of the next incremental.
    pub fn latest_local_manifest(&self) -> Result<Option<Manifest>> {
        let dir = self.manifests_dir();
        let mut names: Vec<String> = match fs::read_dir(&dir) {
            Ok(e) => e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
        };
        names.sort();
        let Some(last) = names.last() else {
            return Ok(None);
        };
        let path = dir.join(last);
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        Manifest::from_json(&bytes, &path.display().to_string()).map(Some)
    }

    /// Where the block fingerprints of backup `id` are kept, beside its
    /// local manifest (see [`crate::backup::blockmap`]).
    pub(crate) fn block_map_path(&self, id: &str) -> PathBuf {
        self.manifests_dir().join(format!("{id}{BLOCK_MAP_SUFFIX}"))
    }

    /// Where staging writes backup `id`'s fingerprints until the backup is
    /// kept ([`Self::keep_local_manifest`] moves them into place).
    pub(crate) fn block_map_part(&self, id: &str) -> Result<PathBuf> {
        let dir = self.manifests_dir();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(dir.join(format!(".{id}{BLOCK_MAP_SUFFIX}.part")))
    }

    /// Keeps a copy of `m` for later incrementals, with its block
    /// fingerprints when staging wrote them, and only the newest few (and
    /// no fingerprints a dead run left).
    pub(crate) fn keep_local_manifest(&self, m: &Manifest) -> Result<()> {
        let dir = self.manifests_dir();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let part = dir.join(format!(".{}{BLOCK_MAP_SUFFIX}.part", m.id));
        if part.exists() {
            let map = self.block_map_path(&m.id);
            fs::rename(&part, &map)
                .map_err(|e| Error::io(format!("cannot rename {}", part.display()), e))?;
        }
        write_file_atomic(&dir, &format!("{}.json", m.id), &m.to_json())?;
        let names: Vec<String> = fs::read_dir(&dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut kept: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .filter(|n| !n.starts_with('.'))
            .collect();
        kept.sort();
        let extra = kept.len().saturating_sub(LOCAL_MANIFESTS_KEPT);
        let kept: std::collections::HashSet<&str> = kept[extra..].iter().copied().collect();
        for name in &names {
            let id = name
                .strip_suffix(".json")
                .or_else(|| name.strip_suffix(BLOCK_MAP_SUFFIX))
                .filter(|id| !id.starts_with('.'));
            if id.is_none_or(|id| !kept.contains(id)) {
                let _ = fs::remove_file(dir.join(name));
            }
        }
        Ok(())
    }

    /// The id of the job's last backup started here, if any.
    pub(crate) fn last_id(&self) -> Option<String> {
        fs::read_to_string(self.job_dir.join(LAST_ID_NAME))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub(crate) fn set_last_id(&self, id: &str) -> Result<()> {
        write_file_atomic(&self.job_dir, LAST_ID_NAME, id.as_bytes())
    }

    /// Removes a staged backup. It is first renamed out of sight (atomically),
    /// so a kill halfway through the removal never leaves a manifest whose
    /// volumes are partly gone, which `upload` would retry forever; the next
    /// staging run removes what is left.
    pub fn discard(&self, id: &str) -> Result<()> {
        let dir = self.backup_dir(id);
        let doomed = self.job_dir.join(format!("{WORK_PREFIX}discarded-{id}"));
        fs::rename(&dir, &doomed)
            .map_err(|e| Error::io(format!("cannot remove staged {}", dir.display()), e))?;
        sync_dir(&self.job_dir)?;
        fs::remove_dir_all(&doomed)
            .map_err(|e| Error::io(format!("cannot remove {}", doomed.display()), e))
    }

    /// Removes leftovers of staging runs that died, and of discards that did
    /// not finish (`.work-*` folders).
    pub(crate) fn remove_dead_work(&self) -> Result<()> {
        let Ok(entries) = fs::read_dir(&self.job_dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
                let p = entry.path();
                fs::remove_dir_all(&p)
                    .map_err(|e| Error::io(format!("cannot remove {}", p.display()), e))?;
            }
        }
        Ok(())
    }
}

/// Held for as long as a job runs; a second run of the same job is refused.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Takes the lock of `job`, creating its folder; fails at once when another
    /// run holds it.
    pub fn acquire(staging: &JobStaging, job: &str) -> Result<JobLock> {
        fs::create_dir_all(&staging.job_dir).map_err(|e| {
            Error::io(
                format!("cannot create staging folder {}", staging.job_dir.display()),
                e,
            )
        })?;
        let path = staging.job_dir.join(LOCK_NAME);
        let file = lock_with_pid(&path, |holder| {
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" by pid {holder}")
            };
            Error::Failed(format!(
                "job {job:?} is already running ({} is held{who}); wait for that run to finish",
                path.display()
            ))
        })?;
        Ok(JobLock { _file: file })
    }
}

/// Takes an exclusive lock on `path` (created if missing) and writes our pid
/// into it; when another process holds it, `held` builds the error from the
/// pid that process wrote. The lock goes with the returned file.
pub(crate) fn lock_with_pid(path: &Path, held: impl FnOnce(&str) -> Error) -> Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open lock {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(held(holder.trim()));
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(Error::io(format!("cannot lock {}", path.display()), e));
        }
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(file)
}

/// Reads JSON state `name` from `dir`, or `T::default()` when the file does
/// not exist; a damaged file is an error that says to delete it, and what
/// deleting it costs (`lost`).
pub(crate) fn read_json_state<T: serde::de::DeserializeOwned + Default>(
    dir: &Path,
    name: &str,
    lost: &str,
) -> Result<T> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::Failed(format!(
                "{}: not valid ({e}); delete it ({lost})",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Writes `value` as pretty JSON to `dir/name`, atomically (see [`write_file_atomic`]).
pub(crate) fn write_json_state<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| Error::Failed(format!("{name}: {e}")))?;
    bytes.push(b'\n');
    write_file_atomic(dir, name, &bytes)
}

/// `path` made absolute and free of symlinks, even if its tail does not exist yet.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(n), Some(p)) => {
                rest.push(n);
                existing = p.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = fs::canonicalize(&existing).unwrap_or(existing);
    for n in rest.into_iter().rev() {
        out.push(n);
    }
    out
}

/// Refuses a staging folder that overlaps the job's source, naming both.
pub fn check_overlap(config: &Config, job: &Job) -> Result<()> {
    let Source::Dir { path, .. } = &job.source else {
        return Ok(());
    };
    let staging = resolve_existing(&config.staging.dir);
    let source = resolve_existing(path);
    let problem = if staging == source {
        Some("is the same folder as")
    } else if staging.starts_with(&source) {
        Some("is inside")
    } else if source.starts_with(&staging) {
        Some("contains")
    } else {
        None
    };
    match problem {
        Some(how) => Err(Error::Config(format!(
            "{}: the staging folder {} {how} the source of job {:?} ({}); move [staging] dir outside the database's files",
            config.file.display(),
            staging.display(),
            job.name,
            source.display()
        ))),
        None => Ok(()),
    }
}

/// Free bytes available to us on the filesystem holding `path`.
pub fn available_space(path: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Failed(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: statvfs only writes into the zeroed struct we pass; `c` outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            format!("cannot read free space of {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

pub(crate) fn check_free_space(dir: &Path, needed: u64, min_free: u64) -> Result<()> {
    let free = available_space(dir)?;
    let want = needed.saturating_add(min_free);
    if free < want {
        return Err(Error::Failed(format!(
            "staging {}: {} free, but this backup may need {} plus the {} kept free (staging.min_free); free some space or move [staging] dir",
            dir.display(),
            human_bytes(free),
            human_bytes(needed),
            human_bytes(min_free)
        )));
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync folder {}", dir.display()), e))
}

/// Writes `name` in `dir` by temp file, fsync and rename.
pub(crate) fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f =
        private_file(&tmp).map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    fs::rename(&tmp, &path)
        .map_err(|e| Error::io(format!("cannot rename {}", tmp.display()), e))?;
    sync_dir(dir)
}

/// Creates (or truncates) `path` readable and writable by its owner only:
/// what staging writes holds the database's data.
pub(crate) fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
