//! Staging: write one backup into `staging/<job>/<id>/` as zstd-compressed tar
//! volumes plus `manifest.json`.
//!
//! Guarantees:
//! - The staging folder never overlaps a source (neither inside the other):
//!   refused before anything is written.
//! - One run per job at a time: the caller holds the job's lock
//!   ([`crate::staging::JobLock`], on `staging/<job>/.lock`).
//! - Free space is checked against the source's size before packing.
//! - A backup is built in `staging/<job>/.work-<id>/`, every file fsync'd, and
//!   renamed to `staging/<job>/<id>/` only when complete, manifest last. A
//!   failed or killed staging leaves only a `.work-*` folder, which is removed
//!   by the next run of the job and is never uploaded.
//! - The volumes, concatenated in name order, are one zstd-compressed tar
//!   stream: `cat vol-* | zstd -dc | tar -x` restores without offsite.
//!   Volumes are cut between files where the next file fits, and inside a
//!   file only when it would overflow the volume.
//! - `pre` hooks run before the copy; `post` hooks run after every attempt,
//!   with or without `pre` hooks, whatever failed.

use jiff::Timestamp;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::format::blocks::{Delta, Fingerprint};
use crate::format::digest::{Algorithm, Hasher};

use crate::backup::blockmap::{BlockMap, BlockMapWriter};
use crate::backup::compress::ZstdWriter;
use crate::backup::delta::{self, BlockMaps, HashingReader, READ_BUF};
use crate::backup::source::{self, CommandEnv, PlannedEntry};
use crate::backup::source::{CommandStderr, RunAs, Shell};
use crate::config::OnUnreadable;
use crate::config::{Config, Job, OnChange, Source};
use crate::error::{Error, Result};
use crate::format::crypt::{self, Key};
use crate::format::manifest::{
    self, BackupKind, Compression, EntryKind, FileEntry, MANIFEST_NAME, Manifest, RootMeta,
    SourceInfo, Stats, Volume,
};
use crate::progress::Progress;
use crate::staging::{
    JobStaging, WORK_PREFIX, check_free_space, check_overlap, private_file, sync_dir,
    write_file_atomic,
};
use crate::stop::Stop;
use offsite_backends::units::human_bytes;

/// A backup's id: its UTC start time to the second, its kind, and the host
/// that made it (`20261201T021500Z-full-db1`), so two hosts running the same
/// job in the same second never share a key.
fn new_backup_id(kind: BackupKind, now: Timestamp, host: &str) -> String {
    format!(
        "{}-{}-{host}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        kind.as_str()
    )
}

/// `t` in RFC 3339, UTC, to the second: `2026-11-22T02:15:00Z`.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A backup written into staging.
#[derive(Debug, Clone)]
pub struct StagedBackup {
    /// The backup's id.
    pub id: String,
    /// Its folder in staging, `staging/<job>/<id>/`.
    pub dir: PathBuf,
    /// The manifest as written in `dir` and shipped: sealed when the job
    /// encrypts.
    pub manifest: Manifest,
    /// Files that changed while read (also in the manifest).
    pub changed: Vec<String>,
    /// Entries not backed up (special files, symlinks leaving the source), with why.
    pub skipped: Vec<String>,
    /// Entries that could not be read and were left out (`on_unreadable = "skip"`).
    pub unreadable: Vec<String>,
    /// What hooks and the source command printed on stderr (the end of it).
    pub stderr: Vec<CommandStderr>,
    /// Messages for the operator (a staged backup replaced, skipped entries).
    pub notes: Vec<String>,
}

/// Stages one backup of `job`, incremental when `requested` says so and
/// there is a parent to build on (else full, with a note saying why). The
/// caller holds the job's [`crate::staging::JobLock`].
///
/// `post` hooks run after every attempt that got this far (the backup's id
/// and folder are made): whether `pre` hooks exist, failed or succeeded, and
/// whatever the copy did. A failing `post` hook fails the backup.
pub fn stage(
    config: &Config,
    job: &Job,
    requested: BackupKind,
    set: Option<&str>,
    progress: &dyn Progress,
    stop: &Stop,
) -> Result<StagedBackup> {
    check_overlap(config, job)?;
    let staging = JobStaging::new(config, &job.name);
    staging.remove_dead_work()?;

    let mut notes = Vec::new();
    // The last backup staged here: the parent of an incremental, and what
    // the source check compares the new one with.
    let previous = staging.latest_local_manifest()?;
    let parent = parent_of(job, requested, previous.as_ref(), set, &mut notes);
    let kind = if parent.is_some() {
        BackupKind::Incr
    } else {
        BackupKind::Full
    };

    // Read before anything runs: a missing passphrase or recipients file stops here.
    let key = match &job.encryption {
        Some(e) => Some(Arc::new(Key::for_backup(e, &job.name)?)),
        None => None,
    };
    let run_as = match &job.source {
        Source::Command {
            run_as: Some(user), ..
        } => Some(source::RunAs::lookup(user).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("job {:?}: {m}", job.name)),
            e => e,
        })?),
        _ => None,
    };

    let started = Instant::now();
    let origin = config.origin(job);
    let (id, now) = new_id(&staging, job, kind, set, origin, previous.as_ref())?;
    staging.set_last_id(&id)?;
    let work = staging.job_dir.join(format!("{WORK_PREFIX}{id}"));
    fs::create_dir_all(&work)
        .map_err(|e| Error::io(format!("cannot create {}", work.display()), e))?;
    // A backup holds the database's data: readable by its owner only.
    let _ = fs::set_permissions(&work, fs::Permissions::from_mode(0o700));

    let result = (|| {
        let mut vars = vec![
            ("OFFSITE_JOB".into(), job.name.clone()),
            ("OFFSITE_BACKUP_ID".into(), id.clone()),
        ];
        if let Some(set) = set {
            vars.push(("OFFSITE_SET".into(), set.to_string()));
            vars.push(("OFFSITE_MEMBER".into(), origin.to_string()));
        }
        let env = CommandEnv {
            vars,
            secrets: config.secret_variables(),
        };
        let mut stderr = Vec::new();
        let mut outcome: Result<StagedBackup> = (|| {
            for (i, hook) in job.pre.iter().enumerate() {
                stopped(stop)?;
                run_hook(job, "pre", i, hook, &env, progress, &mut stderr)?;
            }
            stopped(stop)?;
            let new = NewBackup {
                id: &id,
                created: now,
                host: origin,
                set,
                parent: parent.as_ref(),
                previous: previous.as_ref(),
                key: key.as_ref(),
                run_as: run_as.as_ref(),
            };
            pack_source(config, job, &new, &work, &env, progress, stop, &mut stderr)
        })();
        for (i, hook) in job.post.iter().enumerate() {
            // Hooks are never killed: a half-run lock or unlock is worse than a late stop.
            if let Err(e) = run_hook(job, "post", i, hook, &env, progress, &mut stderr) {
                outcome = Err(match outcome {
                    Ok(_) => Error::Failed(format!("{e}; the backup was not shipped")),
                    Err(first) => Error::Failed(format!("{first}; and then {e}")),
                });
            }
        }
        let mut staged = outcome?;
        staged.stderr = stderr;
        staged.manifest.stats.seconds = started.elapsed().as_secs_f64();
        notes.append(&mut staged.notes);
        staged.notes = notes;
        // What ships is sealed (no file names); the local copy stays in clear.
        let plain = staged.manifest.clone();
        if let Some(k) = &key {
            staged.manifest = crypt::seal_manifest(&plain, k)?;
        }
        write_manifest(&work, &staged.manifest)?;
        let dir = staging.backup_dir(&id);
        fs::rename(&work, &dir)
            .map_err(|e| Error::io(format!("cannot rename {} into place", work.display()), e))?;
        sync_dir(&staging.job_dir)?;
        staged.dir = dir;
        // The parent of the next incremental is read here, never from a destination
        // (a put-only host cannot read its bucket).
        staging.keep_local_manifest(&plain)?;
        Ok(staged)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&work);
    }
    result
}

