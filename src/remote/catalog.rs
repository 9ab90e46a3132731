//! What a destination holds: the complete backups of a job (those with a
//! manifest), sorted by the manifests' `created_at`, never by name, and the
//! incomplete ones (volumes without a manifest) that a crash or a running
//! upload left.

use std::collections::BTreeMap;

use offsite_backends::{get_bytes, list_all};
use serde::Serialize;

use crate::cluster::{self, Cluster, MEMBERS, MembersRecord, SetVerdict};
use crate::config::Config;
use crate::destinations::Target;
use crate::error::{Error, Result};
use crate::format::layout::INDEX;
use crate::format::manifest::{BackupKind, MANIFEST_NAME, Manifest, host_of_id};
use crate::outcome::Status;

/// A complete backup on a destination.
#[derive(Debug, Clone)]
pub struct RemoteBackup {
    /// The destination's name.
    pub destination: String,
    /// Its manifest, read and validated (still sealed when the backup is
    /// encrypted).
    pub manifest: Manifest,
}

/// A backup whose manifest cannot be read or trusted.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedBackup {
    /// Its id (its folder's name under the job).
    pub id: String,
    /// What is wrong with its manifest.
    pub error: String,
}

/// What a destination holds of one job.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The destination's name.
    pub destination: String,
    /// Complete backups, oldest first.
    pub backups: Vec<RemoteBackup>,
    /// Ids with objects but no manifest.
    pub incomplete: Vec<String>,
    /// Ids whose manifest cannot be read or trusted.
    pub damaged: Vec<DamagedBackup>,
}

/// Lists `job` on `target`: its complete backups (manifests read and checked),
/// and the incomplete and damaged ones.
pub async fn list_job(target: &Target, job: &str) -> Result<Listing> {
    let prefix = target.layout().job_folder(job);
    let objects = list_all(target.backend.as_ref(), &prefix).await?;
    let mut by_id: BTreeMap<String, bool> = BTreeMap::new();
    for o in &objects {
        let rest = &o.key[prefix.len()..];
        if let Some((id, name)) = rest.split_once('/') {
            if id == INDEX {
                // A cluster job's set markers: see list_sets.
                continue;
            }
            let has_manifest = by_id.entry(id.to_string()).or_insert(false);
            if name == MANIFEST_NAME {
                *has_manifest = true;
            }
        }
    }
    let mut listing = Listing {
        destination: target.config.name.clone(),
        backups: Vec::new(),
        incomplete: Vec::new(),
        damaged: Vec::new(),
    };
    for (id, complete) in by_id {
        if !complete {
            listing.incomplete.push(id);
            continue;
        }
        let key = target.layout().manifest(job, &id);
        let origin = format!("destination \"{}\": {key}", target.config.name);
        let parsed = match get_bytes(target.backend.as_ref(), &key).await {
            Ok(bytes) => Manifest::from_json(&bytes, &origin).and_then(|m| {
                if m.id != id || m.job != job {
                    Err(Error::Integrity(format!(
                        "{origin}: the manifest says job {:?} backup {:?}, not what its key says",
                        m.job, m.id
                    )))
                } else {
                    Ok(m)
                }
            }),
            Err(e) => Err(e.into()),
        };
        match parsed {
            Ok(manifest) => listing.backups.push(RemoteBackup {
                destination: target.config.name.clone(),
                manifest,
            }),
            Err(e) => listing.damaged.push(DamagedBackup {
                id,
                error: e.to_string(),
            }),
        }
    }
    listing.backups.sort_by(|a, b| {
        a.manifest
            .created_at
            .cmp(&b.manifest.created_at)
            .then(a.manifest.id.cmp(&b.manifest.id))
    });
    Ok(listing)
}

