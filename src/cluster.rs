//! Cluster backup sets: many members (database nodes) back up one set,
//! with the object store as the only coordinator.
//!
//! Every member of one run agrees on the set's id without talking: a
//! scheduled run's set is its slot, a manual run's is `--set ID` or the
//! start of the current [`Cluster::window`] (see [`set_for`]). Each member
//! ships its own backup, `<set>-<kind>-<member>`, like any other backup
//! (volumes, then its manifest last), and writes small create-once marker
//! objects into the job's index, in the manner of Cassandra Medusa's
//! `index/` folder, so that a listing of the sets never lists a volume:
//!
//! ```text
//! <prefix>/<job>/index/<set>/members.json   the expected members, written once
//! <prefix>/<job>/index/<set>/<member>.started   before its first volume
//! <prefix>/<job>/index/<set>/<member>.done      after its manifest
//! <prefix>/<job>/index/<set>/<member>.failed    its backup failed before upload
//! ```
//!
//! [`verdict`] judges a set from those markers: complete, partial (naming
//! each member that is missing, failed or incomplete), or in progress
//! while its grace window is open. Pure: no I/O here.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::layout::Layout;
use crate::format::manifest::{BackupKind, Manifest};
use crate::retention::{self, Action, BackupInfo, Policy};

/// A job's `cluster` table, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Every member expected in each set.
    pub members: Vec<String>,
    /// This host's member name (the `member_env` variable, else `host_id`).
    pub member: String,
    /// How long after its start a set stays in progress: members joining
    /// late within it join the same set, and no verdict is final before.
    pub grace: Duration,
    /// A manual run's set starts at the beginning of the current window.
    pub window: Duration,
    /// Whether every member backs up each set, or one member claims it.
    pub run: RunBy,
    /// `run = "one"`: how long after its claim the owner of a set has to
    /// finish it before another member may start a new set in its place.
    pub takeover: Duration,
    /// `run = "one"`: a shell command that must succeed on a member for it
    /// to claim a slot (RavenDB: this node's task folder has a new backup).
    pub claim_if: Option<String>,
}

/// Who runs a cluster job's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunBy {
    /// Every member backs up its own part (SnappyData, Oracle NoSQL).
    All,
    /// The task is the cluster's: one member claims the slot and backs up
    /// for all (RavenDB's backup task).
    One,
}

/// The marker states, as their key suffixes.
pub const STARTED: &str = "started";
/// See [`STARTED`].
pub const DONE: &str = "done";
/// See [`STARTED`].
pub const FAILED: &str = "failed";
/// The expected members' record in a set's index folder.
pub const MEMBERS: &str = "members.json";

/// Whether `set` is a set id: a UTC time to the second, `20261201T020000Z`.
pub fn valid_set(set: &str) -> bool {
    set_time(set).is_some()
}

/// The time a set id stands for.
pub fn set_time(set: &str) -> Option<Timestamp> {
    if set.len() != 16 {
        return None;
    }
    crate::retention::time_of_id(set)
}

/// A set id for time `t` (to the second, UTC).
pub fn set_id(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The set a run belongs to: `given` (`--set`, or a scheduled run's slot),
/// else the start of the window `now` is in (windows count from the Unix
/// epoch, so every member computes the same one).
pub fn set_for(given: Option<Timestamp>, now: Timestamp, window: Duration) -> String {
    let t = given.unwrap_or_else(|| {
        let w = window.as_secs().max(1) as i64;
        let s = now.as_second();
        Timestamp::from_second(s - s.rem_euclid(w)).unwrap_or(now)
    });
    set_id(t)
}

/// The id of `member`'s backup of kind `kind` in `set`.
pub fn member_backup_id(set: &str, kind: &str, member: &str) -> String {
    format!("{set}-{kind}-{member}")
}

/// The set a backup id belongs to, when it is shaped like a set member's.
pub fn set_of_id(id: &str) -> Option<&str> {
    let set = id.get(..16)?;
    valid_set(set).then_some(set)
}

/// `members.json`: who a set expects, as the first member to start wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersRecord {
    /// The set's id.
    pub set: String,
    /// Every member expected.
    pub members: Vec<String>,
    /// The grace window, in seconds.
    pub grace_seconds: u64,
}

/// A member's marker: its backup in the set, and what it knew then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The member.
    pub member: String,
    /// Its backup's id (absent in a `failed` marker written before one was made).
    pub backup: Option<String>,
    /// `full` or `incr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The backup an incremental builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When it was written (RFC 3339).
    pub at: String,
    /// Why it failed (`failed` markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// This member's part of one set: what it writes beside its backup.
#[derive(Debug, Clone)]
pub struct SetMember<'a> {
    /// The cluster it belongs to.
    pub cluster: &'a Cluster,
    /// The set's id.
    pub set: &'a str,
}

