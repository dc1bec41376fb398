//! Two-stage configuration: a raw serde struct read from YAML with unknown
//! fields rejected, then a `validate()` into typed config that reports every
//! problem at once, each naming the exact field (`cells[2].cache.threshold …`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

/// Exit code for a configuration error (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// The loaded config, or its errors on stderr and exit code 64: what every
/// binary does with its `--config` file.
pub fn or_exit<T>(loaded: Result<T, ConfigError>) -> T {
    loaded.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(EXIT_CONFIG)
    })
}

/// Every problem found in one configuration file.
#[derive(Debug, Default)]
pub struct ConfigErrors {
    problems: Vec<String>,
}

impl ConfigErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the field at `path` is wrong, and how.
    pub fn push(&mut self, path: impl fmt::Display, problem: impl fmt::Display) {
        self.problems.push(format!("{path} {problem}"));
    }

    /// Checks a condition, recording `problem` for `path` when it fails.
    pub fn check(&mut self, ok: bool, path: impl fmt::Display, problem: impl fmt::Display) {
        if !ok {
            self.push(path, problem);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid(self))
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config is invalid:\n{0}")]
    Invalid(ConfigErrors),
}

/// Reads a YAML file into the raw config type `T`.
pub fn read_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_yaml(&text).map_err(|message| ConfigError::Parse {
        path: path.display().to_string(),
        message,
    })
}

/// Parses YAML text; the error names the field's path (`vector.hnsw_m`) and
/// its line.
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = match inner.location() {
            Some(loc) => format!("line {} column {}: ", loc.line(), loc.column()),
            None => String::new(),
        };
        if path.is_empty() || path == "." {
            format!("{at}{inner}")
        } else {
            format!("{at}{path}: {inner}")
        }
    })
}

/// A secret whose Debug and Display never show it.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing does not leak the token.
    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*****")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        listen: String,
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse_yaml::<Raw>("listen: a\nlisten_typo: b\n").unwrap_err();
        assert!(err.contains("listen_typo"), "{err}");
    }

    #[test]
    fn all_problems_reported_at_once() {
        let mut errors = ConfigErrors::new();
        errors.check(false, "cells[0].region", "must not be empty");
        errors.check(true, "ok", "never");
        errors.check(false, "cache.threshold", "must be in (0, 1]");
        let err = errors.finish(()).unwrap_err().to_string();
        assert!(err.contains("cells[0].region must not be empty"), "{err}");
        assert!(err.contains("cache.threshold must be in (0, 1]"), "{err}");
    }
}
