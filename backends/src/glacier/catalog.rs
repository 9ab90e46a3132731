//! The vault's catalog: which archive holds which key. A pure core (no I/O
//! beyond [`Store`], which reads and writes it under a lock), table-tested.
//!
//! Glacier names archives by ids it picks, and reading even the list of
//! archives takes an inventory job of hours. So offsite keeps the catalog
//! itself, in the staging folder, and writes each archive's key into its
//! description, so that an inventory rebuilds the catalog
//! ([`Catalog::from_inventory`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, ObjectMeta, Result};

/// Every description offsite writes starts with this.
const MARK: &str = "offsite:v1:";

/// `t` as the catalog writes times (RFC 3339, whole seconds, UTC), so that
/// times from the vault and from this host compare as strings; what is not
/// a time is kept as it is.
pub fn normalize_time(t: &str) -> String {
    t.parse::<jiff::Timestamp>()
        .map(format_time)
        .unwrap_or_else(|_| t.to_string())
}

/// Now, as the catalog writes times.
pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

/// `t` in UTC, to the second below (`2026-11-21T06:00:00Z`).
fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What an archive holds, as its description says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    /// An object stored by `put` (small: a manifest) or `put_file` (a volume).
    Object {
        /// The object's key.
        key: String,
        /// Stored by `put`, so a copy is kept beside the catalog.
        small: bool,
    },
    /// A copy of the catalog itself.
    Catalog,
}

/// The archive description for an object: our key, percent-encoded where
/// Glacier's printable-ASCII rule (or a header) needs it.
pub fn describe(what: &Described) -> Result<String> {
    let d = match what {
        Described::Catalog => format!("{MARK}catalog"),
        Described::Object { key, small } => {
            let mut d = format!("{MARK}{}:", if *small { "s" } else { "f" });
            for b in key.bytes() {
                if b.is_ascii_graphic() && b != b'%' {
                    d.push(b as char);
                } else {
                    d.push_str(&format!("%{b:02X}"));
                }
            }
            d
        }
    };
    if d.len() > 1024 {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "the archive description for {what:?} is {} characters; Glacier takes at most 1024: shorten `prefix` or the job name",
                d.len()
            ),
        ));
    }
    Ok(d)
}

/// What a description says, or None for an archive offsite did not write.
pub fn parse_description(d: &str) -> Option<Described> {
    let rest = d.strip_prefix(MARK)?;
    if rest == "catalog" {
        return Some(Described::Catalog);
    }
    let (small, enc) = match rest.split_once(':')? {
        ("s", enc) => (true, enc),
        ("f", enc) => (false, enc),
        _ => return None,
    };
    let mut out = Vec::new();
    let b = enc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let key = String::from_utf8(out).ok()?;
    crate::validate_key(&key).ok()?;
    Some(Described::Object { key, small })
}

/// One archive in the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// The archive id Glacier gave it.
    pub id: String,
    /// The key of the object it holds.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 tree hash, hex.
    pub tree_hash: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Stored by `put`: small enough to keep a copy beside the catalog, so
    /// `list` and `prune` read manifests without a retrieval job.
    pub small: bool,
}

/// A retrieval or inventory job the vault is running for us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job id Glacier gave it.
    pub id: String,
    /// The retrieval tier it was started with (`Standard`, `Bulk`, `Expedited`).
    pub tier: String,
    /// RFC 3339, UTC.
    pub started: String,
}

/// Which archive of the vault holds which key, and the jobs under way: the
/// `catalog.json` kept in the staging folder and shipped to the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The file format's version (1).
    pub version: u32,
    /// The vault it describes: a catalog is never used for another.
    pub vault: String,
    /// `started empty` or `rebuilt from the inventory of <date>`.
    pub origin: String,
    /// The archives holding offsite's objects, oldest first.
    pub archives: Vec<Archive>,
    /// The catalog's own copies on the vault, oldest first; the newest is current.
    #[serde(default)]
    pub copies: Vec<Archive>,
    /// Bumped by every change to `archives`.
    #[serde(default)]
    pub generation: u64,
    /// The generation the newest copy holds.
    #[serde(default)]
    pub shipped: u64,
    /// Archive-retrieval jobs by archive id (local state, never shipped).
    #[serde(default)]
    pub retrievals: BTreeMap<String, Job>,
    /// The inventory job under way (local state, never shipped).
    #[serde(default)]
    pub inventory_job: Option<Job>,
    /// Archives the last inventory showed that offsite did not write.
    #[serde(default)]
    pub foreign: usize,
    /// Archives deleted lately, by id, with the time: an inventory taken
    /// before a deletion still lists the archive (local state, never shipped).
    #[serde(default)]
    pub deleted: BTreeMap<String, String>,
}

