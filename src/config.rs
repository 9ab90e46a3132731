//! The configuration file: TOML read through serde with unknown keys refused,
//! then resolved into the settings the pipeline uses.
//!
//! Every error names the file, the line and the key (`offsite.toml:12: key
//! job[0].source.path: ...`), so a typo at 2 a.m. is found without guessing.
//! Relative paths are taken from the configuration file's folder, not from the
//! current directory, so cron and a terminal read the same file the same way.
//! Secrets are never read from the file itself: only from the environment or
//! from files it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use offsite_backends::azure::AzureSettings;
use offsite_backends::ftp::FtpSettings;
use offsite_backends::glacier::GlacierSettings;
use offsite_backends::path::PathSettings;
use offsite_backends::s3::S3Settings;
use offsite_backends::settings::{Invalid, Place, Settings};
use offsite_backends::sftp::SftpSettings;
use offsite_backends::units::{ByteSize, HumanDuration};

use crate::cluster::{Cluster, RunBy};
use crate::notify::Notify;
use serde::Deserialize;

use crate::destinations::{Destination, DestinationKind, Target};
use crate::error::{Error, Result};
use crate::format::crypt::{self, Encryption};
use crate::retention::{Origins, Policy};
use crate::schedule::cron::{Cron, JobSchedule};

/// The annotated example `offsite init` writes.
pub const EXAMPLE: &str = include_str!("../fixtures/offsite.example.toml");

const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;
const DEFAULT_PART_SIZE: u64 = 16 << 20;
const DEFAULT_CONCURRENCY: usize = 4;
/// Retries of a failed request before its destination fails: with the
/// backoff (0.5 s doubling to 30 s, half of it random) they wait 31 to 62 s
/// in all, enough for a server or a link to come back from a restart.
const DEFAULT_RETRIES: u32 = 7;
const MAX_RETRIES: u32 = 20;
const DEFAULT_MIN_FREE: u64 = 256 << 20;
const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// A backup whose data shrank by more than half since the last one fails
/// the source check: a database rarely halves overnight, a half-unmounted
/// or wiped volume does.
const DEFAULT_SHRINK_LIMIT: f64 = 0.5;

/// The host name, made into a host id (other characters become `-`, at
/// most 64); `localhost` when there is none.
pub fn default_host_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name: String = if rc == 0 { &buf[..len] } else { &[][..] }
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                *b as char
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = name.trim_start_matches(['.', '_', '-']).to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// What backups made here record as their origin; default: the host name.
    host_id: Option<String>,
    /// Where the Prometheus textfile is written after each run.
    metrics_file: Option<PathBuf>,
    /// The notifications of every job without its own.
    notify: Option<RawNotify>,
    staging: RawStaging,
    #[serde(rename = "job", default)]
    jobs: Vec<RawJob>,
    // Tagged by `kind`; read in a second pass (`tagged`) so errors keep their key path.
    #[serde(rename = "destination", default)]
    destinations: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaging {
    dir: PathBuf,
    min_free: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    source: toml::Table,
    #[serde(default)]
    pre: Vec<String>,
    #[serde(default)]
    post: Vec<String>,
    destinations: Vec<String>,
    volume_size: Option<ByteSize>,
    block_size: Option<String>,
    compression: Option<String>,
    keep_local: Option<u32>,
    on_change: Option<OnChange>,
    on_unreadable: Option<OnUnreadable>,
    shrink_limit: Option<f64>,
    #[serde(default)]
    allow_degenerate: bool,
    max_age: Option<HumanDuration>,
    retention: Option<RawRetention>,
    schedule: Option<RawSchedule>,
    encryption: Option<RawEncryption>,
    cluster: Option<RawCluster>,
    notify: Option<RawNotify>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    on: Option<Vec<crate::notify::Event>>,
    command: Option<String>,
    url: Option<String>,
    timeout: Option<HumanDuration>,
    retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    members: Vec<String>,
    member_env: Option<String>,
    grace: Option<HumanDuration>,
    window: Option<HumanDuration>,
    run: Option<RunBy>,
    takeover: Option<HumanDuration>,
    claim_if: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    #[serde(default)]
    recipients: Vec<String>,
    recipients_file: Option<PathBuf>,
    passphrase_env: Option<String>,
    identity_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    full: Option<Cron>,
    incremental: Option<Cron>,
    prune: Option<Cron>,
    catch_up: Option<bool>,
    timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<HumanDuration>,
    min_age: Option<HumanDuration>,
    incomplete_grace: Option<HumanDuration>,
    origins: Option<Origins>,
}

const DEFAULT_INCOMPLETE_GRACE: std::time::Duration = std::time::Duration::from_secs(3 * 86_400);

impl RawRetention {
    fn resolve(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.map(|d| d.0),
            min_age: self.min_age.map(|d| d.0),
            incomplete_grace: self
                .incomplete_grace
                .map(|d| d.0)
                .unwrap_or(DEFAULT_INCOMPLETE_GRACE),
            origins: self.origins.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirSource {
    path: PathBuf,
    #[serde(default)]
    order: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommandSource {
    run: String,
    output: Option<String>,
    run_as: Option<String>,
}

/// The keys every destination kind has, split off its table before the
/// kind's own keys are read, and checked the same way for each.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    #[serde(default)]
    prefix: String,
    bwlimit: Option<ByteSize>,
    part_size: Option<ByteSize>,
    concurrency: Option<usize>,
    retries: Option<u32>,
    retention: Option<RawRetention>,
}

/// The keys every destination kind takes, as they are written in a destination's table.
pub const COMMON_KEYS: [&str; 6] = [
    "prefix",
    "bwlimit",
    "part_size",
    "concurrency",
    "retries",
    "retention",
];

// ---------------------------------------------------------------------------
// The resolved settings.

/// What to do with a file or folder the source cannot read (`on_unreadable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnreadable {
    /// Fail the backup, naming the entry.
    Fail,
    /// Leave it out and report it (in the output and the JSON's `unreadable`).
    Skip,
}

/// What to do when a file changes while it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    /// Report it in the output and the JSON, and ship the backup.
    Warn,
    /// Fail the backup and ship nothing.
    Fail,
}

/// The configuration file, resolved: paths absolute, defaults filled in, every
/// name checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub file: PathBuf,
    /// The origin this host's backups record (`host_id`, else the host name).
    pub host_id: String,
    /// The `[staging]` table.
    pub staging: Staging,
    /// The `[[job]]` tables in file order; never empty.
    pub jobs: Vec<Job>,
    /// The `[destination.NAME]` tables, by name.
    pub destinations: BTreeMap<String, Destination>,
    /// Where the metrics (node_exporter's textfile format) are written
    /// after each run and each `status --check`; `None`: nowhere.
    pub metrics_file: Option<PathBuf>,
}

/// Where backups are staged before upload (the `[staging]` table, resolved).
#[derive(Debug, Clone)]
pub struct Staging {
    /// The staging folder, absolute: never inside a source, nor a source inside
    /// it.
    pub dir: PathBuf,
    /// Free space to leave on the staging filesystem beyond the estimate.
    pub min_free: u64,
}

