//! Bandwidth limiting (`bwlimit`) for one destination.
//!
//! A [`RateLimiter`] hands out send time: a caller about to send `n` bytes
//! reserves `n / rate` seconds on a shared timeline and waits until its slot
//! has passed. Concurrent parts share the timeline, so the destination's
//! average rate never exceeds the limit. The granularity is one call: each
//! part goes out at full speed once its slot has passed, so a smaller
//! `part_size` gives smoother pacing.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{
    Backend, ByteStream, Capabilities, Error, FileBody, ListStream, Operation, Part, PartReceipt,
    Readiness, Result, UploadId,
};

/// A byte rate shared by everyone sending to one destination.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimiter {
            bytes_per_second: bytes_per_second.max(1),
            next_free: Mutex::new(None),
        }
    }

    /// Waits until `n` more bytes may be sent without exceeding the rate.
    pub async fn acquire(&self, n: u64) {
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_second as f64);
        let until = {
            let mut next = self.next_free.lock().await;
            let now = Instant::now();
            let start = match *next {
                Some(t) if t > now => t,
                _ => now,
            };
            let end = start + cost;
            *next = Some(end);
            end
        };
        tokio::time::sleep_until(until).await;
    }
}

/// A backend whose uploads (`put`, `put_part`, `put_file`) are held to a byte rate.
#[derive(Debug, Clone)]
pub struct Throttled {
    inner: Arc<dyn Backend>,
    limiter: Arc<RateLimiter>,
}

impl Throttled {
    /// `inner`, its uploads held to `bytes_per_second`.
    pub fn new(inner: Arc<dyn Backend>, bytes_per_second: u64) -> Self {
        Throttled {
            inner,
            limiter: Arc::new(RateLimiter::new(bytes_per_second)),
        }
    }
}

#[async_trait]
impl Backend for Throttled {
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
        self.inner.probe().await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.limiter.acquire(body.len() as u64).await;
        self.inner.put(key, body).await
    }

    async fn create_upload(&self, key: &str, part_size: u64) -> Result<UploadId> {
        self.inner.create_upload(key, part_size).await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.limiter.acquire(part.body.len() as u64).await;
        self.inner.put_part(key, upload, part).await
    }

    async fn write_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.limiter.acquire(part.body.len() as u64).await;
        self.inner.write_part(key, upload, part).await
    }

    async fn sync_part(&self, key: &str, upload: &UploadId, receipt: &PartReceipt) -> Result<()> {
        self.inner.sync_part(key, upload, receipt).await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        self.inner.complete_upload(key, upload, parts).await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        self.inner.abort_upload(key, upload).await
    }

    async fn put_file(&self, key: &str, file: FileBody) -> Result<()> {
        // Paced block by block as the backend reads it.
        self.inner
            .put_file(key, file.paced(self.limiter.clone()))
            .await
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        self.inner.prepare_read(key).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.inner.get(key, range).await
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<crate::Leftover>> {
        self.inner.list_leftovers(prefix).await
    }

    async fn retained_until(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.retained_until(key).await
    }

    async fn extend_retention(&self, key: &str, until: std::time::SystemTime) -> Result<()> {
        self.inner.extend_retention(key, until).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let limiter = Arc::new(RateLimiter::new(1000));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move { l.acquire(500).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 2000 bytes at 1000 B/s: the last slot ends after two seconds.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
