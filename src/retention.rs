//! Retention: which backups to keep, as a pure function of (backups, policy,
//! now). Deleting is a separate, dumb step (`prune`).
//!
//! Invariants, whatever the policy (checked by a property test below):
//! - the newest complete backup is always kept, and so is the newest one
//!   that passed the source check (not marked degenerate: an empty or
//!   shrunken source the job let through);
//! - a kept incremental keeps its whole chain (its parent, its parent's
//!   parent, ... up to the full), so nothing kept becomes unrestorable;
//! - a backup younger than `min_age` is kept;
//! - ordering comes from each manifest's `created_at`, never from names, and
//!   the result does not depend on the order backups are listed in;
//! - a policy without any `keep_*` rule keeps everything;
//! - an incomplete backup (no manifest) is deleted only once it is older than
//!   the grace period (its age read from its id, which starts with its UTC
//!   start time).
//!
//! The `keep_*` rules follow restic's: `keep_daily = 7` keeps the newest
//! backup of each of the 7 most recent days that have backups (UTC), and so
//! on for hours, ISO weeks, months and years; `keep_last = n` keeps the n
//! newest; `keep_within = "30d"` keeps every backup made within 30 days of the
//! newest one (not of now, so a host whose backups stopped keeps its history).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::format::manifest::BackupKind;

/// What retention needs to know of a complete backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The backup's id.
    pub id: String,
    /// Full or incremental.
    pub kind: BackupKind,
    /// The id of the backup an incremental builds on; None for a full backup.
    pub parent: Option<String>,
    /// When it was made (the manifest's `created_at`), which orders backups.
    pub created_at: Timestamp,
    /// The source check found the source degenerate (see the manifest's `degenerate`).
    pub degenerate: bool,
}

/// A retention policy: which backups a prune keeps (a `retention` table,
/// resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the n newest backups.
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last n hours that have one (UTC).
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last n days that have one (UTC).
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last n ISO weeks that have one
    /// (UTC).
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last n months that have one (UTC).
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last n years that have one (UTC).
    pub keep_yearly: Option<u32>,
    /// Keep every backup made within this long of the newest one (not of now).
    pub keep_within: Option<Duration>,
    /// Keep every backup younger than this, measured from now.
    pub min_age: Option<Duration>,
    /// How long an incomplete backup may sit before it is deleted.
    pub incomplete_grace: Duration,
    /// Whose backups a prune applies the policy to.
    pub origins: Origins,
}

/// Whose backups a job's prune considers (`retention = { origins = ... }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origins {
    /// Only those this host made (and older ones that record no host):
    /// another host's backups under the job's prefix are reported, never deleted.
    #[default]
    Own,
    /// Every host's, each host's backups judged on their own (a cleanup job
    /// with its own credentials).
    All,
}

impl Policy {
    fn has_keep_rule(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }
}

/// What retention decides for one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The backup stays.
    Keep,
    /// Prune deletes the backup.
    Delete,
}

/// One backup's fate and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The backup's id.
    pub id: String,
    /// Keep or delete.
    pub action: Action,
    /// False for an incomplete backup (one without a manifest).
    pub complete: bool,
    /// Why, for people to read; never empty.
    pub reasons: Vec<String>,
}

