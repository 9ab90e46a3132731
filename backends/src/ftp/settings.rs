//! An `ftp` destination's keys, as written in the configuration file.

use std::path::PathBuf;

use serde::Deserialize;

use super::{FtpOptions, FtpPassword, FtpTls, parse_fingerprint};
use crate::settings::{Invalid, Place, Settings, check_host, timeout};
use crate::units::HumanDuration;

/// `[destination.NAME]` with `kind = "ftp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpSettings {
    host: String,
    port: Option<u16>,
    user: String,
    password_env: String,
    path: String,
    tls: Option<String>,
    ca_file: Option<PathBuf>,
    fingerprint: Option<String>,
    resume: Option<bool>,
    timeout: Option<HumanDuration>,
}

impl Settings for FtpSettings {
    type Options = FtpOptions;

    fn resolve(self, place: &Place<'_>) -> Result<FtpOptions, Invalid> {
        check_host(&self.host, "backup.example.net")?;
        let fingerprint = match &self.fingerprint {
            None => None,
            Some(_) if self.ca_file.is_some() => {
                return Err(Invalid::at(
                    "fingerprint",
                    "give ca_file (trust a CA) or fingerprint (trust one certificate), not both",
                ));
            }
            Some(f) => Some(parse_fingerprint(f).map_err(|m| {
                Invalid::at(
                    "fingerprint",
                    format!("{m}; write it as `openssl x509 -noout -fingerprint -sha256` prints it, like \"sha256:AB:CD:...\""),
                )
            })?),
        };
        if self.user.trim().is_empty() || self.user.contains(['\0', '\r', '\n']) {
            return Err(Invalid::at(
                "user",
                "the user cannot be empty or hold line breaks",
            ));
        }
        if self.path.contains(['\0', '\r', '\n']) {
            return Err(Invalid::at(
                "path",
                "the path cannot hold NUL or line breaks",
            ));
        }
        if self.password_env.trim().is_empty() {
            return Err(Invalid::at(
                "password_env",
                "name the environment variable that holds the password",
            ));
        }
        let tls = match self.tls.as_deref().unwrap_or("explicit") {
            "none" => FtpTls::None,
            "explicit" => FtpTls::Explicit,
            "implicit" => FtpTls::Implicit,
            other => {
                return Err(Invalid::at(
                    "tls",
                    format!(
                        "unknown tls mode {other:?}; use \"explicit\" (AUTH TLS, the default), \"implicit\" (port 990) or \"none\""
                    ),
                ));
            }
        };
        if tls == FtpTls::None && (self.ca_file.is_some() || fingerprint.is_some()) {
            return Err(Invalid::at(
                if self.ca_file.is_some() {
                    "ca_file"
                } else {
                    "fingerprint"
                },
                "ca_file and fingerprint need tls = \"explicit\" or \"implicit\"",
            ));
        }
        Ok(FtpOptions {
            host: self.host,
            port: self
                .port
                .unwrap_or(if tls == FtpTls::Implicit { 990 } else { 21 }),
            user: self.user,
            password: FtpPassword::Env(self.password_env),
            root: self.path,
            tls,
            ca_file: self.ca_file.map(|f| (place.resolve_path)(&f)),
            fingerprint,
            timeout: timeout(self.timeout),
            force_list: false,
            resume: self.resume.unwrap_or(true),
        })
    }
}

impl FtpOptions {
    /// The environment variables these options read secrets from.
    pub fn secret_variables(&self) -> Vec<&str> {
        match &self.password {
            FtpPassword::Env(v) => vec![v.as_str()],
            FtpPassword::Value(_) => Vec::new(),
        }
    }
}
