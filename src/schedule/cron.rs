//! Cron schedules and the daemon's decisions, as pure functions of time.
//!
//! [`Cron`] reads the standard 5-field form (`minute hour day-of-month month
//! day-of-week`) and a 6-field form with seconds first, plus `@hourly`,
//! `@daily`, `@weekly`, `@monthly` and `@yearly`. Fields take `*`, numbers,
//! ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, and the names
//! `JAN`..`DEC` and `SUN`..`SAT` (7 is Sunday too). Day-of-month and
//! day-of-week follow Vixie cron: when both are restricted, a day matching
//! either runs.
//!
//! Times are wall-clock times in the schedule's time zone (the system's
//! unless `timezone` is set), so `0 2 * * *` runs at 2 a.m. local time all
//! year. Across daylight-saving changes: a time the clock skips runs when the
//! clock resumes (02:30 on a spring-forward night runs at 03:30), and a time
//! the clock passes twice runs once, the first time.
//!
//! [`plan`] decides, from the slots already handled and the time now, what
//! runs now: a slot due within [`GRACE`] always runs; one missed for longer
//! (the daemon was down, or busy with the previous run) runs once if
//! `catch_up` is set, however many slots were missed, and is skipped
//! otherwise. A full due at the same time as an incremental replaces it.

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// How late a slot may be handled and still count as on time.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// How far ahead a schedule is searched for its next time: every valid
/// expression (even 29 February on a given weekday) fires well within it.
const SEARCH_YEARS: i16 = 30;

/// A set of values 0..=63 of one cron field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bits(u64);

impl Bits {
    fn has(self, v: i8) -> bool {
        (0..64).contains(&v) && self.0 & (1 << v) != 0
    }
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    seconds: Bits,
    minutes: Bits,
    hours: Bits,
    days: Bits,
    months: Bits,
    weekdays: Bits,
    /// Day-of-month or day-of-week was written starting with `*` (Vixie: AND).
    day_star: bool,
    weekday_star: bool,
}

struct FieldSpec {
    name: &'static str,
    min: i8,
    max: i8,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// 7 is accepted for Sunday and folded onto 0.
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl FieldSpec {
    fn value(&self, text: &str) -> Result<i8, String> {
        let upper = text.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            // Month names count from 1, weekday names from 0 (SUN).
            return Ok(i as i8 + if self.min == 1 { 1 } else { 0 });
        }
        let v: i8 = text
            .parse()
            .map_err(|_| format!("{} field: {text:?} is not a number", self.name))?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} field: {v} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    fn parse(&self, field: &str) -> Result<Bits, String> {
        let mut bits = 0u64;
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: i8 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} field: step {s:?} must be a number above 0", self.name)
                    })?;
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{} field: range {range:?} runs backwards",
                        self.name
                    ));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(format!("{} field: empty item in {field:?}", self.name));
            } else {
                let a = self.value(range)?;
                // `5/15` means from 5 to the end, every 15 (as in Vixie cron).
                (a, if step > 1 { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v = v.saturating_add(step);
            }
        }
        Ok(Bits(bits))
    }
}