/// Runs hook `index` (from 0) of the job's `pre` or `post` list, keeping
/// the end of what it printed on stderr.
fn run_hook(
    job: &Job,
    which: &str,
    index: usize,
    hook: &str,
    env: &CommandEnv,
    progress: &dyn Progress,
    stderr: &mut Vec<CommandStderr>,
) -> Result<()> {
    let what = format!("{which} hook {}", index + 1);
    let tail = source::run_shell(Shell {
        what: &format!("job {:?}: {what}", job.name),
        command: hook,
        workdir: &job.workdir,
        env,
        stdout: None,
        // Hooks are never killed: a half-run lock or unlock is worse than a late stop.
        stop: None,
        run_as: None,
        progress: Some(progress),
    })?;
    if !tail.is_empty() {
        stderr.push(CommandStderr {
            command: what,
            tail,
        });
    }
    Ok(())
}

fn interrupted() -> Error {
    Error::Stopped(
        "staging stopped on request; nothing was shipped, the next run stages a new backup".into(),
    )
}

/// An error once a stop is requested.
fn stopped(stop: &Stop) -> Result<()> {
    if stop.requested() {
        Err(interrupted())
    } else {
        Ok(())
    }
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    write_file_atomic(dir, MANIFEST_NAME, &m.to_json())
}

/// The backup an incremental of `job` builds on: the last one staged here
/// (`previous`), unless a full was asked for, the source is a command, or
/// this cluster member missed a full set since; each reason a note.
fn parent_of(
    job: &Job,
    requested: BackupKind,
    previous: Option<&Manifest>,
    set: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<Manifest> {
    let parent = match (requested, &job.source) {
        (BackupKind::Full, _) => return None,
        (BackupKind::Incr, Source::Command { .. }) => {
            notes.push("command sources are always backed up in full".to_string());
            return None;
        }
        (BackupKind::Incr, Source::Dir { .. }) => match previous {
            Some(p) => p,
            None => {
                notes.push("no earlier backup to build on here, so this one is full".to_string());
                return None;
            }
        },
    };
    // A cluster member that missed a full set starts its chain again with
    // a full (RavenDB's rule for a new owner of the backup task).
    if let Some(slot) = set.and_then(|set| missed_full_set(job, parent, set)) {
        notes.push(format!(
            "this member missed the full set of {} (its last backup is {}), so this one is full",
            crate::cluster::set_id(slot),
            parent.id
        ));
        return None;
    }
    Some(parent.clone())
}

/// The new backup's id and time. A cluster set member's id is its set's:
/// one backup per member and set, refused when this member already staged
/// one for the set (`previous`, the last staged here, or one not yet
/// shipped) or for a later set; an attempt that failed before it staged
/// anything may be made again. Otherwise ids only ever grow: two
/// backups in the same second would share an id (and the second would
/// overwrite the first on every destination), so it waits for a later
/// second than the last backup's, staged or already shipped.
fn new_id(
    staging: &JobStaging,
    job: &Job,
    kind: BackupKind,
    set: Option<&str>,
    origin: &str,
    previous: Option<&Manifest>,
) -> Result<(String, Timestamp)> {
    let last = staging.last_id();
    let stamp = |id: &str| id.get(..16).unwrap_or(id).to_string();
    if let Some(set) = set {
        let id = crate::cluster::member_backup_id(set, kind.as_str(), origin);
        let staged = staging.staged_backups()?;
        if staged
            .iter()
            .any(|b| crate::cluster::set_of_id(b) == Some(set))
            || previous.is_some_and(|p| p.set.as_deref() == Some(set))
            || last.as_deref().is_some_and(|l| set < stamp(l).as_str())
        {
            return Err(Error::Usage(format!(
                "job {:?}: member {origin:?} already made a backup in set {set} or a later one ({}); a set has one backup per member: run `offsite upload` to finish it, or give a later --set",
                job.name,
                last.as_deref().unwrap_or(&id)
            )));
        }
        return Ok((id, Timestamp::now()));
    }
    let mut now = Timestamp::now();
    let mut id = new_backup_id(kind, now, origin);
    while staging.backup_dir(&id).exists()
        || last.as_deref().is_some_and(|l| stamp(&id) <= stamp(l))
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = Timestamp::now();
        id = new_backup_id(kind, now, origin);
    }
    Ok((id, now))
}

/// The full slot of `job`'s schedule that came after the set of `parent`
/// (this member's last backup) and before `set`: a full set the member
/// did not take part in.
fn missed_full_set(job: &Job, parent: &Manifest, set: &str) -> Option<Timestamp> {
    let schedule = job.schedule.as_ref()?;
    let since = crate::cluster::set_time(parent.set.as_deref()?)?;
    let slot = schedule
        .full
        .as_ref()?
        .next_after(since, &schedule.timezone)?;
    (slot < crate::cluster::set_time(set)?).then_some(slot)
}

/// The identity of the backup being staged.
struct NewBackup<'a> {
    id: &'a str,
    created: Timestamp,
    /// The host writing it (`host_id`, or its cluster member name).
    host: &'a str,
    /// The cluster set it belongs to.
    set: Option<&'a str>,
    /// The backup an incremental builds on.
    parent: Option<&'a Manifest>,
    /// The job's last backup staged here, for the source check.
    previous: Option<&'a Manifest>,
    /// Encrypts the volumes (the job's `encryption`).
    key: Option<&'a Arc<Key>>,
    /// The user a command source runs as.
    run_as: Option<&'a RunAs>,
}

/// Makes `out_dir` (in the backup's `work` folder) the one place of staging
/// the user `who` can write: `work` lets only that user's group pass
/// (mode 0710), `out_dir` is the user's own (0700), and every folder above
/// must let the user pass, or this says which does not.
fn open_stage_dir_to(who: &RunAs, work: &Path, out_dir: &Path) -> Result<()> {
    use std::os::unix::fs::chown;
    chown(work, Some(0), Some(who.gid))
        .and_then(|_| fs::set_permissions(work, fs::Permissions::from_mode(0o710)))
        .and_then(|_| chown(out_dir, Some(who.uid), Some(who.gid)))
        .and_then(|_| fs::set_permissions(out_dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            Error::io(
                format!("cannot give {} to user {}", out_dir.display(), who.user),
                e,
            )
        })?;
    if let Some(blocked) = who.blocked_at(out_dir) {
        return Err(Error::Failed(format!(
            "run_as {:?}: the user cannot reach {} because {} does not let it pass; allow it (for example chmod o+x {}) or move [staging] dir",
            who.user,
            out_dir.display(),
            blocked.display(),
            blocked.display()
        )));
    }
    Ok(())
}