/// The UTC time a backup id starts with (`20261122T021500Z-full`), if any.
pub fn time_of_id(id: &str) -> Option<Timestamp> {
    let stamp = id.get(..16)?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// How long after `earlier` `later` is (negative when it is before).
pub fn elapsed(later: Timestamp, earlier: Timestamp) -> SignedDuration {
    later.duration_since(earlier)
}

/// `d` as a signed duration (a policy's durations always fit).
fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 && s > 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Decides, for every complete backup and every incomplete one, whether to
/// keep or delete it, with the reasons. Newest first.
pub fn apply(
    backups: &[BackupInfo],
    incomplete: &[String],
    policy: &Policy,
    now: Timestamp,
) -> Vec<Decision> {
    let mut sorted: Vec<&BackupInfo> = backups.iter().collect();
    // Newest first; ties broken by id so the result never depends on input order.
    sorted.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    let mut reasons = Reasons(sorted.iter().map(|b| (b.id.as_str(), Vec::new())).collect());
    keep_by_rules(&sorted, policy, now, &mut reasons);
    keep_by_buckets(&sorted, policy, &mut reasons);
    let by_id: HashMap<&str, &BackupInfo> = sorted.iter().map(|b| (b.id.as_str(), *b)).collect();
    keep_ancestors(&sorted, &by_id, &mut reasons);
    let mut out: Vec<Decision> = sorted
        .iter()
        .map(|b| {
            let mut r = reasons.0.remove(b.id.as_str()).unwrap_or_default();
            let action = if r.is_empty() {
                r.push("matched no keep rule".into());
                if b.kind == BackupKind::Incr
                    && b.parent.as_deref().is_some_and(|p| !by_id.contains_key(p))
                {
                    r.push("its parent is already gone".into());
                }
                Action::Delete
            } else {
                Action::Keep
            };
            Decision {
                id: b.id.clone(),
                action,
                complete: true,
                reasons: r,
            }
        })
        .collect();
    out.extend(decide_incomplete(incomplete, policy, now));
    out
}

/// Why each complete backup is kept, by id (no reason: it is deleted).
struct Reasons<'a>(BTreeMap<&'a str, Vec<String>>);

impl Reasons<'_> {
    fn keep(&mut self, id: &str, why: String) {
        if let Some(r) = self.0.get_mut(id)
            && !r.contains(&why)
        {
            r.push(why);
        }
    }

    fn kept(&self, id: &str) -> bool {
        self.0.get(id).is_some_and(|r| !r.is_empty())
    }
}

/// The rules that keep backups by position and age: the newest, the
/// newest sane one, `keep_last`, `keep_within`, `min_age`, and everything
/// when no keep rule is set. `sorted` is newest first.
fn keep_by_rules(sorted: &[&BackupInfo], policy: &Policy, now: Timestamp, reasons: &mut Reasons) {
    if let Some(newest) = sorted.first() {
        reasons.keep(&newest.id, "newest complete backup".into());
    }
    if let Some(sane) = sorted.iter().find(|b| !b.degenerate)
        && sorted.first().is_some_and(|n| n.degenerate)
    {
        reasons.keep(
            &sane.id,
            "newest backup that passed the source check (newer ones were of an empty or shrunken source)".into(),
        );
    }
    if !policy.has_keep_rule() {
        for b in sorted {
            reasons.keep(&b.id, "no keep_* rule is set, so everything is kept".into());
        }
    }
    if let Some(n) = policy.keep_last {
        for b in sorted.iter().take(n as usize) {
            reasons.keep(&b.id, format!("one of the last {n}"));
        }
    }
    if let (Some(within), Some(newest)) = (policy.keep_within, sorted.first()) {
        for b in sorted {
            if elapsed(newest.created_at, b.created_at) <= signed(within) {
                reasons.keep(
                    &b.id,
                    format!("within {} of the newest backup", human_duration(within)),
                );
            }
        }
    }
    if let Some(min_age) = policy.min_age {
        for b in sorted {
            if elapsed(now, b.created_at) < signed(min_age) {
                reasons.keep(
                    &b.id,
                    format!("younger than min_age {}", human_duration(min_age)),
                );
            }
        }
    }
}