/// One `[[job]]`, resolved: what to back up, where to ship it, and how.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name, unique in the file (letters, digits, `-`, `_` and `.`).
    pub name: String,
    /// What the job backs up.
    pub source: Source,
    /// Shell commands run before the copy, in order; a failing one stops the
    /// backup.
    pub pre: Vec<String>,
    /// Shell commands run after every attempt, even a failed one; a failing one
    /// fails the backup.
    pub post: Vec<String>,
    /// The names of the destinations the job ships to: at least one, none
    /// twice.
    pub destinations: Vec<String>,
    /// The size in bytes at which staged volumes are cut (default 1 GiB).
    pub volume_size: u64,
    /// How an incremental cuts a file that changed in place into blocks,
    /// to pack only the changed ones (default: by the file's size).
    pub block_size: crate::format::blocks::BlockSize,
    /// The zstd level, 1 to 19 (default 3).
    pub compression_level: i32,
    /// How many staged backups to keep after every destination has them
    /// (default 0).
    pub keep_local: u32,
    /// What to do when a file changes while it is read (default: warn).
    pub on_change: OnChange,
    /// What to do with an entry the source cannot read (default: fail).
    pub on_unreadable: OnUnreadable,
    /// The source check fails a backup whose file state shrank by more
    /// than this fraction since the job's last backup (1.0: never).
    pub shrink_limit: f64,
    /// Ship a backup the source check finds degenerate (marked as such)
    /// instead of failing it.
    pub allow_degenerate: bool,
    /// `status --check` reports a destination whose newest complete backup
    /// is older than this; `None`: derived from the schedule ([`Job::max_age_at`]).
    pub max_age: Option<std::time::Duration>,
    /// Where hooks and commands run: the configuration file's folder.
    pub workdir: PathBuf,
    /// The job's retention policy; `None`: nothing is ever pruned.
    pub retention: Option<Policy>,
    /// When `offsite daemon` runs the job; `None`: never.
    pub schedule: Option<JobSchedule>,
    /// Client-side encryption of volumes and file lists; `None`: in clear.
    pub encryption: Option<Encryption>,
    /// The cluster whose member this host is; `None`: a single-host job.
    pub cluster: Option<Cluster>,
    /// Who hears of its runs (its `notify`, else the top-level one).
    pub notify: Option<Notify>,
}

/// What a job backs up (its `source` table, resolved).
#[derive(Debug, Clone)]
pub enum Source {
    /// A folder, read entry by entry.
    Dir {
        /// The folder, absolute.
        path: PathBuf,
        /// Glob patterns giving the order files are read in; files matching
        /// none come last.
        order: Vec<String>,
        /// Glob patterns of entries left out; an excluded folder is not
        /// entered.
        exclude: Vec<String>,
    },
    /// A command that makes what is backed up: its stdout saved as `output`, or
    /// the files it writes into `$OFFSITE_STAGE_DIR`.
    Command {
        /// The shell command line.
        run: String,
        /// Stream stdout into this file; without it the command writes into
        /// `$OFFSITE_STAGE_DIR`.
        output: Option<String>,
        /// The user the command runs as (offsite must be root).
        run_as: Option<String>,
    },
}

impl Job {
    /// How old the newest complete backup may get before `status --check`
    /// reports it: `max_age`, else one and a half times the longest gap
    /// between the job's scheduled backups; `None` for a job with neither.
    pub fn max_age_at(&self, now: jiff::Timestamp) -> Option<std::time::Duration> {
        self.max_age.or_else(|| {
            let gap = self.schedule.as_ref()?.longest_backup_gap(now)?;
            Some(gap + gap / 2)
        })
    }

    /// The retention policy that applies to `destination`: its own, else the job's.
    pub fn retention_for<'a>(&'a self, destination: &'a Destination) -> Option<&'a Policy> {
        destination.retention.as_ref().or(self.retention.as_ref())
    }
}

/// The variables of the AWS credential chain that hold secrets.
const AWS_SECRET_VARIABLES: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

impl Config {
    /// The environment variables this configuration reads secrets from
    /// (destinations' passwords, keys, SAS tokens, an encryption
    /// passphrase, and the AWS chain's secret variables): what a command
    /// run as another user (`run_as`) must not inherit.
    pub fn secret_variables(&self) -> Vec<String> {
        let mut out: Vec<String> = AWS_SECRET_VARIABLES.iter().map(|v| v.to_string()).collect();
        for d in self.destinations.values() {
            out.extend(d.kind.secret_variables().into_iter().map(str::to_string));
        }
        for j in &self.jobs {
            if let Some(v) = j.encryption.as_ref().and_then(|e| e.passphrase_env.clone()) {
                out.push(v);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The job named `name`, or a usage error listing the jobs there are.
    pub fn job(&self, name: &str) -> Result<&Job, Error> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            Error::Usage(format!(
                "no job named {name:?} in {} (jobs: {})",
                self.file.display(),
                known.join(", ")
            ))
        })
    }

    /// The origin `job`'s backups record: its cluster member name, else
    /// this host's `host_id`.
    pub fn origin<'a>(&'a self, job: &'a Job) -> &'a str {
        job.cluster
            .as_ref()
            .map_or(self.host_id.as_str(), |c| c.member.as_str())
    }

    /// The jobs a command applies to: the one named, or all.
    pub fn select_jobs(&self, name: Option<&str>) -> Result<Vec<&Job>, Error> {
        match name {
            Some(n) => Ok(vec![self.job(n)?]),
            None => Ok(self.jobs.iter().collect()),
        }
    }

    /// The destination named `name`, ready to use.
    pub fn target(&self, name: &str) -> Result<Target> {
        let d = self.destinations.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.destinations.keys().map(String::as_str).collect();
            Error::Usage(format!(
                "no destination named {name:?} in {} (destinations: {})",
                self.file.display(),
                known.join(", ")
            ))
        })?;
        Ok(Target::new(d))
    }

    /// The job's destinations, or only `only` (which must be one of them).
    pub fn job_targets(&self, job: &Job, only: Option<&str>) -> Result<Vec<Target>> {
        if let Some(o) = only
            && !job.destinations.iter().any(|d| d == o)
        {
            return Err(Error::Usage(format!(
                "destination {o:?} is not one of job {:?}'s destinations ({})",
                job.name,
                job.destinations.join(", ")
            )));
        }
        job.destinations
            .iter()
            .filter(|d| only.is_none_or(|o| o == d.as_str()))
            .map(|d| self.target(d))
            .collect()
    }
}

/// Writes the commented example configuration to `dir/offsite.toml`,
/// never over an existing file; answers its path.
pub fn write_example(dir: &Path) -> Result<PathBuf, Error> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let path = dir.join("offsite.toml");
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Usage(format!(
                "{} already exists; not overwritten",
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("cannot write {}", path.display()), e)),
    };
    f.write_all(EXAMPLE.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(path)
}

/// Where the configuration file is: `--config`, else `$OFFSITE_CONFIG`, else `./offsite.toml`.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("OFFSITE_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("offsite.toml"),
    }
}

/// Reads and resolves the configuration file.
pub fn load(file: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::Config(format!(
            "cannot read configuration {}: {e}; pass --config FILE, set OFFSITE_CONFIG, or run `offsite init` to write an example",
            file.display()
        ))
    })?;
    parse(file, &text)
}

