//! Notifications: on the outcomes a job chooses (`failure`, `partial`,
//! `success`, `stale`), run a command with the run's JSON report on its
//! stdin, and/or ping a URL the way healthchecks.io-style services expect:
//! `URL/start` when a backup starts, `URL` when it succeeded, `URL/fail`
//! when it failed, was partial or went stale, each with the report's
//! summary as the body. Each attempt has a timeout and is retried a few
//! times. A notification that fails is reported in the run's notes and
//! never changes the run's result or exit code. A URL is only ever printed
//! as its scheme and host: its path is often the secret.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// An outcome a notification is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The run failed (or was stopped).
    Failure,
    /// Some destinations have the backup, others failed.
    Partial,
    /// The run succeeded.
    Success,
    /// `status --check` finds the job's newest backup too old, or none.
    Stale,
}

impl Event {
    /// The word the configuration and `OFFSITE_EVENT` use.
    pub fn word(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Partial => "partial",
            Event::Success => "success",
            Event::Stale => "stale",
        }
    }

    /// The event of a run that ended `status`; none for a skipped run.
    pub fn of(status: crate::outcome::Status) -> Option<Event> {
        use crate::outcome::Status;
        match status {
            Status::Ok => Some(Event::Success),
            Status::Partial => Some(Event::Partial),
            Status::Failed | Status::Interrupted | Status::Pending => Some(Event::Failure),
            Status::Skipped => None,
        }
    }
}

/// A `notify` table, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The outcomes that notify (default: failure, partial, stale).
    pub on: Vec<Event>,
    /// A shell command run with the report on its stdin.
    pub command: Option<String>,
    /// A healthchecks.io-style ping URL.
    pub url: Option<String>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How many times a failed attempt is tried again.
    pub retries: u32,
}

/// What the notification is about.
pub struct Message<'a> {
    /// The job.
    pub job: &'a str,
    /// The outcome.
    pub event: Event,
    /// The run's report, as `--json` prints it.
    pub report: &'a str,
    /// One line for a person (the ping's body).
    pub summary: &'a str,
    /// The backup's id, when there is one.
    pub backup: Option<&'a str>,
    /// Where the command runs: the configuration file's folder, as hooks do.
    pub dir: &'a std::path::Path,
}

/// `https://hc-ping.com/…`: a URL as offsite prints it, without its path.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

impl Notify {
    /// The start signal of a backup run (only with a URL, and only when
    /// some outcome pings it). Answers what went wrong, for the notes.
    pub async fn started(&self, job: &str) -> Option<String> {
        let url = self.url.as_ref()?;
        ping(&format!("{url}/start"), String::new(), self)
            .await
            .err()
            .map(|e| format!("job {job:?}: the start ping to {} failed: {e}", redact(url)))
    }

    /// Sends `m` where it is configured, when its outcome is one of `on`.
    /// Answers what failed, one note each.
    pub async fn finished(&self, m: &Message<'_>, secrets: &[String]) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.on.contains(&m.event) {
            return notes;
        }
        if let Some(url) = &self.url {
            let target = match m.event {
                Event::Success => url.clone(),
                _ => format!("{url}/fail"),
            };
            if let Err(e) = ping(&target, m.summary.to_string(), self).await {
                notes.push(format!(
                    "job {:?}: the {} ping to {} failed: {e}",
                    m.job,
                    m.event.word(),
                    redact(url)
                ));
            }
        }
        if let Some(cmd) = &self.command
            && let Err(e) = run_command(cmd, m, self, secrets).await
        {
            notes.push(format!(
                "job {:?}: the {} notification command failed: {e}",
                m.job,
                m.event.word()
            ));
        }
        notes
    }
}

/// Tries `f` once, then `retries` more times, a second apart then two...
async fn with_retries<F, Fut>(n: &Notify, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for attempt in 0..=n.retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        match tokio::time::timeout(n.timeout, f()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {}s", n.timeout.as_secs_f64()),
        }
    }
    Err(format!("{last} (tried {} times)", n.retries + 1))
}

/// POSTs `body` to `url`; a 2xx answer is success.
async fn ping(url: &str, body: String, n: &Notify) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(n.timeout)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    with_retries(n, || {
        let (client, body) = (client.clone(), body.clone());
        async move {
            let answer = client
                .post(url)
                .body(body)
                .send()
                .await
                // reqwest's errors name the URL: keep only what went wrong.
                .map_err(|e| e.without_url().to_string())?;
            if answer.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", answer.status()))
            }
        }
    })
    .await
}

/// Runs the command (bash, in the job's folder) with the report on its
/// stdin and `OFFSITE_JOB`, `OFFSITE_EVENT`, `OFFSITE_SUMMARY` and
/// `OFFSITE_BACKUP_ID` set, and without the variables secrets come in.
async fn run_command(
    cmd: &str,
    m: &Message<'_>,
    n: &Notify,
    secrets: &[String],
) -> Result<(), String> {
    with_retries(n, || async {
        let mut c = tokio::process::Command::new("bash");
        c.arg("-c")
            .arg(cmd)
            .current_dir(m.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .env("OFFSITE_JOB", m.job)
            .env("OFFSITE_EVENT", m.event.word())
            .env("OFFSITE_SUMMARY", m.summary)
            .env("OFFSITE_BACKUP_ID", m.backup.unwrap_or(""));
        for v in secrets {
            c.env_remove(v);
        }
        let mut child = c.spawn().map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(m.report.as_bytes()).await;
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{cmd}` exited with {status}"))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_path() {
        assert_eq!(
            redact("https://hc-ping.com/5b8c-secret"),
            "https://hc-ping.com/…"
        );
        assert_eq!(
            redact("http://user:pw@127.0.0.1:8080/x?y"),
            "http://127.0.0.1:8080/…"
        );
    }
}