/// The sets of cluster job `job` on `target`, oldest first, each judged as
/// of `now` from its markers alone: one listing of the job's index folder,
/// and a read of `members.json` for each set some configured member has not
/// finished; never a listing of volumes.
pub async fn list_sets(
    target: &Target,
    job: &str,
    cluster: &Cluster,
    now: jiff::Timestamp,
) -> Result<Vec<SetVerdict>> {
    let prefix = target.layout().set_index(job);
    let objects = list_all(target.backend.as_ref(), &prefix).await?;
    let names = objects
        .into_iter()
        .map(|o| o.key[prefix.len()..].to_string());
    let mut index = cluster::index_of(names);
    let mut out = Vec::new();
    for (set, idx) in &mut index {
        // Every configured member done: complete whatever the record says
        // (the common case, read without a request per set).
        let all_done = cluster.members.iter().all(|m| {
            idx.markers
                .get(m)
                .is_some_and(|s| s.iter().any(|x| x == cluster::DONE))
        });
        if !all_done {
            let key = target.layout().set_object(job, set, MEMBERS);
            idx.expected = match get_bytes(target.backend.as_ref(), &key).await {
                Ok(bytes) => serde_json::from_slice::<MembersRecord>(&bytes)
                    .ok()
                    .map(|r| r.members),
                Err(e) if e.kind() == offsite_backends::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            };
        }
        out.push(cluster::verdict(
            set,
            idx,
            &cluster.members,
            cluster.grace,
            now,
        ));
    }
    Ok(out)
}

/// Which backup a command reads: `backup` (an id, `latest`, or every one
/// when absent) and, for `latest`, `host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Which<'a> {
    /// `--backup`: an id or `latest`.
    pub backup: Option<&'a str>,
    /// `--host`: whose `latest`.
    pub host: Option<&'a str>,
    /// `--set`: a cluster job's set (restore and verify read its members).
    pub set: Option<&'a str>,
}

/// `offsite list`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    /// `failed` when a destination could not be listed, else `ok`.
    pub status: Status,
    /// One per job and destination.
    pub listings: Vec<JobListing>,
}

/// One job on one destination, or why it could not be listed.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum JobListing {
    /// What the destination holds of the job.
    Listed {
        /// The job's name.
        job: String,
        /// The destination's name.
        destination: String,
        /// Complete backups, oldest first.
        backups: Vec<ListedBackup>,
        /// Ids with objects but no manifest.
        incomplete: Vec<String>,
        /// Ids whose manifest cannot be read or trusted.
        damaged: Vec<DamagedBackup>,
    },
    /// A cluster job's sets on the destination, judged from their markers.
    Sets {
        /// The job's name.
        job: String,
        /// The destination's name.
        destination: String,
        /// Every set, oldest first.
        sets: Vec<SetVerdict>,
    },
    /// The listing failed.
    Failed {
        /// The job's name.
        job: String,
        /// The destination that could not be listed.
        destination: String,
        /// Why.
        error: String,
    },
}

/// A complete backup as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedBackup {
    /// Its id.
    pub id: String,
    /// Full or incremental.
    pub kind: BackupKind,
    /// The backup an incremental builds on.
    pub parent: Option<String>,
    /// The host that made it, when it says.
    pub host: Option<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Files packed into its volumes (an incremental's unchanged files are
    /// not counted).
    pub files: u64,
    /// Their bytes, before compression.
    pub bytes: u64,
    /// The bytes stored (compressed, encrypted).
    pub stored_bytes: u64,
    /// How many volumes hold them.
    pub volumes: usize,
    /// Why the source check flagged it, when it did.
    pub degenerate: Option<String>,
}

impl ListedBackup {
    fn of(b: &RemoteBackup) -> ListedBackup {
        let m = &b.manifest;
        ListedBackup {
            id: m.id.clone(),
            kind: m.kind,
            parent: m.parent.clone(),
            host: origin(b).map(str::to_string),
            created_at: m.created_at.clone(),
            files: m.stats.files,
            bytes: m.stats.bytes,
            stored_bytes: m.stats.stored_bytes,
            volumes: m.volumes.len(),
            degenerate: m.degenerate.clone(),
        }
    }
}

