//! An `azure` destination's keys, as written in the configuration file.

use serde::Deserialize;

use super::{ACCESS_TIERS, AzureCredential, AzureOptions, REHYDRATE_PRIORITIES, SecretSource};
use crate::settings::{
    Invalid, OneOf, Place, Settings, check_choice, check_endpoint, one_of, timeout,
};
use crate::units::HumanDuration;

/// `[destination.NAME]` with `kind = "azure"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    account: String,
    container: String,
    endpoint: Option<String>,
    access_key_env: Option<String>,
    sas_token_env: Option<String>,
    access_tier: Option<String>,
    rehydrate_priority: Option<String>,
    #[serde(default)]
    put_only: bool,
    timeout: Option<HumanDuration>,
}

/// Azure's rule for storage accounts: 3 to 24 lowercase letters and digits.
fn valid_account(account: &str) -> bool {
    (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Azure's rule for containers: 3 to 63 lowercase letters, digits and
/// single hyphens, starting and ending with a letter or digit.
fn valid_container(container: &str) -> bool {
    (3..=63).contains(&container.len())
        && container
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--")
}

impl Settings for AzureSettings {
    type Options = AzureOptions;

    fn resolve(self, _place: &Place<'_>) -> Result<AzureOptions, Invalid> {
        let account = self.account;
        if !valid_account(&account) {
            return Err(Invalid::at(
                "account",
                format!(
                    "invalid storage account name {account:?}: 3 to 24 lowercase letters and digits"
                ),
            ));
        }
        if !valid_container(&self.container) {
            return Err(Invalid::at(
                "container",
                format!(
                    "invalid container name {:?}: 3 to 63 lowercase letters, digits and single hyphens",
                    self.container
                ),
            ));
        }
        check_endpoint(
            self.endpoint.as_deref(),
            &format!(
                "\"https://{account}.blob.core.windows.net\" or \"http://127.0.0.1:10000/devstoreaccount1\""
            ),
        )?;
        let credential = match one_of(
            ("access_key_env", self.access_key_env),
            ("sas_token_env", self.sas_token_env),
            "an azure destination needs access_key_env (the name of an environment variable holding the account key) or sas_token_env (one holding a SAS token)",
        )? {
            OneOf::First(v) => AzureCredential::SharedKey(SecretSource::Env(v)),
            OneOf::Second(v) => AzureCredential::Sas(SecretSource::Env(v)),
        };
        if let Some(t) = &self.access_tier {
            check_choice("access_tier", "access tier", t, ACCESS_TIERS)?;
        }
        let rehydrate_priority = self
            .rehydrate_priority
            .unwrap_or_else(|| "Standard".to_string());
        check_choice(
            "rehydrate_priority",
            "rehydrate priority",
            &rehydrate_priority,
            REHYDRATE_PRIORITIES,
        )?;
        Ok(AzureOptions {
            account,
            container: self.container,
            endpoint: self.endpoint,
            credential,
            access_tier: self.access_tier,
            rehydrate_priority,
            put_only: self.put_only,
            timeout: timeout(self.timeout),
        })
    }
}

impl AzureOptions {
    /// The environment variables these options read secrets from.
    pub fn secret_variables(&self) -> Vec<&str> {
        match &self.credential {
            AzureCredential::SharedKey(SecretSource::Env(v))
            | AzureCredential::Sas(SecretSource::Env(v)) => vec![v.as_str()],
            _ => Vec::new(),
        }
    }
}