/// The `keep_hourly` .. `keep_yearly` rules: the newest backup of each of
/// the last N hours, days, ISO weeks, months or years that have one (UTC).
fn keep_by_buckets(sorted: &[&BackupInfo], policy: &Policy, reasons: &mut Reasons) {
    type BucketFn = fn(Timestamp) -> String;
    let buckets: [(Option<u32>, &str, BucketFn); 5] = [
        (policy.keep_hourly, "hourly", |t| {
            t.strftime("%Y-%m-%d %Hh").to_string()
        }),
        (policy.keep_daily, "daily", |t| {
            t.strftime("%Y-%m-%d").to_string()
        }),
        (policy.keep_weekly, "weekly", |t| {
            let w = t.to_zoned(TimeZone::UTC).date().iso_week_date();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        (policy.keep_monthly, "monthly", |t| {
            t.strftime("%Y-%m").to_string()
        }),
        (policy.keep_yearly, "yearly", |t| {
            t.strftime("%Y").to_string()
        }),
    ];
    for (count, name, bucket) in buckets {
        let Some(n) = count else { continue };
        let mut seen = HashSet::new();
        for b in sorted {
            if seen.len() >= n as usize {
                break;
            }
            let key = bucket(b.created_at);
            if seen.insert(key.clone()) {
                reasons.keep(&b.id, format!("{name} backup for {key}"));
            }
        }
    }
}

/// Chains: a kept backup keeps every ancestor it needs, transitively.
fn keep_ancestors(
    sorted: &[&BackupInfo],
    by_id: &HashMap<&str, &BackupInfo>,
    reasons: &mut Reasons,
) {
    let kept: Vec<&str> = sorted
        .iter()
        .filter(|b| reasons.kept(&b.id))
        .map(|b| b.id.as_str())
        .collect();
    for id in kept {
        let mut child = id;
        let mut guard = 0;
        while let Some(parent) = by_id.get(child).and_then(|b| b.parent.as_deref()) {
            guard += 1;
            if guard > by_id.len() || !by_id.contains_key(parent) {
                break;
            }
            reasons.keep(parent, format!("needed by {child}, which is kept"));
            child = parent;
        }
    }
}

/// Incomplete backups (no manifest), newest first: deleted once older than
/// the grace period, by the time their id starts with; kept otherwise.
fn decide_incomplete(incomplete: &[String], policy: &Policy, now: Timestamp) -> Vec<Decision> {
    let mut inc: Vec<&String> = incomplete.iter().collect();
    inc.sort_by(|a, b| b.cmp(a));
    inc.into_iter()
        .map(|id| {
            let (action, why) = match time_of_id(id) {
                None => (
                    Action::Keep,
                    "incomplete, and its age cannot be read from its name".to_string(),
                ),
                Some(t) if elapsed(now, t) > signed(policy.incomplete_grace) => (
                    Action::Delete,
                    format!(
                        "incomplete (no manifest) for more than {}",
                        human_duration(policy.incomplete_grace)
                    ),
                ),
                Some(_) => (
                    Action::Keep,
                    format!(
                        "incomplete, but within the {} grace period (an upload may still be running)",
                        human_duration(policy.incomplete_grace)
                    ),
                ),
            };
            Decision {
                id: id.clone(),
                action,
                complete: false,
                reasons: vec![why],
            }
        })
        .collect()
}

/// Keeps every backup that a kept backup of any origin builds on.
///
/// [`apply`] judges one origin's backups at a time; a chain may cross
/// origins (another host's incremental on a backup made before backups
/// recorded their host, which counts as every host's). `all` is every
/// complete backup on the destination; a backup without a decision (another
/// host's, left alone) counts as kept.
pub fn keep_needed_across_origins(decisions: &mut [Decision], all: &[BackupInfo]) {
    let by_id: HashMap<&str, &BackupInfo> = all.iter().map(|b| (b.id.as_str(), b)).collect();
    let deleted: HashSet<String> = decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .map(|d| d.id.clone())
        .collect();
    let mut needed: Vec<(String, String)> = Vec::new();
    for b in all.iter().filter(|b| !deleted.contains(&b.id)) {
        let mut child = b.id.as_str();
        let mut steps = 0;
        while let Some(parent) = by_id.get(child).and_then(|c| c.parent.as_deref()) {
            steps += 1;
            if steps > by_id.len() {
                break;
            }
            if deleted.contains(parent) {
                needed.push((parent.to_string(), child.to_string()));
            }
            child = parent;
        }
    }
    for (parent, child) in needed {
        if let Some(d) = decisions.iter_mut().find(|d| d.id == parent) {
            if d.action == Action::Delete {
                d.action = Action::Keep;
                d.reasons.clear();
            }
            let why = format!("needed by {child}, which is kept");
            if !d.reasons.contains(&why) {
                d.reasons.push(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC time written `2026-11-01 02:15` or `2026-11-01 02:15:00`.
    fn utc(text: &str) -> Timestamp {
        let text = if text.len() == 16 {
            format!("{text}:00")
        } else {
            text.to_string()
        };
        format!("{}Z", text.replace(' ', "T"))
            .parse()
            .expect("a valid test time")
    }

    #[test]
    fn a_chain_that_crosses_origins_keeps_its_parents() {
        // Host B's kept incremental i2 builds on i1 (B's) and f0, made before
        // backups recorded their host, which this host's policy judged alone.
        let t = utc("2026-11-01 00:00");
        let all = vec![
            full("f0", t),
            incr("i1", "f0", t + DAY),
            incr("i2", "i1", t + DAY * 2),
            full("f9", t + DAY * 3),
        ];
        let decision = |id: &str, action: Action| Decision {
            id: id.into(),
            action,
            complete: true,
            reasons: vec!["matched no keep rule".into()],
        };
        // Own decisions cover f0 and f9; i1 and i2 are another host's (no decision).
        let mut d = vec![decision("f9", Action::Keep), decision("f0", Action::Delete)];
        keep_needed_across_origins(&mut d, &all);
        assert_eq!(d[1].action, Action::Keep, "{d:?}");
        assert_eq!(
            d[1].reasons,
            vec!["needed by i1, which is kept".to_string()]
        );
        // Once the other host deletes its chain, f0 may go.
        let mut d = vec![decision("f9", Action::Keep), decision("f0", Action::Delete)];
        let mut gone = all.clone();
        gone.retain(|b| b.id == "f0" || b.id == "f9");
        keep_needed_across_origins(&mut d, &gone);
        assert_eq!(d[1].action, Action::Delete);
        // A chain deleted as a whole stays deleted.
        let mut d = vec![
            decision("f0", Action::Delete),
            decision("i1", Action::Delete),
            decision("i2", Action::Delete),
            decision("f9", Action::Keep),
        ];
        keep_needed_across_origins(&mut d, &all);
        assert_eq!(kept(&d), vec!["f9"]);
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn full(id: &str, t: Timestamp) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            kind: BackupKind::Full,
            parent: None,
            created_at: t,
            degenerate: false,
        }
    }

    fn incr(id: &str, parent: &str, t: Timestamp) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            kind: BackupKind::Incr,
            parent: Some(parent.into()),
            created_at: t,
            degenerate: false,
        }
    }

    #[test]
    fn the_newest_backup_that_passed_the_source_check_is_kept() {
        let mut history = daily_history(5);
        for b in history.iter_mut().skip(3) {
            b.degenerate = true;
        }
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let d = apply(&history, &[], &policy, utc("2026-11-10 00:00"));
        assert_eq!(kept(&d), vec!["d02", "d04"], "{d:?}");
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        let mut v: Vec<&str> = decisions
            .iter()
            .filter(|d| d.action == Action::Keep)
            .map(|d| d.id.as_str())
            .collect();
        v.sort();
        v
    }

    fn daily_history(days: i64) -> Vec<BackupInfo> {
        (0..days)
            .map(|d| {
                let t = utc("2026-11-01 02:15") + SignedDuration::from_hours(24 * d);
                full(&format!("d{d:02}"), t)
            })
            .collect()
    }

    /// The example in docs/configuration.md: ten weeks of a full each Sunday and an
    /// incremental (on the previous backup) every other day.
    #[test]
    fn the_readme_example_keeps_four_fulls_and_last_weeks_chain() {
        let mut history = Vec::new();
        let mut previous = String::new();
        for d in 0..70 {
            // 2026-09-14 is a Monday; the last day, 2026-11-22, a Sunday.
            let t = utc("2026-09-14 02:00") + SignedDuration::from_hours(24 * d);
            let date = t.to_zoned(TimeZone::UTC).date();
            let id = format!("{date}");
            if date.weekday() == jiff::civil::Weekday::Sunday || previous.is_empty() {
                history.push(full(&id, t));
            } else {
                history.push(incr(&id, &previous, t));
            }
            previous = id;
        }
        let policy = Policy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            ..Policy::default()
        };
        let d = apply(&history, &[], &policy, utc("2026-11-22 12:00"));
        assert_eq!(
            kept(&d),
            vec![
                "2026-11-01",
                "2026-11-08",
                "2026-11-15",
                "2026-11-16",
                "2026-11-17",
                "2026-11-18",
                "2026-11-19",
                "2026-11-20",
                "2026-11-21",
                "2026-11-22",
            ]
        );
    }

    /// (name, policy, ids kept) over 30 daily fulls, d00 (Nov 1) .. d29 (Nov 30).
    #[test]
    fn keep_rules_over_a_month_of_dailies() {
        let now = utc("2026-12-01 00:00");
        let cases: Vec<(&str, Policy, Vec<&str>)> = vec![
            (
                "no rule keeps everything",
                Policy::default(),
                (0..30).map(|_| "").collect(),
            ),
            (
                "keep_last 3",
                Policy {
                    keep_last: Some(3),
                    ..Default::default()
                },
                vec!["d27", "d28", "d29"],
            ),
            (
                "keep_daily 2",
                Policy {
                    keep_daily: Some(2),
                    ..Default::default()
                },
                vec!["d28", "d29"],
            ),
            (
                // Nov 30 2026 is a Monday: alone in its ISO week; Sunday Nov 29 ends the one before.
                "keep_weekly 2 keeps the newest of each ISO week",
                Policy {
                    keep_weekly: Some(2),
                    ..Default::default()
                },
                vec!["d28", "d29"],
            ),
            (
                "keep_monthly 5",
                Policy {
                    keep_monthly: Some(5),
                    ..Default::default()
                },
                vec!["d29"],
            ),
            (
                "keep_within 2d of the newest",
                Policy {
                    keep_within: Some(2 * DAY),
                    ..Default::default()
                },
                vec!["d27", "d28", "d29"],
            ),
            (
                "min_age protects the young",
                Policy {
                    keep_last: Some(1),
                    min_age: Some(3 * DAY),
                    ..Default::default()
                },
                vec!["d27", "d28", "d29"],
            ),
            (
                "keep_last 0 still keeps the newest",
                Policy {
                    keep_last: Some(0),
                    ..Default::default()
                },
                vec!["d29"],
            ),
        ];
        let history = daily_history(30);
        for (name, policy, want) in cases {
            let d = apply(&history, &[], &policy, now);
            let got = kept(&d);
            if want.iter().all(|w| w.is_empty()) {
                assert_eq!(got.len(), 30, "{name}");
            } else {
                assert_eq!(got, want, "{name}");
            }
        }
    }

    #[test]
    fn ordering_uses_created_at_not_names() {
        // Names sort the other way round from time: WAL-G's bug deleted the newest.
        let a = full("zzz-oldest", utc("2026-01-01 00:00"));
        let b = full("aaa-newest", utc("2026-06-01 00:00"));
        let d = apply(
            &[a, b],
            &[],
            &Policy {
                keep_last: Some(1),
                ..Default::default()
            },
            utc("2026-07-01 00:00"),
        );
        assert_eq!(kept(&d), vec!["aaa-newest"]);
    }

    #[test]
    fn a_kept_incremental_keeps_its_whole_chain() {
        let t = utc("2026-11-01 00:00");
        let h = vec![
            full("f1", t),
            incr("i1", "f1", t + SignedDuration::from_hours(6)),
            incr("i2", "i1", t + SignedDuration::from_hours(12)),
            full("f0", t - SignedDuration::from_hours(24 * 7)),
        ];
        let d = apply(
            &h,
            &[],
            &Policy {
                keep_last: Some(1),
                ..Default::default()
            },
            t + SignedDuration::from_hours(24),
        );
        assert_eq!(kept(&d), vec!["f1", "i1", "i2"]);
        let f1 = d.iter().find(|x| x.id == "f1").expect("f1");
        assert!(
            f1.reasons.iter().any(|r| r.contains("needed by i1")),
            "{:?}",
            f1.reasons
        );
        let f0 = d.iter().find(|x| x.id == "f0").expect("f0");
        assert_eq!(f0.action, Action::Delete);
        assert_eq!(f0.reasons, vec!["matched no keep rule".to_string()]);
    }

    #[test]
    fn incomplete_backups_wait_for_the_grace_period() {
        let now = utc("2026-11-22 12:00");
        let policy = Policy {
            keep_last: Some(1),
            incomplete_grace: DAY,
            ..Default::default()
        };
        let inc = vec![
            "20261122T021500Z-full".to_string(),
            "20261120T021500Z-full".to_string(),
            "garbage".to_string(),
        ];
        let d = apply(&[], &inc, &policy, now);
        let act: HashMap<&str, Action> = d.iter().map(|x| (x.id.as_str(), x.action)).collect();
        assert_eq!(act["20261122T021500Z-full"], Action::Keep);
        assert_eq!(act["20261120T021500Z-full"], Action::Delete);
        assert_eq!(act["garbage"], Action::Keep);
        assert!(d.iter().all(|x| !x.complete));
    }

    #[test]
    fn ids_carry_their_time() {
        assert_eq!(
            time_of_id("20261122T021500Z-incr"),
            Some(utc("2026-11-22 02:15:00"))
        );
        assert_eq!(time_of_id("2026"), None);
    }

    /// A small deterministic generator, so the property test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn maybe(&mut self, n: u64) -> Option<u32> {
            if self.below(3) == 0 {
                None
            } else {
                Some(self.below(n) as u32)
            }
        }
    }

    #[test]
    fn invariants_hold_over_random_histories() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..2000 {
            let start = utc("2025-01-01 00:00");
            let n = rng.below(40) as usize;
            let mut history: Vec<BackupInfo> = Vec::new();
            let mut t = start;
            for i in 0..n {
                t += SignedDuration::from_mins(rng.below(3 * 24 * 60) as i64);
                let id = format!("b{i:03}");
                let fresh_full = rng.below(3) == 0;
                match history.last().map(|b| b.id.clone()) {
                    Some(parent) if !fresh_full => history.push(incr(&id, &parent, t)),
                    _ => history.push(full(&id, t)),
                }
                if let Some(b) = history.last_mut() {
                    b.degenerate = rng.below(5) == 0;
                }
            }
            let policy = Policy {
                keep_last: rng.maybe(5),
                keep_hourly: rng.maybe(5),
                keep_daily: rng.maybe(8),
                keep_weekly: rng.maybe(5),
                keep_monthly: rng.maybe(4),
                keep_yearly: rng.maybe(2),
                keep_within: rng.maybe(10).map(|d| Duration::from_secs(d as u64 * 3600)),
                min_age: rng.maybe(10).map(|d| Duration::from_secs(d as u64 * 3600)),
                incomplete_grace: DAY,
                origins: Origins::Own,
            };
            let now = t + SignedDuration::from_hours(rng.below(100) as i64);
            let d = apply(&history, &[], &policy, now);
            assert_eq!(
                d.len(),
                history.len(),
                "case {case}: one decision per backup"
            );
            let act: HashMap<&str, Action> = d.iter().map(|x| (x.id.as_str(), x.action)).collect();
            if let Some(newest) = history.iter().max_by_key(|b| (b.created_at, b.id.clone())) {
                assert_eq!(
                    act[newest.id.as_str()],
                    Action::Keep,
                    "case {case}: the newest is kept"
                );
            }
            if let Some(sane) = history
                .iter()
                .filter(|b| !b.degenerate)
                .max_by_key(|b| (b.created_at, b.id.clone()))
            {
                assert_eq!(
                    act[sane.id.as_str()],
                    Action::Keep,
                    "case {case}: the newest that passed the source check is kept"
                );
            }
            for b in &history {
                if act[b.id.as_str()] == Action::Keep
                    && let Some(p) = &b.parent
                {
                    assert_eq!(
                        act[p.as_str()],
                        Action::Keep,
                        "case {case}: {} is kept, so its parent {p} is",
                        b.id
                    );
                }
                if let Some(min) = policy.min_age
                    && elapsed(now, b.created_at) < signed(min)
                {
                    assert_eq!(
                        act[b.id.as_str()],
                        Action::Keep,
                        "case {case}: {} is younger than min_age",
                        b.id
                    );
                }
            }
            assert!(
                d.iter().all(|x| !x.reasons.is_empty()),
                "case {case}: every decision has a reason"
            );
            // The order of the listing does not matter.
            let mut shuffled = history.clone();
            shuffled.reverse();
            let d2 = apply(&shuffled, &[], &policy, now);
            assert_eq!(d, d2, "case {case}: input order changed the decisions");
        }
    }
}
