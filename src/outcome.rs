//! How a command, a run or one destination of it ended, and the exit code
//! each outcome calls for: [`Exit::code`] is the one place outcomes and
//! errors become exit codes (DESIGN.md: 0 ok, 1 failed, 2 usage or
//! configuration, 3 partial, 4 pending).

use serde::Serialize;

use crate::error::Error;

/// How a run, or one destination of it, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything asked for was done.
    Ok,
    /// Some destinations (or backups, or members) have it and some do not.
    Partial,
    /// Stopped on request; resumes on the next `upload` or `backup`.
    Interrupted,
    /// Nothing asked for was done.
    Failed,
    /// Cold storage is retrieving what was asked for; the same command run
    /// later completes it.
    Pending,
    /// Nothing was to be done here: another cluster member owns the slot.
    Skipped,
}

impl Status {
    /// The word `--json` and the status record use: `ok`, `partial`, ...
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Partial => "partial",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
            Status::Pending => "pending",
            Status::Skipped => "skipped",
        }
    }
}

/// How a command ended, as far as its exit code goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did its work; the status says how that went.
    Done(Status),
    /// The command line or the configuration is wrong: nothing was tried.
    Invalid,
}

impl Exit {
    /// The process exit code (DESIGN.md).
    pub fn code(self) -> i32 {
        match self {
            Exit::Done(Status::Ok | Status::Skipped) => 0,
            Exit::Done(Status::Failed | Status::Interrupted) => 1,
            Exit::Invalid => 2,
            Exit::Done(Status::Partial) => 3,
            Exit::Done(Status::Pending) => 4,
        }
    }
}

impl From<Status> for Exit {
    fn from(s: Status) -> Exit {
        Exit::Done(s)
    }
}

impl From<&Error> for Exit {
    fn from(e: &Error) -> Exit {
        match e {
            Error::Usage(_) | Error::Config(_) => Exit::Invalid,
            Error::Pending(_) => Exit::Done(Status::Pending),
            Error::Stopped(_) => Exit::Done(Status::Interrupted),
            Error::Failed(_) | Error::Io { .. } | Error::Destination(_) | Error::Integrity(_) => {
                Exit::Done(Status::Failed)
            }
        }
    }
}

/// The overall status of several destinations' statuses: ok when all are,
/// interrupted when one was stopped, partial when some are ok, else failed.
pub fn combine(statuses: &[Status]) -> Status {
    let ok = statuses.iter().filter(|s| **s == Status::Ok).count();
    if ok == statuses.len() {
        Status::Ok
    } else if statuses.contains(&Status::Interrupted) {
        Status::Interrupted
    } else if ok > 0 {
        Status::Partial
    } else {
        Status::Failed
    }
}

/// The worst of several statuses: failed, interrupted, partial, pending,
/// then ok.
pub fn worst(statuses: impl IntoIterator<Item = Status>) -> Status {
    statuses
        .into_iter()
        .fold(Status::Ok, |acc, s| match (acc, s) {
            (Status::Failed, _) | (_, Status::Failed) => Status::Failed,
            (Status::Interrupted, _) | (_, Status::Interrupted) => Status::Interrupted,
            (Status::Partial, _) | (_, Status::Partial) => Status::Partial,
            (Status::Pending, _) | (_, Status::Pending) => Status::Pending,
            _ => Status::Ok,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_combine_and_rank() {
        use Status::*;
        let table: &[(&[Status], Status, Status)] = &[
            (&[], Ok, Ok),
            (&[Ok, Ok], Ok, Ok),
            (&[Ok, Failed], Partial, Failed),
            (&[Failed, Failed], Failed, Failed),
            (&[Ok, Interrupted], Interrupted, Interrupted),
            (&[Partial, Ok], Partial, Partial),
        ];
        for (given, combined, worst_of) in table {
            assert_eq!(combine(given), *combined, "combine {given:?}");
            assert_eq!(worst(given.iter().copied()), *worst_of, "worst {given:?}");
        }
        assert_eq!(
            [Ok, Failed, Interrupted, Partial, Pending].map(|s| Exit::from(s).code()),
            [0, 1, 1, 3, 4]
        );
        assert_eq!(Exit::Invalid.code(), 2);
    }
}
