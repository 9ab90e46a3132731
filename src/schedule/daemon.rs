//! `offsite daemon`: runs each job's schedules in the foreground.
//!
//! One daemon per staging folder (`staging/.daemon.lock`, holding its pid).
//! Each scheduled job has its own loop: it asks [`cron::plan`] what is
//! due, runs it (a backup, then a prune), records what it handled in
//! `staging/<job>/schedule.json` (atomically, with the next runs), and
//! sleeps until the next slot. It wakes at least once a minute, so a clock
//! that jumps (NTP, suspend) delays nothing for long. Jobs run side by side;
//! one job's runs never overlap (each takes the job's lock, as a manual run
//! does, and a run refused because a manual one holds it is logged).
//!
//! On a requested [`Stop`] no run starts; a running one winds down (see
//! [`crate::stop`]) and its slot stays unhandled, so the next start runs it
//! again when `catch_up` is on. The library never prints: every run and every
//! skipped slot is an [`Event`] for the caller to log, one line each.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Job};
use crate::error::{Error, Result};
use crate::format::manifest::BackupKind;
use crate::job::BackupOutcome;
use crate::job::JobPrune;
use crate::outcome::Status;
use crate::progress::Silent;
use crate::schedule::cron::{self, Due, Handled, JobSchedule, Task};
use crate::staging::{JobStaging, lock_with_pid, read_json_state, write_json_state};
use crate::stop::Stop;

/// The daemon's lock file in the staging folder; it holds the daemon's pid.
pub const LOCK_NAME: &str = ".daemon.lock";
/// The file in a job's staging folder that holds its [`ScheduleState`].
pub const STATE_NAME: &str = "schedule.json";

/// The longest the daemon sleeps before looking at the clock again.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// What the daemon knows of a job's schedule, kept in `schedule.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Per task, the time up to which every slot was run or skipped.
    #[serde(default)]
    pub handled: Handled,
    /// Per task, its next slot as of the last write.
    #[serde(default)]
    pub next: BTreeMap<Task, Timestamp>,
}

/// Where the schedule state of the job whose staging folder is `job_dir` is
/// kept.
pub fn state_path(job_dir: &Path) -> PathBuf {
    job_dir.join(STATE_NAME)
}

/// The job's schedule state; empty if the daemon never ran it.
pub fn read_state(job_dir: &Path) -> Result<ScheduleState> {
    read_json_state(
        job_dir,
        STATE_NAME,
        "the daemon then starts afresh, without catching up",
    )
}

fn write_state(job_dir: &Path, state: &ScheduleState) -> Result<()> {
    write_json_state(job_dir, STATE_NAME, state)
}

/// Held while the daemon runs: a second daemon on the same staging folder is refused.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the daemon lock of `staging_dir` (created if missing); fails at
    /// once when another daemon holds it.
    pub fn acquire(staging_dir: &Path) -> Result<DaemonLock> {
        fs::create_dir_all(staging_dir).map_err(|e| {
            Error::io(
                format!("cannot create staging folder {}", staging_dir.display()),
                e,
            )
        })?;
        let file = lock_with_pid(&staging_dir.join(LOCK_NAME), |pid| {
            Error::Failed(format!(
                "another offsite daemon (pid {pid}) runs for staging folder {}; one daemon per staging folder (stop it first, or give this one another [staging] dir)",
                staging_dir.display()
            ))
        })?;
        Ok(DaemonLock { _file: file })
    }
}

/// The pid of the daemon running for `staging_dir`, if one runs.
pub fn running_daemon(staging_dir: &Path) -> Option<String> {
    let path = staging_dir.join(LOCK_NAME);
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(pid.trim().to_string())
        }
    }
}