/// Produces the source's files and packs them into volumes in `work`.
#[allow(clippy::too_many_arguments)]
fn pack_source(
    config: &Config,
    job: &Job,
    new: &NewBackup,
    work: &Path,
    env: &CommandEnv,
    progress: &dyn Progress,
    stop: &Stop,
    stderr: &mut Vec<CommandStderr>,
) -> Result<StagedBackup> {
    let (root, order, exclude, description, kind) = match &job.source {
        Source::Dir {
            path,
            order,
            exclude,
        } => (
            path.clone(),
            order.clone(),
            exclude.clone(),
            path.display().to_string(),
            "dir",
        ),
        Source::Command { run, output, .. } => {
            let command = SourceCommand {
                run,
                output: output.as_deref(),
            };
            let out_dir =
                command.run(config, job, work, env, new.run_as, progress, stop, stderr)?;
            (out_dir, Vec::new(), Vec::new(), run.clone(), "command")
        }
    };
    let plan = source::plan_dir(&root, &order, &exclude, job.on_unreadable)?;
    let root_meta = match kind {
        "dir" => Some(root_meta(&root)?),
        _ => None,
    };
    let disk_bytes: u64 = plan.entries.iter().map(|e| e.disk).sum();
    let total_bytes: u64 = plan.entries.iter().map(|e| e.size).sum();
    let total_files = plan
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .count() as u64;
    check_free_space(work, disk_bytes, config.staging.min_free)?;

    let maps = block_maps(config, job, new)?;
    progress.stage_started(&job.name, total_files, total_bytes);
    let packed = pack(
        &plan.entries,
        work,
        new.id,
        job,
        new.parent,
        new.key.cloned(),
        maps,
        progress,
        stop,
    );
    progress.stage_finished(&job.name);
    let mut packed = packed?;
    if kind == "command" {
        let _ = fs::remove_dir_all(&root);
    }
    let mut skipped = plan.skipped;
    skipped.append(&mut packed.skipped);
    let mut unreadable = plan.unreadable;
    unreadable.append(&mut packed.unreadable);
    let (deleted, mut notes) = review(job, new.parent, &packed, &skipped, &unreadable)?;
    let changed = packed.changed.clone();
    let source = SourceInfo {
        kind: kind.to_string(),
        description,
    };
    let mut manifest = manifest_of(job, new, source, root_meta, packed, deleted);
    judge_source(job, &mut manifest, new.previous, &mut notes)?;
    Ok(StagedBackup {
        id: new.id.to_string(),
        dir: work.to_path_buf(),
        manifest,
        changed,
        skipped,
        unreadable,
        stderr: Vec::new(),
        notes,
    })
}

/// The parent's block fingerprints (when an incremental's parent has them
/// here) and the map this backup writes (a `dir` source's, unless
/// `block_size = "off"`).
fn block_maps(config: &Config, job: &Job, new: &NewBackup) -> Result<BlockMaps> {
    let staging = JobStaging::new(config, &job.name);
    let parent = new
        .parent
        .and_then(|p| BlockMap::open(&staging.block_map_path(&p.id)));
    // A command source is always backed up in full: nothing would read them.
    let out = match (job.block_size, &job.source) {
        (crate::format::blocks::BlockSize::Off, _) | (_, Source::Command { .. }) => None,
        _ => {
            let path = staging.block_map_part(new.id)?;
            Some(
                BlockMapWriter::create(&path)
                    .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?,
            )
        }
    };
    Ok(BlockMaps { parent, out })
}

/// A job's source command and the file its stdout goes to.
struct SourceCommand<'a> {
    run: &'a str,
    output: Option<&'a str>,
}

impl SourceCommand<'_> {
    /// Runs the command with `OFFSITE_STAGE_DIR` set to a fresh folder in
    /// `work` (its stdout into `output` there, when set); answers the folder.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        config: &Config,
        job: &Job,
        work: &Path,
        env: &CommandEnv,
        run_as: Option<&RunAs>,
        progress: &dyn Progress,
        stop: &Stop,
        stderr: &mut Vec<CommandStderr>,
    ) -> Result<PathBuf> {
        let out_dir = work.join(".source");
        fs::create_dir_all(&out_dir)
            .map_err(|e| Error::io(format!("cannot create {}", out_dir.display()), e))?;
        if let Some(who) = run_as {
            open_stage_dir_to(who, work, &out_dir)?;
        }
        check_free_space(work, 0, config.staging.min_free)?;
        let mut env = env.clone();
        env.vars
            .push(("OFFSITE_STAGE_DIR".into(), out_dir.display().to_string()));
        let what = format!("job {:?}: source command", job.name);
        let stdout = match self.output {
            Some(name) => {
                let target = out_dir.join(name);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
                }
                Some(
                    private_file(&target)
                        .map_err(|e| Error::io(format!("cannot create {}", target.display()), e))?,
                )
            }
            None => None,
        };
        let tail = source::run_shell(Shell {
            what: &what,
            command: self.run,
            workdir: &job.workdir,
            env: &env,
            stdout,
            stop: Some(stop),
            run_as,
            progress: Some(progress),
        })?;
        if !tail.is_empty() {
            stderr.push(CommandStderr {
                command: "source command".into(),
                tail,
            });
        }
        Ok(out_dir)
    }
}

/// What a packed backup says for a person: the files an incremental
/// records as deleted since `parent`, and the notes on what was skipped,
/// unreadable or changed. A file that changed while read fails the backup
/// when the job says `on_change = "fail"`.
fn review(
    job: &Job,
    parent: Option<&Manifest>,
    packed: &Packed,
    skipped: &[String],
    unreadable: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut deleted = Vec::new();
    if let Some(p) = parent {
        let now_paths: std::collections::HashSet<&str> =
            packed.files.iter().map(|f| f.path.as_str()).collect();
        deleted = p
            .files
            .iter()
            .filter(|f| !now_paths.contains(f.path.as_str()))
            .map(|f| f.path.clone())
            .collect();
        notes.push(format!(
            "incremental on {}: {} file(s) packed, {} unchanged, {} deleted",
            p.id,
            packed.packed_files,
            packed.unchanged,
            deleted.len()
        ));
        if packed.delta_files > 0 {
            notes.push(format!(
                "{} file(s) changed in place: packed {} of their {} as changed blocks",
                packed.delta_files,
                human_bytes(packed.delta_bytes),
                human_bytes(packed.delta_of)
            ));
        }
    }
    notes.extend(skipped.iter().map(|s| format!("skipped {s}")));
    notes.extend(
        unreadable
            .iter()
            .map(|u| format!("unreadable, left out: {u}")),
    );
    if !packed.changed.is_empty() {
        let list = packed.changed.join(", ");
        match job.on_change {
            OnChange::Fail => {
                return Err(Error::Failed(format!(
                    "job {:?}: {} file(s) changed while they were read ({list}); on_change = \"fail\", so nothing is shipped; stop writes during the backup (a pre hook) or set on_change = \"warn\"",
                    job.name,
                    packed.changed.len()
                )));
            }
            OnChange::Warn => notes.push(format!("changed while read: {list}")),
        }
    }
    Ok((deleted, notes))
}

