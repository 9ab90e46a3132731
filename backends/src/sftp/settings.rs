//! An `sftp` destination's keys, as written in the configuration file.

use std::path::PathBuf;

use serde::Deserialize;

use super::{SftpAuth, SftpOptions};
use crate::settings::{Invalid, OneOf, Place, Settings, check_host, one_of, timeout};
use crate::units::HumanDuration;

/// `[destination.NAME]` with `kind = "sftp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpSettings {
    host: String,
    port: Option<u16>,
    user: String,
    key_file: Option<PathBuf>,
    key_passphrase_env: Option<String>,
    password_env: Option<String>,
    known_hosts: Option<PathBuf>,
    path: String,
    timeout: Option<HumanDuration>,
}

impl Settings for SftpSettings {
    type Options = SftpOptions;

    fn resolve(self, place: &Place<'_>) -> Result<SftpOptions, Invalid> {
        check_host(&self.host, "vault.example.net")?;
        if self.user.trim().is_empty() || self.user.contains('\0') {
            return Err(Invalid::at("user", "the user cannot be empty"));
        }
        if self.path.contains('\0') {
            return Err(Invalid::at("path", "the path cannot contain a NUL byte"));
        }
        if self.key_file.is_none()
            && self.password_env.is_some()
            && self.key_passphrase_env.is_some()
        {
            return Err(Invalid::at(
                "key_passphrase_env",
                "key_passphrase_env goes with key_file, not password_env",
            ));
        }
        let auth = match one_of(
            ("key_file", self.key_file),
            ("password_env", self.password_env),
            "an sftp destination needs key_file (a private key) or password_env (the name of an environment variable holding the password)",
        )? {
            OneOf::First(file) => SftpAuth::KeyFile {
                path: (place.resolve_path)(&file),
                passphrase_env: self.key_passphrase_env,
            },
            OneOf::Second(env) => SftpAuth::PasswordEnv { env },
        };
        let known_hosts = match self.known_hosts {
            Some(f) => (place.resolve_path)(&f),
            None => match std::env::var_os("HOME") {
                Some(home) if !home.is_empty() => PathBuf::from(home).join(".ssh/known_hosts"),
                _ => {
                    return Err(Invalid::at(
                        "known_hosts",
                        "HOME is not set, so there is no ~/.ssh/known_hosts: set known_hosts to the file holding the server's host key",
                    ));
                }
            },
        };
        Ok(SftpOptions {
            host: self.host,
            port: self.port.unwrap_or(22),
            user: self.user,
            auth,
            known_hosts,
            root: self.path,
            timeout: timeout(self.timeout),
        })
    }
}

impl SftpOptions {
    /// The environment variables these options read secrets from.
    pub fn secret_variables(&self) -> Vec<&str> {
        match &self.auth {
            SftpAuth::KeyFile {
                passphrase_env: Some(v),
                ..
            }
            | SftpAuth::PasswordEnv { env: v } => vec![v.as_str()],
            _ => Vec::new(),
        }
    }
}
