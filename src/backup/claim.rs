//! One owner per slot, for a cluster job whose run is the cluster's
//! (`cluster = { ..., run = "one" }`): the member that first writes
//! `<prefix>/<job>/index/<set>/claim` (create-if-absent, on the job's first
//! destination whose creates are exclusive) backs the set up, alone; the
//! others are told who owns it and skip.
//!
//! If the owner has not finished its set `takeover` after its claim, the
//! next member to run claims a new set, whose time is the first claim's
//! deadline (so every member that finds the owner late races for the same
//! one), and backs up into that one: nobody ever writes into another
//! member's set, so no fencing of shared objects is needed. A member that cannot read the
//! destination (put-only credentials) cannot see whether the owner
//! finished: it skips.

use jiff::Timestamp;
use offsite_backends::{ErrorKind, get_bytes};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, Cluster, DONE};
use crate::destinations::Target;
use crate::error::Result;

/// The claim object's name in a set's index folder.
pub const CLAIM: &str = "claim";

/// Who claimed a set, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The owner.
    pub member: String,
    /// When it claimed (RFC 3339).
    pub at: String,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This member owns `set` (it claimed it now, or an earlier run did).
    Ours {
        /// The set to back up.
        set: String,
        /// Why it is not the set asked for (a takeover), when it is not.
        note: Option<String>,
    },
    /// Another member owns the slot: skip, for this reason.
    Theirs(String),
}

/// The destination the job's slots are claimed on: the first of `targets`
/// whose creates are exclusive (the configuration made sure there is one).
pub fn claim_target(targets: &[Target]) -> Option<&Target> {
    targets
        .iter()
        .find(|t| t.backend.capabilities().exclusive_create)
}

/// Claims slot `set` of `job` for this member, or finds who owns it; takes
/// over with a new set once the owner is `takeover` late (see the module
/// documentation).
pub async fn claim(
    target: &Target,
    job: &str,
    cluster: &Cluster,
    set: &str,
    now: Timestamp,
) -> Result<Claimed> {
    let step =
        jiff::SignedDuration::try_from(cluster.takeover).unwrap_or(jiff::SignedDuration::MAX);
    let mut candidate = set.to_string();
    // A bound on the takeovers one run walks through.
    for _ in 0..1_000 {
        let (owner, claimed_at) = match try_claim(target, job, cluster, &candidate).await? {
            Found::Ours => {
                let note = (candidate != set).then(|| {
                    format!("set {set} was claimed but not finished in time; this member took over with set {candidate}")
                });
                return Ok(Claimed::Ours {
                    set: candidate,
                    note,
                });
            }
            Found::Owner { member, .. } if member == cluster.member => {
                return Ok(Claimed::Ours {
                    set: candidate,
                    note: Some(format!("resuming this member's own claim of set {set}")),
                });
            }
            Found::Unreadable => {
                return Ok(Claimed::Theirs(format!(
                    "set {candidate} is owned by another member (these credentials cannot read which)"
                )));
            }
            Found::Owner { member, at } => (member, at),
        };
        if finished(target, job, &candidate, &owner).await? {
            return Ok(Claimed::Theirs(format!(
                "set {candidate} was backed up by member {owner:?}"
            )));
        }
        // The owner has `takeover` from its claim; every member that finds
        // it late computes the same next set, so they race for one claim.
        let since = claimed_at
            .or_else(|| cluster::set_time(&candidate))
            .unwrap_or(now);
        let deadline = since.checked_add(step).unwrap_or(Timestamp::MAX);
        if now < deadline {
            return Ok(Claimed::Theirs(format!(
                "set {candidate} is owned by member {owner:?}, which has until {} to finish it before another member takes over",
                deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
            )));
        }
        candidate = cluster::set_id(deadline);
    }
    Ok(Claimed::Theirs(format!(
        "no set after {set} could be claimed"
    )))
}

/// What a claim of one set found.
enum Found {
    /// The claim is ours now.
    Ours,
    /// `member` claimed it at `at` (when its record says).
    Owner {
        member: String,
        at: Option<Timestamp>,
    },
    /// Claimed, by a member these credentials cannot read.
    Unreadable,
}

/// Writes the claim of `set`, or reads whose it is.
async fn try_claim(target: &Target, job: &str, cluster: &Cluster, set: &str) -> Result<Found> {
    let key = target.layout().set_object(job, set, CLAIM);
    let record = ClaimRecord {
        member: cluster.member.clone(),
        at: Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    let body = serde_json::to_vec(&record).unwrap_or_default();
    match target.backend.put(&key, body.into()).await {
        Ok(()) => return Ok(Found::Ours),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    if !target.backend.capabilities().read {
        return Ok(Found::Unreadable);
    }
    let bytes = get_bytes(target.backend.as_ref(), &key).await?;
    Ok(match serde_json::from_slice::<ClaimRecord>(&bytes) {
        Ok(r) => Found::Owner {
            member: r.member,
            at: r.at.parse().ok(),
        },
        Err(_) => Found::Owner {
            member: "a member whose claim cannot be read".into(),
            at: None,
        },
    })
}

/// Whether `owner` finished its backup of `set`: its `done` marker is there.
async fn finished(target: &Target, job: &str, set: &str, owner: &str) -> Result<bool> {
    let key = target
        .layout()
        .set_object(job, set, &format!("{owner}.{DONE}"));
    match get_bytes(target.backend.as_ref(), &key).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}