/// The manifest of the backup `new` just packed.
fn manifest_of(
    job: &Job,
    new: &NewBackup,
    source: SourceInfo,
    root: Option<RootMeta>,
    packed: Packed,
    deleted: Vec<String>,
) -> Manifest {
    let stored: u64 = packed.volumes.iter().map(|v| v.size).sum();
    // Format 3 only when a file needs it: every other backup stays readable
    // by versions that know format 2.
    let format = if packed.files.iter().any(|f| f.delta.is_some()) {
        manifest::FORMAT_DELTA
    } else {
        manifest::FORMAT
    };
    Manifest {
        format,
        tool: format!("offsite {}", env!("CARGO_PKG_VERSION")),
        job: job.name.clone(),
        id: new.id.to_string(),
        host: Some(new.host.to_string()),
        set: new.set.map(str::to_string),
        kind: if new.parent.is_some() {
            BackupKind::Incr
        } else {
            BackupKind::Full
        },
        parent: new.parent.map(|p| p.id.clone()),
        created_at: rfc3339(new.created),
        source,
        root,
        compression: Compression {
            algorithm: "zstd".into(),
            level: job.compression_level,
        },
        encryption: None,
        volumes: packed.volumes,
        files: packed.files,
        deleted,
        changed: packed.changed,
        stats: Stats {
            files: packed.packed_files,
            bytes: packed.bytes,
            stored_bytes: stored,
            seconds: 0.0,
        },
        degenerate: None,
        legacy_names: false,
    }
}

/// The source check on a staged backup: a degenerate source fails the
/// backup, unless the job allows it, when the manifest records why.
fn judge_source(
    job: &Job,
    manifest: &mut Manifest,
    previous: Option<&Manifest>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(why) = source_check(job, manifest, previous) else {
        return Ok(());
    };
    if !job.allow_degenerate {
        return Err(Error::Failed(format!(
            "job {:?}: {why}; nothing is shipped, and the earlier backups stay as they are. If the source really is meant to be like this, set allow_degenerate = true on the job (or raise shrink_limit) and run the backup again",
            job.name
        )));
    }
    notes.push(format!(
        "{why}; shipped anyway (allow_degenerate = true), and retention keeps the last backup that passed the check"
    ));
    // The verdict stays in clear in an encrypted manifest: without the
    // source's path there, which is sealed.
    let recorded = if job.encryption.is_some() {
        check_source(job, manifest, previous, "the source").unwrap_or(why)
    } else {
        why
    };
    manifest.degenerate = Some(recorded);
    Ok(())
}

/// The source check: what is wrong with a backup whose source looks
/// degenerate: no file at all, no byte at all, or a file state that shrank
/// by more than the job's `shrink_limit` since the job's last backup here.
pub fn source_check(job: &Job, new: &Manifest, previous: Option<&Manifest>) -> Option<String> {
    let what = match &job.source {
        Source::Dir { path, .. } => format!("source {}", path.display()),
        Source::Command { .. } => "the source command's output".to_string(),
    };
    check_source(job, new, previous, &what)
}

/// [`source_check`], naming the source `what`.
fn check_source(
    job: &Job,
    new: &Manifest,
    previous: Option<&Manifest>,
    what: &str,
) -> Option<String> {
    let files = new
        .files
        .iter()
        .filter(|f| matches!(f.kind, EntryKind::File | EntryKind::Hardlink))
        .count();
    let bytes = new.state_bytes();
    if files == 0 {
        return Some(format!(
            "{what} holds no file (an unmounted or wiped volume looks like this)"
        ));
    }
    if bytes == 0 {
        return Some(format!("{what} holds {files} file(s) but not one byte"));
    }
    let before = previous.map(Manifest::state_bytes).unwrap_or(0);
    let floor = before as f64 * (1.0 - job.shrink_limit);
    if before > 0 && (bytes as f64) < floor {
        let shrank = 100.0 * (1.0 - bytes as f64 / before as f64);
        return Some(format!(
            "{what} shrank by {shrank:.0}% since backup {} ({} then, {} now), more than shrink_limit = {} allows",
            previous.map(|p| p.id.as_str()).unwrap_or("-"),
            human_bytes(before),
            human_bytes(bytes),
            job.shrink_limit
        ));
    }
    None
}

/// The mode, owner and time of the source's root folder.
fn root_meta(root: &Path) -> Result<RootMeta> {
    let md = fs::metadata(root)
        .map_err(|e| Error::io(format!("source {}: cannot stat it", root.display()), e))?;
    Ok(RootMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
    })
}

struct Packed {
    volumes: Vec<Volume>,
    files: Vec<FileEntry>,
    changed: Vec<String>,
    skipped: Vec<String>,
    unreadable: Vec<String>,
    /// Bytes and files packed into this backup's volumes.
    bytes: u64,
    packed_files: u64,
    /// Files an incremental took from its parent's chain.
    unchanged: u64,
    /// Files an incremental packed as their changed blocks, the bytes of
    /// those blocks, and the files' whole size.
    delta_files: u64,
    delta_bytes: u64,
    delta_of: u64,
}

/// The parent's entry `p` if the file, touched since, still has its bytes:
/// same size and the same content hash.
fn same_content<'p>(
    p: Option<&'p FileEntry>,
    md: &fs::Metadata,
    file: &mut File,
) -> io::Result<Option<&'p FileEntry>> {
    let Some(p) = p else {
        return Ok(None);
    };
    if p.kind != EntryKind::File || p.size != md.len() {
        return Ok(None);
    }
    // Hashed with the parent's algorithm, which may be an older one.
    let Some(recorded) = p.digest() else {
        return Ok(None);
    };
    let mut hasher = Hasher::new(recorded.algorithm);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.seek(io::SeekFrom::Start(0))?;
    Ok((hasher.finish() == recorded).then_some(p))
}

fn same_state(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

/// Whether a file has holes: fewer bytes allocated than its size.
fn is_sparse(md: &fs::Metadata) -> bool {
    md.blocks().saturating_mul(512) < md.len()
}

/// What an unreadable source entry (`e`, when opening `entry`) does: fails
/// the backup, or is left out and listed (`on_unreadable = "skip"`).
fn unreadable_entry(
    job: &Job,
    entry: &PlannedEntry,
    e: io::Error,
    unreadable: &mut Vec<String>,
) -> Result<()> {
    if e.kind() == io::ErrorKind::PermissionDenied && job.on_unreadable == OnUnreadable::Skip {
        unreadable.push(format!("{} ({e})", entry.rel));
        return Ok(());
    }
    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
        "; give offsite's user read access, exclude it, or set on_unreadable = \"skip\" on the job"
    } else {
        ""
    };
    Err(Error::io(
        format!("source: cannot open {}{hint}", entry.abs.display()),
        e,
    ))
}

/// Packs `plan` into the volumes of backup `id` in `work`: each entry is
/// read as it is now (a file that changed or vanished since the plan is
/// noted), and an incremental's files unchanged since `parent` keep their
/// place in the chain.
#[allow(clippy::too_many_arguments)]
fn pack(
    plan: &[PlannedEntry],
    work: &Path,
    id: &str,
    job: &Job,
    parent: Option<&Manifest>,
    key: Option<Arc<Key>>,
    maps: BlockMaps,
    progress: &dyn Progress,
    stop: &Stop,
) -> Result<Packed> {
    let writer = VolumeWriter::new(work, job.compression_level, job.volume_size, key)?;
    let mut packer = Packer {
        work,
        id,
        job,
        parent_id: parent.map(|p| p.id.as_str()),
        parent_files: parent
            .map(|p| p.files.iter().map(|f| (f.path.as_str(), f)).collect())
            .unwrap_or_default(),
        maps,
        progress,
        stop,
        tar: tar::Builder::new(writer),
        first_names: Default::default(),
        out: Packed {
            volumes: Vec::new(),
            files: Vec::with_capacity(plan.len()),
            changed: Vec::new(),
            skipped: Vec::new(),
            unreadable: Vec::new(),
            bytes: 0,
            packed_files: 0,
            unchanged: 0,
            delta_files: 0,
            delta_bytes: 0,
            delta_of: 0,
        },
    };
    for entry in plan {
        stopped(stop)?;
        packer.entry(entry)?;
    }
    let writer = packer
        .tar
        .into_inner()
        .map_err(|e| tar_error(work, "the end of the archive", e))?;
    packer.out.volumes = writer.finish()?;
    if let Some(map) = packer.maps.out.take() {
        map.finish().map_err(|e| map_error(work, e))?;
    }
    Ok(packer.out)
}

