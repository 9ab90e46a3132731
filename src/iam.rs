//! `offsite policy s3`: the least-privilege IAM policies for the three kinds
//! of host that touch an S3 destination, and a lifecycle configuration that
//! backs up `prune` (pure functions; the command line prints them).
//!
//! - **uploader** (the database host, `put_only = true`): `s3:PutObject` on
//!   the destination's prefix and nothing else. CreateMultipartUpload,
//!   UploadPart and CompleteMultipartUpload are all authorised by
//!   `s3:PutObject`. IAM cannot tell creating from overwriting, so a second
//!   statement denies every object-creating request without
//!   `If-None-Match` (the `s3:if-none-match` condition key, exempting the
//!   requests that create nothing by `s3:ObjectCreationOperation`): offsite
//!   sends the header on every write, and a stolen key can add objects but
//!   not overwrite one. The same statement with `"Principal": "*"` in the
//!   bucket policy binds every principal.
//! - **pruner** (the host running `prune`): `s3:ListBucket` on the bucket,
//!   `s3:GetObject` (manifests) and `s3:DeleteObject` on the prefix.
//! - **restorer** (the host running `list`, `verify`, `restore`):
//!   `s3:ListBucket`, `s3:GetObject` and `s3:RestoreObject` (retrievals from
//!   the GLACIER and DEEP_ARCHIVE classes).
//!
//! `s3:ListBucket` carries no `s3:prefix` condition: `check` probes with
//! HeadBucket, which AWS authorises as ListBucket without a prefix, so a
//! condition would make `check` fail. It lets the key see key names in the
//! bucket, never their contents.
//!
//! The lifecycle rule expires a job's objects some days after the oldest
//! backup its retention can keep: a backstop for a pruner that stopped
//! running, never the primary mechanism. See [`expiry_days`].

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::config::{Config, Job};
use crate::destinations::{Destination, DestinationKind};
use crate::error::Error;
use crate::retention::Policy;
use crate::schedule::cron::JobSchedule;

/// Who the policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The database host (`put_only = true`): creates objects, never
    /// overwrites, reads or deletes one.
    Uploader,
    /// The host running `prune`: lists, reads manifests and deletes.
    Pruner,
    /// The host running `list`, `verify` and `restore`: lists, reads, and
    /// restores objects from the archive classes.
    Restorer,
}

/// Seconds in a day.
const DAY: u64 = 86_400;
/// A full older than its kept incrementals by up to one full interval: the
/// allowance when the job's schedule does not say how often fulls run.
const DEFAULT_FULL_INTERVAL: Duration = Duration::from_secs(31 * DAY);
/// Slack for S3's once-a-day lifecycle runs, clocks and late backups.
const MARGIN: Duration = Duration::from_secs(7 * DAY);

/// The ARN partition of `region`: China and GovCloud regions have their own.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The ARN covering every object offsite writes under `prefix`.
fn objects_arn(partition: &str, bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("arn:{partition}:s3:::{bucket}/*")
    } else {
        format!("arn:{partition}:s3:::{bucket}/{prefix}/*")
    }
}