impl SetMember<'_> {
    /// The objects written before the member's first volume: the set's
    /// expected members (create-once: the first member's stays) and this
    /// member's `started` marker.
    pub fn start_objects(&self, layout: Layout, job: &str, m: &Manifest) -> Vec<(String, Vec<u8>)> {
        // A set one member claimed is that member's alone.
        let expected = match self.cluster.run {
            RunBy::All => self.cluster.members.clone(),
            RunBy::One => vec![self.cluster.member.clone()],
        };
        let members = MembersRecord {
            set: self.set.to_string(),
            members: expected,
            grace_seconds: self.cluster.grace.as_secs(),
        };
        vec![
            (layout.set_object(job, self.set, MEMBERS), json(&members)),
            (self.marker_key(layout, job, STARTED), json(&self.marker(m))),
        ]
    }

    /// The object written after the member's manifest: its `done` marker.
    pub fn done_object(&self, layout: Layout, job: &str, m: &Manifest) -> (String, Vec<u8>) {
        (self.marker_key(layout, job, DONE), json(&self.marker(m)))
    }

    /// The `failed` marker of a run that failed before anything was staged.
    pub fn failed_object(&self, layout: Layout, job: &str, error: &str) -> (String, Vec<u8>) {
        let marker = Marker {
            member: self.cluster.member.clone(),
            backup: None,
            kind: None,
            parent: None,
            at: now_text(),
            error: Some(error.to_string()),
        };
        (self.marker_key(layout, job, FAILED), json(&marker))
    }

    fn marker_key(&self, layout: Layout, job: &str, state: &str) -> String {
        layout.set_object(job, self.set, &format!("{}.{state}", self.cluster.member))
    }

    fn marker(&self, m: &Manifest) -> Marker {
        Marker {
            member: self.cluster.member.clone(),
            backup: Some(m.id.clone()),
            kind: Some(m.kind.as_str().to_string()),
            parent: m.parent.clone(),
            at: now_text(),
            error: None,
        }
    }
}

fn now_text() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// What a set's index folder holds, as listed: each member's markers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetIndex {
    /// The expected members, when `members.json` was read.
    pub expected: Option<Vec<String>>,
    /// Each member's marker states (`started`, `done`, `failed`).
    pub markers: BTreeMap<String, Vec<String>>,
}

impl SetIndex {
    /// Takes one listed object name of the set's folder (`sn1.done`,
    /// `members.json`); anything else is ignored.
    pub fn note(&mut self, name: &str) {
        if let Some((member, state)) = name.rsplit_once('.')
            && [STARTED, DONE, FAILED].contains(&state)
        {
            self.markers
                .entry(member.to_string())
                .or_default()
                .push(state.to_string());
        }
    }
}

/// Every set in a job's index, from the listed keys under it (`<set>/<name>`).
pub fn index_of(names: impl IntoIterator<Item = String>) -> BTreeMap<String, SetIndex> {
    let mut sets: BTreeMap<String, SetIndex> = BTreeMap::new();
    for n in names {
        if let Some((set, name)) = n.split_once('/')
            && valid_set(set)
        {
            sets.entry(set.to_string()).or_default().note(name);
        }
    }
    sets
}

/// How a set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// Every expected member's backup is there.
    Complete,
    /// Its grace window has passed and some member's backup is not there.
    Partial,
    /// Its grace window is open and some member's backup is not there yet.
    InProgress,
}

/// The verdict on one set, as `list` and `verify` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetVerdict {
    /// The set's id.
    pub set: String,
    /// Complete, partial or in progress.
    pub status: SetStatus,
    /// The members expected (from `members.json`, else the configuration).
    pub expected: Vec<String>,
    /// Members whose backup is complete.
    pub members_ok: Vec<String>,
    /// Members whose run failed.
    pub members_failed: Vec<String>,
    /// Members that started but have not finished.
    pub members_incomplete: Vec<String>,
    /// Members with no marker at all.
    pub members_missing: Vec<String>,
}