/// A failure to write `rel` into the archive in staging folder `work`.
fn tar_error(work: &Path, rel: &str, e: io::Error) -> Error {
    Error::io(format!("staging {}: cannot pack {rel}", work.display()), e)
}

/// One backup's packing under way: the archive being written and what was
/// recorded so far.
struct Packer<'a> {
    work: &'a Path,
    id: &'a str,
    job: &'a Job,
    /// The parent's id and files by path (an incremental's).
    parent_id: Option<&'a str>,
    parent_files: std::collections::HashMap<&'a str, &'a FileEntry>,
    /// The parent's block fingerprints, and this backup's.
    maps: BlockMaps,
    progress: &'a dyn Progress,
    stop: &'a Stop,
    tar: tar::Builder<VolumeWriter>,
    /// The first name seen of each hard-linked file (device, inode): later
    /// names are stored as links to it.
    first_names: std::collections::HashMap<(u64, u64), String>,
    out: Packed,
}

/// An entry about to be packed: its tar name and header, and its record.
struct Pending {
    tar_path: PathBuf,
    header: tar::Header,
    record: FileEntry,
}

impl Packer<'_> {
    fn tar_err(&self, rel: &str, e: io::Error) -> Error {
        tar_error(self.work, rel, e)
    }

    /// Packs one planned entry, as it is now.
    fn entry(&mut self, entry: &PlannedEntry) -> Result<()> {
        let md = match fs::symlink_metadata(&entry.abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.out.changed.push(format!("{} (deleted)", entry.rel));
                return Ok(());
            }
            Err(e) => {
                return Err(Error::io(
                    format!("source: cannot stat {}", entry.abs.display()),
                    e,
                ));
            }
        };
        let pending = self.pending(entry, &md);
        let record = match entry.kind {
            EntryKind::Dir => Some(self.dir(entry, pending)?),
            EntryKind::Symlink => self.symlink(entry, pending)?,
            EntryKind::File | EntryKind::Hardlink => self.file(entry, &md, pending)?,
        };
        self.out.files.extend(record);
        Ok(())
    }

    /// The tar name, header and record of `entry`, from its metadata.
    fn pending(&self, entry: &PlannedEntry, md: &fs::Metadata) -> Pending {
        // The tar stream holds the file system's own bytes for every name.
        let tar_path = Path::new(OsStr::from_bytes(
            &crate::format::names::decode(&entry.rel).unwrap_or_default(),
        ))
        .to_path_buf();
        let mut header = tar::Header::new_gnu();
        header.set_mode(md.mode() & 0o7777);
        header.set_mtime(md.mtime().max(0) as u64);
        header.set_uid(md.uid() as u64);
        header.set_gid(md.gid() as u64);
        let record = FileEntry {
            path: entry.rel.clone(),
            kind: entry.kind,
            size: 0,
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            sha256: None,
            blake3: None,
            target: None,
            sparse: false,
            volume: 0,
            backup: self.id.to_string(),
            delta: None,
        };
        Pending {
            tar_path,
            header,
            record,
        }
    }

    /// Starts an archive entry of about `estimate` stored bytes: answers
    /// the volume it goes into.
    fn start_entry(&mut self, rel: &str, estimate: u64) -> Result<u32> {
        self.tar
            .get_mut()
            .before_entry(estimate)
            .map_err(|e| tar_error(self.work, rel, e))?;
        Ok(self.tar.get_ref().next_index())
    }

    fn dir(&mut self, entry: &PlannedEntry, p: Pending) -> Result<FileEntry> {
        let Pending {
            tar_path,
            mut header,
            mut record,
        } = p;
        record.volume = self.start_entry(&entry.rel, 0)?;
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        let mut dir_path = tar_path.into_os_string();
        dir_path.push("/");
        self.tar
            .append_data(&mut header, dir_path, io::empty())
            .map_err(|e| self.tar_err(&entry.rel, e))?;
        Ok(record)
    }

    /// A relative symlink that stays inside the source; others are left
    /// out and listed.
    fn symlink(&mut self, entry: &PlannedEntry, p: Pending) -> Result<Option<FileEntry>> {
        let Pending {
            tar_path,
            mut header,
            mut record,
        } = p;
        let target = fs::read_link(&entry.abs).map_err(|e| {
            Error::io(
                format!("source: cannot read link {}", entry.abs.display()),
                e,
            )
        })?;
        let raw_target = target.as_os_str().as_bytes();
        let encoded = crate::format::names::encode(raw_target);
        if raw_target.starts_with(b"/") {
            self.out.skipped.push(format!(
                "{} (symlink to the absolute path {encoded}: after a restore elsewhere it would point at the original location, so it is not backed up; make it relative to keep it)",
                entry.rel
            ));
            return Ok(None);
        }
        if !manifest::symlink_stays_inside(&entry.rel, &encoded) {
            self.out.skipped.push(format!(
                "{} (symlink to {encoded} leaves the source; not followed)",
                entry.rel
            ));
            return Ok(None);
        }
        record.volume = self.start_entry(&entry.rel, 0)?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        self.tar
            .append_link(&mut header, &tar_path, &target)
            .map_err(|e| self.tar_err(&entry.rel, e))?;
        record.target = Some(encoded);
        Ok(Some(record))
    }

    /// A regular file: a link to its first name when it has several, its
    /// parent's bytes when unchanged, else its content, read as it is now.
    fn file(
        &mut self,
        entry: &PlannedEntry,
        md: &fs::Metadata,
        p: Pending,
    ) -> Result<Option<FileEntry>> {
        let inode = (md.nlink() > 1).then(|| (md.dev(), md.ino()));
        if let Some(first) = inode.and_then(|i| self.first_names.get(&i)).cloned() {
            return self.hardlink(entry, p, first).map(Some);
        }
        let Pending {
            tar_path,
            header,
            mut record,
        } = p;
        record.kind = EntryKind::File;
        let Some(mut file) = self.open_planned(entry)? else {
            return Ok(None);
        };
        let before = file
            .metadata()
            .map_err(|e| Error::io(format!("source: cannot stat {}", entry.abs.display()), e))?;
        if !before.is_file() {
            self.out
                .changed
                .push(format!("{} (no longer a regular file)", entry.rel));
            return Ok(None);
        }
        let size = before.len();
        record.mtime = before.mtime();
        record.mtime_nsec = before.mtime_nsec().clamp(0, 999_999_999) as u32;
        record.sparse = is_sparse(&before);
        let block_size = self.job.block_size.for_file(size);
        let parent = self.parent_files.get(entry.rel.as_str()).copied();
        // The parent's fingerprints of this file, if they describe its version.
        let rec = match (parent, &self.maps.parent) {
            (Some(p), Some(map)) if p.kind == EntryKind::File => map
                .record(&entry.rel)
                .filter(|r| r.describes(p.size, p.digest().as_ref()))
                .cloned(),
            _ => None,
        };
        let file_at = FileAt {
            entry,
            before: &before,
            tar_path,
            header,
        };
        match parent {
            Some(p) if same_version(p, &before) => {
                // Untouched: its bytes stay where they are in the chain.
                if let (Some(rec), Some(out), Some(map)) =
                    (&rec, &mut self.maps.out, &self.maps.parent)
                {
                    out.copy(&entry.rel, map, rec)
                        .map_err(|e| map_error(self.work, e))?;
                }
                self.keep_parents(&mut record, p);
            }
            Some(p)
                if rec
                    .as_ref()
                    .is_some_and(|r| Some(r.block_size) == block_size) =>
            {
                let prints = match (&self.maps.parent, &rec) {
                    (Some(map), Some(rec)) => map.fingerprints(rec).unwrap_or_default(),
                    _ => Vec::new(),
                };
                self.changed_blocks(file_at, file, p, &prints, &mut record)?;
            }
            _ => {
                // A file tracked by blocks without fingerprints to compare
                // with is packed whole, so the next incremental has them.
                let same = match block_size {
                    Some(_) => None,
                    None => same_content(parent, &before, &mut file).map_err(|e| {
                        Error::io(format!("source: cannot read {}", entry.abs.display()), e)
                    })?,
                };
                match same {
                    Some(p) => self.keep_parents(&mut record, p),
                    None => self.whole(file_at, file, block_size, &mut record)?,
                }
            }
        }
        self.progress.stage_advanced(1, size);
        if let Some(inode) = inode {
            self.first_names.insert(inode, entry.rel.clone());
        }
        Ok(Some(record))
    }

    /// A second name of a file already packed (as `first`): a link to it.
    fn hardlink(&mut self, entry: &PlannedEntry, p: Pending, first: String) -> Result<FileEntry> {
        let Pending {
            tar_path,
            mut header,
            mut record,
        } = p;
        record.kind = EntryKind::Hardlink;
        record.volume = self.start_entry(&entry.rel, 0)?;
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        let first_raw = crate::format::names::decode(&first).unwrap_or_default();
        self.tar
            .append_link(&mut header, &tar_path, OsStr::from_bytes(&first_raw))
            .map_err(|e| self.tar_err(&entry.rel, e))?;
        record.target = Some(first);
        Ok(record)
    }

    /// Opens a file planned as a regular file. Never follows it if it
    /// became a symlink since (root reading a folder another user owns, as
    /// with run_as, must not pack what the link points at), and never
    /// blocks on it if it became a FIFO. `None`: it is left out (gone,
    /// replaced, or unreadable with `on_unreadable = "skip"`).
    fn open_planned(&mut self, entry: &PlannedEntry) -> Result<Option<File>> {
        let opened = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&entry.abs);
        match opened {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.out.changed.push(format!("{} (deleted)", entry.rel));
                Ok(None)
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.out.changed.push(format!(
                    "{} (replaced by a symlink, not followed)",
                    entry.rel
                ));
                Ok(None)
            }
            Err(e) => {
                unreadable_entry(self.job, entry, e, &mut self.out.unreadable)?;
                Ok(None)
            }
        }
    }

    /// Whether the file changed while it was read: it was shorter than
    /// its size, its size or time moved, or another file took its name.
    fn changed_while_read(
        &self,
        entry: &PlannedEntry,
        before: &fs::Metadata,
        file: &File,
        short: bool,
    ) -> Result<bool> {
        let after = file
            .metadata()
            .map_err(|e| Error::io(format!("source: cannot stat {}", entry.abs.display()), e))?;
        let now_md = fs::metadata(&entry.abs).ok();
        let replaced = now_md.as_ref().is_none_or(|m| m.ino() != before.ino());
        Ok(short || !same_state(before, &after) || replaced)
    }

    /// Records that `record`'s bytes are those of the parent's entry `p`:
    /// they stay where they are in the chain; only the metadata is new.
    fn keep_parents(&mut self, record: &mut FileEntry, p: &FileEntry) {
        record.size = p.size;
        record.set_digest(p.digest());
        record.volume = p.volume;
        record.backup = p.backup.clone();
        record.delta = p.delta.clone();
        self.out.unchanged += 1;
    }

    /// Appends `len` bytes of `content` as `at`'s archive entry; answers the
    /// volume it starts in.
    fn append(&mut self, at: &mut FileAt, len: u64, content: &mut dyn Read) -> Result<u32> {
        let volume =
            self.start_entry(&at.entry.rel, self.tar.get_ref().estimate_compressed(len))?;
        at.header.set_entry_type(tar::EntryType::Regular);
        at.header.set_size(len);
        at.header.set_mtime(at.before.mtime().max(0) as u64);
        self.tar
            .append_data(&mut at.header, &at.tar_path, content)
            .map_err(|e| {
                if self.stop.requested() {
                    interrupted()
                } else {
                    tar_error(self.work, &at.entry.rel, e)
                }
            })?;
        Ok(volume)
    }

    /// Packs a file whole, read as it is now (block by block when it is
    /// tracked by blocks, its fingerprints kept for the next incremental).
    fn whole(
        &mut self,
        mut at: FileAt,
        file: File,
        block_size: Option<u64>,
        record: &mut FileEntry,
    ) -> Result<()> {
        let size = at.before.len();
        let mut reader = HashingReader::new(file, size, block_size, self.stop.clone());
        record.volume = self.append(&mut at, size, &mut reader)?;
        if self.changed_while_read(at.entry, at.before, &reader.file, reader.short)? {
            self.out.changed.push(at.entry.rel.clone());
        }
        let (digest, prints) = reader.finish();
        if let (Some(bs), Some(prints), Some(out)) = (block_size, prints, &mut self.maps.out) {
            out.add(&at.entry.rel, size, bs, &digest, &prints)
                .map_err(|e| map_error(self.work, e))?;
        }
        record.size = size;
        record.set_digest(Some(digest));
        self.out.bytes += size;
        self.out.packed_files += 1;
        Ok(())
    }

    /// Packs the blocks of a file that differ from its parent's version
    /// `p` (whose fingerprints are `prints`): as a patch of that version,
    /// or whole when every block changed, or not at all when none did.
    fn changed_blocks(
        &mut self,
        mut at: FileAt,
        file: File,
        p: &FileEntry,
        prints: &[Fingerprint],
        record: &mut FileEntry,
    ) -> Result<()> {
        let size = at.before.len();
        let Some(bs) = self.job.block_size.for_file(size) else {
            return self.whole(at, file, None, record);
        };
        let reader = HashingReader::new(file, size, Some(bs), self.stop.clone());
        let spool = self.work.join(".spool");
        let mut scan = delta::scan(reader, prints, &spool).map_err(|e| {
            if self.stop.requested() {
                interrupted()
            } else {
                Error::io(format!("source: cannot read {}", at.entry.abs.display()), e)
            }
        })?;
        if self.changed_while_read(at.entry, at.before, &scan.file, scan.short)? {
            self.out.changed.push(at.entry.rel.clone());
        }
        if let Some(out) = &mut self.maps.out {
            out.add(&at.entry.rel, size, bs, &scan.digest, &scan.prints)
                .map_err(|e| map_error(self.work, e))?;
        }
        if scan.runs.is_empty() && size == p.size && Some(&scan.digest) == p.digest().as_ref() {
            // Touched, not changed.
            self.keep_parents(record, p);
            return Ok(());
        }
        record.volume = self.append(&mut at, scan.stored, &mut scan.spool)?;
        record.size = size;
        record.set_digest(Some(scan.digest));
        if scan.stored < size {
            record.delta = Some(Delta {
                block_size: bs,
                base: self.parent_id.unwrap_or_default().to_string(),
                blocks: scan.runs,
                blake3: scan.stored_hash.hex,
            });
            self.out.delta_files += 1;
            self.out.delta_bytes += scan.stored;
            self.out.delta_of += size;
        }
        self.out.bytes += scan.stored;
        self.out.packed_files += 1;
        Ok(())
    }
}

