//! End-to-end runs of the real `offsite` binary against real folders.
//! One binary, a module per area.

mod azure;
mod backup_restore;
mod chaos;
mod cluster;
mod config_errors;
mod daemon;
mod destinations;
mod encryption;
mod faithful;
mod faults;
mod ftp;
mod glacier;
mod health;
mod incremental;
mod json_contract;
mod postgres;
mod prune;
mod recipes;
mod remote;
mod restarts;
mod resume;
mod s3;
mod secrets;
mod sftp;
mod sources;
mod support;
mod toolbox;
mod writers;
