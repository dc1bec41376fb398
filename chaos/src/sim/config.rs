//! Simulator configuration (YAML).

use common::config::{ConfigError, ConfigErrors, read_yaml};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Path prefix and region name, e.g. `azure-eastus`.
    pub name: String,
    /// Deployments this region serves; a request for another gets Azure's 404.
    pub deployments: Vec<String>,
    /// Faults from the start; replaceable at run time.
    #[serde(default)]
    pub faults: super::FaultProfile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    /// When set, requests must present this key in `api-key` (or as a bearer token).
    #[serde(default)]
    pub api_key: Option<String>,
    pub regions: Vec<RegionConfig>,
    /// Service-account key files (as Google issues them) whose signed token
    /// requests `/oauth2/token` accepts; only their public halves are used.
    #[serde(default)]
    pub service_account_key_files: Vec<std::path::PathBuf>,
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let raw: Config = read_yaml(path)?;
        let mut errors = ConfigErrors::new();
        errors.check(
            raw.listen.parse::<std::net::SocketAddr>().is_ok(),
            "listen",
            format!(
                "must be an address like 127.0.0.1:8200, got {:?}",
                raw.listen
            ),
        );
        errors.check(
            !raw.regions.is_empty(),
            "regions",
            "must list at least one region",
        );
        for (i, r) in raw.regions.iter().enumerate() {
            errors.check(
                !r.name.is_empty()
                    && r.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                format!("regions[{i}].name"),
                "must be non-empty letters, digits and '-'",
            );
            errors.check(
                !r.deployments.is_empty(),
                format!("regions[{i}].deployments"),
                "must list at least one deployment",
            );
            for problem in r.faults.problems(&format!("regions[{i}].faults")) {
                errors.push(problem, "");
            }
        }
        errors.finish(raw)
    }
}