impl Cron {
    /// Parses a schedule: 5 fields, 6 with seconds first, or `@hourly` to
    /// `@yearly`; refuses one that never runs.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "unknown schedule {t:?}: use @hourly, @daily, @weekly, @monthly or @yearly, or a cron expression"
                ));
            }
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "a schedule has 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first; {text:?} has {n}"
                ));
            }
        };
        let mut weekdays = WEEKDAY.parse(rest[4])?;
        if weekdays.has(7) {
            weekdays = Bits((weekdays.0 | 1) & !(1 << 7));
        }
        let cron = Cron {
            text: text.trim().to_string(),
            seconds: SECOND.parse(sec)?,
            minutes: MINUTE.parse(rest[0])?,
            hours: HOUR.parse(rest[1])?,
            days: DAY.parse(rest[2])?,
            months: MONTH.parse(rest[3])?,
            weekdays,
            day_star: rest[2].starts_with('*') || rest[2].starts_with('?'),
            weekday_star: rest[4].starts_with('*') || rest[4].starts_with('?'),
        };
        // `0 0 30 2 *` parses but never comes: say so now, not by never running.
        let start = DateTime::constant(2000, 1, 1, 0, 0, 0, 0);
        if cron.next_civil(start).is_none() {
            return Err(format!("schedule {text:?} never runs (no such date)"));
        }
        Ok(cron)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days.has(d.day());
        let dow = self.weekdays.has(d.weekday().to_sunday_zero_offset());
        if self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock time at or after `from` that matches.
    fn next_civil(&self, from: DateTime) -> Option<DateTime> {
        let limit = from.year().saturating_add(SEARCH_YEARS);
        let mut t = from.with().subsec_nanosecond(0).build().ok()?;
        if t < from {
            t = t.checked_add(1.second()).ok()?;
        }
        while t.year() <= limit {
            let d = t.date();
            if !self.months.has(d.month()) {
                t = d
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(midnight());
            } else if !self.day_matches(d) {
                t = d.tomorrow().ok()?.to_datetime(midnight());
            } else if !self.hours.has(t.hour()) {
                t = d.at(t.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
            } else if !self.minutes.has(t.minute()) {
                t = d
                    .at(t.hour(), t.minute(), 0, 0)
                    .checked_add(1.minute())
                    .ok()?;
            } else if !self.seconds.has(t.second()) {
                t = t.checked_add(1.second()).ok()?;
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The first time strictly after `after` that this schedule names, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut from = tz.to_datetime(after).checked_add(1.second()).ok()?;
        from = from.with().subsec_nanosecond(0).build().ok()?;
        for _ in 0..10_000 {
            let civil = self.next_civil(from)?;
            let at = tz.to_ambiguous_timestamp(civil).compatible().ok()?;
            // In a repeated hour, the wall-clock time may map before `after`.
            if at > after {
                return Some(at);
            }
            from = civil.checked_add(1.second()).ok()?;
        }
        None
    }
}

fn midnight() -> jiff::civil::Time {
    jiff::civil::Time::midnight()
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cron::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the daemon runs on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A full backup.
    Full,
    /// An incremental backup (full when there is nothing to build on).
    Incremental,
    /// A prune of the job's destinations.
    Prune,
}

impl Task {
    /// The task as the configuration's `schedule` keys name it: `full`,
    /// `incremental`, `prune`.
    pub fn word(self) -> &'static str {
        match self {
            Task::Full => "full",
            Task::Incremental => "incremental",
            Task::Prune => "prune",
        }
    }
}

/// A job's schedules.
#[derive(Debug, Clone)]
pub struct JobSchedule {
    /// When full backups run; None: never on a schedule.
    pub full: Option<Cron>,
    /// When incremental backups run; None: never on a schedule.
    pub incremental: Option<Cron>,
    /// When the job's destinations are pruned; None: no scheduled prune
    /// (retention still runs after each successful backup).
    pub prune: Option<Cron>,
    /// Run a missed slot once when the daemon finds it (at start, or after a long run).
    pub catch_up: bool,
    /// The zone the times are read in: `timezone`, else the system's.
    pub timezone: TimeZone,
}

impl JobSchedule {
    /// The tasks that have a schedule, with it: full, incremental, then prune.
    pub fn tasks(&self) -> impl Iterator<Item = (Task, &Cron)> {
        [
            (Task::Full, self.full.as_ref()),
            (Task::Incremental, self.incremental.as_ref()),
            (Task::Prune, self.prune.as_ref()),
        ]
        .into_iter()
        .filter_map(|(t, c)| c.map(|c| (t, c)))
    }

    /// The longest wait between two scheduled backups (full or
    /// incremental) over the slots that follow `now` (a month's worth, at
    /// most 500), or `None` without a backup schedule.
    pub fn longest_backup_gap(&self, now: Timestamp) -> Option<std::time::Duration> {
        let crons: Vec<&Cron> = [self.full.as_ref(), self.incremental.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        if crons.is_empty() {
            return None;
        }
        let horizon = now
            .checked_add(jiff::SignedDuration::from_hours(24 * 31))
            .ok()?;
        let mut at = now;
        let mut longest = std::time::Duration::ZERO;
        for _ in 0..500 {
            let next = crons
                .iter()
                .filter_map(|c| c.next_after(at, &self.timezone))
                .min()?;
            let gap = next.duration_since(at).unsigned_abs();
            if at != now {
                longest = longest.max(gap);
            }
            at = next;
            if at > horizon {
                break;
            }
        }
        // One slot only within the horizon (yearly): the gap to it.
        if longest.is_zero() {
            longest = at.duration_since(now).unsigned_abs();
        }
        Some(longest)
    }

    /// The next time each task runs after `now`.
    pub fn next_runs(&self, now: Timestamp) -> Vec<(Task, Option<Timestamp>)> {
        self.tasks()
            .map(|(t, c)| (t, c.next_after(now, &self.timezone)))
            .collect()
    }
}

/// For each task, the time up to which every slot has been handled (run or
/// skipped). A task missing here has never been seen by a daemon.
pub type Handled = BTreeMap<Task, Timestamp>;

/// A slot that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The task due.
    pub task: Task,
    /// The first slot not yet handled (with catch-up, later missed ones fold into it).
    pub slot: Timestamp,
    /// Handled more than [`GRACE`] after its slot.
    pub late: bool,
}

/// What to do at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// To run now, in order: a backup first, then prune.
    pub run: Vec<Due>,
    /// Missed and skipped (catch-up off), or replaced by a full due at the same time.
    pub skipped: Vec<Due>,
    /// `handled` once the runs are done.
    pub handled: Handled,
}