/// Parses configuration `text` as if read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<Config, Error> {
    let tree = toml::de::DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        located(file, line, None, e.message())
    })?;
    let root = toml::de::DeValue::Table(tree.into_inner());
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        located(file, line, None, e.message())
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path: Vec<Seg> = e.path().iter().filter_map(Seg::from_serde).collect();
        let inner = e.inner();
        let line = inner
            .span()
            .filter(|s| s.start > 0 || s.end > 0)
            .map(|s| line_of(text, s.start))
            .or_else(|| locate(&root, text, &path));
        located(file, line, Some(&path), inner.message())
    })?;
    let ctx = Ctx {
        file,
        text,
        root: &root,
    };
    resolve(raw, &ctx)
}

// ---------------------------------------------------------------------------
// Locating keys in the file.

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    fn from_serde(s: &serde_path_to_error::Segment) -> Option<Seg> {
        match s {
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {
                None
            }
        }
    }
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of the deepest part of `path` present in the file.
fn locate(root: &toml::de::DeValue<'_>, text: &str, path: &[Seg]) -> Option<usize> {
    let mut node = root;
    let mut best = None;
    for seg in path {
        let next = match seg {
            Seg::Key(key) => node.get(key.as_str()),
            Seg::Index(i) => node.get(*i),
        };
        match next {
            Some(n) => {
                best = Some(line_of(text, n.span().start));
                node = n.get_ref();
            }
            None => break,
        }
    }
    best
}

fn located(file: &Path, line: Option<usize>, path: Option<&[Seg]>, message: &str) -> Error {
    let mut out = file.display().to_string();
    if let Some(l) = line {
        out.push_str(&format!(":{l}"));
    }
    out.push_str(": ");
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        out.push_str(&format!("key {}: ", path_text(p)));
    }
    out.push_str(message.trim_end_matches('\n'));
    Error::Config(out)
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    root: &'a toml::de::DeValue<'a>,
}

impl Ctx<'_> {
    fn err(&self, path: &[Seg], message: impl AsRef<str>) -> Error {
        located(
            self.file,
            locate(self.root, self.text, path),
            Some(path),
            message.as_ref(),
        )
    }

    fn resolve_path(&self, p: &Path) -> PathBuf {
        let base = self
            .file
            .parent()
            .filter(|b| !b.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        std::path::absolute(&joined).unwrap_or(joined)
    }
}

// ---------------------------------------------------------------------------
// Resolution and validation.

/// Splits a table tagged by `kind` into the kind and the rest, deserialised
/// as `T` by `read` with errors located at `path`.
fn kind_of<'t>(
    ctx: &Ctx,
    path: &[Seg],
    table: &'t toml::Table,
) -> Result<(&'t str, toml::Table), Error> {
    let mut kp = path.to_vec();
    kp.push(k("kind"));
    let kind = match table.get("kind") {
        Some(toml::Value::String(s)) => s.as_str(),
        Some(_) => return Err(ctx.err(&kp, "`kind` must be a string")),
        None => return Err(ctx.err(path, "missing field `kind`")),
    };
    let mut rest = table.clone();
    rest.remove("kind");
    Ok((kind, rest))
}

fn read<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    path: &[Seg],
    table: toml::Table,
) -> Result<T, Error> {
    read_also(ctx, path, table, &[])
}

/// `read` for a destination kind's own keys (the [`Common`] ones already
/// split off): an unknown key's message lists the common keys too.
fn read_kind<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    path: &[Seg],
    table: toml::Table,
) -> Result<T, Error> {
    read_also(ctx, path, table, &COMMON_KEYS)
}

/// `read`, naming `also` as further known keys when a key is unknown.
fn read_also<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    path: &[Seg],
    table: toml::Table,
    also: &[&str],
) -> Result<T, Error> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let mut p = path.to_vec();
        p.extend(e.path().iter().filter_map(Seg::from_serde));
        let mut message = e.inner().message().to_string();
        if message.starts_with("unknown field") && !also.is_empty() {
            let keys: Vec<String> = also.iter().map(|k| format!("`{k}`")).collect();
            message.push_str(", or a key every destination has: ");
            message.push_str(&keys.join(", "));
        }
        ctx.err(&p, message)
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_compression(text: &str) -> Result<i32, String> {
    let level = match text.split_once(':') {
        None if text == "zstd" => DEFAULT_ZSTD_LEVEL,
        Some(("zstd", l)) => l.parse::<i32>().map_err(|_| {
            format!("invalid compression {text:?}: the level after zstd: is a number")
        })?,
        _ => {
            return Err(format!(
                "invalid compression {text:?}: write \"zstd\" or \"zstd:LEVEL\" (1 to 19)"
            ));
        }
    };
    if !(1..=19).contains(&level) {
        return Err(format!(
            "invalid compression {text:?}: the zstd level goes from 1 to 19"
        ));
    }
    Ok(level)
}

fn check_globs(ctx: &Ctx, path: &[Seg], globs: &[String]) -> Result<(), Error> {
    for (i, g) in globs.iter().enumerate() {
        let mut p = path.to_vec();
        p.push(Seg::Index(i));
        if g.trim().is_empty() {
            return Err(ctx.err(&p, "a glob pattern cannot be empty"));
        }
        globset::Glob::new(g)
            .map_err(|e| ctx.err(&p, format!("invalid glob {g:?}: {}", e.kind())))?;
    }
    Ok(())
}

fn resolve(raw: RawConfig, ctx: &Ctx) -> Result<Config, Error> {
    let staging = resolve_staging(ctx, &raw.staging)?;
    let mut destinations = BTreeMap::new();
    for (name, table) in raw.destinations {
        let d = resolve_destination(ctx, &staging, &name, &table)?;
        destinations.insert(name, d);
    }
    let host_id = match raw.host_id {
        Some(h) if crate::format::manifest::valid_host_id(&h) => h,
        Some(h) => {
            return Err(ctx.err(
                &[k("host_id")],
                format!("invalid host_id {h:?}: 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"),
            ));
        }
        None => default_host_id(),
    };
    let notify = match raw.notify {
        Some(n) => Some(resolve_notify(ctx, &[k("notify")], n)?),
        None => None,
    };
    let mut jobs: Vec<Job> = Vec::new();
    for (i, j) in raw.jobs.into_iter().enumerate() {
        let mut job = resolve_job(ctx, &destinations, &jobs, i, j, &host_id)?;
        if job.notify.is_none() {
            job.notify = notify.clone();
        }
        jobs.push(job);
    }
    if jobs.is_empty() {
        return Err(ctx.err(&[], "no [[job]] is defined; add one (see `offsite init`)"));
    }
    Ok(Config {
        file: ctx.file.to_path_buf(),
        host_id,
        staging,
        jobs,
        destinations,
        metrics_file: raw.metrics_file.as_deref().map(|p| ctx.resolve_path(p)),
    })
}

