//! How a run, or one destination of it, ended, and the exit code each
//! outcome calls for: the one place statuses become exit codes (DESIGN.md:
//! 0 ok, 1 failed, 2 usage or configuration, 3 partial, 4 pending).

use serde::Serialize;

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
}

impl Status {
    /// The word `--json` and the status record use: `ok`, `partial`, ...
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Partial => "partial",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }

    /// The process exit code of a command that ended so.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Failed | Status::Interrupted => 1,
            Status::Partial => 3,
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

/// The worst of several statuses: failed, interrupted, partial, then ok.
pub fn worst(statuses: impl IntoIterator<Item = Status>) -> Status {
    statuses
        .into_iter()
        .fold(Status::Ok, |acc, s| match (acc, s) {
            (Status::Failed, _) | (_, Status::Failed) => Status::Failed,
            (Status::Interrupted, _) | (_, Status::Interrupted) => Status::Interrupted,
            (Status::Partial, _) | (_, Status::Partial) => Status::Partial,
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
            [Ok, Partial, Interrupted, Failed].map(Status::exit_code),
            [0, 3, 1, 1]
        );
    }
}
