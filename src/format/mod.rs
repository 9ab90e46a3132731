//! What offsite writes, and how it is read back: the manifest (with how it
//! writes file names), the content hashes, the age encryption of volumes and
//! file lists, and the remote layout of keys. Pure data and formats: nothing
//! here talks to a destination.

pub mod blocks;
pub mod crypt;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod names;