fn resolve_staging(ctx: &Ctx, raw: &RawStaging) -> Result<Staging, Error> {
    if raw.dir.as_os_str().is_empty() {
        return Err(ctx.err(
            &[k("staging"), k("dir")],
            "the staging folder cannot be empty",
        ));
    }
    Ok(Staging {
        dir: ctx.resolve_path(&raw.dir),
        min_free: raw.min_free.map(|s| s.0).unwrap_or(DEFAULT_MIN_FREE),
    })
}

/// One `[destination.NAME]`: the kind's own keys are its backend's
/// ([`Settings`]), the [`Common`] ones are checked here.
fn resolve_destination(
    ctx: &Ctx,
    staging: &Staging,
    name: &str,
    table: &toml::Table,
) -> Result<Destination, Error> {
    let here = [k("destination"), k(name)];
    if !valid_name(name) {
        return Err(ctx.err(
            &here,
            format!("invalid destination name {name:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    let (kind, mut rest) = kind_of(ctx, &here, table)?;
    let common: toml::Table = COMMON_KEYS
        .iter()
        .filter_map(|c| rest.remove_entry(*c))
        .collect();
    let common: Common = read(ctx, &here, common)?;
    let resolve_path = |p: &Path| ctx.resolve_path(p);
    let place = Place {
        resolve_path: &resolve_path,
        staging_dir: &staging.dir,
    };
    let kind = resolve_kind(ctx, &here, kind, rest, &place)?;
    resolve_common(ctx, &here, name, kind, common)
}

/// A destination's own keys, read and checked by its backend's settings.
fn resolve_kind(
    ctx: &Ctx,
    here: &[Seg],
    kind: &str,
    rest: toml::Table,
    place: &Place,
) -> Result<DestinationKind, Error> {
    Ok(match kind {
        "path" => DestinationKind::Path {
            path: settings::<PathSettings>(ctx, here, rest, place)?,
        },
        "s3" => DestinationKind::S3(settings::<S3Settings>(ctx, here, rest, place)?),
        "sftp" => DestinationKind::Sftp(settings::<SftpSettings>(ctx, here, rest, place)?),
        "ftp" => DestinationKind::Ftp(settings::<FtpSettings>(ctx, here, rest, place)?),
        "azure" => DestinationKind::Azure(settings::<AzureSettings>(ctx, here, rest, place)?),
        "glacier" => DestinationKind::Glacier(settings::<GlacierSettings>(ctx, here, rest, place)?),
        other => {
            let mut p = here.to_vec();
            p.push(k("kind"));
            return Err(ctx.err(
                &p,
                format!(
                    "unknown destination kind {other:?}; this version supports: path, s3, sftp, ftp, azure, glacier"
                ),
            ));
        }
    })
}

/// Reads a destination kind's keys as `S` and resolves them, locating a
/// problem the settings report at its key below `here`.
fn settings<S: Settings>(
    ctx: &Ctx,
    here: &[Seg],
    rest: toml::Table,
    place: &Place,
) -> Result<S::Options, Error> {
    let raw: S = read_kind(ctx, here, rest)?;
    raw.resolve(place).map_err(|Invalid { key, message }| {
        let mut p = here.to_vec();
        p.extend(key.into_iter().map(k));
        ctx.err(&p, message)
    })
}

/// The keys every destination has.
fn resolve_common(
    ctx: &Ctx,
    here: &[Seg],
    name: &str,
    kind: DestinationKind,
    common: Common,
) -> Result<Destination, Error> {
    let key = |key: &str| {
        let mut p = here.to_vec();
        p.push(k(key));
        p
    };
    let Common {
        prefix,
        bwlimit,
        part_size,
        concurrency,
        retries,
        retention,
    } = common;
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() && offsite_backends::validate_key(&prefix).is_err() {
        return Err(ctx.err(
            &key("prefix"),
            format!("invalid prefix {prefix:?}: no empty, '.' or '..' parts"),
        ));
    }
    if bwlimit.is_some_and(|b| b.0 == 0) {
        return Err(ctx.err(
            &key("bwlimit"),
            "bwlimit must be more than 0 (leave it out for no limit)",
        ));
    }
    if part_size.is_some_and(|p| p.0 == 0) {
        return Err(ctx.err(&key("part_size"), "part_size must be more than 0"));
    }
    if concurrency == Some(0) {
        return Err(ctx.err(&key("concurrency"), "concurrency must be at least 1"));
    }
    if retries.is_some_and(|r| r > MAX_RETRIES) {
        return Err(ctx.err(
            &key("retries"),
            format!("retries must be 0 to {MAX_RETRIES} (each waits up to twice as long as the one before, at most 30 s)"),
        ));
    }
    Ok(Destination {
        name: name.to_string(),
        kind,
        prefix,
        bwlimit: bwlimit.map(|b| b.0),
        part_size: part_size.map(|p| p.0).unwrap_or(DEFAULT_PART_SIZE),
        concurrency: concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        retries: retries.unwrap_or(DEFAULT_RETRIES),
        retention: retention.as_ref().map(RawRetention::resolve),
    })
}

/// The `i`th `[[job]]`; `earlier` are the jobs before it.
fn resolve_job(
    ctx: &Ctx,
    destinations: &BTreeMap<String, Destination>,
    earlier: &[Job],
    i: usize,
    j: RawJob,
    host_id: &str,
) -> Result<Job, Error> {
    let here = |key: &str| [k("job"), Seg::Index(i), k(key)];
    if !valid_name(&j.name) {
        return Err(ctx.err(
            &here("name"),
            format!(
                "invalid job name {:?}: use letters, digits, '-', '_' and '.'",
                j.name
            ),
        ));
    }
    if earlier.iter().any(|o| o.name == j.name) {
        return Err(ctx.err(&here("name"), format!("two jobs are named {:?}", j.name)));
    }
    check_job_destinations(ctx, &here("destinations"), &j.destinations, destinations)?;
    let source = resolve_source(ctx, &here("source"), &j.source)?;
    for (hook_key, hooks) in [("pre", &j.pre), ("post", &j.post)] {
        for (n, h) in hooks.iter().enumerate() {
            if h.trim().is_empty() {
                let mut p = here(hook_key).to_vec();
                p.push(Seg::Index(n));
                return Err(ctx.err(&p, "a hook command cannot be empty"));
            }
        }
    }
    let volume_size = j.volume_size.map(|v| v.0).unwrap_or(DEFAULT_VOLUME_SIZE);
    check_volume_size(
        ctx,
        &here("volume_size"),
        volume_size,
        &j.destinations,
        destinations,
    )?;
    let block_size = match &j.block_size {
        None => crate::format::blocks::BlockSize::Auto,
        Some(b) => parse_block_size(b).map_err(|m| ctx.err(&here("block_size"), m))?,
    };
    let compression_level = match &j.compression {
        Some(c) => parse_compression(c).map_err(|m| ctx.err(&here("compression"), m))?,
        None => DEFAULT_ZSTD_LEVEL,
    };
    let shrink_limit = match j.shrink_limit {
        None => DEFAULT_SHRINK_LIMIT,
        Some(f) if (0.0..=1.0).contains(&f) => f,
        Some(f) => {
            return Err(ctx.err(
                &here("shrink_limit"),
                format!("shrink_limit {f} is not a fraction: write 0.5 to fail a backup whose data shrank by more than half, 1.0 to never check"),
            ));
        }
    };
    let retention = j.retention.as_ref().map(RawRetention::resolve);
    let any_policy = retention.is_some()
        || j.destinations
            .iter()
            .any(|d| destinations.get(d).is_some_and(|d| d.retention.is_some()));
    let schedule = match j.schedule {
        None => None,
        Some(s) => Some(resolve_schedule(ctx, &here("schedule"), s, any_policy)?),
    };
    let encryption = match j.encryption {
        None => None,
        Some(e) => Some(resolve_encryption(ctx, &here("encryption"), e)?),
    };
    let notify = match j.notify {
        None => None,
        Some(n) => Some(resolve_notify(ctx, &here("notify"), n)?),
    };
    let cluster = match j.cluster {
        None => None,
        Some(c) => {
            let cluster = resolve_cluster(ctx, &here("cluster"), c, host_id)?;
            if cluster.run == RunBy::One {
                check_claimable(ctx, &here("cluster"), &j.destinations, destinations)?;
            }
            Some(cluster)
        }
    };
    Ok(Job {
        name: j.name,
        source,
        pre: j.pre,
        post: j.post,
        destinations: j.destinations,
        volume_size,
        block_size,
        compression_level,
        keep_local: j.keep_local.unwrap_or(0),
        on_change: j.on_change.unwrap_or(OnChange::Warn),
        on_unreadable: j.on_unreadable.unwrap_or(OnUnreadable::Fail),
        shrink_limit,
        allow_degenerate: j.allow_degenerate,
        max_age: j.max_age.map(|d| d.0),
        retention,
        schedule,
        encryption,
        cluster,
        notify,
        workdir: ctx.resolve_path(Path::new(".")),
    })
}

/// A `notify` table: a command and/or an http(s) URL, and the outcomes
/// (default: failure, partial, stale).
fn resolve_notify(ctx: &Ctx, at: &[Seg], n: RawNotify) -> Result<Notify, Error> {
    let key = |name: &str| {
        let mut p = at.to_vec();
        p.push(k(name));
        p
    };
    if n.command.is_none() && n.url.is_none() {
        return Err(ctx.err(at, "notify needs a command, a url, or both"));
    }
    if let Some(c) = &n.command
        && c.trim().is_empty()
    {
        return Err(ctx.err(&key("command"), "the notify command cannot be empty"));
    }
    if let Some(u) = &n.url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(ctx.err(
            &key("url"),
            format!("the notify url {} is not http(s)", crate::notify::redact(u)),
        ));
    }
    use crate::notify::Event;
    Ok(Notify {
        on: n
            .on
            .unwrap_or_else(|| vec![Event::Failure, Event::Partial, Event::Stale]),
        command: n.command,
        url: n.url.map(|u| u.trim_end_matches('/').to_string()),
        timeout: n
            .timeout
            .map_or(std::time::Duration::from_secs(10), |d| d.0),
        retries: n.retries.unwrap_or(2),
    })
}

/// Default of a cluster's `grace`: how long a set stays in progress.
const DEFAULT_SET_GRACE: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Default of a cluster's `window`: how long a manual run's set lasts.
const DEFAULT_SET_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// A job's `cluster` table: its members (valid, none twice), this host's
/// member name (from `member_env`, else `host_id`), which must be one of
/// them, and the set timings.
fn resolve_cluster(ctx: &Ctx, at: &[Seg], c: RawCluster, host_id: &str) -> Result<Cluster, Error> {
    let key = |name: &str| {
        let mut p = at.to_vec();
        p.push(k(name));
        p
    };
    if c.members.is_empty() {
        return Err(ctx.err(
            &key("members"),
            "a cluster needs its members: members = [\"node1\", \"node2\"]",
        ));
    }
    for (n, m) in c.members.iter().enumerate() {
        let mut p = key("members");
        p.push(Seg::Index(n));
        if !crate::format::manifest::valid_host_id(m) {
            return Err(ctx.err(&p, format!("invalid member name {m:?}: 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit")));
        }
        if c.members[..n].contains(m) {
            return Err(ctx.err(&p, format!("member {m:?} is listed twice")));
        }
    }
    let member = match &c.member_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                return Err(ctx.err(
                    &key("member_env"),
                    format!("the environment variable {var} names this host's member, and it is not set; set it to one of {:?}", c.members),
                ));
            }
        },
        None => host_id.to_string(),
    };
    if !c.members.contains(&member) {
        let from = match &c.member_env {
            Some(var) => format!("${var}"),
            None => "host_id".to_string(),
        };
        return Err(ctx.err(
            &key("members"),
            format!("this host is member {member:?} ({from}), which is not one of the members {:?}; add it, or set {from} to one of them", c.members),
        ));
    }
    let positive = |name: &str, d: Option<HumanDuration>, default| match d {
        None => Ok(default),
        Some(d) if d.0.is_zero() => Err(ctx.err(&key(name), format!("{name} cannot be zero"))),
        Some(d) => Ok(d.0),
    };
    let grace = positive("grace", c.grace, DEFAULT_SET_GRACE)?;
    Ok(Cluster {
        members: c.members,
        member,
        grace,
        window: positive("window", c.window, DEFAULT_SET_WINDOW)?,
        run: c.run.unwrap_or(RunBy::All),
        takeover: positive("takeover", c.takeover, grace)?,
        claim_if: match c.claim_if {
            Some(cmd) if cmd.trim().is_empty() => {
                return Err(ctx.err(&key("claim_if"), "claim_if cannot be empty"));
            }
            Some(_) if c.run != Some(RunBy::One) => {
                return Err(ctx.err(
                    &key("claim_if"),
                    "claim_if decides who claims a slot, which only run = \"one\" does",
                ));
            }
            other => other,
        },
    })
}

