//! Configuration: the TOML file, `FRESHET_<SECTION>__<KEY>` environment overrides, and the
//! checks that turn a parsed file into a config the rest of freshet can trust.
//!
//! Every error names the key it is about (`collections[0].embedding.provider: ...`), because
//! the person reading it is looking at a config file, not at our types.
//!
//! Split along its seams: [`types`] (the sections and their defaults), `load` (reading the
//! file, `FRESHET_*` overrides, relative paths) and `validate` (the checks).

mod load;
mod types;
mod validate;

use std::path::PathBuf;

pub use types::*;
pub(crate) use validate::check_http_url;

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "FRESHET_";

/// A config problem, always naming the key (or the file) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The path as given.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A key has the wrong type, an unknown name, or an invalid value.
    #[error("{key}: {message}")]
    Key {
        /// The dotted path of the key, e.g. `collections[0].format`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
