//! A `glacier` destination's keys, as written in the configuration file.

use serde::Deserialize;

use super::{GlacierOptions, RETRIEVAL_TIERS};
use crate::settings::{Invalid, Place, Settings, check_choice, check_endpoint, timeout};
use crate::units::HumanDuration;

/// `[destination.NAME]` with `kind = "glacier"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlacierSettings {
    vault: String,
    region: Option<String>,
    endpoint: Option<String>,
    profile: Option<String>,
    retrieval_tier: Option<String>,
    timeout: Option<HumanDuration>,
}

/// Glacier's rule for vaults: 1 to 255 of a-z, A-Z, 0-9, '_', '-' and '.'.
fn valid_vault(vault: &str) -> bool {
    !vault.is_empty()
        && vault.len() <= 255
        && vault
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Settings for GlacierSettings {
    type Options = GlacierOptions;

    fn resolve(self, place: &Place<'_>) -> Result<GlacierOptions, Invalid> {
        let vault = self.vault;
        if !valid_vault(&vault) {
            return Err(Invalid::at(
                "vault",
                format!("invalid vault name {vault:?}: 1 to 255 letters, digits, '_', '-' and '.'"),
            ));
        }
        check_endpoint(self.endpoint.as_deref(), "\"http://127.0.0.1:5000\"")?;
        let region = self.region.unwrap_or_else(|| "us-east-1".to_string());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Invalid::at(
                "region",
                format!("invalid region {region:?}: write one like \"eu-west-1\""),
            ));
        }
        let retrieval_tier = self
            .retrieval_tier
            .unwrap_or_else(|| "Standard".to_string());
        check_choice(
            "retrieval_tier",
            "retrieval tier",
            &retrieval_tier,
            RETRIEVAL_TIERS,
        )?;
        let catalog_dir = place
            .staging_dir
            .join(".glacier")
            .join(&region)
            .join(&vault);
        Ok(GlacierOptions {
            vault,
            region,
            endpoint: self.endpoint,
            profile: self.profile,
            credentials: None,
            retrieval_tier,
            catalog_dir,
            timeout: timeout(self.timeout),
        })
    }
}