impl SetVerdict {
    /// `set X: partial: missing sn3; failed sn2` for a person.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, who) in [
            ("missing", &self.members_missing),
            ("failed", &self.members_failed),
            ("incomplete", &self.members_incomplete),
        ] {
            if !who.is_empty() {
                parts.push(format!("{what} {}", who.join(", ")));
            }
        }
        let word = match self.status {
            SetStatus::Complete => "complete",
            SetStatus::Partial => "PARTIAL",
            SetStatus::InProgress => "in progress",
        };
        if parts.is_empty() {
            format!(
                "set {}: {word} ({} members)",
                self.set,
                self.members_ok.len()
            )
        } else {
            format!("set {}: {word}: {}", self.set, parts.join("; "))
        }
    }
}

/// Judges set `set` from its index as of `now`: complete when every
/// expected member is done; otherwise in progress until `grace` after the
/// set's time, then partial. A member with a `done` marker is ok whatever
/// else it wrote; one with `failed` (and no `done`) failed; one with only
/// `started` is incomplete; one with nothing is missing. Members that
/// wrote markers but are not expected are ignored.
pub fn verdict(
    set: &str,
    index: &SetIndex,
    configured: &[String],
    grace: Duration,
    now: Timestamp,
) -> SetVerdict {
    let expected = index
        .expected
        .clone()
        .unwrap_or_else(|| configured.to_vec());
    let mut v = SetVerdict {
        set: set.to_string(),
        status: SetStatus::Complete,
        expected: expected.clone(),
        members_ok: Vec::new(),
        members_failed: Vec::new(),
        members_incomplete: Vec::new(),
        members_missing: Vec::new(),
    };
    for m in &expected {
        let states = index.markers.get(m).map(Vec::as_slice).unwrap_or(&[]);
        let has = |s: &str| states.iter().any(|x| x == s);
        if has(DONE) {
            v.members_ok.push(m.clone());
        } else if has(FAILED) {
            v.members_failed.push(m.clone());
        } else if has(STARTED) {
            v.members_incomplete.push(m.clone());
        } else {
            v.members_missing.push(m.clone());
        }
    }
    if v.members_ok.len() < expected.len() {
        let open = set_time(set).is_some_and(|t| {
            now.duration_since(t) < jiff::SignedDuration::try_from(grace).unwrap_or_default()
        });
        v.status = if open {
            SetStatus::InProgress
        } else {
            SetStatus::Partial
        };
    }
    v
}

/// What retention needs to know of one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// The set's id.
    pub set: String,
    /// The set's time (its id's).
    pub time: Timestamp,
    /// How it stands now.
    pub status: SetStatus,
    /// Its members' complete backups: (backup id, the backup it builds on).
    pub backups: Vec<(String, Option<String>)>,
}

/// The set each member backup of `sets` belongs to, by backup id.
fn holders(sets: &[SetInfo]) -> BTreeMap<&str, &str> {
    sets.iter()
        .flat_map(|s| {
            s.backups
                .iter()
                .map(move |(id, _)| (id.as_str(), s.set.as_str()))
        })
        .collect()
}

/// The fate of one set, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDecision {
    /// The set's id.
    pub set: String,
    /// Keep or delete (every member's backup and the set's markers).
    pub action: Action,
    /// Why, one reason per rule that applied.
    pub reasons: Vec<String>,
}

