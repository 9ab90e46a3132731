//! An `s3` destination's keys, as written in the configuration file.

use serde::Deserialize;

use super::{LockMode, ObjectLock, RESTORE_TIERS, S3Options, STORAGE_CLASSES};
use super::{needs_restore, retrieval_time};
use crate::settings::{Invalid, Place, Settings, check_choice, check_endpoint, timeout};
use crate::units::HumanDuration;

/// How long a copy retrieved from S3 Glacier classes stays readable, unless `restore_days` says.
pub const DEFAULT_RESTORE_DAYS: i32 = 7;

/// Locks go up to a hundred years.
const MAX_LOCK_DAYS: u32 = 36_500;

/// `[destination.NAME]` with `kind = "s3"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    storage_class: Option<String>,
    #[serde(default)]
    put_only: bool,
    profile: Option<String>,
    restore_tier: Option<String>,
    restore_days: Option<i64>,
    timeout: Option<HumanDuration>,
    object_lock: Option<ObjectLockSettings>,
}

/// `object_lock = { mode = "governance", days = 30 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectLockSettings {
    mode: String,
    days: u32,
}

impl Settings for S3Settings {
    type Options = S3Options;

    fn resolve(self, _place: &Place<'_>) -> Result<S3Options, Invalid> {
        if self.bucket.trim().is_empty() {
            return Err(Invalid::at("bucket", "the bucket cannot be empty"));
        }
        check_endpoint(
            self.endpoint.as_deref(),
            "\"https://s3.example.net\" or \"http://127.0.0.1:9000\"",
        )?;
        if let Some(c) = &self.storage_class {
            check_choice("storage_class", "storage class", c, STORAGE_CLASSES)?;
        }
        let restore_tier = self.restore_tier.unwrap_or_else(|| "Standard".to_string());
        check_choice("restore_tier", "restore tier", &restore_tier, RESTORE_TIERS)?;
        if let Some(c) = &self.storage_class
            && needs_restore(c)
            && retrieval_time(c, &restore_tier).is_none()
        {
            return Err(Invalid::at(
                "restore_tier",
                format!(
                    "{c} objects cannot be retrieved with the {restore_tier} tier; use Standard or Bulk"
                ),
            ));
        }
        let restore_days = match self.restore_days {
            None => DEFAULT_RESTORE_DAYS,
            Some(d @ 1..=365) => d as i32,
            Some(d) => {
                return Err(Invalid::at(
                    "restore_days",
                    format!("restore_days = {d}: a retrieved copy stays readable 1 to 365 days"),
                ));
            }
        };
        let object_lock = match self.object_lock {
            None => None,
            Some(l) => Some(l.resolve().map_err(|e| e.under("object_lock"))?),
        };
        Ok(S3Options {
            bucket: self.bucket,
            region: self.region.unwrap_or_else(|| "us-east-1".to_string()),
            endpoint: self.endpoint,
            storage_class: self.storage_class,
            put_only: self.put_only,
            profile: self.profile,
            credentials: None,
            restore_tier,
            restore_days,
            timeout: timeout(self.timeout),
            object_lock,
        })
    }
}

impl ObjectLockSettings {
    fn resolve(self) -> Result<ObjectLock, Invalid> {
        let mode = match self.mode.as_str() {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            other => {
                return Err(Invalid::at(
                    "mode",
                    format!(
                        "unknown object lock mode {other:?}; use \"governance\" (a user with s3:BypassGovernanceRetention may lift it) or \"compliance\" (nobody can until it expires)"
                    ),
                ));
            }
        };
        if self.days == 0 || self.days > MAX_LOCK_DAYS {
            return Err(Invalid::at(
                "days",
                format!(
                    "days: how long each object stays locked once written, 1 to {MAX_LOCK_DAYS}"
                ),
            ));
        }
        Ok(ObjectLock {
            mode,
            retain: std::time::Duration::from_secs(u64::from(self.days) * 86_400),
        })
    }
}
