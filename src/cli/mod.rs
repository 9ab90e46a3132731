//! The thin shell: loads the configuration, calls the library, prints the
//! result for a person or as one JSON document, and picks the exit code.

/// `println!` that never panics. A closed stdout (`offsite status | head
/// -1`, a log pipe that went away) must not kill a backup halfway: what
/// nobody reads is dropped, the work goes on and the exit code is the work's.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see [`say!`]).
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod progress;
mod schedule;

use std::path::Path;
use std::sync::Arc;

use offsite::config::{self, Config};
use offsite::destinations;
use offsite::error::Error;
use offsite::format::crypt::Identities;
use offsite::format::manifest::BackupKind;
use offsite::job::{self, BackupOutcome, RunReport};
use offsite::outcome::Status;
use offsite::remote::catalog::{self, Listing};
use offsite::remote::prune::{self, PruneReport};
use offsite::remote::restore;
use offsite::retention::Action;
use offsite::staging::{self, JobStaging};
use offsite::stop::Stop;
use offsite_backends::units::human_bytes;
use serde_json::{Value, json};

use crate::{Cli, Command};
use progress::TermProgress;
use schedule::{daemon_cmd, status_cmd};

/// Exit codes (DESIGN.md): 0 ok, 1 failed, 2 usage/config, 3 partial, 4
/// pending (a cold-storage retrieval; run the same command again later).
fn exit_code(s: Status) -> i32 {
    match s {
        Status::Ok => 0,
        Status::Failed | Status::Interrupted => 1,
        Status::Partial => 3,
    }
}

struct Out {
    json: bool,
    verbose: bool,
}

impl Out {
    fn doc(&self, v: &Value) {
        say!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into())
        );
    }

    fn fail(&self, e: &Error) -> i32 {
        let code = e.exit_code();
        if self.json {
            let status = if code == 4 { "pending" } else { "failed" };
            self.doc(&json!({"status": status, "error": e.to_string(), "exit_code": code}));
        } else {
            warn!("offsite: {e}");
        }
        code
    }
}

pub async fn run(cli: Cli) -> i32 {
    let out = Out {
        json: cli.json,
        verbose: cli.verbose,
    };
    let progress = Arc::new(TermProgress::new(cli.quiet, cli.verbose));
    let result = match cli.command {
        Command::Init { dir } => init(&out, dir.as_deref()),
        Command::Keygen { file } => keygen(&out, &file),
        command => {
            let file = config::config_path(cli.config.as_deref());
            match config::load(&file) {
                Err(e) => Err(e),
                Ok(cfg) => match command {
                    Command::Init { .. } | Command::Keygen { .. } => Ok(0),
                    Command::Check { write_test } => check(&out, &cfg, write_test).await,
                    Command::Backup {
                        job,
                        no_upload,
                        incremental,
                        ..
                    } => {
                        let kind = if incremental {
                            BackupKind::Incr
                        } else {
                            BackupKind::Full
                        };
                        backup(&out, &cfg, job.job.as_deref(), kind, !no_upload, progress).await
                    }
                    Command::Upload { job } => {
                        upload(&out, &cfg, job.job.as_deref(), progress).await
                    }
                    Command::List { job, destination } => {
                        list(
                            &out,
                            &cfg,
                            job.job.as_deref(),
                            destination.destination.as_deref(),
                        )
                        .await
                    }
                    Command::Verify {
                        job,
                        destination,
                        backup,
                        host,
                        identity,
                    } => {
                        let which = Which {
                            backup: backup.as_deref(),
                            host: host.as_deref(),
                        };
                        verify(
                            &out,
                            &cfg,
                            job.job.as_deref(),
                            destination.destination.as_deref(),
                            which,
                            identity.as_deref(),
                        )
                        .await
                    }
                    Command::Restore {
                        job,
                        destination,
                        backup,
                        host,
                        to,
                        force,
                        identity,
                    } => {
                        let which = Which {
                            backup: Some(&backup),
                            host: host.as_deref(),
                        };
                        restore_cmd(
                            &out,
                            &cfg,
                            &job,
                            destination.destination.as_deref(),
                            which,
                            &to,
                            force,
                            identity.as_deref(),
                        )
                        .await
                    }
                    Command::Prune {
                        job,
                        destination,
                        dry_run,
                        now,
                    } => {
                        prune_cmd(
                            &out,
                            &cfg,
                            job.job.as_deref(),
                            destination.destination.as_deref(),
                            dry_run,
                            now.as_deref(),
                        )
                        .await
                    }
                    Command::Status { job, check } => {
                        status_cmd(&out, &cfg, job.job.as_deref(), check)
                    }
                    Command::Daemon { job } => daemon_cmd(&out, &cfg, job.job.as_deref()).await,
                    Command::Policy(crate::PolicyCommand::S3 {
                        destination,
                        role,
                        expire_after,
                        abort_after,
                    }) => policy_s3(&out, &cfg, &destination, role, expire_after, abort_after),
                    Command::Glacier(crate::GlacierCommand::Inventory { destination }) => {
                        glacier_inventory(&out, &cfg, &destination).await
                    }
                },
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => out.fail(&e),
    }
}

/// Turns the first SIGTERM or SIGINT into a stop request (the run winds down:
/// post hooks run, parts in flight reach the journal); a second one exits at
/// once, which is safe too, as the journal is fsync'd part by part.
fn stop_on_signals() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Stop::new();
    let (term, int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            warn!(
                "offsite: warning: cannot catch SIGTERM/SIGINT ({e}); a signal stops offsite at once"
            );
            return stop;
        }
    };
    let flag = stop.clone();
    tokio::spawn(async move {
        let (mut term, mut int) = (term, int);
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if flag.requested() {
                warn!(
                    "offsite: {name} again: exiting now; `offsite upload` resumes from the journal"
                );
                std::process::exit(130);
            }
            warn!(
                "offsite: {name}: stopping; parts in flight finish and post hooks run (send it again to exit at once)"
            );
            flag.request();
        }
    });
    stop
}

