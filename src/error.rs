//! The pipeline's error, sorted by what the command line must exit with.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The configuration file is wrong (exit 2).
    #[error("{0}")]
    Config(String),
    /// The command line asks for something impossible (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something failed while doing the work (exit 1).
    #[error("{0}")]
    Failed(String),
    /// A stop was requested (SIGTERM/SIGINT): what was staged or journaled
    /// resumes on the next run (exit 1 for `backup`/`upload`, 0 for `daemon`).
    #[error("{0}")]
    Interrupted(String),
    /// Cold storage is retrieving what a restore or verify needs; the same
    /// command run later completes (exit 4).
    #[error("{0}")]
    Pending(String),
    /// A destination failed (exit 1).
    #[error(transparent)]
    Backend(#[from] offsite_backends::Error),
}

impl Error {
    /// The process exit code this error calls for (see DESIGN.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            Error::Failed(_) | Error::Interrupted(_) | Error::Backend(_) => 1,
            Error::Pending(_) => 4,
        }
    }

    /// An I/O failure with what was being done and to which path.
    pub fn io(context: impl std::fmt::Display, e: std::io::Error) -> Error {
        Error::Failed(format!("{context}: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
