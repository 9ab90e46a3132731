//! What a destination holds, read back: its backups ([`catalog`]), checked
//! and restored ([`restore`]), and pruned by the retention policy
//! ([`prune`]). Nothing here makes a backup: that is [`crate::backup`].

pub mod catalog;
pub mod prune;
pub mod read;
pub mod restore;
pub mod verify;