/// A regular file about to be packed: its planned entry, its metadata
/// before the read, and its archive name and header.
struct FileAt<'e> {
    entry: &'e PlannedEntry,
    before: &'e fs::Metadata,
    tar_path: PathBuf,
    header: tar::Header,
}

/// Whether a parent's entry is the file as it is now, by size and time.
fn same_version(p: &FileEntry, md: &fs::Metadata) -> bool {
    p.kind == EntryKind::File
        && p.size == md.len()
        && p.mtime == md.mtime()
        && p.mtime_nsec as i64 == md.mtime_nsec()
}

/// A failure to write the block map of the backup staged in `work`.
fn map_error(work: &Path, e: io::Error) -> Error {
    Error::io(
        format!("staging {}: cannot write the block map", work.display()),
        e,
    )
}

/// Counts and hashes what is written through it.
struct HashingCounter {
    file: File,
    hasher: Hasher,
    count: u64,
    /// Bytes up to here have been handed to the kernel's writeback.
    flushed: u64,
}

/// How much written data to collect before starting its writeback.
const WRITEBACK_STEP: u64 = 8 << 20;

impl HashingCounter {
    /// Starts writing the last step's bytes to disk without waiting
    /// (`sync_file_range`), so the `fsync` that closes the volume finds
    /// little left to do and the disk works while zstd compresses.
    fn start_writeback(&mut self) {
        if self.count - self.flushed < WRITEBACK_STEP {
            return;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range(2) on our own open file; it only starts
        // writeback of a byte range, and a failure is harmless (the fsync
        // at the end still makes the volume durable), so it is ignored.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.flushed as libc::off64_t,
                (self.count - self.flushed) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.flushed = self.count;
    }
}

impl Write for HashingCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.start_writeback();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Where a volume's compressed bytes go: into the file (through its hash),
/// in clear or through age.
enum VolumeSink {
    Clear(HashingCounter),
    Sealed {
        writer: age::stream::StreamWriter<HashingCounter>,
        /// Compressed bytes given to age (the file holds a little more).
        count: u64,
    },
}

impl VolumeSink {
    /// About how many bytes the volume file holds so far.
    fn written(&self) -> u64 {
        match self {
            VolumeSink::Clear(c) => c.count,
            VolumeSink::Sealed { count, .. } => *count,
        }
    }

