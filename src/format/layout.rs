//! The remote layout: where a backup's objects are on a destination. Every
//! key offsite writes, reads or deletes comes from here.
//!
//! ```text
//! <prefix>/<job>/<id>/vol-000000.tar.zst
//! <prefix>/<job>/<id>/manifest.json        written last: the commit marker
//! ```
//!
//! The prefix is the destination's (`prefix`, may be empty); the id is the
//! backup's (`20261201T021500Z-full-db1`). A cluster job's sets keep their
//! markers beside the backups (see [`crate::cluster`]):
//!
//! ```text
//! <prefix>/<job>/index/<set>/members.json
//! <prefix>/<job>/index/<set>/<member>.started | .done | .failed
//! ```

use super::manifest::MANIFEST_NAME;

/// The name of a job's set index folder, beside its backups' folders; no
/// backup id is ever this.
pub const INDEX: &str = "index";

/// The keys on one destination, under its `prefix`.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    prefix: &'a str,
}

impl<'a> Layout<'a> {
    /// The layout under `prefix` (no slash at either end; may be empty).
    pub fn new(prefix: &'a str) -> Layout<'a> {
        Layout { prefix }
    }

    /// The key of object `name` of backup `id` of `job`.
    pub fn key(&self, job: &str, id: &str, name: &str) -> String {
        format!("{}{name}", self.backup_folder(job, id))
    }

    /// The key of backup `id`'s manifest.
    pub fn manifest(&self, job: &str, id: &str) -> String {
        self.key(job, id, MANIFEST_NAME)
    }

    /// The folder of backup `id` of `job`, with its trailing slash.
    pub fn backup_folder(&self, job: &str, id: &str) -> String {
        format!("{}{id}/", self.job_folder(job))
    }

    /// The folder of `job`'s cluster set index, with its trailing slash.
    pub fn set_index(&self, job: &str) -> String {
        format!("{}{INDEX}/", self.job_folder(job))
    }

    /// Object `name` (a marker, `members.json`) of set `set` of `job`.
    pub fn set_object(&self, job: &str, set: &str, name: &str) -> String {
        format!("{}{set}/{name}", self.set_index(job))
    }

    /// The folder of every backup of `job`, with its trailing slash.
    pub fn job_folder(&self, job: &str) -> String {
        if self.prefix.is_empty() {
            format!("{job}/")
        } else {
            format!("{}/{job}/", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_remote_layout() {
        let l = Layout::new("db");
        assert_eq!(
            l.manifest("orders", "20261122T021500Z-full"),
            "db/orders/20261122T021500Z-full/manifest.json"
        );
        assert_eq!(l.job_folder("orders"), "db/orders/");
        let bare = Layout::new("");
        assert_eq!(
            bare.key("orders", "x", "vol-000000.tar.zst"),
            "orders/x/vol-000000.tar.zst"
        );
        assert_eq!(bare.backup_folder("orders", "x"), "orders/x/");
        assert_eq!(
            l.set_object("orders", "20261201T020000Z", "sn1.done"),
            "db/orders/index/20261201T020000Z/sn1.done"
        );
    }
}
