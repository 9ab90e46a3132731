//! What the AWS backends (S3 and the Glacier vault) share: static
//! credentials, loading the standard credential chain, and the message for
//! the commonest 2 a.m. failure, no credentials at all.

use std::fmt;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::causes;
use crate::{Error, ErrorKind, Secret};

/// Static credentials, for callers that do not use the AWS chain.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id (`AKIA…`), which is not secret.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .finish()
    }
}

/// The shared SDK configuration: `region`, and the credentials from
/// `credentials`, else `profile`, else the default chain. The credential
/// chain keeps its own retries and timeouts; see [`no_retries`].
pub(crate) async fn load_config(
    region: &str,
    profile: Option<&str>,
    credentials: Option<&StaticCredentials>,
) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string()));
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    if let Some(c) = credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_string(),
            None,
            None,
            "offsite",
        ));
    }
    loader.load().await
}

/// The retry and timeout settings of a service client: no retries of its
/// own (the caller's [`crate::Retrying`] retries, so nothing is sent more
/// often than the journal knows), and a server that stalls for `timeout`
/// fails the attempt instead of hanging the backup.
pub(crate) fn no_retries(timeout: std::time::Duration) -> (RetryConfig, TimeoutConfig) {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .build();
    (RetryConfig::disabled(), timeouts)
}

/// Why the credentials could not be loaded, when that is what failed.
fn credentials_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return Some(causes(c));
        }
        next = e.source();
    }
    None
}

/// The error for a call that found no usable credentials. Not worth retrying.
pub(crate) fn no_credentials(call: &str, why: &str, destination: &str, key: Option<&str>) -> Error {
    let mut e = Error::new(
        ErrorKind::Unauthenticated,
        format!("{call}: no usable AWS credentials ({why})"),
    )
    .with_destination(destination)
    .with_hint(
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (cron passes almost no environment: set them in the crontab or the service unit), or `profile` / AWS_PROFILE, or give the host an instance role",
    );
    if let Some(k) = key {
        e = e.with_key(k);
    }
    e
}

/// What a failed SDK call says, for a backend to classify by its own codes.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    /// `Code: message`, else the HTTP status, else the causes.
    pub detail: String,
    /// The request never got an answer (connect, timeout, cut off): worth retrying.
    pub transport: bool,
}

/// Reads a failed SDK call. A call that found no usable credentials is
/// already the error to report (`Err`).
pub(crate) fn failure<E>(
    err: &SdkError<E, HttpResponse>,
    call: &str,
    destination: &str,
    key: Option<&str>,
) -> Result<Failure, Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(why) = credentials_failure(err) {
        // Cron's near-empty environment: the commonest 2 a.m. failure.
        return Err(no_credentials(call, &why, destination, key));
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let transport = matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    );
    let detail = match (&code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => match status {
            Some(s) => format!("HTTP {s}"),
            None => causes(err),
        },
    };
    Ok(Failure {
        status,
        code,
        detail,
        transport,
    })
}
