//! Retries with exponential backoff and jitter, for temporary errors only.
//!
//! This is the one place that retries: backends report whether an error is
//! temporary and never loop themselves. A permanent error (a refused key, a
//! missing folder) returns at once, so a misconfigured night fails fast.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, FileBody, ListStream, Operation, Part,
    PartReceipt, Readiness, Result, UploadId,
};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// The delay before the second attempt; it doubles for each one after.
    pub initial_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `n + 1` (n from 1): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so many clients do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(random_fraction())
    }
}

fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `op` until it succeeds, fails permanently, or the attempts run out.
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_temporary() && attempt < policy.attempts => {
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// [`with_retries`] for a create-only write: once an attempt has failed
/// without an answer (a temporary error: it may have landed), a later
/// attempt's error is marked [`crate::Error::after_lost_answer`], so the
/// caller can tell "the key was taken by my own lost attempt" from "the key
/// was taken by someone else". A `RateLimited` answer (429, SlowDown) is an
/// answer: the server stored nothing.
pub async fn with_retries_create_only<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    let mut lost = false;
    loop {
        match op().await {
            Err(e) if e.is_temporary() && attempt < policy.attempts => {
                lost |= e.kind() != ErrorKind::RateLimited;
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) if lost => return Err(e.set_after_lost_answer()),
            other => return other,
        }
    }
}

/// A backend whose calls are retried on temporary errors.
#[derive(Debug, Clone)]
pub struct Retrying {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
}

impl Retrying {
    /// `inner`, its calls retried as `policy` says.
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }
}

#[async_trait]
impl Backend for Retrying {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn refusal(&self, op: Operation) -> Error {
        self.inner.refusal(op)
    }

    async fn probe(&self) -> Result<()> {
        with_retries(&self.policy, || self.inner.probe()).await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        with_retries_create_only(&self.policy, || self.inner.put(key, body.clone())).await
    }

    async fn create_upload(&self, key: &str, part_size: u64) -> Result<UploadId> {
        with_retries(&self.policy, || self.inner.create_upload(key, part_size)).await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        with_retries(&self.policy, || {
            self.inner.put_part(key, upload, part.clone())
        })
        .await
    }

    async fn write_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        with_retries(&self.policy, || {
            self.inner.write_part(key, upload, part.clone())
        })
        .await
    }

    async fn sync_part(&self, key: &str, upload: &UploadId, receipt: &PartReceipt) -> Result<()> {
        with_retries(&self.policy, || self.inner.sync_part(key, upload, receipt)).await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        with_retries_create_only(&self.policy, || {
            self.inner.complete_upload(key, upload, parts)
        })
        .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        with_retries(&self.policy, || self.inner.abort_upload(key, upload)).await
    }

    async fn put_file(&self, key: &str, file: FileBody) -> Result<()> {
        with_retries_create_only(&self.policy, || self.inner.put_file(key, file.clone())).await
    }

    async fn flush(&self) -> Result<()> {
        with_retries(&self.policy, || self.inner.flush()).await
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        with_retries(&self.policy, || self.inner.prepare_read(key)).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        with_retries(&self.policy, || self.inner.get(key, range.clone())).await
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        with_retries(&self.policy, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        with_retries(&self.policy, || self.inner.delete(key)).await
    }
    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<crate::Leftover>> {
        with_retries(&self.policy, || self.inner.list_leftovers(prefix)).await
    }

    async fn retained_until(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        with_retries(&self.policy, || self.inner.retained_until(key)).await
    }

    async fn extend_retention(&self, key: &str, until: std::time::SystemTime) -> Result<()> {
        with_retries(&self.policy, || self.inner.extend_retention(key, until)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn temporary_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let out = with_retries(&fast(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Error::new(ErrorKind::Unexpected, "reset").temporary())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_return_at_once() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = with_retries(&fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::new(ErrorKind::PermissionDenied, "no"))
        })
        .await;
        assert_eq!(out.unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = with_retries(&fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::new(ErrorKind::RateLimited, "slow down"))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_create_only_write_says_when_an_attempt_before_was_lost() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = with_retries_create_only(&fast(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Error::new(ErrorKind::Unexpected, "reset").temporary())
            } else {
                Err(Error::new(ErrorKind::AlreadyExists, "taken"))
            }
        })
        .await;
        let e = out.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert!(e.after_lost_answer());
        let first: Result<()> = with_retries_create_only(&fast(), || async {
            Err(Error::new(ErrorKind::AlreadyExists, "taken"))
        })
        .await;
        assert!(
            !first.unwrap_err().after_lost_answer(),
            "taken at the first attempt: someone else's"
        );
        let calls = AtomicU32::new(0);
        let slowed: Result<()> = with_retries_create_only(&fast(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Error::new(ErrorKind::RateLimited, "slow down"))
            } else {
                Err(Error::new(ErrorKind::AlreadyExists, "taken"))
            }
        })
        .await;
        assert!(
            !slowed.unwrap_err().after_lost_answer(),
            "a 'slow down' is an answer: nothing was stored"
        );
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let d = p.delay(attempt);
            let full = (Duration::from_millis(100) * (1 << (attempt - 1))).min(p.max_delay);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }
}