/// `keygen FILE`: a new age identity in FILE; the public key on stdout.
fn keygen(out: &Out, file: &Path) -> Result<i32, Error> {
    let public = offsite::format::crypt::keygen(file)?;
    if out.json {
        out.doc(&json!({"status": "ok", "identity_file": file, "recipient": public}));
    } else {
        say!("{public}");
        warn!(
            "wrote the identity to {} (mode 0600). Put the public key above in the job's encryption = {{ recipients = [...] }} on the database host; keep the identity file on the restore host and a copy offline: without it no backup encrypted to this key can be read.",
            file.display()
        );
    }
    Ok(0)
}

fn init(out: &Out, dir: Option<&Path>) -> Result<i32, Error> {
    let dir = dir.unwrap_or(Path::new("."));
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
    use std::io::Write;
    f.write_all(config::EXAMPLE.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    if out.json {
        out.doc(&json!({"status": "ok", "written": path}));
    } else {
        say!(
            "wrote {}; edit it, then run `offsite --config {} check`",
            path.display(),
            path.display()
        );
    }
    Ok(0)
}

async fn check(out: &Out, cfg: &Config, write_test: bool) -> Result<i32, Error> {
    let mut results = Vec::new();
    let mut failed = false;
    let mut config_error = None;
    for job in &cfg.jobs {
        let res = staging::check_overlap(cfg, job).and_then(|_| match &job.source {
            config::Source::Dir { path, .. } if !path.is_dir() => Err(Error::Failed(format!(
                "job {:?}: source {} is not a readable folder",
                job.name,
                path.display()
            ))),
            _ => Ok(()),
        });
        // What encryption reads at backup (and restore) time, read now.
        let res = res.and_then(|_| match &job.encryption {
            None => Ok(()),
            Some(e) => {
                if !e.recipients.is_empty()
                    || e.recipients_file.is_some()
                    || e.passphrase_env.is_some()
                {
                    offsite::format::crypt::Key::for_backup(e, &job.name)?;
                }
                if let Some(f) = &e.identity_file {
                    Identities::from_file(f)?;
                }
                Ok(())
            }
        });
        if let Err(e @ Error::Config(_)) = &res {
            config_error.get_or_insert(e.to_string());
        }
        failed |= res.is_err();
        results.push(
            json!({"job": job.name, "ok": res.is_ok(), "error": res.err().map(|e| e.to_string())}),
        );
    }
    for (name, d) in &cfg.destinations {
        let retries = d.retries.min(destinations::CHECK_RETRIES);
        let backend = destinations::backend_with_retries(d, retries);
        let mut res: Result<(), Error> = backend.probe().await.map_err(Error::from);
        let mut notes = Vec::new();
        if res.is_ok() && write_test {
            match write_probe(backend.as_ref(), &d.prefix).await {
                Ok(n) => notes = n,
                Err(e) => res = Err(e),
            }
        }
        failed |= res.is_err();
        results.push(json!({"destination": name, "ok": res.is_ok(), "error": res.err().map(|e| e.to_string()), "notes": notes}));
    }
    let code = if config_error.is_some() {
        2
    } else if failed {
        1
    } else {
        0
    };
    if out.json {
        out.doc(&json!({"status": if failed {"failed"} else {"ok"}, "config": cfg.file, "checks": results}));
    } else {
        say!("configuration {}: valid", cfg.file.display());
        for r in &results {
            let what = match (r.get("job"), r.get("destination")) {
                (Some(j), _) => format!("job {}", j),
                (_, Some(d)) => format!("destination {}", d),
                _ => String::new(),
            };
            match r.get("error").and_then(Value::as_str) {
                None => say!("  {what}: ok"),
                Some(e) => say!("  {what}: FAILED: {e}"),
            }
            for n in r["notes"].as_array().into_iter().flatten() {
                say!("    note: {}", n.as_str().unwrap_or_default());
            }
        }
        say!("{}", if failed { "check FAILED" } else { "check ok" });
    }
    Ok(code)
}

/// `check --write-test` on one destination: writes a small object, reads it
/// back and deletes it (where the credentials may), and finds out what a
/// backup will meet there: whether a second write of the same key is
/// refused (write once: a store that ignores If-None-Match would let one
/// backup overwrite another), and whether an upload in parts can be resumed
/// (an FTP server may refuse REST; volumes then go whole). What it finds
/// that is not a failure comes back as notes.
async fn write_probe(
    backend: &dyn offsite_backends::Backend,
    prefix: &str,
) -> Result<Vec<String>, Error> {
    use offsite_backends::ErrorKind;
    let mut notes = Vec::new();
    let key_of = |what: &str| {
        let name = format!(".offsite-check-{}-{what}", std::process::id());
        if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        }
    };
    let key = key_of("put");
    let body = bytes::Bytes::from_static(b"offsite write test\n");
    backend.put(&key, body.clone()).await?;
    match backend.put(&key, bytes::Bytes::from_static(b"second\n")).await {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Ok(()) => notes.push(format!(
            "destination \"{}\": a second write of {key} was accepted: this store ignores create-only writes (If-None-Match), so write once is not enforced there; use a store that honours it",
            backend.name()
        )),
        Err(e) => return Err(e.into()),
    }
    let caps = backend.capabilities();
    if !caps.read {
        // put_only: the write is what this host may do; the object stays (it is tiny).
        return Ok(notes);
    }
    let back = offsite_backends::get_bytes(backend, &key).await?;
    backend.delete(&key).await?;
    if back != body {
        return Err(Error::Failed(format!(
            "destination \"{}\": {key}: read back different bytes than were written (a second write replaced the first)",
            backend.name()
        )));
    }
    // Resuming at an offset, where parts may be a byte long (file trees).
    if caps.multipart && caps.min_part_size <= 1 {
        let key = key_of("parts");
        let id = backend.create_upload(&key, 1).await?;
        let mut receipts = Vec::new();
        for (index, byte) in [b'a', b'b'].into_iter().enumerate() {
            let part = offsite_backends::Part {
                index: index as u32,
                offset: index as u64,
                body: bytes::Bytes::from(vec![byte]),
            };
            match backend.put_part(&key, &id, part).await {
                Ok(r) => receipts.push(r),
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    notes.push(format!("destination \"{}\": {e}", backend.name()));
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if receipts.len() == 2 {
            backend.complete_upload(&key, &id, &receipts).await?;
            let back = offsite_backends::get_bytes(backend, &key).await?;
            backend.delete(&key).await?;
            if back != b"ab" {
                return Err(Error::Failed(format!(
                    "destination \"{}\": {key}: an upload in two parts read back as {back:?}, not \"ab\"",
                    backend.name()
                )));
            }
        } else {
            let _ = backend.abort_upload(&key, &id).await;
        }
    }
    Ok(notes)
}

fn print_run(r: &RunReport, verbose: bool) {
    let id = r.backup.as_deref().unwrap_or("-");
    if let Some(s) = &r.staged {
        say!(
            "job {}: backup {id}: {} files, {} packed into {} in {:.1}s",
            r.job,
            s.files,
            human_bytes(s.bytes),
            human_bytes(s.stored_bytes),
            s.seconds
        );
    }
    if !r.changed.is_empty() {
        say!(
            "  warning: {} file(s) changed while read: {}",
            r.changed.len(),
            r.changed.join(", ")
        );
    }
    // Notes went to stderr as they came (the progress reporter); the
    // commands' error output is kept here, and shown whole with -v as it came.
    for c in &r.stderr {
        if !verbose {
            say!("  {} said on stderr: {}", c.command, last_lines(&c.tail, 3));
        }
    }
    for u in &r.unreadable {
        say!("  unreadable, left out: {u}");
    }
    for d in &r.destinations {
        match &d.error {
            None => say!(
                "  {}: ok, sent {} (already there: {}) in {:.1}s",
                d.name,
                human_bytes(d.bytes_sent),
                human_bytes(d.bytes_resumed),
                d.seconds
            ),
            Some(e) => say!(
                "  {}: FAILED after sending {}: {e}",
                d.name,
                human_bytes(d.bytes_sent)
            ),
        }
        for n in &d.notes {
            say!("  {}: note: {n}", d.name);
        }
    }
    if let Some(e) = &r.error {
        say!("  error: {e}");
    }
    for p in &r.prune {
        let deleted = p.deleted.len();
        match &p.error {
            None => say!(
                "  {}: retention kept {}, deleted {deleted}",
                p.destination,
                p.decisions.len() - deleted
            ),
            Some(e) => say!(
                "  {}: retention FAILED (the backup itself is fine): {e}",
                p.destination
            ),
        }
    }
}

/// The last `n` lines of `text`, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn final_line(r: &RunReport) -> String {
    let id = r.backup.as_deref().unwrap_or("-");
    let n = r.destinations.len();
    let ok = r
        .destinations
        .iter()
        .filter(|d| d.status == Status::Ok)
        .count();
    match r.status {
        Status::Ok if n == 0 => format!(
            "job {}: backup {id} staged (not uploaded); run `offsite upload --job {}`",
            r.job, r.job
        ),
        Status::Ok => format!("job {}: backup {id} ok on all {n} destination(s)", r.job),
        Status::Partial => format!(
            "job {}: PARTIAL: backup {id} is on {ok} of {n} destinations and stays staged; fix the failures above, then run `offsite upload --job {}`",
            r.job, r.job
        ),
        Status::Failed if r.staged.is_some() => format!(
            "job {}: FAILED: backup {id} is staged but on no destination; fix the failures above, then run `offsite upload --job {}`",
            r.job, r.job
        ),
        Status::Interrupted if r.staged.is_some() => format!(
            "job {}: STOPPED on request: backup {id} stays staged; `offsite upload --job {}` resumes it",
            r.job, r.job
        ),
        Status::Interrupted => format!(
            "job {}: STOPPED on request before anything was staged",
            r.job
        ),
        Status::Failed => format!("job {}: FAILED: nothing was shipped", r.job),
    }
}

async fn backup(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    kind: BackupKind,
    upload: bool,
    progress: Arc<TermProgress>,
) -> Result<i32, Error> {
    let jobs = cfg.select_jobs(job)?;
    // Refuse an overlapping staging folder before any job runs, not halfway through.
    for j in &jobs {
        staging::check_overlap(cfg, j)?;
    }
    let stop = stop_on_signals();
    let mut outcomes: Vec<BackupOutcome> = Vec::new();
    for j in &jobs {
        if stop.requested() {
            break;
        }
        match job::backup(cfg, j, kind, upload, progress.clone(), &stop).await {
            Ok(o) => outcomes.push(o),
            Err(e) if jobs.len() == 1 => return Err(e),
            Err(e) if e.exit_code() == 2 => return Err(e),
            Err(e) => {
                // One job's refusal (its lock is held) must not stop the others.
                warn!("offsite: {e}");
                outcomes.push(BackupOutcome {
                    report: RunReport::failed(&j.name, &cfg.host_id, &e),
                    earlier: Vec::new(),
                });
            }
        }
    }
    let status = offsite::outcome::worst(outcomes.iter().map(BackupOutcome::status));
    if out.json {
        let doc = if outcomes.len() == 1 {
            serde_json::to_value(&outcomes[0])
        } else {
            serde_json::to_value(json!({"status": status, "jobs": outcomes}))
        };
        out.doc(&doc.unwrap_or(Value::Null));
    } else {
        for o in &outcomes {
            for e in &o.earlier {
                print_run(e, out.verbose);
                say!("{}", final_line(e));
            }
            print_run(&o.report, out.verbose);
        }
        // The last lines are the verdicts: a partial run never ends on a success line.
        for o in &outcomes {
            say!("{}", final_line(&o.report));
        }
    }
    Ok(exit_code(status))
}

async fn upload(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    progress: Arc<TermProgress>,
) -> Result<i32, Error> {
    let jobs = cfg.select_jobs(job)?;
    let stop = stop_on_signals();
    let mut reports = Vec::new();
    for j in jobs {
        if stop.requested() {
            break;
        }
        reports.extend(job::upload(cfg, j, progress.as_ref(), &stop).await?);
    }
    let status = offsite::outcome::worst(reports.iter().map(|r| r.status));
    if out.json {
        out.doc(&json!({"status": status, "runs": reports}));
    } else {
        if reports.is_empty() {
            say!("nothing to upload: every staged backup is on all its destinations");
        }
        for r in &reports {
            print_run(r, out.verbose);
        }
        for r in &reports {
            say!("{}", final_line(r));
        }
    }
    Ok(exit_code(status))
}

async fn listings(
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
) -> Result<Vec<(String, Result<Listing, Error>)>, Error> {
    let mut all = Vec::new();
    for j in cfg.select_jobs(job)? {
        for t in cfg.job_targets(j, destination)? {
            let l = catalog::list_job(&t, &j.name).await;
            all.push((j.name.clone(), l));
        }
    }
    Ok(all)
}

async fn list(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
) -> Result<i32, Error> {
    let all = listings(cfg, job, destination).await?;
    let mut failed = false;
    let mut docs = Vec::new();
    for (job, l) in &all {
        match l {
            Ok(l) => {
                let backups: Vec<Value> = l
                    .backups
                    .iter()
                    .map(|b| {
                        let m = &b.manifest;
                        json!({"id": m.id, "kind": m.kind, "parent": m.parent, "host": catalog::origin(b),
                               "created_at": m.created_at, "files": m.stats.files,
                               "bytes": m.stats.bytes, "stored_bytes": m.stats.stored_bytes, "volumes": m.volumes.len(),
                               "degenerate": m.degenerate})
                    })
                    .collect();
                docs.push(
                    json!({"job": job, "destination": l.destination, "backups": backups,
                                 "incomplete": l.incomplete, "damaged": l.damaged}),
                );
                if !out.json {
                    say!(
                        "job {job} on {}: {} complete backup(s)",
                        l.destination,
                        l.backups.len()
                    );
                    for b in &l.backups {
                        let m = &b.manifest;
                        let kind = match &m.parent {
                            Some(p) => format!("incr on {p}"),
                            None => "full".to_string(),
                        };
                        say!(
                            "  {}  {kind}  host {}  created {}  {} files  {} -> {}{}",
                            m.id,
                            catalog::origin(b).unwrap_or("(not recorded)"),
                            m.created_at,
                            m.stats.files,
                            human_bytes(m.stats.bytes),
                            human_bytes(m.stats.stored_bytes),
                            m.degenerate
                                .as_ref()
                                .map(|d| format!("  DEGENERATE SOURCE: {d}"))
                                .unwrap_or_default()
                        );
                    }
                    for i in &l.incomplete {
                        say!(
                            "  {i}  incomplete (no manifest: an upload in progress or interrupted)"
                        );
                    }
                    for d in &l.damaged {
                        say!("  {}  DAMAGED: {}", d.id, d.error);
                    }
                }
            }
            Err(e) => {
                failed = true;
                docs.push(json!({"job": job, "error": e.to_string()}));
                if !out.json {
                    say!("job {job}: FAILED: {e}");
                }
            }
        }
    }
    if out.json {
        out.doc(&json!({"status": if failed {"failed"} else {"ok"}, "listings": docs}));
    }
    Ok(if failed { 1 } else { 0 })
}

/// Which backup a command reads: `--backup` (an id, `latest`, or every
/// one when absent) and, for `latest`, `--host`.
#[derive(Debug, Clone, Copy)]
struct Which<'a> {
    backup: Option<&'a str>,
    host: Option<&'a str>,
}