/// The IAM policy document for `role` on `bucket` and `prefix` (no slashes
/// at the ends), with what S3 Object Lock adds when the destination locks
/// objects (`object_lock`): the uploader sets each object's retention
/// (s3:PutObjectRetention); the pruner lists and deletes object versions
/// (a plain delete only hides a locked object) and extends the locks of
/// backups that kept ones need.
pub fn iam_policy(
    role: Role,
    region: &str,
    bucket: &str,
    prefix: &str,
    object_lock: bool,
) -> Value {
    let part = partition(region);
    let objects = objects_arn(part, bucket, prefix);
    let mut statements = iam_statements(role, part, bucket, &objects);
    if object_lock {
        let (sid, bucket_actions, object_actions): (&str, &[&str], &[&str]) = match role {
            Role::Uploader => ("OffsiteLockOnWrite", &[], &["s3:PutObjectRetention"]),
            Role::Pruner => (
                "OffsitePruneLocked",
                &["s3:ListBucketVersions"],
                &[
                    "s3:DeleteObjectVersion",
                    "s3:GetObjectRetention",
                    "s3:PutObjectRetention",
                ],
            ),
            Role::Restorer => ("", &[], &[]),
        };
        if !bucket_actions.is_empty() {
            statements.push(json!({
                "Sid": format!("{sid}Versions"),
                "Effect": "Allow",
                "Action": bucket_actions,
                "Resource": format!("arn:{part}:s3:::{bucket}"),
            }));
        }
        if !object_actions.is_empty() {
            statements.push(json!({
                "Sid": sid,
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": objects,
            }));
        }
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn iam_statements(role: Role, part: &str, bucket: &str, objects: &str) -> Vec<Value> {
    let list = json!({
        "Sid": "OffsiteListBackups",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": format!("arn:{part}:s3:::{bucket}"),
    });
    match role {
        Role::Uploader => vec![
            json!({
                "Sid": "OffsiteUploadOnly",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": objects,
            }),
            // IAM cannot tell creating an object from overwriting one: deny
            // every object-creating request (PutObject, CompleteMultipartUpload)
            // that does not carry If-None-Match, so a stolen key can add
            // objects but never replace one. CreateMultipartUpload and
            // UploadPart create nothing (ObjectCreationOperation false) and
            // take no conditional header: they stay allowed.
            json!({
                "Sid": "OffsiteNeverOverwrite",
                "Effect": "Deny",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {
                    "Null": {"s3:if-none-match": "true"},
                    "Bool": {"s3:ObjectCreationOperation": "true"},
                },
            }),
        ],
        Role::Pruner => vec![
            list,
            json!({
                "Sid": "OffsitePrune",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:DeleteObject"],
                "Resource": objects,
            }),
        ],
        Role::Restorer => vec![
            list,
            json!({
                "Sid": "OffsiteRestore",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:RestoreObject"],
                "Resource": objects,
            }),
        ],
    }
}

/// The longest a full stays the base of kept incrementals: the largest gap
/// between two scheduled fulls over the next year (DST and month lengths
/// included), or 31 days (`DEFAULT_FULL_INTERVAL`) when no full is scheduled.
pub fn full_interval(schedule: Option<&JobSchedule>, now: Timestamp) -> Duration {
    let Some((cron, tz)) = schedule.and_then(|s| s.full.as_ref().map(|c| (c, &s.timezone))) else {
        return DEFAULT_FULL_INTERVAL;
    };
    let year_later = now.as_second().saturating_add(366 * DAY as i64);
    let mut longest = 0i64;
    let mut at = now;
    for _ in 0..2000 {
        let Some(next) = cron.next_after(at, tz) else {
            break;
        };
        if at != now {
            longest = longest.max(next.as_second() - at.as_second());
        }
        if next.as_second() > year_later {
            break;
        }
        at = next;
    }
    if longest > 0 {
        Duration::from_secs(longest as u64)
    } else {
        DEFAULT_FULL_INTERVAL
    }
}

/// Days after which S3 may expire a job's objects without deleting anything
/// `policy` keeps: the oldest backup its rules can keep, when backups come at
/// least once per rule period (keep_daily 7: 7 days; keep_monthly 12: 372
/// days), plus one `full_interval` (a kept incremental's full is older than
/// it), plus 7 days (`MARGIN`). `keep_last` alone is no age limit: an error.
pub fn expiry_days(policy: &Policy, full_interval: Duration) -> Result<u32, String> {
    let per = |n: Option<u32>, period: u64| n.map(|n| Duration::from_secs(u64::from(n) * period));
    let span = [
        per(policy.keep_hourly, 3600),
        per(policy.keep_daily, DAY),
        per(policy.keep_weekly, 7 * DAY),
        per(policy.keep_monthly, 31 * DAY),
        per(policy.keep_yearly, 366 * DAY),
        policy.keep_within,
        policy.min_age,
    ]
    .into_iter()
    .flatten()
    .max()
    .ok_or_else(|| {
        "its retention keeps backups by count only (keep_last), which sets no age limit".to_string()
    })?;
    let total = span + full_interval + MARGIN;
    Ok(u32::try_from(total.as_secs().div_ceil(DAY)).unwrap_or(u32::MAX))
}

/// One lifecycle rule expiring a job's objects after `days`.
pub fn expiry_rule(destination: &str, job: &str, prefix: &str, days: u32) -> Value {
    let job_prefix = crate::format::layout::Layout::new(prefix).job_folder(job);
    json!({
        "ID": format!("offsite-{destination}-{job}-expire"),
        "Filter": {"Prefix": job_prefix},
        "Status": "Enabled",
        "Expiration": {"Days": days},
    })
}

/// The rule aborting multipart uploads left unfinished for `days` under `prefix`.
pub fn abort_rule(destination: &str, prefix: &str, days: u32) -> Value {
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    json!({
        "ID": format!("offsite-{destination}-abort-incomplete-uploads"),
        "Filter": {"Prefix": p},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    })
}

/// Which document `offsite policy s3` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// The IAM policy of one role.
    Role(Role),
    /// The bucket lifecycle configuration.
    Lifecycle,
    /// Every role's policy and the lifecycle, in one object.
    All,
}

/// `offsite policy s3`: the `document` for S3 destination `destination`,
/// with notes for the person applying it. `expire_after` replaces the
/// expiry the jobs' retention implies; `abort_after` is when unfinished
/// multipart uploads are dropped.
pub fn s3_document(
    config: &Config,
    destination: &str,
    document: Document,
    expire_after: Option<u32>,
    abort_after: u32,
) -> crate::Result<(Value, Vec<String>)> {
    let target = config.target(destination)?;
    let d = &target.config;
    let DestinationKind::S3(s3) = &d.kind else {
        return Err(Error::Usage(format!(
            "destination {destination:?} is not an S3 destination; `offsite policy s3` prints policies for kind = \"s3\" only"
        )));
    };
    let iam = |r| {
        iam_policy(
            r,
            &s3.region,
            &s3.bucket,
            &d.prefix,
            s3.object_lock.is_some(),
        )
    };
    let mut notes = Vec::new();
    let lifecycle = |notes: &mut Vec<String>| -> crate::Result<Value> {
        let mut rules = Vec::new();
        for j in config
            .jobs
            .iter()
            .filter(|j| j.destinations.iter().any(|x| x == destination))
        {
            if let Some(days) = expiry_for(j, d, expire_after, notes)? {
                rules.push(expiry_rule(destination, &j.name, &d.prefix, days));
            }
        }
        rules.push(abort_rule(destination, &d.prefix, abort_after));
        notes.push(format!(
            "apply with: aws s3api put-bucket-lifecycle-configuration --bucket {} --lifecycle-configuration file://lifecycle.json (it REPLACES the bucket's rules: merge any you have)",
            s3.bucket
        ));
        Ok(json!({"Rules": rules}))
    };
    let doc = match document {
        Document::Role(r) => iam(r),
        Document::Lifecycle => lifecycle(&mut notes)?,
        Document::All => json!({
            "uploader": iam(Role::Uploader),
            "pruner": iam(Role::Pruner),
            "restorer": iam(Role::Restorer),
            "lifecycle": lifecycle(&mut notes)?,
        }),
    };
    Ok((doc, notes))
}

/// The days after which `job`'s objects on `d` expire: `expire_after`
/// (with a note when it is shorter than the retention needs), else what
/// the retention implies; `None` without a retention.
fn expiry_for(
    job: &Job,
    d: &Destination,
    expire_after: Option<u32>,
    notes: &mut Vec<String>,
) -> crate::Result<Option<u32>> {
    let Some(p) = job.retention_for(d) else {
        notes.push(format!(
            "job {}: no retention on {}, so no expiration rule (offsite never deletes its backups either)",
            job.name, d.name
        ));
        return Ok(None);
    };
    let derived = expiry_days(p, full_interval(job.schedule.as_ref(), Timestamp::now()));
    let days = match (expire_after, derived) {
        (Some(days), Ok(safe)) if days < safe => {
            notes.push(format!(
                "job {}: --expire-after {days} is shorter than the {safe} days its retention needs: S3 will delete backups the retention keeps",
                job.name
            ));
            days
        }
        (Some(days), _) => days,
        (None, Ok(days)) => days,
        (None, Err(why)) => {
            return Err(Error::Usage(format!(
                "job {} on destination {}: {why}; pass --expire-after DAYS (longer than the oldest backup you want kept)",
                job.name, d.name
            )));
        }
    };
    notes.push(format!(
        "job {}: objects under {} expire {days} days after upload, even the newest if backups stop; offsite prune remains the primary cleanup",
        job.name,
        crate::format::layout::Layout::new(&d.prefix).job_folder(&job.name)
    ));
    Ok(Some(days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::cron::Cron;

    fn policy() -> Policy {
        Policy {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within: None,
            min_age: None,
            incomplete_grace: Duration::from_secs(DAY),
            origins: crate::retention::Origins::Own,
        }
    }

    #[test]
    fn the_uploader_may_only_put_under_the_prefix() {
        let p = iam_policy(Role::Uploader, "eu-west-1", "acme", "db", false);
        assert_eq!(
            p,
            json!({"Version": "2012-10-17", "Statement": [{
                "Sid": "OffsiteUploadOnly", "Effect": "Allow",
                "Action": "s3:PutObject", "Resource": "arn:aws:s3:::acme/db/*"}, {
                "Sid": "OffsiteNeverOverwrite", "Effect": "Deny",
                "Action": "s3:PutObject", "Resource": "arn:aws:s3:::acme/db/*",
                "Condition": {
                    "Null": {"s3:if-none-match": "true"},
                    "Bool": {"s3:ObjectCreationOperation": "true"}}}]}),
            "put only, and never without If-None-Match"
        );
        let text = p.to_string();
        for never in ["List", "Get", "Delete", "Restore", "Abort", "s3:*"] {
            assert!(!text.contains(never), "{never} in {text}");
        }
    }

    #[test]
    fn roles_get_what_their_commands_call() {
        let actions = |role| {
            let p = iam_policy(role, "us-east-1", "b", "", false);
            let mut out: Vec<String> = Vec::new();
            for s in p["Statement"].as_array().into_iter().flatten() {
                match &s["Action"] {
                    Value::String(a) => out.push(a.clone()),
                    Value::Array(v) => {
                        out.extend(v.iter().filter_map(|a| a.as_str().map(String::from)))
                    }
                    _ => {}
                }
            }
            out.sort();
            out
        };
        assert_eq!(actions(Role::Uploader), ["s3:PutObject", "s3:PutObject"]);
        assert_eq!(
            actions(Role::Pruner),
            ["s3:DeleteObject", "s3:GetObject", "s3:ListBucket"]
        );
        assert_eq!(
            actions(Role::Restorer),
            ["s3:GetObject", "s3:ListBucket", "s3:RestoreObject"]
        );
        let p = iam_policy(Role::Restorer, "us-east-1", "b", "", false);
        assert_eq!(p["Statement"][0]["Resource"], "arn:aws:s3:::b");
        assert_eq!(p["Statement"][1]["Resource"], "arn:aws:s3:::b/*");
    }

    #[test]
    fn object_lock_adds_retention_and_versions_where_each_role_needs_them() {
        let actions = |role| {
            let p = iam_policy(role, "us-east-1", "b", "x", true);
            let mut out: Vec<String> = p["Statement"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["Effect"] == "Allow")
                .flat_map(|s| match &s["Action"] {
                    Value::String(a) => vec![a.clone()],
                    Value::Array(v) => v
                        .iter()
                        .filter_map(|a| a.as_str().map(String::from))
                        .collect(),
                    _ => Vec::new(),
                })
                .collect();
            out.sort();
            out
        };
        assert_eq!(
            actions(Role::Uploader),
            ["s3:PutObject", "s3:PutObjectRetention"]
        );
        assert_eq!(
            actions(Role::Pruner),
            [
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:GetObject",
                "s3:GetObjectRetention",
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:PutObjectRetention"
            ]
        );
        assert_eq!(
            actions(Role::Restorer),
            ["s3:GetObject", "s3:ListBucket", "s3:RestoreObject"],
            "nothing more to restore"
        );
    }

    #[test]
    fn arns_follow_the_region_partition() {
        for (region, want) in [
            ("us-east-1", "aws"),
            ("eu-central-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
        ] {
            assert_eq!(partition(region), want);
        }
        let p = iam_policy(Role::Uploader, "cn-north-1", "b", "x/y", false);
        assert_eq!(p["Statement"][0]["Resource"], "arn:aws-cn:s3:::b/x/y/*");
    }

    #[test]
    fn expiry_outlives_everything_the_policy_keeps() {
        let week = Duration::from_secs(7 * DAY);
        let table: &[(&str, Policy, Duration, Result<u32, ()>)] = &[
            // 7 daily: 7 days, + a weekly full's chain (7) + margin (7).
            (
                "daily",
                Policy {
                    keep_daily: Some(7),
                    ..policy()
                },
                week,
                Ok(21),
            ),
            // The coarsest rule decides: 12 months of 31 days.
            (
                "monthly",
                Policy {
                    keep_daily: Some(7),
                    keep_weekly: Some(4),
                    keep_monthly: Some(12),
                    ..policy()
                },
                week,
                Ok(372 + 14),
            ),
            (
                "yearly",
                Policy {
                    keep_yearly: Some(2),
                    ..policy()
                },
                week,
                Ok(732 + 14),
            ),
            (
                "hourly",
                Policy {
                    keep_hourly: Some(48),
                    ..policy()
                },
                week,
                Ok(2 + 14),
            ),
            (
                "within",
                Policy {
                    keep_within: Some(Duration::from_secs(90 * DAY)),
                    ..policy()
                },
                week,
                Ok(90 + 14),
            ),
            // min_age protects young backups, so it bounds the expiry from below too.
            (
                "min_age",
                Policy {
                    keep_daily: Some(3),
                    min_age: Some(Duration::from_secs(30 * DAY)),
                    ..policy()
                },
                week,
                Ok(30 + 14),
            ),
            // keep_last sets no age: refused, unless another rule bounds it.
            (
                "last only",
                Policy {
                    keep_last: Some(5),
                    ..policy()
                },
                week,
                Err(()),
            ),
            (
                "last and daily",
                Policy {
                    keep_last: Some(5),
                    keep_daily: Some(10),
                    ..policy()
                },
                week,
                Ok(24),
            ),
            // Unknown full schedule: a month for the chain.
            (
                "no schedule",
                Policy {
                    keep_daily: Some(7),
                    ..policy()
                },
                DEFAULT_FULL_INTERVAL,
                Ok(45),
            ),
        ];
        for (name, p, interval, want) in table {
            let got = expiry_days(p, *interval).map_err(|_| ());
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn the_full_interval_comes_from_the_schedule() {
        let now: Timestamp = "2026-11-22T00:00:00Z".parse().expect("ts");
        let sched = |full: &str| JobSchedule {
            full: Some(Cron::parse(full).expect("cron")),
            incremental: None,
            prune: None,
            catch_up: true,
            timezone: jiff::tz::TimeZone::UTC,
        };
        assert_eq!(
            full_interval(Some(&sched("0 2 * * 0")), now),
            Duration::from_secs(7 * DAY)
        );
        assert_eq!(
            full_interval(Some(&sched("0 2 * * *")), now),
            Duration::from_secs(DAY)
        );
        // Monthly on the 1st: the longest month is 31 days.
        assert_eq!(
            full_interval(Some(&sched("0 2 1 * *")), now),
            Duration::from_secs(31 * DAY)
        );
        assert_eq!(full_interval(None, now), DEFAULT_FULL_INTERVAL);
    }

    #[test]
    fn lifecycle_rules_name_the_job_folder() {
        assert_eq!(
            expiry_rule("s3", "orders", "db", 21)["Filter"]["Prefix"],
            "db/orders/"
        );
        assert_eq!(
            expiry_rule("s3", "orders", "", 21)["Filter"]["Prefix"],
            "orders/"
        );
        let a = abort_rule("s3", "db", 3);
        assert_eq!(
            a["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
            3
        );
        assert_eq!(a["Filter"]["Prefix"], "db/");
    }
}
