//! A request to stop, shared by everything a run does.
//!
//! Set by the command line on SIGTERM or SIGINT. Work checks it at safe
//! points and winds down: staging stops between files (and kills a running
//! source command), the `post` hooks still run so the database is never
//! left locked, and uploads send no new part but let the parts in flight
//! finish and reach the journal. What was staged and journaled resumes on the
//! next `upload` or `backup`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A stop request shared by its clones: requested through one, seen by all.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// A stop that is never requested unless [`Stop::request`] is called.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Requests the stop and wakes every task in [`Stop::wait`].
    pub fn request(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Returns once a stop is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_a_stop_is_requested() {
        let stop = Stop::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!stop.requested());
        stop.request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter ends");
        // A stop requested earlier is seen at once.
        stop.wait().await;
    }
}