    fn finish(self) -> io::Result<HashingCounter> {
        match self {
            VolumeSink::Clear(c) => Ok(c),
            VolumeSink::Sealed { writer, .. } => writer.finish(),
        }
    }
}

impl Write for VolumeSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            VolumeSink::Clear(c) => c.write(buf),
            VolumeSink::Sealed { writer, count } => {
                let n = writer.write(buf)?;
                *count += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            VolumeSink::Clear(c) => c.flush(),
            VolumeSink::Sealed { writer, .. } => writer.flush(),
        }
    }
}

struct OpenVolume {
    index: u32,
    tmp: PathBuf,
    encoder: ZstdWriter<VolumeSink>,
}

/// The sink of the tar stream: compresses it into volumes of about
/// `volume_size` bytes, each one or more complete zstd frames.
pub struct VolumeWriter {
    dir: PathBuf,
    /// Encrypts each volume as its own age file.
    key: Option<Arc<Key>>,
    level: i32,
    workers: u32,
    volume_size: u64,
    current: Option<OpenVolume>,
    finished: Vec<Volume>,
    raw_in: u64,
    /// Raw bytes in finished volumes, and what they compressed to.
    raw_in_finished: u64,
    compressed_out: u64,
    /// Raw bytes given to the encoder since its output was last flushed.
    raw_pending: u64,
    pending_rotate: bool,
}

/// The file name of volume `index` (from 0): `vol-000000.tar.zst`, with `.age`
/// when encrypted.
pub fn volume_name(index: u32, encrypted: bool) -> String {
    let suffix = if encrypted { crypt::VOLUME_SUFFIX } else { "" };
    format!("vol-{index:06}.tar.zst{suffix}")
}