/// An inventory as Glacier's inventory job writes it (JSON format).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inventory {
    /// When Glacier took the inventory (RFC 3339); up to a day old.
    pub inventory_date: String,
    /// Every archive in the vault then.
    pub archive_list: Vec<InventoryArchive>,
}

/// One archive of an [`Inventory`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InventoryArchive {
    /// The archive id.
    pub archive_id: String,
    /// Its description; offsite's start with `offsite:v1:` (see [`describe`]).
    #[serde(default)]
    pub archive_description: String,
    /// When it was uploaded (RFC 3339).
    pub creation_date: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 tree hash, hex.
    #[serde(rename = "SHA256TreeHash")]
    pub sha256_tree_hash: String,
}

/// What an inventory held, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildCount {
    /// Archives holding offsite's objects.
    pub archives: usize,
    /// Distinct keys they hold (an object stored twice counts once).
    pub keys: usize,
    /// Copies of the catalog itself.
    pub copies: usize,
    /// Archives offsite did not write (left alone, never deleted).
    pub foreign: usize,
}

impl Catalog {
    /// An empty catalog of `vault`.
    pub fn new(vault: &str) -> Catalog {
        Catalog {
            version: 1,
            vault: vault.to_string(),
            origin: "started empty".into(),
            archives: Vec::new(),
            copies: Vec::new(),
            generation: 0,
            shipped: 0,
            retrievals: BTreeMap::new(),
            inventory_job: None,
            foreign: 0,
            deleted: BTreeMap::new(),
        }
    }

    /// What the catalog holds, for the operator.
    pub fn count(&self) -> RebuildCount {
        RebuildCount {
            archives: self.archives.len(),
            keys: self.list("").len(),
            copies: self.copies.len(),
            foreign: self.foreign,
        }
    }

    /// The archive that holds `key` now: the newest.
    pub fn newest(&self, key: &str) -> Option<&Archive> {
        self.archives
            .iter()
            .filter(|a| a.key == key)
            .max_by(|a, b| a.created.cmp(&b.created))
    }

    /// Every archive holding `key` (older ones are left by a resend).
    pub fn all_of(&self, key: &str) -> Vec<Archive> {
        self.archives
            .iter()
            .filter(|a| a.key == key)
            .cloned()
            .collect()
    }

    /// Records an archive; one with the same id (a server that names
    /// archives by their content, as moto does) is replaced.
    pub fn add(&mut self, archive: Archive) {
        self.archives.retain(|a| a.id != archive.id);
        self.archives.push(archive);
        self.generation += 1;
    }

    /// Forgets archive `id`, deleted from the vault at `when` (RFC 3339).
    pub fn remove(&mut self, id: &str, when: &str) {
        let before = self.archives.len();
        self.archives.retain(|a| a.id != id);
        self.retrievals.remove(id);
        if self.archives.len() != before {
            self.generation += 1;
            self.deleted.insert(id.to_string(), when.to_string());
        }
    }

    /// Each key under `prefix` once, with its newest archive's size.
    pub fn list(&self, prefix: &str) -> Vec<ObjectMeta> {
        let mut by_key: BTreeMap<&str, &Archive> = BTreeMap::new();
        for a in self.archives.iter().filter(|a| a.key.starts_with(prefix)) {
            let e = by_key.entry(&a.key).or_insert(a);
            if a.created > e.created {
                *e = a;
            }
        }
        by_key
            .into_values()
            .map(|a| ObjectMeta {
                key: a.key.clone(),
                size: a.size,
            })
            .collect()
    }

    /// Whether the vault's copy of the catalog is behind.
    pub fn dirty(&self) -> bool {
        self.generation != self.shipped
    }

    /// The copy shipped to the vault: the archives, no local job state.
    pub fn to_copy(&self) -> Vec<u8> {
        let copy = Catalog {
            retrievals: BTreeMap::new(),
            deleted: BTreeMap::new(),
            inventory_job: None,
            copies: Vec::new(),
            ..self.clone()
        };
        serde_json::to_vec_pretty(&copy).unwrap_or_default()
    }