/// One run the daemon did.
#[derive(Debug, Clone, Serialize)]
pub struct RunLog {
    /// The job's name.
    pub job: String,
    /// What ran.
    pub task: Task,
    /// The slot this run is for; `late` when it ran over a minute after it.
    pub slot: Timestamp,
    /// Whether the daemon found it due more than [`cron::GRACE`] after its
    /// slot.
    pub late: bool,
    /// When the run started.
    pub started_at: Timestamp,
    /// How long it took, in seconds.
    pub seconds: f64,
    /// How it ended: the backup's worst status, or `failed` when a prune
    /// failed.
    pub status: Status,
    /// What the backup did; None for a prune, or for a backup that could not
    /// start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupOutcome>,
    /// What the prune did; None for a backup, or for a prune that could not
    /// start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<JobPrune>,
    /// Why the run could not start (another run holds the job's lock, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the daemon tells its caller, one log line each.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon holds the staging folder and runs the schedules of `jobs`;
    /// the jobs without a schedule are never run by it.
    Started {
        /// When the daemon started.
        time: Timestamp,
        /// The daemon's process id.
        pid: u32,
        /// The jobs it runs.
        jobs: Vec<String>,
        /// The jobs it leaves alone, having no schedule.
        unscheduled: Vec<String>,
    },
    /// The daemon watches `job`; its next slots.
    Watching {
        /// The job's name.
        job: String,
        /// Each task's next slot.
        next: BTreeMap<Task, Timestamp>,
    },
    /// A slot that is not run: missed with catch-up off, or replaced by a full.
    Skipped {
        /// The job's name.
        job: String,
        /// The task not run.
        task: Task,
        /// The slot it was due at.
        slot: Timestamp,
        /// Why it is not run, for people to read.
        reason: String,
    },
    /// A run ended: what it did.
    Ran(Box<RunLog>),
    /// The daemon sleeps until `until`, when the job's next task is due
    /// (`None`: nothing is ever due); said when it changes, so once after
    /// each round of runs.
    Waiting {
        /// The job's name.
        job: String,
        /// The time of the job's next slot; None when nothing is ever due.
        until: Option<Timestamp>,
    },
    /// Something went wrong around the runs (the state file could not be written).
    Warning {
        /// The job's name.
        job: String,
        /// What went wrong.
        message: String,
    },
    /// Stopped on request, every running job wound down.
    Stopped {
        /// When the daemon stopped.
        time: Timestamp,
    },
}

/// `offsite daemon`: runs the schedules of every job (or only `job`) until
/// `stop` is requested, telling `log` about it from start to stop. Refuses
/// a configuration where none of them has a schedule.
pub async fn serve(
    config: &Config,
    job: Option<&str>,
    stop: &Stop,
    log: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let jobs = config.select_jobs(job)?;
    let (scheduled, unscheduled): (Vec<&Job>, Vec<&Job>) =
        jobs.iter().copied().partition(|j| j.schedule.is_some());
    if scheduled.is_empty() {
        return Err(Error::Config(format!(
            "{}: no job{} has a schedule; add schedule = {{ full = \"0 2 * * *\" }} (and optionally incremental, prune) to a [[job]]",
            config.file.display(),
            job.map(|j| format!(" named {j:?}")).unwrap_or_default()
        )));
    }
    for j in &scheduled {
        crate::staging::check_overlap(config, j)?;
    }
    let names = |jobs: &[&Job]| jobs.iter().map(|j| j.name.clone()).collect();
    run(config, &scheduled, stop, log, || {
        log(Event::Started {
            time: Timestamp::now(),
            pid: std::process::id(),
            jobs: names(&scheduled),
            unscheduled: names(&unscheduled),
        })
    })
    .await?;
    log(Event::Stopped {
        time: Timestamp::now(),
    });
    Ok(())
}

/// Runs the schedules of `jobs` until `stop` is requested, then returns once
/// every running job has wound down. Every job must have a schedule.
async fn run(
    config: &Config,
    jobs: &[&Job],
    stop: &Stop,
    log: &(dyn Fn(Event) + Sync),
    started: impl FnOnce(),
) -> Result<()> {
    let _lock = DaemonLock::acquire(&config.staging.dir)?;
    // Every job's state is read before any loop starts: a damaged file stops the
    // daemon at once, instead of one job silently never running while others do.
    let mut loops = Vec::new();
    for job in jobs {
        if let Some(sched) = &job.schedule {
            let state = read_state(&JobStaging::new(config, &job.name).job_dir)?;
            loops.push(job_loop(config, job, sched, state, stop, log));
        }
    }
    started();
    futures::future::join_all(loops).await;
    Ok(())
}

