//! When jobs run, and what their last runs left: the cron schedules (a
//! pure core below everything: the configuration reads them), the daemon
//! that starts jobs on them (above the job run), and the status record each
//! run writes and `offsite status` reads.

pub mod cron;
pub mod daemon;
pub mod metrics;
pub mod report;
pub mod status;