    /// The catalog an inventory describes, keeping what this one knows that
    /// the inventory cannot: archives created after it was taken (AWS takes
    /// inventories about once a day) and the jobs under way.
    pub fn from_inventory(&self, inv: &Inventory) -> (Catalog, RebuildCount) {
        let mut out = Catalog::new(&self.vault);
        let taken = normalize_time(&inv.inventory_date);
        out.origin = format!("rebuilt from the inventory of {taken}");
        let mut count = RebuildCount::default();
        for a in &inv.archive_list {
            let archive = |key: String, small: bool| Archive {
                id: a.archive_id.clone(),
                key,
                size: a.size,
                tree_hash: a.sha256_tree_hash.clone(),
                created: normalize_time(&a.creation_date),
                small,
            };
            if self.deleted.contains_key(&a.archive_id) {
                continue; // deleted after the inventory was taken
            }
            match parse_description(&a.archive_description) {
                Some(Described::Object { key, small }) => {
                    out.archives.push(archive(key, small));
                    count.archives += 1;
                }
                Some(Described::Catalog) => {
                    out.copies.push(archive(String::new(), true));
                    count.copies += 1;
                }
                None => count.foreign += 1,
            }
        }
        let known: std::collections::HashSet<String> =
            out.archives.iter().map(|a| a.id.clone()).collect();
        for a in &self.archives {
            if !known.contains(&a.id) && a.created > taken {
                out.archives.push(a.clone());
            }
        }
        for c in &self.copies {
            if !out.copies.iter().any(|x| x.id == c.id) && c.created > taken {
                out.copies.push(c.clone());
            }
        }
        out.archives.sort_by(|a, b| a.created.cmp(&b.created));
        out.copies.sort_by(|a, b| a.created.cmp(&b.created));
        out.retrievals = self.retrievals.clone();
        out.foreign = count.foreign;
        // Deletions before the inventory was taken are in it already.
        out.deleted = self
            .deleted
            .iter()
            .filter(|(_, when)| when.as_str() > taken.as_str())
            .map(|(id, when)| (id.clone(), when.clone()))
            .collect();
        count.keys = out.list("").len();
        // The vault's newest copy predates this rebuild: ship a new one.
        out.generation = 1;
        (out, count)
    }
}

/// The catalog's files in the staging folder: `catalog.json`, its lock, and
/// `objects/<archive id>`, the copies of small archives (manifests).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    vault: String,
}

impl Store {
    /// The catalog of `vault` in the folder `dir`.
    pub fn new(dir: impl Into<PathBuf>, vault: &str) -> Store {
        Store {
            dir: dir.into(),
            vault: vault.to_string(),
        }
    }

    /// The folder the catalog's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The catalog file, `catalog.json`.
    pub fn file(&self) -> PathBuf {
        self.dir.join("catalog.json")
    }

    /// Whether a catalog was written here.
    pub fn exists(&self) -> bool {
        self.file().exists()
    }

