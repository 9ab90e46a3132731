//! The thin shell: loads the configuration, calls the library, renders what
//! it returns for a person or as one JSON document, and exits with the code
//! the outcome calls for ([`offsite::outcome::Exit`]). One file per command.

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

pub mod args;
mod backup;
mod check;
mod daemon;
mod glacier;
mod init;
mod keygen;
mod list;
mod policy;
mod progress;
mod prune;
mod restore;
mod shell;
mod status;
mod upload;
mod verify;

use std::sync::Arc;

use offsite::config::{self, Config};
use offsite::error::Error;
use offsite::format::manifest::BackupKind;
use offsite::outcome::{Exit, Status};
use offsite::remote::catalog::Which;
use offsite::stop::Stop;
use serde::Serialize;

use args::{Cli, Command, GlacierCommand, PolicyCommand};
use progress::TermProgress;

/// How the output is wanted.
struct Out {
    /// One JSON document on stdout.
    json: bool,
    /// `-v`: everything hooks and commands said.
    verbose: bool,
}

/// The JSON document of a command that failed before its work started.
#[derive(Serialize)]
struct FailureDoc {
    status: Status,
    error: String,
    exit_code: i32,
}

impl Out {
    /// Prints `doc` as the command's one JSON document.
    fn doc(&self, doc: &impl Serialize) {
        say!(
            "{}",
            serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".into())
        );
    }

    /// Reports `e` and answers how the command ends.
    fn fail(&self, e: &Error) -> Exit {
        let exit = Exit::from(e);
        if self.json {
            let status = match exit {
                Exit::Done(Status::Pending) => Status::Pending,
                _ => Status::Failed,
            };
            self.doc(&FailureDoc {
                status,
                error: e.to_string(),
                exit_code: exit.code(),
            });
        } else {
            warn!("offsite: {e}");
        }
        exit
    }
}

/// Runs the command line and answers the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let out = Out {
        json: cli.json,
        verbose: cli.verbose,
    };
    let progress = Arc::new(TermProgress::new(cli.quiet, cli.verbose));
    let result = match cli.command {
        Command::Init { dir } => init::run(&out, dir.as_deref()),
        Command::Completions { shell } => shell::completions(shell),
        Command::Man { command, out: None } => shell::man(command.as_deref()),
        Command::Man { out: Some(dir), .. } => shell::man_pages(&out, &dir),
        Command::Keygen { file } => keygen::run(&out, &file),
        command => match config::load(&config::config_path(cli.config.as_deref())) {
            Err(e) => Err(e),
            Ok(cfg) => with_config(&out, &cfg, command, progress).await,
        },
    };
    match result {
        Ok(exit) => exit,
        Err(e) => out.fail(&e),
    }
    .code()
}

/// Runs a command that reads the configuration.
async fn with_config(
    out: &Out,
    cfg: &Config,
    command: Command,
    progress: Arc<TermProgress>,
) -> Result<Exit, Error> {
    match command {
        Command::Init { .. }
        | Command::Keygen { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(Exit::Done(Status::Ok)),
        Command::Check { write_test } => check::run(out, cfg, write_test).await,
        Command::Backup {
            job,
            no_upload,
            incremental,
            set,
            ..
        } => {
            let request = backup::Request {
                job: job.job.as_deref(),
                kind: if incremental {
                    BackupKind::Incr
                } else {
                    BackupKind::Full
                },
                set: set.as_deref(),
                upload: !no_upload,
            };
            backup::run(out, cfg, request, progress).await
        }
        Command::Upload { job } => upload::run(out, cfg, job.job.as_deref(), progress).await,
        Command::List { job, destination } => {
            list::run(
                out,
                cfg,
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
            set,
        } => {
            let which = Which {
                backup: backup.as_deref(),
                host: host.as_deref(),
                set: set.as_deref(),
            };
            let (job, destination) = (job.job.as_deref(), destination.destination.as_deref());
            verify::run(out, cfg, job, destination, which, identity.as_deref()).await
        }
        Command::Restore {
            job,
            destination,
            backup,
            host,
            to,
            force,
            identity,
            set,
            member,
            allow_partial,
        } => {
            let which = Which {
                backup: Some(&backup),
                host: host.as_deref(),
                set: set.as_deref(),
            };
            let request = restore::Request {
                job: &job,
                destination: destination.destination.as_deref(),
                which,
                member: member.as_deref(),
                allow_partial,
                to: &to,
                force,
                identity: identity.as_deref(),
            };
            restore::run(out, cfg, request).await
        }
        Command::Prune {
            job,
            destination,
            dry_run,
            now,
        } => {
            let (job, destination) = (job.job.as_deref(), destination.destination.as_deref());
            prune::run(out, cfg, job, destination, dry_run, now.as_deref()).await
        }
        Command::Status { job, check } => status::run(out, cfg, job.job.as_deref(), check).await,
        Command::Daemon { job } => daemon::run(out, cfg, job.job.as_deref()).await,
        Command::Policy(PolicyCommand::S3 {
            destination,
            role,
            expire_after,
            abort_after,
        }) => policy::run(out, cfg, &destination, role, expire_after, abort_after),
        Command::Glacier(GlacierCommand::Inventory { destination }) => {
            glacier::run(out, cfg, &destination).await
        }
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

/// A time in UTC to the second: `2026-12-01T02:15:00Z`.
fn utc_text(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time in a schedule's own zone, as its cron expression reads it.
fn local_text(t: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}
