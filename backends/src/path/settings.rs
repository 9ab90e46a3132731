//! A `path` destination's keys, as written in the configuration file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::settings::{Invalid, Place, Settings};

/// `[destination.NAME]` with `kind = "path"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSettings {
    path: PathBuf,
}

impl Settings for PathSettings {
    /// The destination's root folder, absolute.
    type Options = PathBuf;

    fn resolve(self, place: &Place<'_>) -> Result<PathBuf, Invalid> {
        if self.path.as_os_str().is_empty() {
            return Err(Invalid::at("path", "the path cannot be empty"));
        }
        Ok((place.resolve_path)(&self.path))
    }
}
