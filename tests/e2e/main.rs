//! End-to-end runs of the real `offsite` binary against real folders.
//! One binary, a module per area.

mod backup_restore;
mod config_errors;
mod daemon;
mod destinations;
mod incremental;
mod prune;
mod resume;
mod s3;
mod sources;
mod support;
