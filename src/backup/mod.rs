//! Making a backup and shipping it: read the source ([`source`]), stage it
//! into volumes and a manifest ([`stage`], compressed by `compress`, with
//! the block fingerprints of [`blockmap`]), and upload it to every
//! destination ([`upload`]), journaling each step ([`journal`]) so a later
//! run resumes. Nothing here reads a destination's backups back: that is
//! [`crate::remote`].

pub mod blockmap;
pub mod claim;
mod compress;
mod delta;
pub mod journal;
pub mod source;
pub mod stage;
pub mod upload;