    /// Where the copy of a small archive is kept.
    pub fn object(&self, id: &str) -> PathBuf {
        // Archive ids are URL-safe base64; anything else is hashed into a name.
        if !id.is_empty()
            && id.len() < 200
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.dir.join("objects").join(id)
        } else {
            self.dir
                .join("objects")
                .join(crate::treehash::tree_hash_hex(id.as_bytes()))
        }
    }

    /// Keeps the copy of a small archive's bytes (atomically).
    pub fn keep_object(&self, id: &str, body: &[u8]) -> Result<()> {
        write_atomic(&self.object(id), body)
    }

    /// Reads the catalog (an empty one if there is none yet), lets `change`
    /// alter it, and writes it back if it changed: all under an exclusive
    /// lock, so a backup and a prune on the same host never lose an entry.
    pub fn update<T>(&self, change: impl FnOnce(&mut Catalog) -> Result<T>) -> Result<T> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            Error::from_io(
                format!("cannot create the catalog folder {}", self.dir.display()),
                e,
            )
        })?;
        let lock_path = self.dir.join("catalog.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::from_io(format!("cannot open {}", lock_path.display()), e))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::from_io(
                format!("cannot lock {}", lock_path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        let before = self.read()?;
        let mut catalog = before.clone().unwrap_or_else(|| Catalog::new(&self.vault));
        let out = change(&mut catalog)?;
        if before.as_ref() != Some(&catalog) {
            let text = serde_json::to_vec_pretty(&catalog).map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("cannot encode the catalog: {e}"),
                )
            })?;
            write_atomic(&self.file(), &text)?;
        }
        drop(lock);
        Ok(out)
    }

    /// The catalog as it is now (None: this host never wrote to the vault).
    pub fn read(&self) -> Result<Option<Catalog>> {
        let path = self.file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::from_io(format!("cannot read {}", path.display()), e)),
        };
        let c: Catalog = serde_json::from_slice(&text).map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("{} is not a catalog offsite can read: {e}", path.display()),
            )
            .with_hint("move it aside and rebuild it from the vault: `offsite glacier inventory`")
        })?;
        if c.vault != self.vault {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "{} is the catalog of vault {:?}, not {:?}",
                    path.display(),
                    c.vault,
                    self.vault
                ),
            ));
        }
        Ok(Some(c))
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::from_io(format!("cannot create {}", dir.display()), e))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::from_io(format!("cannot write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(id: &str, key: &str, created: &str) -> Archive {
        Archive {
            id: id.into(),
            key: key.into(),
            size: id.len() as u64,
            tree_hash: "00".into(),
            created: created.into(),
            small: key.ends_with("manifest.json"),
        }
    }

    #[test]
    fn descriptions_round_trip_and_stay_printable_ascii() {
        let cases = [
            ("db/orders/20261122T021500Z-full/manifest.json", true),
            ("a b/ünï%20/vol-000000.tar.zst", false),
            ("x:y/z", false),
        ];
        for (key, small) in cases {
            let what = Described::Object {
                key: key.into(),
                small,
            };
            let d = describe(&what).expect("describable");
            assert!(d.bytes().all(|b| b.is_ascii_graphic()), "{d}");
            assert_eq!(parse_description(&d), Some(what), "{d}");
        }
        assert_eq!(
            parse_description(&describe(&Described::Catalog).expect("catalog")),
            Some(Described::Catalog)
        );
    }

    #[test]
    fn descriptions_offsite_did_not_write_are_not_ours() {
        for d in [
            "",
            "nightly backup",
            "offsite:v2:s:a",
            "offsite:v1:x:a",
            "offsite:v1:s:%zz",
            "offsite:v1:f:a/../b",
            "offsite:v1:s:%C3",
        ] {
            assert_eq!(parse_description(d), None, "{d:?}");
        }
    }

    #[test]
    fn over_long_descriptions_are_refused() {
        let key = "k/".repeat(600);
        let what = Described::Object {
            key: key.trim_end_matches('/').into(),
            small: true,
        };
        assert!(describe(&what).is_err());
    }

    #[test]
    fn the_newest_archive_holds_a_key_and_list_shows_each_key_once() {
        let mut c = Catalog::new("v");
        c.add(archive("a1", "j/1/vol-0", "2026-11-20T02:00:00Z"));
        c.add(archive("a2", "j/1/manifest.json", "2026-11-20T02:01:00Z"));
        c.add(archive("a3", "j/1/vol-0", "2026-11-21T02:00:00Z"));
        c.add(archive("b1", "k/1/vol-0", "2026-11-21T02:00:00Z"));
        assert_eq!(c.newest("j/1/vol-0").map(|a| a.id.as_str()), Some("a3"));
        assert_eq!(c.all_of("j/1/vol-0").len(), 2);
        let listed = c.list("j/");
        let keys: Vec<_> = listed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["j/1/manifest.json", "j/1/vol-0"]);
        assert_eq!(listed[1].size, 2, "the newest archive's size");
        assert!(c.dirty());
        c.shipped = c.generation;
        c.remove("a1", "2026-11-22T00:00:00Z");
        assert!(c.dirty());
        assert_eq!(c.all_of("j/1/vol-0").len(), 1);
        let g = c.generation;
        c.remove("nope", "2026-11-22T00:00:00Z");
        assert_eq!(c.generation, g, "removing nothing changes nothing");
    }

    #[test]
    fn an_inventory_rebuilds_the_catalog_and_keeps_what_came_after_it() {
        let desc = |key: &str, small| {
            describe(&Described::Object {
                key: key.into(),
                small,
            })
            .expect("describable")
        };
        let inv_archive = |id: &str, d: String, created: &str| InventoryArchive {
            archive_id: id.into(),
            archive_description: d,
            creation_date: created.into(),
            size: 7,
            sha256_tree_hash: format!("{id}-hash"),
        };
        let inv = Inventory {
            inventory_date: "2026-11-21T06:00:00Z".into(),
            archive_list: vec![
                inv_archive(
                    "v0",
                    desc("j/0/manifest.json", true),
                    "2026-11-19T02:01:00Z",
                ),
                inv_archive("v1", desc("j/1/vol-0", false), "2026-11-20T02:00:00Z"),
                inv_archive(
                    "m1",
                    desc("j/1/manifest.json", true),
                    "2026-11-20T02:01:00Z",
                ),
                inv_archive(
                    "c1",
                    describe(&Described::Catalog).expect("catalog"),
                    "2026-11-20T02:02:00Z",
                ),
                inv_archive("x1", "photos 2019".into(), "2019-01-01T00:00:00Z"),
            ],
        };
        let mut local = Catalog::new("v");
        // Deleted before the inventory: must not come back.
        local.add(archive("gone", "j/0/vol-0", "2026-11-19T02:00:00Z"));
        // Deleted after the inventory was taken, which still lists it: must not come back.
        local.add(archive("v0", "j/0/manifest.json", "2026-11-19T02:01:00Z"));
        local.remove("v0", "2026-11-21T09:00:00Z");
        // An old deletion is no longer needed once an inventory is newer.
        local
            .deleted
            .insert("older".into(), "2026-11-20T00:00:00Z".into());
        // Uploaded after the inventory was taken: must be kept.
        local.add(archive("v2", "j/2/vol-0", "2026-11-22T02:00:00Z"));
        local.retrievals.insert(
            "v1".into(),
            Job {
                id: "job".into(),
                tier: "Standard".into(),
                started: "2026-11-22T03:00:00Z".into(),
            },
        );
        let (c, count) = local.from_inventory(&inv);
        let ids: Vec<_> = c.archives.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["v1", "m1", "v2"]);
        assert_eq!(
            count,
            RebuildCount {
                archives: 2,
                keys: 3,
                copies: 1,
                foreign: 1
            }
        );
        assert!(c.newest("j/1/manifest.json").is_some_and(|a| a.small));
        assert!(c.newest("j/1/vol-0").is_some_and(|a| !a.small));
        assert_eq!(c.copies.len(), 1);
        assert!(c.retrievals.contains_key("v1"), "jobs under way are kept");
        assert_eq!(c.deleted.keys().collect::<Vec<_>>(), ["v0"]);
        assert!(c.dirty(), "a rebuilt catalog is shipped again");
        assert!(c.origin.contains("2026-11-21T06:00:00Z"));
    }

    #[test]
    fn times_from_the_vault_compare_with_ours() {
        for (given, want) in [
            ("2026-11-21T06:00:00Z", "2026-11-21T06:00:00Z"),
            ("2026-11-21T06:00:00.123Z", "2026-11-21T06:00:00Z"),
            ("2026-11-21T07:00:00+01:00", "2026-11-21T06:00:00Z"),
            ("not a time", "not a time"),
        ] {
            assert_eq!(normalize_time(given), want, "{given}");
        }
        let n = now();
        assert_eq!(normalize_time(&n), n);
        assert!(n.ends_with('Z') && !n.contains('.'), "{n}");
    }

    #[test]
    fn the_shipped_copy_has_no_local_job_state() {
        let mut c = Catalog::new("v");
        c.add(archive("a1", "j/1/vol-0", "2026-11-20T02:00:00Z"));
        c.inventory_job = Some(Job {
            id: "inv".into(),
            tier: "Standard".into(),
            started: "x".into(),
        });
        let copy: Catalog = serde_json::from_slice(&c.to_copy()).expect("json");
        assert_eq!(copy.archives, c.archives);
        assert!(copy.inventory_job.is_none() && copy.retrievals.is_empty());
    }

    #[test]
    fn the_store_keeps_changes_and_refuses_another_vaults_catalog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path(), "v");
        assert!(store.read().expect("read").is_none());
        store
            .update(|c| {
                c.add(archive("a1", "j/1/vol-0", "2026-11-20T02:00:00Z"));
                Ok(())
            })
            .expect("update");
        let again = store.read().expect("read").expect("written");
        assert_eq!(again.archives.len(), 1);
        let other = Store::new(dir.path(), "w");
        assert!(other.read().is_err());
        let long = "é".repeat(150);
        assert!(store.object(&long).starts_with(dir.path().join("objects")));
        assert_eq!(store.object("AbC-_1"), dir.path().join("objects/AbC-_1"));
    }
}
