//! How the library tells a person what it is doing, without printing.
//!
//! The command line implements [`Progress`] with progress bars on a terminal
//! (indicatif lives there only); tests and `--json` runs use [`Silent`].
//! Every method has an empty default so an implementation takes what it needs.

/// What the library reports while it works; every method defaults to doing
/// nothing.
pub trait Progress: Send + Sync {
    /// Staging of `job` starts: `files` files of `bytes` bytes in all.
    fn stage_started(&self, _job: &str, _files: u64, _bytes: u64) {}
    /// `files` more files and `bytes` more bytes are packed.
    fn stage_advanced(&self, _files: u64, _bytes: u64) {}
    /// Packing the files of `job` ends, whether it succeeded or not.
    fn stage_finished(&self, _job: &str) {}
    /// Upload to `destination` starts: `total` bytes, of which `already` were sent by an earlier run.
    fn upload_started(&self, _destination: &str, _total: u64, _already: u64) {}
    /// `bytes` more bytes reached `destination`.
    fn upload_advanced(&self, _destination: &str, _bytes: u64) {}
    /// The upload to `destination` ends: `ok` is false when it failed or was
    /// stopped.
    fn upload_finished(&self, _destination: &str, _ok: bool) {}
    /// Something the operator should know that is not an error.
    fn note(&self, _message: &str) {}
    /// One line a hook or source command (`what`) printed on its stderr.
    fn command_output(&self, _what: &str, _line: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
