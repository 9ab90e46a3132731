//! offsite: ships database backups off the host.
//!
//! The library is the whole pipeline; the binary is a thin shell over it.
//! Data flows source → stage (tar + zstd volumes and a manifest in the
//! staging folder) → upload (journaled, resumable, to every destination at
//! once) → list / verify / restore from the destinations. The library never
//! prints: it reports through [`progress::Progress`] and returns reports the
//! command line renders.

pub mod config;
pub mod crypt;
pub mod daemon;
pub mod digest;
pub mod error;
pub mod size;

pub use error::{Error, Result};
pub mod catalog;
pub mod destinations;
pub mod journal;
pub mod manifest;
pub mod names;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod source;
pub mod stage;
pub mod status;
pub mod stop;
pub mod upload;
