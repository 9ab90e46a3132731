//! The application's error: one kind per way a command can end badly, each
//! keeping what caused it. Code branches on the variant, never on the text;
//! its exit code comes from [`crate::outcome::Exit`], like every outcome's.

use thiserror::Error;

/// Everything that can go wrong in the pipeline, by what it means for the
/// person running it.
#[derive(Debug, Error)]
pub enum Error {
    /// The command line asks for something impossible (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The configuration file is wrong (exit 2).
    #[error("{0}")]
    Config(String),
    /// Local work failed: a source, the staging folder, a hook (exit 1).
    #[error("{0}")]
    Failed(String),
    /// A local file operation failed; `context` says what was being done
    /// and to which path (exit 1).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and to which path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A destination failed (exit 1); the error names it and the key.
    #[error(transparent)]
    Destination(#[from] offsite_backends::Error),
    /// A backup is damaged or inconsistent: a manifest that cannot be
    /// read, bytes that do not match it, a chain with a missing link (exit 1).
    #[error("{0}")]
    Integrity(String),
    /// A stop was requested (SIGTERM/SIGINT): what was staged or journaled
    /// resumes on the next run (exit 1 for `backup`/`upload`, 0 for `daemon`).
    #[error("{0}")]
    Stopped(String),
    /// Cold storage is retrieving what a restore or verify needs; the same
    /// command run later completes (exit 4).
    #[error("{0}")]
    Pending(String),
}

impl Error {
    /// The process exit code this error calls for (see DESIGN.md).
    pub fn exit_code(&self) -> i32 {
        crate::outcome::Exit::from(self).code()
    }

    /// The person must fix the command line or the configuration: nothing
    /// was tried, and retrying the same thing cannot help.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_) | Error::Config(_))
    }

    /// An I/O failure with what was being done and to which path.
    pub fn io(context: impl std::fmt::Display, e: std::io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            source: e,
        }
    }
}

/// A result whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_source() {
        use std::error::Error as _;
        let e = Error::io(
            "cannot read /x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().starts_with("cannot read /x: "), "{e}");
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(|s| s.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