/// Retention by sets, newest first. The keep rules count complete sets
/// (as [`retention::apply`] counts backups), so the newest complete set is
/// always kept, whatever newer partial sets exist. A set in progress is
/// never deleted. A partial set is deleted only when a newer complete set
/// exists (its grace window has passed, or it would be in progress). A
/// kept set keeps every set that holds a backup one of its members'
/// incrementals builds on, transitively.
pub fn decide_sets(sets: &[SetInfo], policy: &Policy, now: Timestamp) -> Vec<SetDecision> {
    let complete: Vec<BackupInfo> = sets
        .iter()
        .filter(|s| s.status == SetStatus::Complete)
        .map(|s| BackupInfo {
            id: s.set.clone(),
            kind: BackupKind::Full,
            parent: None,
            created_at: s.time,
            degenerate: false,
        })
        .collect();
    let newest_complete = complete.iter().map(|b| b.created_at).max();
    // The rules speak of backups; here each one is a set.
    let mut decided: BTreeMap<String, (Action, Vec<String>)> =
        retention::apply(&complete, &[], policy, now)
            .into_iter()
            .map(|d| {
                let reasons = d
                    .reasons
                    .iter()
                    .map(|r| r.replace("backup", "set"))
                    .collect();
                (d.id, (d.action, reasons))
            })
            .collect();
    for s in sets.iter().filter(|s| s.status != SetStatus::Complete) {
        let decision = match s.status {
            SetStatus::InProgress => (
                Action::Keep,
                "in progress: its grace window is open".to_string(),
            ),
            _ if newest_complete.is_some_and(|t| t > s.time) => (
                Action::Delete,
                "partial, and a newer complete set exists".to_string(),
            ),
            _ => (
                Action::Keep,
                "partial, but no newer set is complete".to_string(),
            ),
        };
        decided.insert(s.set.clone(), (decision.0, vec![decision.1]));
    }
    // Chains: a kept set keeps the sets its members' incrementals build on.
    let set_of_backup = holders(sets);
    // Newest first, whatever order they came in, so the reasons are too.
    let mut ordered: Vec<&SetInfo> = sets.iter().collect();
    ordered.sort_by(|a, b| b.set.cmp(&a.set));
    let mut changed = true;
    while changed {
        changed = false;
        for s in &ordered {
            if decided.get(&s.set).is_none_or(|d| d.0 != Action::Keep) {
                continue;
            }
            for (id, parent) in &s.backups {
                let Some(holder) = parent.as_deref().and_then(|p| set_of_backup.get(p)) else {
                    continue;
                };
                if *holder == s.set {
                    continue;
                }
                if let Some(d) = decided.get_mut(*holder) {
                    let why = format!("{id} in set {} builds on it", s.set);
                    if d.0 == Action::Delete {
                        d.0 = Action::Keep;
                        d.1.clear();
                        changed = true;
                    }
                    if !d.1.contains(&why) {
                        d.1.push(why);
                    }
                }
            }
        }
    }
    let mut out: Vec<SetDecision> = sets
        .iter()
        .filter_map(|s| {
            let (action, reasons) = decided.remove(&s.set)?;
            Some(SetDecision {
                set: s.set.clone(),
                action,
                reasons,
            })
        })
        .collect();
    out.sort_by(|a, b| b.set.cmp(&a.set));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().expect("a test time")
    }

    fn index(markers: &[(&str, &[&str])]) -> SetIndex {
        let mut i = SetIndex::default();
        for (member, states) in markers {
            for s in *states {
                i.note(&format!("{member}.{s}"));
            }
        }
        i
    }

    #[test]
    fn sets_are_judged_from_their_markers() {
        let members: Vec<String> = ["sn1", "sn2", "sn3"].map(String::from).to_vec();
        let set = "20261201T020000Z";
        let hour = Duration::from_secs(3600);
        let late = t("2026-12-01T05:00:00Z");
        let early = t("2026-12-01T02:30:00Z");
        type Row<'a> = (
            &'a [(&'a str, &'a [&'a str])],
            Timestamp,
            SetStatus,
            &'a [&'a str],
        );
        let rows: &[Row] = &[
            (
                &[
                    ("sn1", &["started", "done"]),
                    ("sn2", &["started", "done"]),
                    ("sn3", &["done"]),
                ],
                late,
                SetStatus::Complete,
                &[],
            ),
            (
                &[("sn1", &["started", "done"]), ("sn2", &["started"])],
                late,
                SetStatus::Partial,
                &["incomplete sn2", "missing sn3"],
            ),
            (
                &[
                    ("sn1", &["done"]),
                    ("sn2", &["failed"]),
                    ("sn3", &["failed", "done"]),
                ],
                late,
                SetStatus::Partial,
                &["failed sn2"],
            ),
            (
                &[("sn1", &["started"])],
                early,
                SetStatus::InProgress,
                &["missing sn2, sn3"],
            ),
            (
                &[("sn9", &["done"])],
                late,
                SetStatus::Partial,
                &["missing sn1, sn2, sn3"],
            ),
        ];
        for (markers, now, status, said) in rows {
            let v = verdict(set, &index(markers), &members, hour, *now);
            assert_eq!(v.status, *status, "{markers:?}");
            for s in *said {
                assert!(v.describe().contains(s), "{}: {s}", v.describe());
            }
        }
    }

    #[test]
    fn the_recorded_members_outrank_the_configured_ones() {
        let mut i = index(&[("a", &["done"])]);
        i.expected = Some(vec!["a".into()]);
        let v = verdict(
            "20261201T020000Z",
            &i,
            &["a".into(), "b".into()],
            Duration::ZERO,
            t("2026-12-02T00:00:00Z"),
        );
        assert_eq!(v.status, SetStatus::Complete);
    }

    #[test]
    fn members_agree_on_a_set_without_talking() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            set_for(None, t("2026-12-01T02:59:59Z"), hour),
            set_for(None, t("2026-12-01T02:00:01Z"), hour)
        );
        assert_eq!(
            set_for(None, t("2026-12-01T02:59:59Z"), hour),
            "20261201T020000Z"
        );
        assert_eq!(
            set_for(
                Some(t("2026-12-01T02:15:00Z")),
                t("2026-12-01T04:00:00Z"),
                hour
            ),
            "20261201T021500Z"
        );
        assert!(valid_set("20261201T021500Z"));
        for bad in ["2026", "20261201T021500Z-full", "2026120XT021500Z", ""] {
            assert!(!valid_set(bad), "{bad}");
        }
        assert_eq!(
            set_of_id("20261201T021500Z-full-sn1"),
            Some("20261201T021500Z")
        );
        let names = [
            "20261201T020000Z/sn1.done",
            "20261201T020000Z/members.json",
            "junk/x.done",
        ];
        let idx = index_of(names.map(String::from));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx["20261201T020000Z"].markers["sn1"], vec!["done"]);
    }

    /// A small deterministic generator for the property test.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    #[test]
    fn set_retention_invariants_hold_over_random_histories() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let members = ["a", "b", "c"];
        for case in 0..2000 {
            let n = rng.below(12) as usize;
            let mut sets: Vec<SetInfo> = Vec::new();
            let mut last: BTreeMap<&str, String> = BTreeMap::new();
            let start = t("2026-01-01T00:00:00Z");
            for i in 0..n {
                let time = start + jiff::SignedDuration::from_hours(24 * i as i64);
                let set = set_id(time);
                let status = match rng.below(5) {
                    0 => SetStatus::Partial,
                    1 if i + 2 >= n => SetStatus::InProgress,
                    _ => SetStatus::Complete,
                };
                let mut backups = Vec::new();
                for m in members {
                    if status != SetStatus::Complete && rng.below(2) == 0 {
                        continue;
                    }
                    let full = rng.below(3) == 0 || !last.contains_key(m);
                    let kind = if full { "full" } else { "incr" };
                    let id = member_backup_id(&set, kind, m);
                    let parent = if full { None } else { last.get(m).cloned() };
                    last.insert(m, id.clone());
                    backups.push((id, parent));
                }
                sets.push(SetInfo {
                    set,
                    time,
                    status,
                    backups,
                });
            }
            let policy = Policy {
                keep_last: Some(rng.below(3) as u32 + 1),
                keep_daily: (rng.below(2) == 0).then(|| rng.below(4) as u32 + 1),
                ..Policy::default()
            };
            let now = start + jiff::SignedDuration::from_hours(24 * n as i64);
            let d = decide_sets(&sets, &policy, now);
            let act: BTreeMap<&str, Action> =
                d.iter().map(|x| (x.set.as_str(), x.action)).collect();
            assert_eq!(act.len(), sets.len(), "case {case}: one decision per set");
            if let Some(newest) = sets
                .iter()
                .filter(|s| s.status == SetStatus::Complete)
                .map(|s| &s.set)
                .max()
            {
                assert_eq!(
                    act[newest.as_str()],
                    Action::Keep,
                    "case {case}: the newest complete set"
                );
            }
            let holder = holders(&sets);
            for s in &sets {
                match (s.status, act[s.set.as_str()]) {
                    (SetStatus::InProgress, a) => {
                        assert_eq!(a, Action::Keep, "case {case}: {} in progress", s.set)
                    }
                    (SetStatus::Partial, Action::Delete) => assert!(
                        sets.iter()
                            .any(|o| o.status == SetStatus::Complete && o.time > s.time),
                        "case {case}: partial {} deleted without a newer complete set",
                        s.set
                    ),
                    _ => {}
                }
                if act[s.set.as_str()] == Action::Keep {
                    for (id, parent) in &s.backups {
                        if let Some(h) = parent.as_deref().and_then(|p| holder.get(p)) {
                            assert_eq!(act[*h], Action::Keep, "case {case}: {id} needs set {h}");
                        }
                    }
                }
            }
            let mut shuffled = sets.clone();
            shuffled.reverse();
            assert_eq!(
                decide_sets(&shuffled, &policy, now),
                d,
                "case {case}: input order"
            );
        }
    }
}
