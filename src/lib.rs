//! offsite: ships database backups off the host.
//!
//! The library is the whole pipeline; the binary is a thin shell over it.
//! Modules in the order a backup flows through them:
//!
//! ```text
//! config ─► backup/ (source ─► stage ─► journal ─► upload) ─► destinations (Checked ─► Retrying ─► Throttled ─► backend)
//!        ─► remote/ (catalog, read ─► verify, restore, prune)
//!            job: one run of a job (backup, upload, prune after success, the status record)
//!            schedule/: cron (pure), daemon (starts jobs), status (the record), report
//!            check: what a run will meet, found before it runs
//! ```
//!
//! Imports run one way: `schedule::daemon`, `check` and `job` stand above
//! `backup/` and `remote/`, which never import each other; `format/`
//! (manifest, names, hashes, encryption, the remote layout), the pure cores
//! (`retention`, `schedule::cron`) and the basics (`error`, `outcome`,
//! `stop`, `progress`) stand below everything. The library never prints:
//! it reports through [`progress::Progress`] and returns `Serialize`
//! reports the command line renders; [`outcome::Exit`] turns how a command
//! ended into its exit code.

#![warn(missing_docs)]

pub mod error;
pub mod outcome;
pub mod progress;
pub mod stop;

pub mod cluster;
pub mod format;
pub mod retention;

pub mod config;
pub mod destinations;
pub mod iam;
pub mod staging;

pub mod backup;
pub mod remote;

pub mod check;
pub mod job;
pub mod notify;
pub mod schedule;

pub use error::{Error, Result};