async fn job_loop(
    config: &Config,
    job: &Job,
    sched: &JobSchedule,
    mut state: ScheduleState,
    stop: &Stop,
    log: &(dyn Fn(Event) + Sync),
) {
    let staging = JobStaging::new(config, &job.name);
    let mut first = true;
    let mut said_wake: Option<Option<Timestamp>> = None;
    loop {
        if stop.requested() {
            return;
        }
        let now = Timestamp::now();
        let plan = cron::plan(sched, &state.handled, now);
        for d in &plan.skipped {
            state.handled.insert(d.task, now);
            // Only an incremental that would have run is replaced by a full;
            // anything else skipped here was missed with catch_up off.
            let replaced = d.task == Task::Incremental
                && (!d.late || sched.catch_up)
                && plan.run.iter().any(|r| r.task == Task::Full);
            let reason = if replaced {
                "a full backup runs instead".to_string()
            } else {
                "missed while the daemon was not running it, and catch_up = false".to_string()
            };
            log(Event::Skipped {
                job: job.name.clone(),
                task: d.task,
                slot: d.slot,
                reason,
            });
        }
        // Tasks seen for the first time start from now.
        for (task, at) in &plan.handled {
            state.handled.entry(*task).or_insert(*at);
        }
        let mut interrupted = false;
        for d in &plan.run {
            if stop.requested() {
                interrupted = true;
                break;
            }
            let line = run_task(config, job, d, stop).await;
            let stopped = line.status == Status::Interrupted;
            log(Event::Ran(Box::new(line)));
            if let Err(e) = crate::schedule::metrics::refresh(config) {
                log(Event::Warning {
                    job: job.name.clone(),
                    message: format!("could not write the metrics: {e}"),
                });
            }
            if stopped {
                interrupted = true;
                break;
            }
            // Handled only once run: a run stopped halfway is due again at the next start.
            state.handled.insert(d.task, now);
        }
        let after = Timestamp::now();
        state.next = sched
            .next_runs(after)
            .into_iter()
            .filter_map(|(t, at)| at.map(|at| (t, at)))
            .collect();
        if let Err(e) = write_state(&staging.job_dir, &state) {
            log(Event::Warning {
                job: job.name.clone(),
                message: e.to_string(),
            });
        }
        if first {
            log(Event::Watching {
                job: job.name.clone(),
                next: state.next.clone(),
            });
            first = false;
        }
        if interrupted {
            return;
        }
        let wake = cron::next_wake(sched, &state.handled, after);
        if said_wake != Some(wake) {
            log(Event::Waiting {
                job: job.name.clone(),
                until: wake,
            });
            said_wake = Some(wake);
        }
        let wait = match wake {
            Some(w) => w
                .duration_since(Timestamp::now())
                .try_into()
                .unwrap_or(std::time::Duration::ZERO)
                .min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait() => return,
        }
    }
}

async fn run_task(config: &Config, job: &Job, due: &Due, stop: &Stop) -> RunLog {
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let mut line = RunLog {
        job: job.name.clone(),
        task: due.task,
        slot: due.slot,
        late: due.late,
        started_at,
        seconds: 0.0,
        status: Status::Ok,
        backup: None,
        prune: None,
        error: None,
    };
    match due.task {
        Task::Full | Task::Incremental => {
            let kind = if due.task == Task::Full {
                BackupKind::Full
            } else {
                BackupKind::Incr
            };
            // A cluster job's set is the slot's: every member's run of it
            // joins the same set, however late it starts.
            let set = job
                .cluster
                .as_ref()
                .map(|_| crate::cluster::set_id(due.slot));
            let run = crate::job::backup(
                config,
                job,
                kind,
                set.as_deref(),
                true,
                Arc::new(Silent),
                stop,
            );
            match run.await {
                Ok(outcome) => {
                    line.status = outcome.status();
                    line.backup = Some(outcome);
                }
                Err(e) => {
                    line.status = match e {
                        Error::Stopped(_) => Status::Interrupted,
                        _ => Status::Failed,
                    };
                    line.error = Some(e.to_string());
                }
            }
        }
        Task::Prune => {
            let now = Timestamp::now();
            match crate::job::prune_job(config, job, None, now, false).await {
                Ok(p) => {
                    if p.reports.iter().any(|r| r.error.is_some()) {
                        line.status = Status::Failed;
                    }
                    line.prune = Some(p);
                }
                Err(e) => {
                    line.status = Status::Failed;
                    line.error = Some(e.to_string());
                }
            }
        }
    }
    line.seconds = clock.elapsed().as_secs_f64();
    line
}
