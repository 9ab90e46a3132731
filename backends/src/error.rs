//! The one error type every backend returns.
//!
//! An error carries a [`ErrorKind`] (what went wrong, in terms the pipeline can
//! branch on), whether retrying can help (`temporary`), the destination and key
//! it concerns, and optionally a hint saying what the operator should do next.
//! Its `Display` is the sentence a person reads at 2 a.m.: context first,
//! lowercase, no trailing period, never a secret.

use std::fmt;

/// What went wrong, independent of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The key (or the upload) does not exist.
    NotFound,
    /// The credentials are valid but may not do this.
    PermissionDenied,
    /// The credentials were refused.
    Unauthenticated,
    /// The object exists and the call required that it did not.
    AlreadyExists,
    /// A precondition failed (an offset, a size, an ETag did not match).
    Precondition,
    /// The destination's configuration cannot work (a missing mount point, a bad key name).
    ConfigInvalid,
    /// The backend cannot do this at all.
    Unsupported,
    /// The server asked us to slow down.
    RateLimited,
    /// The object is locked (S3 Object Lock) and cannot be deleted before
    /// its retain-until date, which the message names.
    Retained,
    /// Anything else.
    Unexpected,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Precondition => "precondition failed",
            ErrorKind::ConfigInvalid => "invalid configuration",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Retained => "retained",
            ErrorKind::Unexpected => "unexpected error",
        };
        f.write_str(s)
    }
}

/// The error of every [`crate::Backend`] call.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    temporary: bool,
    destination: Option<String>,
    key: Option<String>,
    message: String,
    hint: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// An earlier attempt of this create-only write failed without an
    /// answer (it may have landed): see [`Error::after_lost_answer`].
    after_lost_answer: bool,
}

/// The result of every [`crate::Backend`] call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A permanent error of `kind`; mark it [`Error::temporary`] when a retry can help.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            temporary: matches!(kind, ErrorKind::RateLimited),
            destination: None,
            key: None,
            message: message.into(),
            hint: None,
            source: None,
            after_lost_answer: false,
        }
    }

    /// Maps an I/O error: interrupted, timed-out and reset connections are
    /// temporary, everything else is permanent.
    pub fn from_io(message: impl Into<String>, err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let (kind, temporary) = match err.kind() {
            Io::NotFound => (ErrorKind::NotFound, false),
            Io::PermissionDenied | Io::ReadOnlyFilesystem => (ErrorKind::PermissionDenied, false),
            Io::AlreadyExists => (ErrorKind::AlreadyExists, false),
            Io::Interrupted
            | Io::TimedOut
            | Io::WouldBlock
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::ConnectionRefused
            | Io::BrokenPipe
            | Io::NotConnected
            | Io::UnexpectedEof => (ErrorKind::Unexpected, true),
            // ESTALE on NFS: the server restarted; reopening usually works.
            Io::StaleNetworkFileHandle => (ErrorKind::Unexpected, true),
            _ => (ErrorKind::Unexpected, false),
        };
        let mut e = Error::new(kind, message).with_source(err);
        e.temporary = temporary;
        e
    }

    /// The same error, marked as one a retry can cure.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// The same error, marked as one a retry cannot cure.
    pub fn permanent(mut self) -> Self {
        self.temporary = false;
        self
    }

    /// Names the destination, replacing any name set before.
    pub fn with_destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into());
        self
    }

    /// Sets the destination only where none is set yet.
    pub fn or_destination(mut self, destination: &str) -> Self {
        if self.destination.is_none() {
            self.destination = Some(destination.to_string());
        }
        self
    }

    /// Names the key, replacing any key set before.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Names the key only where none is set yet; an empty `key` names none.
    pub fn or_key(mut self, key: &str) -> Self {
        if self.key.is_none() && !key.is_empty() {
            self.key = Some(key.to_string());
        }
        self
    }

    /// Adds what the operator should do next, shown after the message.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Keeps the error that caused this one; `Display` shows it after the message.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same call may succeed if retried.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The destination's name, when the error names one.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    /// The key concerned, when the error names one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The message alone, without the context, source or hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the operator should do next, when the error says.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether this answer to a create-only write (`put`, `complete_upload`,
    /// `put_file`) came after an earlier attempt of the same write failed
    /// without an answer: an `AlreadyExists` or `NotFound` may then be that
    /// attempt's own doing ([`crate::Retrying`] sets it).
    pub fn after_lost_answer(&self) -> bool {
        self.after_lost_answer
    }

    pub(crate) fn set_after_lost_answer(mut self) -> Self {
        self.after_lost_answer = true;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.destination {
            write!(f, "destination \"{d}\": ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The error and its sources, each said once: "dispatch failure: io error:
/// Connection refused" rather than the SDK's debug dump.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_context_first_and_hint_last() {
        let e = Error::new(ErrorKind::PermissionDenied, "cannot delete")
            .with_destination("s3")
            .with_key("db/orders/x/manifest.json")
            .with_hint("run prune with the pruner policy");
        assert_eq!(
            e.to_string(),
            "destination \"s3\": db/orders/x/manifest.json: cannot delete; run prune with the pruner policy"
        );
    }

    #[test]
    fn io_errors_map_to_kinds_and_retry_status() {
        let nf = Error::from_io("open", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(nf.kind(), ErrorKind::NotFound);
        assert!(!nf.is_temporary());
        let reset = Error::from_io(
            "write",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        assert!(reset.is_temporary());
        assert!(Error::new(ErrorKind::RateLimited, "slow down").is_temporary());
    }
}