async fn verify(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
    which: Which<'_>,
    identity: Option<&Path>,
) -> Result<i32, Error> {
    let backup = which.backup;
    if let Some(b) = backup {
        catalog::check_backup_arg(b)?;
    }
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    let mut pending = Vec::new();
    for j in cfg.select_jobs(job)? {
        let ids = Identities::find(identity, j.encryption.as_ref(), &j.name)?.map(Arc::new);
        for t in cfg.job_targets(j, destination)? {
            let listing = match catalog::list_job(&t, &j.name).await {
                Ok(l) => l,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            // Asked for one backup, only that one is judged.
            if backup.is_none() {
                for d in &listing.damaged {
                    errors.push(format!("job {} backup {}: {}", j.name, d.id, d.error));
                }
            }
            let chosen: Vec<&catalog::RemoteBackup> = match backup {
                Some(b) => match catalog::select(&listing, &j.name, b, &cfg.host_id, which.host) {
                    Ok(x) => vec![x],
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                },
                None => listing.backups.iter().collect(),
            };
            for b in chosen {
                match restore::verify(&t, &b.manifest, ids.clone()).await {
                    Ok(r) => reports.push(r),
                    Err(e @ Error::Pending(_)) => pending.push(e.to_string()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
    }
    let ok = errors.is_empty() && reports.iter().all(|r| r.ok);
    let status = match (ok, pending.is_empty()) {
        (false, _) => "failed",
        (true, false) => "pending",
        (true, true) => "ok",
    };
    if out.json {
        out.doc(
            &json!({"status": status, "verified": reports, "errors": errors, "pending": pending}),
        );
    } else {
        for r in &reports {
            if r.ok && !r.contents_checked {
                say!(
                    "job {} on {}: backup {} ok as stored: {} encrypted volume(s), {} checked (sizes and hashes; give --identity to check the files inside)",
                    r.job,
                    r.destination,
                    r.backup,
                    r.volumes,
                    human_bytes(r.bytes)
                );
            } else if r.ok {
                say!(
                    "job {} on {}: backup {} ok: {} volume(s), {} files, {} checked",
                    r.job,
                    r.destination,
                    r.backup,
                    r.volumes,
                    r.files,
                    human_bytes(r.bytes)
                );
            } else {
                say!(
                    "job {} on {}: backup {} DAMAGED:",
                    r.job,
                    r.destination,
                    r.backup
                );
                for p in &r.problems {
                    say!("  - {p}");
                }
            }
        }
        for e in &errors {
            say!("FAILED: {e}");
        }
        for p in &pending {
            say!("PENDING: {p}");
        }
        if reports.is_empty() && errors.is_empty() && pending.is_empty() {
            say!("no complete backups to verify");
        }
        say!(
            "{}",
            match status {
                "failed" => "verify FAILED",
                "pending" =>
                    "verify PENDING: cold storage is retrieving volumes; run the same command again later",
                _ => "verify ok",
            }
        );
    }
    Ok(match status {
        "failed" => 1,
        "pending" => 4,
        _ => 0,
    })
}

#[allow(clippy::too_many_arguments)]
async fn restore_cmd(
    out: &Out,
    cfg: &Config,
    job: &str,
    destination: Option<&str>,
    which: Which<'_>,
    to: &Path,
    force: bool,
    identity: Option<&Path>,
) -> Result<i32, Error> {
    let backup = which.backup.unwrap_or("latest");
    catalog::check_backup_arg(backup)?;
    let j = cfg.job(job)?;
    let ids = Identities::find(identity, j.encryption.as_ref(), &j.name)?.map(Arc::new);
    let mut targets = cfg.job_targets(j, destination)?;
    // Destinations that can be read at once first: a backup also on a NAS
    // is restored from there, without waiting for (or paying) a retrieval.
    targets.sort_by_key(|t| t.backend.capabilities().cold_storage);
    // Holding the job's lock keeps prune (and backup) of this job off while restoring.
    let _lock = staging::JobLock::acquire(&JobStaging::new(cfg, job), job)?;
    let mut last_err = None;
    let mut pending = None;
    for t in &targets {
        let listing = match catalog::list_job(t, job).await {
            Ok(l) => l,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let chosen = match catalog::select(&listing, job, backup, &cfg.host_id, which.host) {
            Ok(b) => b,
            // Several hosts' backups and none of ours: the person must say which.
            Err(e @ Error::Usage(_)) => return Err(e),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let others: Vec<_> = listing.backups.iter().map(|b| b.manifest.clone()).collect();
        let r = match restore::restore(t, &chosen.manifest, &others, to, force, ids.clone()).await {
            Ok(r) => r,
            // Another destination may have it readable now; this one's
            // retrieval is requested either way.
            Err(e @ Error::Pending(_)) => {
                pending = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if out.json {
            out.doc(&json!({"status": "ok", "restore": r}));
        } else {
            say!(
                "restored backup {} of job {} (made by {}) from {} into {}: {} files, {}; every hash checked",
                r.backup,
                r.job,
                r.host.as_deref().unwrap_or("a host it does not name"),
                r.destination,
                r.to.display(),
                r.files,
                human_bytes(r.bytes)
            );
            for w in &r.warnings {
                say!("warning: {w}");
            }
        }
        return Ok(0);
    }
    Err(pending.or(last_err).unwrap_or_else(|| {
        Error::Failed(format!("job {job:?} has no destination to restore from"))
    }))
}

/// `glacier inventory`: one step of rebuilding a vault's catalog; exit 4
/// while a job is under way, 0 once the catalog is whole.
async fn glacier_inventory(out: &Out, cfg: &Config, destination: &str) -> Result<i32, Error> {
    use offsite_backends::glacier::{GlacierBackend, Rebuild};
    let target = cfg.target(destination)?;
    let destinations::DestinationKind::Glacier(options) = &target.config.kind else {
        return Err(Error::Usage(format!(
            "destination {destination:?} is not a Glacier vault; `offsite glacier inventory` is for kind = \"glacier\" only"
        )));
    };
    let vault = GlacierBackend::new(destination, options.clone());
    let step = vault.rebuild_catalog().await?;
    let catalog = vault.catalog_dir().join("catalog.json");
    let (status, text, count) = match &step {
        Rebuild::InventoryPending { job, requested } => (
            "pending",
            format!(
                "{} an inventory job on vault {:?} (job {job}); AWS takes about 3 to 5 hours: run this command again later",
                if *requested {
                    "started"
                } else {
                    "still waiting for"
                },
                options.vault
            ),
            None,
        ),
        Rebuild::ManifestsPending {
            count,
            waiting,
            requested,
        } => (
            "pending",
            format!(
                "catalog rebuilt in {}: {} keys in {} archives ({} not written by offsite, left alone); waiting for {waiting} manifest retrieval jobs ({requested} started now, {} tier): run this command again later",
                catalog.display(),
                count.keys,
                count.archives,
                count.foreign,
                options.retrieval_tier
            ),
            Some(count),
        ),
        Rebuild::Done { count } => (
            "ok",
            format!(
                "catalog of vault {:?} is whole in {}: {} keys in {} archives ({} not written by offsite, left alone); `offsite list` reads it",
                options.vault,
                catalog.display(),
                count.keys,
                count.archives,
                count.foreign
            ),
            Some(count),
        ),
    };
    if out.json {
        out.doc(&json!({
            "destination": destination,
            "status": status,
            "catalog": catalog,
            "count": count,
            "message": text,
        }));
    } else {
        say!("{destination}: {text}");
    }
    Ok(if status == "ok" { 0 } else { 4 })
}

/// `policy s3`: prints the IAM policy or lifecycle configuration as JSON
/// (with or without --json: the document is the output), notes on stderr.
fn policy_s3(
    out: &Out,
    cfg: &Config,
    destination: &str,
    role: Option<crate::PolicyRole>,
    expire_after: Option<u32>,
    abort_after: u32,
) -> Result<i32, Error> {
    use crate::PolicyRole;
    use offsite::iam::{self, Role};
    let target = cfg.target(destination)?;
    let d = &target.config;
    let destinations::DestinationKind::S3(s3) = &d.kind else {
        return Err(Error::Usage(format!(
            "destination {destination:?} is not an S3 destination; `offsite policy s3` prints policies for kind = \"s3\" only"
        )));
    };
    let iam = |r| {
        iam::iam_policy(
            r,
            &s3.region,
            &s3.bucket,
            &d.prefix,
            s3.object_lock.is_some(),
        )
    };
    let mut notes = Vec::new();
    let lifecycle = |notes: &mut Vec<String>| -> Result<Value, Error> {
        let now = jiff::Timestamp::now();
        let mut rules = Vec::new();
        for j in cfg
            .jobs
            .iter()
            .filter(|j| j.destinations.iter().any(|x| x == destination))
        {
            let Some(p) = j.retention_for(d) else {
                notes.push(format!(
                    "job {}: no retention on {destination}, so no expiration rule (offsite never deletes its backups either)",
                    j.name
                ));
                continue;
            };
            let derived = iam::expiry_days(p, iam::full_interval(j.schedule.as_ref(), now));
            let days = match (expire_after, derived) {
                (Some(days), Ok(safe)) if days < safe => {
                    notes.push(format!(
                        "job {}: --expire-after {days} is shorter than the {safe} days its retention needs: S3 will delete backups the retention keeps",
                        j.name
                    ));
                    days
                }
                (Some(days), _) => days,
                (None, Ok(days)) => days,
                (None, Err(why)) => {
                    return Err(Error::Usage(format!(
                        "job {} on destination {destination}: {why}; pass --expire-after DAYS (longer than the oldest backup you want kept)",
                        j.name
                    )));
                }
            };
            notes.push(format!(
                "job {}: objects under {} expire {days} days after upload, even the newest if backups stop; offsite prune remains the primary cleanup",
                j.name,
                offsite::format::layout::Layout::new(&d.prefix).job_folder(&j.name)
            ));
            rules.push(iam::expiry_rule(destination, &j.name, &d.prefix, days));
        }
        rules.push(iam::abort_rule(destination, &d.prefix, abort_after));
        notes.push(format!(
            "apply with: aws s3api put-bucket-lifecycle-configuration --bucket {} --lifecycle-configuration file://lifecycle.json (it REPLACES the bucket's rules: merge any you have)",
            s3.bucket
        ));
        Ok(json!({"Rules": rules}))
    };
    let doc = match role {
        Some(PolicyRole::Uploader) => iam(Role::Uploader),
        Some(PolicyRole::Pruner) => iam(Role::Pruner),
        Some(PolicyRole::Restorer) => iam(Role::Restorer),
        Some(PolicyRole::Lifecycle) => lifecycle(&mut notes)?,
        None => json!({
            "uploader": iam(Role::Uploader),
            "pruner": iam(Role::Pruner),
            "restorer": iam(Role::Restorer),
            "lifecycle": lifecycle(&mut notes)?,
        }),
    };
    out.doc(&doc);
    for n in &notes {
        warn!("note: {n}");
    }
    Ok(0)
}

fn print_prune(p: &PruneReport) {
    let verb = if p.dry_run { "would" } else { "will" };
    say!(
        "job {} on {}: prune{}",
        p.job,
        p.destination,
        if p.dry_run {
            " (dry run: nothing deleted)"
        } else {
            ""
        }
    );
    for d in &p.decisions {
        let what = match d.action {
            Action::Keep => "keep  ",
            Action::Delete => "delete",
        };
        let done = if d.action == Action::Delete && p.deleted.contains(&d.id) {
            " (deleted)"
        } else {
            ""
        };
        say!(
            "  {what} {}{}: {}{done}",
            d.id,
            if d.complete { "" } else { " [incomplete]" },
            d.reasons.join("; ")
        );
    }
    for r in &p.retained {
        say!(
            "  retained {}: the policy deletes it, but S3 Object Lock holds it ({}); a prune after that deletes it",
            r.id,
            r.until
        );
    }
    for x in &p.extended {
        say!(
            "  lock of {} extended to {}: kept backups still build on it",
            x.id,
            x.until
        );
    }
    for l in &p.leftovers {
        say!(
            "  {} {l}: left by an interrupted upload, older than incomplete_grace",
            if p.dry_run { "would delete" } else { "deleted" }
        );
    }
    for o in &p.others {
        say!(
            "  other {}{}: made by host {}; left alone (this job prunes its own host's backups: retention origins = \"own\")",
            o.id,
            if o.complete { "" } else { " [incomplete]" },
            o.host
        );
    }
    let deletes = p
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .count();
    match &p.error {
        Some(e) => say!(
            "  FAILED after deleting {} of {deletes}: {e}",
            p.deleted.len()
        ),
        None if !p.retained.is_empty() && !p.dry_run => say!(
            "  deleted {} of {}; {} retained by Object Lock",
            p.deleted.len(),
            p.decisions.len(),
            p.retained.len()
        ),
        None if p.dry_run => say!("  {verb} delete {deletes} of {}", p.decisions.len()),
        None => say!("  deleted {} of {}", p.deleted.len(), p.decisions.len()),
    }
}

async fn prune_cmd(
    out: &Out,
    cfg: &Config,
    job: Option<&str>,
    destination: Option<&str>,
    dry_run: bool,
    now: Option<&str>,
) -> Result<i32, Error> {
    let now = match now {
        Some(t) => prune::parse_now(t)?,
        None => jiff::Timestamp::now(),
    };
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    for j in cfg.select_jobs(job)? {
        let mut p = job::prune_job(cfg, j, destination, now, dry_run).await?;
        reports.append(&mut p.reports);
        skipped.append(&mut p.skipped);
        notes.append(&mut p.notes);
    }
    for n in &notes {
        warn!("note: {n}");
    }
    let failed = reports.iter().any(|r| r.error.is_some());
    if out.json {
        out.doc(&json!({"status": if failed {"failed"} else {"ok"}, "prunes": reports, "skipped": skipped, "notes": notes}));
    } else {
        for r in &reports {
            print_prune(r);
        }
        for s in &skipped {
            say!("{s}");
        }
        say!("{}", if failed { "prune FAILED" } else { "prune ok" });
    }
    Ok(if failed { 1 } else { 0 })
}
