//! A secret (password, access key, SAS token) that cannot leak through
//! `Debug`, `Display` or serde: all three print `***`. The value is reached
//! only through [`Secret::expose`], so every use is greppable.

use std::fmt;

/// A secret value, printed as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Keeps `value` secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call it only where the protocol needs the value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The secret in environment variable `var` (`what` names it in the error):
/// read when connecting, so a missing variable shows as an Unauthenticated
/// error naming it, with the cron hint, never as a panic at start.
pub(crate) fn from_env(var: &str, what: &str) -> crate::Result<Secret> {
    match std::env::var(var) {
        // As given: a password may end in a space.
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(crate::Error::new(
            crate::ErrorKind::Unauthenticated,
            format!("environment variable {var} ({what}) is not set"),
        )
        .with_hint(format!(
            "set {var} for offsite (cron passes almost no environment: set it in the crontab or the service unit's Environment=/EnvironmentFile=)"
        ))),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