impl VolumeWriter {
    /// A writer of volumes into `dir` at zstd `level`, cut at about
    /// `volume_size` bytes, each encrypted to `key` when there is one.
    pub fn new(dir: &Path, level: i32, volume_size: u64, key: Option<Arc<Key>>) -> Result<Self> {
        // Multithreaded zstd holds several MiB per worker before it writes, which
        // would overshoot small volumes; use it only where that is noise.
        let workers = if volume_size >= 64 << 20 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        } else {
            0
        };
        Ok(VolumeWriter {
            dir: dir.to_path_buf(),
            key,
            level,
            workers,
            volume_size,
            current: None,
            finished: Vec::new(),
            raw_in: 0,
            raw_in_finished: 0,
            compressed_out: 0,
            raw_pending: 0,
            pending_rotate: false,
        })
    }

    /// The index of the volume the next byte goes to.
    pub fn next_index(&self) -> u32 {
        match &self.current {
            Some(v) if self.pending_rotate => v.index + 1,
            Some(v) => v.index,
            None => self.finished.len() as u32,
        }
    }

    /// A guess of what `size` raw bytes will take once compressed, from the
    /// ratio seen so far (1:1 before anything is known).
    pub fn estimate_compressed(&self, size: u64) -> u64 {
        if self.raw_in_finished < 1 << 20 {
            return size;
        }
        (size as f64 * (self.compressed_out as f64 / self.raw_in_finished as f64)) as u64
    }

    /// Called between tar entries: starts a new volume when the next entry,
    /// of `estimate` compressed bytes, would not fit in the current one but
    /// would fit in an empty one.
    pub fn before_entry(&mut self, estimate: u64) -> io::Result<()> {
        let limit = self.volume_size;
        let Some(v) = self.current.as_mut() else {
            return Ok(());
        };
        let estimate = estimate.min(limit);
        // The encoder holds back up to a block of output; that much is uncertain.
        if v.encoder.get_ref().written() + self.raw_pending + estimate > limit {
            // Near the limit: flush so the decision is made on exact bytes.
            v.encoder.flush()?;
            self.raw_pending = 0;
            let used = v.encoder.get_ref().written();
            if used > 0 && used + estimate > limit {
                self.pending_rotate = true;
            }
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<()> {
        let index = self.finished.len() as u32;
        let tmp = self
            .dir
            .join(format!(".{}.tmp", volume_name(index, self.key.is_some())));
        let file = private_file(&tmp)?;
        let counter = HashingCounter {
            file,
            hasher: Hasher::new(Algorithm::CURRENT),
            count: 0,
            flushed: 0,
        };
        let sink = match &self.key {
            None => VolumeSink::Clear(counter),
            Some(k) => VolumeSink::Sealed {
                writer: k.wrap(counter).map_err(io::Error::other)?,
                count: 0,
            },
        };
        let workers = if self.workers > 1 { self.workers } else { 0 };
        let encoder = ZstdWriter::new(sink, self.level, workers)?;
        self.current = Some(OpenVolume {
            index,
            tmp,
            encoder,
        });
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        let Some(v) = self.current.take() else {
            return Ok(());
        };
        let counter = v.encoder.finish()?.finish()?;
        counter.file.sync_all()?;
        let name = volume_name(v.index, self.key.is_some());
        fs::rename(&v.tmp, self.dir.join(&name))?;
        self.compressed_out += counter.count;
        self.raw_in_finished = self.raw_in;
        self.finished
            .push(Volume::new(name, counter.count, counter.hasher.finish()));
        Ok(())
    }

    /// Closes the last volume and returns every volume, in order.
    pub fn finish(mut self) -> Result<Vec<Volume>> {
        self.close_current().map_err(|e| {
            Error::io(
                format!(
                    "staging {}: cannot finish the last volume",
                    self.dir.display()
                ),
                e,
            )
        })?;
        sync_dir(&self.dir)?;
        Ok(self.finished)
    }
}

impl Write for VolumeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending_rotate {
            self.pending_rotate = false;
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open()?;
        }
        let Some(v) = self.current.as_mut() else {
            return Err(io::Error::other("no open volume"));
        };
        let n = v.encoder.write(buf)?;
        self.raw_in += n as u64;
        self.raw_pending += n as u64;
        if v.encoder.get_ref().written() >= self.volume_size {
            // A file larger than what is left: cut it here, it goes on in the next volume.
            self.close_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some(v) => v.encoder.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Job, OnChange};
    use crate::progress::Silent;

    fn job(volume_size: u64) -> Job {
        Job {
            name: "t".into(),
            source: Source::Dir {
                path: PathBuf::from("/unused"),
                order: Vec::new(),
                exclude: Vec::new(),
            },
            pre: Vec::new(),
            post: Vec::new(),
            destinations: Vec::new(),
            volume_size,
            block_size: crate::format::blocks::BlockSize::Auto,
            compression_level: 1,
            keep_local: 0,
            on_change: OnChange::Warn,
            on_unreadable: OnUnreadable::Fail,
            shrink_limit: 0.5,
            allow_degenerate: false,
            max_age: None,
            workdir: PathBuf::from("/"),
            retention: None,
            schedule: None,
            encryption: None,
            cluster: None,
            notify: None,
        }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        offsite_backends::conformance::pattern(len, seed)
    }

    /// Packs `sizes` (incompressible files) with `volume_size`; returns each file's first volume and the volumes.
    fn pack_sizes(sizes: &[usize], volume_size: u64) -> (Vec<u32>, Vec<Volume>, tempfile::TempDir) {
        let src = tempfile::tempdir().expect("src");
        let out = tempfile::tempdir().expect("out");
        for (i, s) in sizes.iter().enumerate() {
            fs::write(src.path().join(format!("f{i:03}")), noise(*s, i as u64)).expect("write");
        }
        let plan = source::plan_dir(src.path(), &[], &[], OnUnreadable::Fail).expect("plan");
        let packed = pack(
            &plan.entries,
            out.path(),
            "id",
            &job(volume_size),
            None,
            None,
            BlockMaps::none(),
            &Silent,
            &Stop::new(),
        )
        .expect("pack");
        assert!(packed.changed.is_empty());
        (
            packed.files.iter().map(|f| f.volume).collect(),
            packed.volumes,
            out,
        )
    }

    #[test]
    fn a_file_swapped_for_a_symlink_or_fifo_after_planning_is_not_followed() {
        let src = tempfile::tempdir().expect("src");
        let out = tempfile::tempdir().expect("out");
        let secret = src.path().join("elsewhere");
        fs::write(&secret, b"root only").expect("write");
        for name in ["a", "b", "c"] {
            fs::write(src.path().join(name), b"data").expect("write");
        }
        let plan = source::plan_dir(src.path(), &[], &[], OnUnreadable::Fail).expect("plan");
        // Between planning and packing, another user swaps two files.
        fs::remove_file(src.path().join("a")).expect("rm");
        std::os::unix::fs::symlink(&secret, src.path().join("a")).expect("symlink");
        fs::remove_file(src.path().join("b")).expect("rm");
        let made = std::process::Command::new("mkfifo")
            .arg(src.path().join("b"))
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let packed = pack(
            &plan.entries,
            out.path(),
            "id",
            &job(1 << 20),
            None,
            None,
            BlockMaps::none(),
            &Silent,
            &Stop::new(),
        )
        .expect("pack");
        assert!(
            packed
                .changed
                .iter()
                .any(|c| c.starts_with("a (replaced by a symlink")),
            "{:?}",
            packed.changed
        );
        assert!(
            packed
                .changed
                .iter()
                .any(|c| c.starts_with("b (no longer a regular file")),
            "{:?}",
            packed.changed
        );
        let names: Vec<&str> = packed.files.iter().map(|f| f.path.as_str()).collect();
        assert!(!names.contains(&"a") && !names.contains(&"b"), "{names:?}");
        assert!(names.contains(&"c"), "{names:?}");
    }

    #[test]
    fn files_that_fit_are_never_split_across_volumes() {
        // 100 KiB files, 256 KiB volumes: two files fit, a third does not.
        let (first, volumes, _dir) = pack_sizes(&[100 << 10; 6], 256 << 10);
        assert_eq!(first, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(volumes.len(), 3);
        for v in &volumes {
            assert!(
                v.size <= (256 << 10) + (32 << 10),
                "{} is {} bytes",
                v.name,
                v.size
            );
        }
    }

    #[test]
    fn a_file_larger_than_a_volume_continues_in_the_next() {
        let (first, volumes, _dir) = pack_sizes(&[10 << 10, 600 << 10, 10 << 10], 256 << 10);
        // The big file starts a fresh volume and spills over at least two more.
        assert_eq!(first[1], 1);
        assert!(first[2] >= 3, "{first:?}");
        assert!(volumes.len() >= 4, "{volumes:?}");
    }

    #[test]
    fn volume_hashes_and_sizes_match_the_files_on_disk() {
        let (_, volumes, dir) = pack_sizes(&[50 << 10, 300 << 10], 128 << 10);
        for v in &volumes {
            let bytes = fs::read(dir.path().join(&v.name)).expect("volume");
            assert_eq!(bytes.len() as u64, v.size);
            let mut h = Hasher::new(Algorithm::CURRENT);
            h.update(&bytes);
            assert_eq!(Some(h.finish()), v.digest());
        }
    }

    #[test]
    fn backup_ids_are_utc_seconds_and_kind() {
        let t: Timestamp = "2026-11-22T02:15:00Z".parse().expect("time");
        assert_eq!(
            new_backup_id(BackupKind::Full, t, "db1"),
            "20261122T021500Z-full-db1"
        );
        assert_eq!(rfc3339(t), "2026-11-22T02:15:00Z");
    }
}