/// `offsite list`: every job (or `job`) on each of its destinations (or
/// only `destination`); a cluster job's sets rather than its backups.
pub async fn list_jobs(
    config: &Config,
    job: Option<&str>,
    destination: Option<&str>,
) -> Result<ListReport> {
    let mut listings = Vec::new();
    let now = jiff::Timestamp::now();
    for j in config.select_jobs(job)? {
        for t in config.job_targets(j, destination)? {
            if let Some(c) = &j.cluster {
                listings.push(match list_sets(&t, &j.name, c, now).await {
                    Ok(sets) => JobListing::Sets {
                        job: j.name.clone(),
                        destination: t.config.name.clone(),
                        sets,
                    },
                    Err(e) => JobListing::Failed {
                        job: j.name.clone(),
                        destination: t.config.name.clone(),
                        error: e.to_string(),
                    },
                });
                continue;
            }
            listings.push(match list_job(&t, &j.name).await {
                Ok(l) => JobListing::Listed {
                    job: j.name.clone(),
                    destination: l.destination,
                    backups: l.backups.iter().map(ListedBackup::of).collect(),
                    incomplete: l.incomplete,
                    damaged: l.damaged,
                },
                Err(e) => JobListing::Failed {
                    job: j.name.clone(),
                    destination: t.config.name.clone(),
                    error: e.to_string(),
                },
            });
        }
    }
    let failed = listings
        .iter()
        .any(|l| matches!(l, JobListing::Failed { .. }));
    Ok(ListReport {
        status: if failed { Status::Failed } else { Status::Ok },
        listings,
    })
}

/// Refuses a `--backup` value that can be no backup's id: it must be
/// `latest`, or an id as offsite writes them (`20261122T021500Z-full-db1`,
/// `...-incr-db1`; older ones end at the kind).
pub fn check_backup_arg(wanted: &str) -> Result<()> {
    let b = wanted.as_bytes();
    let shaped = b.len() > 17
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && &b[15..17] == b"Z-"
        && crate::format::manifest::safe_id(wanted);
    if wanted == "latest" || shaped {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--backup {wanted:?} is not a backup id: give `latest` or an id as `offsite list` shows it (like 20261122T021500Z-full-db1)"
    )))
}

/// Whose backup `b` is: the host its manifest records, else the host its id
/// names; none for a backup made before backups recorded their host.
pub fn origin(b: &RemoteBackup) -> Option<&str> {
    b.manifest
        .host
        .as_deref()
        .or_else(|| host_of_id(&b.manifest.id))
}