/// `run = "one"`: a slot is claimed with an exclusive create, which needs a
/// destination whose create-only writes are exclusive (not FTP, not a vault).
fn check_claimable(
    ctx: &Ctx,
    at: &[Seg],
    names: &[String],
    destinations: &BTreeMap<String, Destination>,
) -> Result<(), Error> {
    let claimable = names.iter().any(|n| {
        destinations
            .get(n)
            .is_some_and(|d| d.capabilities().exclusive_create)
    });
    if claimable {
        return Ok(());
    }
    let mut p = at.to_vec();
    p.push(k("run"));
    Err(ctx.err(
        &p,
        "run = \"one\" claims each slot with a create-if-absent write, which none of the job's destinations can make exclusive (FTP only looks before it writes, a Glacier vault's keys are in a local catalog); add a path, SFTP, S3 or Azure destination, or use run = \"all\"",
    ))
}

/// A job's `destinations`: at least one, each defined, none twice.
fn check_job_destinations(
    ctx: &Ctx,
    at: &[Seg],
    names: &[String],
    destinations: &BTreeMap<String, Destination>,
) -> Result<(), Error> {
    if names.is_empty() {
        return Err(ctx.err(at, "a job needs at least one destination"));
    }
    for (n, d) in names.iter().enumerate() {
        let mut p = at.to_vec();
        p.push(Seg::Index(n));
        if !destinations.contains_key(d) {
            let known: Vec<&str> = destinations.keys().map(String::as_str).collect();
            return Err(ctx.err(
                &p,
                format!(
                    "unknown destination {d:?}; define [destination.{d}] (defined: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if names[..n].contains(d) {
            return Err(ctx.err(&p, format!("destination {d:?} is listed twice")));
        }
    }
    Ok(())
}

/// `block_size`: `"auto"`, `"off"`, or a power of two from 8KiB to 16MiB.
fn parse_block_size(text: &str) -> Result<crate::format::blocks::BlockSize, String> {
    use crate::format::blocks::{BlockSize, valid_block_size};
    let bad = || {
        format!(
            "block_size {text:?}: write \"auto\" (by each file's size, the default), \"off\" (pack changed files whole) or a power of two from 8KiB to 16MiB, like \"16KiB\""
        )
    };
    match text.trim() {
        "auto" => Ok(BlockSize::Auto),
        "off" => Ok(BlockSize::Off),
        t => match ByteSize::parse(t) {
            Ok(b) if valid_block_size(b.0) => Ok(BlockSize::Fixed(b.0)),
            _ => Err(bad()),
        },
    }
}

/// Each volume is one object: it must fit every destination of the job
/// (a Glacier vault takes archives of at most 4 GiB).
fn check_volume_size(
    ctx: &Ctx,
    at: &[Seg],
    volume_size: u64,
    names: &[String],
    destinations: &BTreeMap<String, Destination>,
) -> Result<(), Error> {
    if volume_size < 4096 {
        return Err(ctx.err(at, "volume_size must be at least 4KiB"));
    }
    for name in names {
        let Some(max) = destinations
            .get(name)
            .and_then(|d| d.capabilities().max_object_size)
        else {
            continue;
        };
        if volume_size > max {
            return Err(ctx.err(
                at,
                format!(
                    "volume_size is over {}, the largest object destination {name:?} takes; set volume_size = \"{}\" or less",
                    ByteSize(max),
                    exact_size(max)
                ),
            ));
        }
    }
    Ok(())
}

/// `n` bytes as the configuration can write them exactly: `"4GiB"`.
fn exact_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A job's `source`, tagged by `kind`.
fn resolve_source(ctx: &Ctx, sp: &[Seg], table: &toml::Table) -> Result<Source, Error> {
    let key = |key: &str| {
        let mut p = sp.to_vec();
        p.push(k(key));
        p
    };
    let (kind, rest) = kind_of(ctx, sp, table)?;
    match kind {
        "dir" => {
            let RawDirSource {
                path,
                order,
                exclude,
            } = read(ctx, sp, rest)?;
            if path.as_os_str().is_empty() {
                return Err(ctx.err(&key("path"), "the source path cannot be empty"));
            }
            check_globs(ctx, &key("order"), &order)?;
            check_globs(ctx, &key("exclude"), &exclude)?;
            Ok(Source::Dir {
                path: ctx.resolve_path(&path),
                order,
                exclude,
            })
        }
        "command" => {
            let RawCommandSource {
                run,
                output,
                run_as,
            } = read(ctx, sp, rest)?;
            if let Some(u) = &run_as
                && (u.is_empty() || u.contains(['\0', ':', '/']))
            {
                return Err(ctx.err(&key("run_as"), format!("invalid user name {u:?}")));
            }
            if run.trim().is_empty() {
                return Err(ctx.err(&key("run"), "the command to run cannot be empty"));
            }
            if let Some(o) = &output
                && !valid_output_name(o)
            {
                return Err(ctx.err(
                    &key("output"),
                    format!("invalid output name {o:?}: a relative file name without '..'"),
                ));
            }
            Ok(Source::Command {
                run,
                output,
                run_as,
            })
        }
        other => Err(ctx.err(
            &key("kind"),
            format!("unknown source kind {other:?}; use \"dir\" or \"command\""),
        )),
    }
}

/// A job's `schedule`; `any_policy`: the job or one of its destinations
/// has a retention policy (a prune schedule needs one).
fn resolve_schedule(
    ctx: &Ctx,
    at: &[Seg],
    s: RawSchedule,
    any_policy: bool,
) -> Result<JobSchedule, Error> {
    let key = |key: &str| {
        let mut p = at.to_vec();
        p.push(k(key));
        p
    };
    if s.full.is_none() && s.incremental.is_none() && s.prune.is_none() {
        return Err(ctx.err(
            at,
            "a schedule names at least one of full, incremental or prune, e.g. schedule = { full = \"0 2 * * *\" }",
        ));
    }
    if s.prune.is_some() && !any_policy {
        return Err(ctx.err(
            &key("prune"),
            "a prune schedule needs a retention policy: add retention = { ... } to the job or to one of its destinations",
        ));
    }
    let timezone = match &s.timezone {
        None => jiff::tz::TimeZone::system(),
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
            ctx.err(
                &key("timezone"),
                format!("unknown time zone {name:?} ({e}); use an IANA name like \"Europe/Berlin\" or \"UTC\""),
            )
        })?,
    };
    Ok(JobSchedule {
        full: s.full,
        incremental: s.incremental,
        prune: s.prune,
        catch_up: s.catch_up.unwrap_or(true),
        timezone,
    })
}

/// A job's `encryption`: public keys or a passphrase, not both.
fn resolve_encryption(ctx: &Ctx, at: &[Seg], e: RawEncryption) -> Result<Encryption, Error> {
    let key = |key: &str| {
        let mut p = at.to_vec();
        p.push(k(key));
        p
    };
    for (n, r) in e.recipients.iter().enumerate() {
        let mut p = key("recipients");
        p.push(Seg::Index(n));
        crypt::check_recipient(r).map_err(|m| ctx.err(&p, m))?;
    }
    let has_recipients = !e.recipients.is_empty() || e.recipients_file.is_some();
    match (&e.passphrase_env, has_recipients) {
        (Some(_), true) => {
            return Err(ctx.err(
                &key("passphrase_env"),
                "give recipients (public keys) or passphrase_env, not both",
            ));
        }
        (None, false) if e.identity_file.is_none() => {
            return Err(ctx.err(
                at,
                "encryption needs recipients = [\"age1…\"] (public keys; `offsite keygen` makes a pair), recipients_file, or passphrase_env",
            ));
        }
        _ => {}
    }
    if let Some(v) = &e.passphrase_env
        && v.trim().is_empty()
    {
        return Err(ctx.err(&key("passphrase_env"), "the variable name cannot be empty"));
    }
    Ok(Encryption {
        recipients: e.recipients.iter().map(|r| r.trim().to_string()).collect(),
        recipients_file: e.recipients_file.map(|f| ctx.resolve_path(&f)),
        passphrase_env: e.passphrase_env,
        identity_file: e.identity_file.map(|f| ctx.resolve_path(&f)),
    })
}

fn valid_output_name(o: &str) -> bool {
    let p = Path::new(o);
    !o.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[staging]
dir = "/var/lib/offsite/staging"

[[job]]
name = "orders-db"
source = { kind = "dir", path = "/var/lib/eventstore/db", order = ["*.chk", "index/**", "**"], exclude = ["*.tmp"] }
destinations = ["nas"]
volume_size = "64MiB"
compression = "zstd:5"

[destination.nas]
kind = "path"
path = "/mnt/backups"
bwlimit = "20MiB"
"#;

    fn err_of(text: &str) -> String {
        match parse(Path::new("/etc/offsite.toml"), text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_file_resolves() {
        let c = parse(Path::new("/etc/offsite.toml"), GOOD).expect("parse");
        assert_eq!(c.jobs[0].volume_size, 64 << 20);
        assert_eq!(c.jobs[0].compression_level, 5);
        assert_eq!(c.destinations["nas"].bwlimit, Some(20 << 20));
        assert_eq!(c.destinations["nas"].part_size, DEFAULT_PART_SIZE);
        assert_eq!(c.destinations["nas"].retries, DEFAULT_RETRIES);
        let text = GOOD.replace("bwlimit = \"20MiB\"", "retries = 0\nprefix = \"/db/\"");
        let c = parse(Path::new("/etc/offsite.toml"), &text).expect("parse");
        assert_eq!(c.destinations["nas"].retries, 0);
        assert_eq!(c.destinations["nas"].prefix, "db");
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let text = GOOD.replace("/var/lib/offsite/staging", "staging");
        let c = parse(Path::new("/etc/offsite/offsite.toml"), &text).expect("parse");
        assert_eq!(c.staging.dir, PathBuf::from("/etc/offsite/staging"));
    }

    /// (what is wrong, the file as written, the line the error must name, words it must contain)
    const BAD: &[(&str, &str, usize, &[&str])] = &[
        (
            "unknown key",
            "[staging]\ndir = \"/s\"\ncolour = 1\n",
            3,
            &["colour"],
        ),
        (
            "unknown key in a job",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\nretention_days = 3\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            7,
            &["retention_days"],
        ),
        ("wrong type", "[staging]\ndir = 5\n", 2, &["staging.dir"]),
        (
            "bad size",
            "[staging]\ndir = \"/s\"\nmin_free = \"12XB\"\n",
            3,
            &["staging.min_free", "12XB"],
        ),
        (
            "unknown destination",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\", \"nowhere\"]\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            6,
            &["job[0].destinations[1]", "nowhere"],
        ),
        (
            "wrong type inside a tagged table",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"path\"\npath = \"/m\"\nconcurrency = \"many\"\n",
            6,
            &["destination.d.concurrency"],
        ),
        (
            "unknown key in a source",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"dir\", path = \"/d\", oder = [] }\ndestinations = [\"d\"]\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            5,
            &["job[0].source", "oder"],
        ),
        (
            "unknown source kind",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"tape\" }\ndestinations = [\"d\"]\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            5,
            &["job[0].source.kind", "tape"],
        ),
        (
            "bad retention duration",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\nretention = { keep_last = 2, min_age = \"soon\" }\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            7,
            &["job[0].retention.min_age", "soon"],
        ),
        (
            "unknown retention key",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"path\"\npath = \"/m\"\nretention = { keep_days = 2 }\n",
            6,
            &["destination.d.retention", "keep_days"],
        ),
        (
            "unknown destination kind",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"tape\"\npath = \"/m\"\n",
            4,
            &["destination.d.kind", "tape"],
        ),
        (
            "bad compression",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\ncompression = \"gzip\"\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            7,
            &["job[0].compression", "gzip"],
        ),
        (
            "bad glob",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"dir\", path = \"/d\", order = [\"[\"] }\ndestinations = [\"d\"]\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            5,
            &["job[0].source.order[0]"],
        ),
        (
            "empty path",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"path\"\npath = \"\"\n",
            5,
            &["destination.d.path"],
        ),
        ("syntax", "[staging\ndir = \"/s\"\n", 1, &[]),
        (
            "bad host id",
            "host_id = \"db 1\"\n[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            1,
            &["host_id", "db 1"],
        ),
        (
            "shrink limit out of range",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\nshrink_limit = 5\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            7,
            &["job[0].shrink_limit", "fraction"],
        ),
        (
            "unknown on_unreadable",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\non_unreadable = \"ignore\"\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            7,
            &["job[0].on_unreadable", "ignore"],
        ),
        (
            "bad run_as",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\", run_as = \"a:b\" }\ndestinations = [\"d\"]\n[destination.d]\nkind = \"path\"\npath = \"/m\"\n",
            5,
            &["job[0].source.run_as"],
        ),
        (
            "unknown retention origins",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"path\"\npath = \"/m\"\nretention = { keep_last = 2, origins = \"everyone\" }\n",
            6,
            &["destination.d.retention.origins", "everyone"],
        ),
        (
            "unknown object lock mode",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"s3\"\nbucket = \"b\"\nobject_lock = { mode = \"strict\", days = 7 }\n",
            6,
            &["destination.d.object_lock.mode", "strict", "governance"],
        ),
        (
            "a bad fingerprint",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"ftp\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"P\"\npath = \"/b\"\nfingerprint = \"sha256:AB:CD\"\n",
            9,
            &["destination.d.fingerprint", "64 hex digits"],
        ),
        (
            "zero bwlimit",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"path\"\npath = \"/m\"\nbwlimit = 0\n",
            6,
            &["bwlimit"],
        ),
        (
            "sftp without a login",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"sftp\"\nhost = \"h\"\nuser = \"u\"\npath = \"/b\"\n",
            3,
            &["destination.d", "key_file", "password_env"],
        ),
        (
            "sftp with both logins",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"sftp\"\nhost = \"h\"\nuser = \"u\"\npath = \"/b\"\nkey_file = \"/k\"\npassword_env = \"P\"\n",
            9,
            &["destination.d.password_env", "not both"],
        ),
        (
            "sftp host with a slash",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"sftp\"\nhost = \"sftp://h\"\nuser = \"u\"\npath = \"/b\"\nkey_file = \"/k\"\n",
            5,
            &["destination.d.host", "sftp://h"],
        ),
        (
            "sftp port out of range",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"sftp\"\nhost = \"h\"\nport = 70000\nuser = \"u\"\npath = \"/b\"\nkey_file = \"/k\"\n",
            6,
            &["destination.d.port"],
        ),
        (
            "ftp unknown tls",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"ftp\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"P\"\npath = \"/\"\ntls = \"yes\"\n",
            9,
            &["destination.d.tls", "explicit", "implicit", "none"],
        ),
        (
            "ftp ca_file without tls",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"ftp\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"P\"\npath = \"/\"\ntls = \"none\"\nca_file = \"/ca.pem\"\n",
            10,
            &["destination.d.ca_file"],
        ),
        (
            "ftp inline password",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"ftp\"\nhost = \"h\"\nuser = \"u\"\npassword = \"hunter2\"\npath = \"/\"\n",
            7,
            &["destination.d.password", "unknown field"],
        ),
        (
            "glacier vault name",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"glacier\"\nvault = \"db archive\"\n",
            5,
            &["destination.d.vault", "db archive"],
        ),
        (
            "glacier retrieval tier",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"glacier\"\nvault = \"v\"\nretrieval_tier = \"Fast\"\n",
            6,
            &["destination.d.retrieval_tier", "Standard, Bulk, Expedited"],
        ),
        (
            "glacier volume size",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = [\"d\"]\nvolume_size = \"8GiB\"\n[destination.d]\nkind = \"glacier\"\nvault = \"v\"\n",
            7,
            &["job[0].volume_size", "4GiB", "\"d\""],
        ),
        (
            "block size not a power of two",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"a\"\nsource = { kind = \"dir\", path = \"/d\" }\ndestinations = [\"d\"]\nblock_size = \"12KiB\"\n[destination.d]\nkind = \"path\"\npath = \"/x\"\n",
            7,
            &["job[0].block_size", "8KiB to 16MiB", "\"off\""],
        ),
        (
            "s3 unknown restore tier",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"s3\"\nbucket = \"b\"\nrestore_tier = \"Fast\"\n",
            6,
            &["destination.d.restore_tier", "Standard, Bulk, Expedited"],
        ),
        (
            "s3 deep archive expedited",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"s3\"\nbucket = \"b\"\nstorage_class = \"DEEP_ARCHIVE\"\nrestore_tier = \"Expedited\"\n",
            7,
            &["destination.d.restore_tier", "DEEP_ARCHIVE"],
        ),
        (
            "s3 restore days",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"s3\"\nbucket = \"b\"\nrestore_days = 0\n",
            6,
            &["destination.d.restore_days", "1 to 365"],
        ),
        (
            "encryption with a bad recipient",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"j\"\nsource = { kind = \"dir\", path = \"/d\" }\ndestinations = [\"d\"]\nencryption = { recipients = [\"age1nope\"] }\n[destination.d]\nkind = \"path\"\npath = \"/b\"\n",
            7,
            &[
                "job[0].encryption.recipients[0]",
                "invalid age recipient",
                "offsite keygen",
            ],
        ),
        (
            "encryption with recipients and a passphrase",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"j\"\nsource = { kind = \"dir\", path = \"/d\" }\ndestinations = [\"d\"]\nencryption = { recipients_file = \"r.txt\", passphrase_env = \"P\" }\n[destination.d]\nkind = \"path\"\npath = \"/b\"\n",
            7,
            &["job[0].encryption.passphrase_env", "not both"],
        ),
        (
            "encryption with nothing to encrypt to",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"j\"\nsource = { kind = \"dir\", path = \"/d\" }\ndestinations = [\"d\"]\nencryption = {}\n[destination.d]\nkind = \"path\"\npath = \"/b\"\n",
            7,
            &["job[0].encryption", "recipients"],
        ),
        (
            "encryption with an inline identity",
            "[staging]\ndir = \"/s\"\n[[job]]\nname = \"j\"\nsource = { kind = \"dir\", path = \"/d\" }\ndestinations = [\"d\"]\nencryption = { identity = \"AGE-SECRET-KEY-1\" }\n[destination.d]\nkind = \"path\"\npath = \"/b\"\n",
            7,
            &["job[0].encryption.identity", "unknown field"],
        ),
        (
            "azure without credentials",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"dbs\"\n",
            3,
            &["destination.d", "access_key_env", "sas_token_env"],
        ),
        (
            "azure with both credentials",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"dbs\"\naccess_key_env = \"K\"\nsas_token_env = \"S\"\n",
            8,
            &["destination.d.sas_token_env", "not both"],
        ),
        (
            "azure inline key",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"dbs\"\naccess_key = \"c2VjcmV0\"\n",
            7,
            &["destination.d.access_key", "unknown field"],
        ),
        (
            "azure account with capitals",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"AcmeBackups\"\ncontainer = \"dbs\"\naccess_key_env = \"K\"\n",
            5,
            &["destination.d.account", "lowercase"],
        ),
        (
            "azure container with a double hyphen",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"db--x\"\naccess_key_env = \"K\"\n",
            6,
            &["destination.d.container", "single hyphens"],
        ),
        (
            "azure unknown tier",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"dbs\"\naccess_key_env = \"K\"\naccess_tier = \"Glacier\"\n",
            8,
            &["destination.d.access_tier", "Hot, Cool, Cold, Archive"],
        ),
        (
            "azure unknown rehydrate priority",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"dbs\"\naccess_key_env = \"K\"\nrehydrate_priority = \"Urgent\"\n",
            8,
            &["destination.d.rehydrate_priority", "Standard, High"],
        ),
        (
            "azure endpoint without a scheme",
            "[staging]\ndir = \"/s\"\n[destination.d]\nkind = \"azure\"\naccount = \"acct1\"\ncontainer = \"dbs\"\naccess_key_env = \"K\"\nendpoint = \"127.0.0.1:10000\"\n",
            8,
            &["destination.d.endpoint", "http://"],
        ),
    ];

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        for (what, text, line, words) in BAD {
            let e = err_of(text);
            eprintln!("{what}: {e}");
            assert!(
                e.starts_with(&format!("/etc/offsite.toml:{line}: ")),
                "{what}: wrong file or line: {e}"
            );
            for w in *words {
                assert!(e.contains(w), "{what}: {e} should contain {w:?}");
            }
        }
    }

    #[test]
    fn a_file_without_jobs_is_refused() {
        assert!(err_of("[staging]\ndir = \"/s\"\n").contains("no [[job]]"));
    }

    #[test]
    fn schedules_are_checked_where_they_are_written() {
        let with = |schedule: &str| {
            GOOD.replace(
                "compression = \"zstd:5\"",
                &format!("compression = \"zstd:5\"\nschedule = {schedule}"),
            )
        };
        let table = [
            (
                r#"{ full = "61 2 * * *" }"#,
                "/etc/offsite.toml:11: key job[0].schedule.full: minute field: 61 is out of range 0-59",
            ),
            (
                r#"{ incremental = "* * *" }"#,
                "key job[0].schedule.incremental: a schedule has 5 fields",
            ),
            (
                r#"{ full = "0 2 * * *", timezone = "Mars/Olympus" }"#,
                "key job[0].schedule.timezone: unknown time zone \"Mars/Olympus\"",
            ),
            (
                r#"{ prune = "0 4 * * *" }"#,
                "key job[0].schedule.prune: a prune schedule needs a retention policy",
            ),
            (
                "{ catch_up = false }",
                "key job[0].schedule: a schedule names at least one of full, incremental or prune",
            ),
            (
                r#"{ full = "0 2 * * *", fulll = "x" }"#,
                "key job[0].schedule.fulll: unknown field `fulll`",
            ),
        ];
        for (schedule, want) in table {
            let err = err_of(&with(schedule));
            assert!(err.contains(want), "{schedule}: {err}");
        }
        let c = parse(
            Path::new("/etc/offsite.toml"),
            &with(r#"{ full = "0 2 * * 0", incremental = "0 */6 * * *", timezone = "Europe/Berlin", catch_up = false }"#),
        )
        .expect("a good schedule");
        let s = c.jobs[0].schedule.as_ref().expect("schedule");
        assert_eq!(s.full.as_ref().map(|c| c.as_str()), Some("0 2 * * 0"));
        assert!(!s.catch_up);
        assert_eq!(s.timezone.iana_name(), Some("Europe/Berlin"));
    }
}
