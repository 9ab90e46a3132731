//! How a destination kind reads its own keys from the configuration file.
//!
//! Each backend module owns a `…Settings` struct: its keys as written
//! (serde, unknown keys refused) and their validation (names, endpoints,
//! tiers, limits), resolved into the options its backend takes. A problem
//! is reported as [`Invalid`]: the key below the destination's table and
//! what to write instead. The application's configuration reader only
//! locates the file, line and full key path and assembles the result, so
//! adding a destination kind touches its module plus one arm there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::units::HumanDuration;

/// How long a network destination may take to connect or answer one call, unless `timeout` says.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(60);

/// One destination kind's keys, as written in its `[destination.NAME]` table.
pub trait Settings: DeserializeOwned {
    /// What the kind's backend is built from.
    type Options;

    /// Checks the keys and resolves them into the backend's options.
    fn resolve(self, place: &Place<'_>) -> Result<Self::Options, Invalid>;
}

/// What a kind's settings may need from around the table.
pub struct Place<'a> {
    /// Makes a path written in the file absolute (a relative one is taken
    /// from the configuration file's folder).
    pub resolve_path: &'a dyn Fn(&Path) -> PathBuf,
    /// The local staging folder (the Glacier vault keeps its catalog there).
    pub staging_dir: &'a Path,
}

/// A key whose value cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key path below the destination's table (`["object_lock", "mode"]`);
    /// empty for the table itself (a key that is missing).
    pub key: Vec<&'static str>,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl Invalid {
    /// A problem with `key`.
    pub fn at(key: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            key: vec![key],
            message: message.into(),
        }
    }

    /// A problem with the table as a whole (a required key is missing).
    pub fn table(message: impl Into<String>) -> Invalid {
        Invalid {
            key: Vec::new(),
            message: message.into(),
        }
    }

    /// The same problem, one table further down (`under("object_lock")`).
    pub fn under(mut self, table: &'static str) -> Invalid {
        self.key.insert(0, table);
        self
    }
}

/// A `timeout` key's value, or [`DEFAULT_NETWORK_TIMEOUT`].
pub fn timeout(value: Option<HumanDuration>) -> Duration {
    value.map(|t| t.0).unwrap_or(DEFAULT_NETWORK_TIMEOUT)
}

/// An `endpoint` must be an http or https URL; `example` shows one.
pub fn check_endpoint(value: Option<&str>, example: &str) -> Result<(), Invalid> {
    match value {
        Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => Err(Invalid::at(
            "endpoint",
            format!("invalid endpoint {e:?}: write a URL like {example}"),
        )),
        _ => Ok(()),
    }
}

/// `value` of `key` must be one of `allowed`, as the configuration writes them.
pub fn check_choice(
    key: &'static str,
    what: &str,
    value: &str,
    allowed: &[&str],
) -> Result<(), Invalid> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(Invalid::at(
        key,
        format!(
            "unknown {what} {value:?}; use one of {}",
            allowed.join(", ")
        ),
    ))
}

/// A host name or address: not empty, no NUL, slash or space.
pub fn check_host(host: &str, example: &str) -> Result<(), Invalid> {
    if host.trim().is_empty() || host.contains(['\0', '/', ' ']) {
        return Err(Invalid::at(
            "host",
            format!("invalid host {host:?}: write a name or an address, like \"{example}\""),
        ));
    }
    Ok(())
}

/// Which of two alternative keys a table gives.
pub enum OneOf<A, B> {
    /// The first key, with its value.
    First(A),
    /// The second key, with its value.
    Second(B),
}

/// Exactly one of two alternative keys: both is an error at the second,
/// neither is `missing` at the table.
pub fn one_of<A, B>(
    (first, a): (&'static str, Option<A>),
    (second, b): (&'static str, Option<B>),
    missing: &str,
) -> Result<OneOf<A, B>, Invalid> {
    match (a, b) {
        (Some(a), None) => Ok(OneOf::First(a)),
        (None, Some(b)) => Ok(OneOf::Second(b)),
        (Some(_), Some(_)) => Err(Invalid::at(
            second,
            format!("give {first} or {second}, not both"),
        )),
        (None, None) => Err(Invalid::table(missing)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_urls() {
        assert_eq!(check_endpoint(None, "x"), Ok(()));
        assert_eq!(check_endpoint(Some("https://a"), "x"), Ok(()));
        let e = check_endpoint(Some("s3.example.net"), "\"https://b\"").expect_err("no scheme");
        assert_eq!(e.key, ["endpoint"]);
        assert!(e.message.contains("\"https://b\""), "{}", e.message);
    }

    #[test]
    fn one_of_two_keys() {
        assert!(matches!(
            one_of(("a", Some(1)), ("b", None::<u8>), "m"),
            Ok(OneOf::First(1))
        ));
        let both = one_of(("a", Some(1)), ("b", Some(2)), "m")
            .err()
            .expect("both given");
        assert_eq!(both.key, ["b"]);
        assert_eq!(both.message, "give a or b, not both");
        let neither = one_of(("a", None::<u8>), ("b", None::<u8>), "m")
            .err()
            .expect("neither given");
        assert!(neither.key.is_empty());
        assert_eq!(neither.under("t").key, ["t"]);
    }
}
