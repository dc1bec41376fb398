//! The operator's config file: where the control plane's admin API is, the
//! namespace whose Cells it reconciles, and what every cell it creates gets
//! (image, port, etcd and Redis sections, prices).

use std::net::SocketAddr;
use std::path::Path;

use common::config::{ConfigError, ConfigErrors, Secret, read_yaml};
use serde::Deserialize;

/// The port a cell listens on inside its pod.
pub const DEFAULT_CELL_PORT: u16 = 8080;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// `/healthz`, `/readyz` and `/metrics`.
    listen: String,
    /// The namespace whose Cells are reconciled (the operator's own).
    namespace: String,
    admin: RawAdmin,
    cells: RawCells,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    url: String,
    /// Environment variable holding the operator token.
    token_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCells {
    image: String,
    #[serde(default = "default_cell_port")]
    port: u16,
    #[serde(default = "default_cluster_domain")]
    cluster_domain: String,
    /// StorageClass of the shard volumes; by default the cluster's default.
    #[serde(default)]
    storage_class: Option<String>,
    /// Copied into every cell's config as they are.
    etcd: serde_yaml::Value,
    redis: serde_yaml::Value,
    #[serde(default)]
    prices: Option<serde_yaml::Value>,
}

fn default_cell_port() -> u16 {
    DEFAULT_CELL_PORT
}

fn default_cluster_domain() -> String {
    "cluster.local".to_owned()
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub namespace: String,
    pub admin_url: String,
    pub admin_token: Secret,
    pub cells: CellDefaults,
}

/// What every cell the operator creates shares.
#[derive(Debug, Clone, PartialEq)]
pub struct CellDefaults {
    pub image: String,
    pub port: u16,
    pub cluster_domain: String,
    pub storage_class: Option<String>,
    pub etcd: serde_yaml::Value,
    pub redis: serde_yaml::Value,
    pub prices: Option<serde_yaml::Value>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = read_yaml(path)?;
        let mut e = ConfigErrors::new();
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            e.push(
                "listen",
                format!("{:?} is not a socket address", raw.listen),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        });
        e.check(!raw.namespace.is_empty(), "namespace", "must not be empty");
        e.check(
            raw.admin.url.starts_with("http://") || raw.admin.url.starts_with("https://"),
            "admin.url",
            format!("{:?} is not an http(s) URL", raw.admin.url),
        );
        let admin_token = match std::env::var(&raw.admin.token_env) {
            Ok(token) if !token.is_empty() => Secret::new(token),
            _ => {
                e.push(
                    "admin.token_env",
                    format!("environment variable {} is not set", raw.admin.token_env),
                );
                Secret::new("")
            }
        };
        e.check(
            !raw.cells.image.is_empty(),
            "cells.image",
            "must not be empty",
        );
        e.check(raw.cells.port != 0, "cells.port", "must not be 0");
        e.check(
            raw.cells.etcd.is_mapping(),
            "cells.etcd",
            "must be a cell config's etcd section",
        );
        e.check(
            raw.cells.redis.is_mapping(),
            "cells.redis",
            "must be a cell config's redis section",
        );
        e.finish(Config {
            listen,
            namespace: raw.namespace,
            admin_url: raw.admin.url.trim_end_matches('/').to_owned(),
            admin_token,
            cells: CellDefaults {
                image: raw.cells.image,
                port: raw.cells.port,
                cluster_domain: raw.cells.cluster_domain,
                storage_class: raw.cells.storage_class,
                etcd: raw.cells.etcd,
                redis: raw.cells.redis,
                prices: raw.cells.prices,
            },
        })
    }
}