/// Whose backups `latest` is taken from, given every backup's origin
/// (`None`: made before backups recorded one): the host, and whether those
/// that record none count too. Several other hosts and none of this one's:
/// their names, to ask which.
fn latest_of<'a>(
    origins: &[Option<&'a str>],
    host: &'a str,
    only_host: Option<&'a str>,
) -> std::result::Result<(&'a str, bool), Vec<&'a str>> {
    let others: std::collections::BTreeSet<&str> = origins
        .iter()
        .copied()
        .flatten()
        .filter(|h| *h != host)
        .collect();
    match only_host {
        Some(h) => Ok((h, false)),
        None if origins.contains(&Some(host)) || others.is_empty() => Ok((host, true)),
        None if others.len() > 1 => Err(others.into_iter().collect()),
        None => Ok((others.first().copied().unwrap_or(host), true)),
    }
}

/// Picks `wanted` (an id, or `latest`) from a listing. `latest` is the
/// newest backup of `only_host` when given; else, where this host (`host`)
/// has backups there or no backup records a host, the newest of this
/// host's with those that record none; else, where every backup that
/// records a host comes from one other host (a host rebuilt under a new
/// name), the newest of that host's with those that record none; with
/// several other hosts' backups and none of this one's, it asks which.
pub fn select<'a>(
    listing: &'a Listing,
    job: &str,
    wanted: &str,
    host: &str,
    only_host: Option<&str>,
) -> Result<&'a RemoteBackup> {
    let damaged = |id: &str| {
        Error::Integrity(format!(
            "destination \"{}\": job {job:?} backup {id:?} is damaged ({}); choose another with --backup ID (see `offsite list`)",
            listing.destination,
            listing
                .damaged
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.error.as_str())
                .unwrap_or("")
        ))
    };
    if let Some(d) = listing.damaged.iter().find(|d| d.id == wanted) {
        return Err(damaged(&d.id));
    }
    let found = if wanted == "latest" {
        // Every backup there, complete or damaged, by whose it is.
        let origins: Vec<Option<&str>> = listing
            .backups
            .iter()
            .map(origin)
            .chain(listing.damaged.iter().map(|d| host_of_id(&d.id)))
            .collect();
        let (whose, with_unrecorded) =
            latest_of(&origins, host, only_host).map_err(|hosts| {
                Error::Usage(format!(
                    "destination \"{}\": job {job:?} holds backups of several hosts ({}) and none of this host's ({host}); say whose with --host H, or name one with --backup ID",
                    listing.destination,
                    hosts.join(", ")
                ))
            })?;
        let of_group = |o: Option<&str>| match o {
            Some(h) => h == whose,
            None => with_unrecorded,
        };
        let latest = listing.backups.iter().rfind(|b| of_group(origin(b)));
        // Never fall back silently to an older backup when a newer one is damaged.
        let newest_damaged = listing
            .damaged
            .iter()
            .map(|d| d.id.as_str())
            .filter(|id| of_group(host_of_id(id)))
            .max();
        if let Some(d) = newest_damaged
            && latest.is_none_or(|b| time_part(d) > time_part(&b.manifest.id))
        {
            return Err(damaged(d));
        }
        latest
    } else {
        listing.backups.iter().find(|b| b.manifest.id == wanted)
    };
    found.ok_or_else(|| {
        let have: Vec<&str> = listing.backups.iter().map(|b| b.manifest.id.as_str()).collect();
        Error::Failed(format!(
            "destination \"{}\": job {job:?} has no complete backup {wanted:?}{} (complete: {}); run `offsite list --job {job}`",
            listing.destination,
            only_host.map(|h| format!(" of host {h:?}")).unwrap_or_default(),
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        ))
    })
}

/// The time part of a backup id, which orders ids of different hosts.
fn time_part(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Refuses `--set` for jobs that have no cluster, and a malformed set id.
pub fn check_set_arg(jobs: &[&crate::config::Job], set: &str) -> Result<()> {
    if !crate::cluster::valid_set(set) {
        return Err(Error::Usage(format!(
            "--set {set:?} is not a set id: write the set's UTC time to the second, like 20261201T020000Z (see `offsite list`)"
        )));
    }
    if let Some(j) = jobs.iter().find(|j| j.cluster.is_none()) {
        return Err(Error::Usage(format!(
            "job {:?} has no cluster, so its backups belong to no set; choose a cluster job with --job",
            j.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::latest_of;

    #[test]
    fn latest_is_this_hosts_else_a_lone_other_hosts_else_asked() {
        let (db1, db2, db3) = (Some("db1"), Some("db2"), Some("db3"));
        // This host's, with those made before hosts were recorded.
        assert_eq!(latest_of(&[None, db1, db2], "db1", None), Ok(("db1", true)));
        assert_eq!(latest_of(&[None, None], "db1", None), Ok(("db1", true)));
        // A host rebuilt under a new name: the old host's newest, not an
        // older unrecorded backup.
        assert_eq!(latest_of(&[None, db2], "db9", None), Ok(("db2", true)));
        assert_eq!(latest_of(&[db2, db3], "db9", None), Err(vec!["db2", "db3"]));
        assert_eq!(
            latest_of(&[None, db2, db3], "db9", Some("db3")),
            Ok(("db3", false))
        );
    }
}