/// Decides what runs at `now` (see the module documentation).
pub fn plan(s: &JobSchedule, handled: &Handled, now: Timestamp) -> Plan {
    let mut out = Plan {
        run: Vec::new(),
        skipped: Vec::new(),
        handled: handled.clone(),
    };
    for (task, cron) in s.tasks() {
        let Some(&since) = handled.get(&task) else {
            // First sight of this task: slots from before the daemon knew it are not "missed".
            out.handled.insert(task, now);
            continue;
        };
        let Some(slot) = cron.next_after(since, &s.timezone) else {
            continue;
        };
        if slot > now {
            continue;
        }
        let late = now.duration_since(slot).unsigned_abs() > GRACE;
        let due = Due { task, slot, late };
        if !late || s.catch_up {
            out.run.push(due);
        } else {
            out.skipped.push(due);
        }
        out.handled.insert(task, now);
    }
    if out.run.iter().any(|d| d.task == Task::Full)
        && let Some(i) = out.run.iter().position(|d| d.task == Task::Incremental)
    {
        out.skipped.push(out.run.remove(i));
    }
    out.run.sort_by_key(|d| d.task);
    out
}

/// When the next slot of any task comes, after what is already handled.
pub fn next_wake(s: &JobSchedule, handled: &Handled, now: Timestamp) -> Option<Timestamp> {
    s.tasks()
        .filter_map(|(task, cron)| {
            let since = handled.get(&task).copied().unwrap_or(now);
            cron.next_after(since, &s.timezone)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn next(expr: &str, after: &str) -> String {
        Cron::parse(expr)
            .expect("valid cron")
            .next_after(ts(after), &utc())
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into())
    }

    #[test]
    fn next_run_after_a_time() {
        let table = [
            // (expression, after, next)
            ("0 2 * * *", "2026-11-22T01:59:59Z", "2026-11-22T02:00:00Z"),
            ("0 2 * * *", "2026-11-22T02:00:00Z", "2026-11-23T02:00:00Z"),
            (
                "*/15 * * * *",
                "2026-11-22T10:07:30Z",
                "2026-11-22T10:15:00Z",
            ),
            (
                "0 */6 * * *",
                "2026-11-22T06:00:00Z",
                "2026-11-22T12:00:00Z",
            ),
            // Sunday 02:00; 2026-11-22 is a Sunday.
            ("0 2 * * 0", "2026-11-22T02:00:00Z", "2026-11-29T02:00:00Z"),
            ("0 2 * * 7", "2026-11-21T00:00:00Z", "2026-11-22T02:00:00Z"),
            (
                "0 2 * * SUN",
                "2026-11-21T00:00:00Z",
                "2026-11-22T02:00:00Z",
            ),
            ("30 4 1 * *", "2026-11-22T00:00:00Z", "2026-12-01T04:30:00Z"),
            (
                "0 0 1 JAN *",
                "2026-11-22T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "0 9 * * MON-FRI",
                "2026-11-20T09:00:00Z",
                "2026-11-23T09:00:00Z",
            ),
            (
                "0 9 1-7 * 1,3",
                "2026-11-22T00:00:00Z",
                "2026-11-23T09:00:00Z",
            ),
            (
                "0 9 */2 * *",
                "2026-11-22T10:00:00Z",
                "2026-11-23T09:00:00Z",
            ),
            (
                "5/20 * * * *",
                "2026-11-22T10:26:00Z",
                "2026-11-22T10:45:00Z",
            ),
            (
                "59 23 31 12 *",
                "2026-12-31T23:59:00Z",
                "2027-12-31T23:59:00Z",
            ),
            ("@daily", "2026-11-22T12:00:00Z", "2026-11-23T00:00:00Z"),
            ("@hourly", "2026-11-22T12:00:00Z", "2026-11-22T13:00:00Z"),
            ("@weekly", "2026-11-22T12:00:00Z", "2026-11-29T00:00:00Z"),
            // Seconds first.
            (
                "*/2 * * * * *",
                "2026-11-22T10:00:00Z",
                "2026-11-22T10:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "2026-11-22T10:00:01.5Z",
                "2026-11-22T10:00:02Z",
            ),
            (
                "30 0 2 * * *",
                "2026-11-22T02:00:30Z",
                "2026-11-23T02:00:30Z",
            ),
            (
                "0 0 0 1 1 *",
                "2026-11-22T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
        ];
        for (expr, after, want) in table {
            assert_eq!(next(expr, after), want, "{expr} after {after}");
        }
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday (Vixie cron): 2026-11-27 is a Friday.
        assert_eq!(
            next("0 0 13 * 5", "2026-11-22T00:00:00Z"),
            "2026-11-27T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2026-11-28T00:00:00Z"),
            "2026-12-04T00:00:00Z"
        );
        assert_eq!(
            next("0 0 23 * 5", "2026-11-22T00:00:00Z"),
            "2026-11-23T00:00:00Z"
        );
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        let table = [
            ("", "5 fields"),
            ("* * * *", "has 4"),
            ("* * * * * * *", "has 7"),
            ("61 * * * *", "minute field: 61 is out of range 0-59"),
            ("* 24 * * *", "hour field: 24 is out of range 0-23"),
            ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
            ("* * * 13 *", "month field: 13 is out of range 1-12"),
            ("* * * * 8", "day-of-week field: 8 is out of range 0-7"),
            ("*/0 * * * *", "step \"0\" must be a number above 0"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "\"x\" is not a number"),
            ("1,,2 * * * *", "empty item"),
            ("0 0 30 2 *", "never runs"),
            ("@fortnightly", "unknown schedule"),
            ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ];
        for (expr, want) in table {
            let err = Cron::parse(expr).expect_err(expr);
            assert!(err.contains(want), "{expr:?}: {err}");
        }
    }

    #[test]
    fn daylight_saving_changes_neither_skip_nor_double_a_run() {
        let berlin = TimeZone::get("Europe/Berlin").expect("tzdata");
        let c = Cron::parse("30 2 * * *").expect("cron");
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 runs at 03:30 CEST (01:30Z).
        let spring = c
            .next_after(ts("2026-03-28T12:00:00Z"), &berlin)
            .expect("next");
        assert_eq!(spring, ts("2026-03-29T01:30:00Z"));
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 comes twice, runs once.
        let first = c
            .next_after(ts("2026-10-24T12:00:00Z"), &berlin)
            .expect("next");
        assert_eq!(first, ts("2026-10-25T00:30:00Z"));
        let then = c.next_after(first, &berlin).expect("next");
        assert_eq!(then, ts("2026-10-26T01:30:00Z"));
    }

    fn sched(full: Option<&str>, incr: Option<&str>, catch_up: bool) -> JobSchedule {
        JobSchedule {
            full: full.map(|c| Cron::parse(c).expect("cron")),
            incremental: incr.map(|c| Cron::parse(c).expect("cron")),
            prune: None,
            catch_up,
            timezone: utc(),
        }
    }

    fn handled(pairs: &[(Task, &str)]) -> Handled {
        pairs.iter().map(|(t, s)| (*t, ts(s))).collect()
    }

    /// (what, handled, now, run: (task, late), skipped)
    type Case = (
        &'static str,
        Handled,
        &'static str,
        Vec<(Task, bool)>,
        Vec<Task>,
    );

    #[test]
    fn plan_runs_what_is_due_and_catches_up_once() {
        let s = sched(Some("0 2 * * 0"), Some("0 */6 * * *"), true);
        let table: [Case; 6] = [
            // A first start handles nothing from before it.
            (
                "first start",
                Handled::new(),
                "2026-11-22T10:00:00Z",
                vec![],
                vec![],
            ),
            (
                "on time",
                handled(&[
                    (Task::Full, "2026-11-22T05:59:00Z"),
                    (Task::Incremental, "2026-11-22T05:59:00Z"),
                ]),
                "2026-11-22T06:00:00Z",
                vec![(Task::Incremental, false)],
                vec![],
            ),
            (
                "nothing due",
                handled(&[
                    (Task::Full, "2026-11-22T06:00:00Z"),
                    (Task::Incremental, "2026-11-22T06:00:00Z"),
                ]),
                "2026-11-22T07:00:00Z",
                vec![],
                vec![],
            ),
            (
                "down for two days: one incremental, late",
                handled(&[
                    (Task::Full, "2026-11-23T00:00:00Z"),
                    (Task::Incremental, "2026-11-23T00:00:00Z"),
                ]),
                "2026-11-25T01:00:00Z",
                vec![(Task::Incremental, true)],
                vec![],
            ),
            (
                "a full and an incremental due: the full alone",
                handled(&[
                    (Task::Full, "2026-11-21T00:00:00Z"),
                    (Task::Incremental, "2026-11-21T00:00:00Z"),
                ]),
                "2026-11-22T02:00:10Z",
                vec![(Task::Full, false)],
                vec![Task::Incremental],
            ),
            (
                "a task added later starts from now",
                handled(&[(Task::Full, "2026-11-21T00:00:00Z")]),
                "2026-11-21T01:00:00Z",
                vec![],
                vec![],
            ),
        ];
        for (what, h, now, run, skipped) in table {
            let p = plan(&s, &h, ts(now));
            let got: Vec<(Task, bool)> = p.run.iter().map(|d| (d.task, d.late)).collect();
            assert_eq!(got, run, "{what}");
            let got: Vec<Task> = p.skipped.iter().map(|d| d.task).collect();
            assert_eq!(got, skipped, "{what}");
            // A task that came due (or was first seen) is handled up to now; others stay.
            for (task, _) in s.tasks() {
                let seen = p.run.iter().chain(&p.skipped).any(|d| d.task == task)
                    || !h.contains_key(&task);
                let want = if seen {
                    Some(ts(now))
                } else {
                    h.get(&task).copied()
                };
                assert_eq!(p.handled.get(&task).copied(), want, "{what}: {task:?}");
            }
        }
    }

    #[test]
    fn without_catch_up_a_missed_slot_is_skipped_but_an_on_time_one_runs() {
        let s = sched(None, Some("0 * * * *"), false);
        let h = handled(&[(Task::Incremental, "2026-11-22T00:30:00Z")]);
        let p = plan(&s, &h, ts("2026-11-22T03:10:00Z"));
        assert!(p.run.is_empty());
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].slot, ts("2026-11-22T01:00:00Z"));
        let p = plan(&s, &h, ts("2026-11-22T01:00:30Z"));
        assert_eq!(p.run.len(), 1);
        assert!(!p.run[0].late);
    }

    #[test]
    fn the_next_wake_is_the_earliest_slot_of_any_task() {
        let s = sched(Some("0 2 * * 0"), Some("0 */6 * * *"), true);
        let h = handled(&[
            (Task::Full, "2026-11-22T03:00:00Z"),
            (Task::Incremental, "2026-11-22T03:00:00Z"),
        ]);
        assert_eq!(
            next_wake(&s, &h, ts("2026-11-22T03:00:00Z")),
            Some(ts("2026-11-22T06:00:00Z"))
        );
    }
}
