//! Router configuration: raw YAML, validated with every error naming its field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::config::{ConfigError, ConfigErrors, read_yaml};
use common::workers::DEFAULT_HEADER_READ_TIMEOUT;
use control_plane::model::Keys;
use control_plane::store::EtcdSettings;
use control_plane::store::RawEtcd;
use serde::Deserialize;

use crate::upstreams::OutlierSettings;

/// Connecting to a cell on the same network takes well under this; a cell
/// that cannot accept in time is treated as down and the next one is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Whole-request deadline, across every cell tried; LLM answers can be slow.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    etcd: RawEtcd,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    /// A client must send a request's headers within this, or its
    /// connection is closed: slow clients cannot hold connections open.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    header_read_timeout: Duration,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    /// Requests this router sends to one cell at once; beyond it the next
    /// replica is tried, and when all are full the request is shed (503).
    #[serde(default = "default_max_in_flight")]
    max_in_flight_per_cell: usize,
    /// Tenant requests this router works on at once; beyond it new ones are
    /// shed (503) at once instead of queueing until every request is late.
    #[serde(default = "default_max_in_flight_total")]
    max_in_flight: usize,
    #[serde(default)]
    outliers: RawOutliers,
    /// Where hints for replicas that are down are kept and where rate-limit
    /// buckets are shared between routers. Without it, a write to a tenant
    /// whose replica is down is refused (503) and limits are per router.
    #[serde(default)]
    redis: Option<RawRedis>,
    /// Threads that serve tenant connections, each with a runtime of its
    /// own; by default one per core.
    #[serde(default)]
    workers: Option<usize>,
    /// Where spans are exported (OTLP); the `OTEL_*` variables override it.
    #[serde(default)]
    telemetry: common::telemetry::RawTelemetry,
}

/// Passive outlier detection; see `upstreams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutliers {
    consecutive_failures: u32,
    #[serde(with = "humantime_serde")]
    base_ejection: Duration,
    #[serde(with = "humantime_serde")]
    max_ejection: Duration,
}

impl Default for RawOutliers {
    fn default() -> Self {
        let d = OutlierSettings::default();
        Self {
            consecutive_failures: d.consecutive_failures,
            base_ejection: d.base_ejection,
            max_ejection: d.max_ejection,
        }
    }
}

pub const DEFAULT_MAX_IN_FLIGHT_PER_CELL: usize = 1024;

fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT_PER_CELL
}

pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

fn default_max_in_flight_total() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub etcd: EtcdSettings,
    pub keys: Keys,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_in_flight_per_cell: usize,
    pub max_in_flight: usize,
    pub outliers: OutlierSettings,
    pub redis_url: Option<String>,
    pub workers: usize,
    pub telemetry: common::telemetry::TelemetrySettings,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::validate(read_yaml(path)?)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut e = ConfigErrors::new();
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            e.push(
                "listen",
                format!(
                    "must be an address like 127.0.0.1:8080, got {:?}",
                    raw.listen
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let (etcd, keys) = raw.etcd.validate("etcd", &mut e);
        e.check(
            !raw.connect_timeout.is_zero(),
            "connect_timeout",
            "must be greater than zero",
        );
        e.check(
            raw.request_timeout > raw.connect_timeout,
            "request_timeout",
            "must be longer than connect_timeout",
        );
        e.check(
            !raw.header_read_timeout.is_zero(),
            "header_read_timeout",
            "must be greater than zero",
        );
        e.check(
            raw.max_body_bytes >= 1024,
            "max_body_bytes",
            "must be at least 1024",
        );
        e.check(
            raw.max_in_flight >= 1,
            "max_in_flight",
            "must be at least 1",
        );
        e.check(
            raw.max_in_flight_per_cell >= 1,
            "max_in_flight_per_cell",
            "must be at least 1",
        );
        e.check(
            raw.outliers.consecutive_failures >= 1,
            "outliers.consecutive_failures",
            "must be at least 1",
        );
        e.check(
            !raw.outliers.base_ejection.is_zero()
                && raw.outliers.max_ejection >= raw.outliers.base_ejection,
            "outliers.max_ejection",
            "base_ejection must be positive and max_ejection at least base_ejection",
        );
        let workers = common::workers::count_from_config(raw.workers, &mut e);
        let telemetry = raw.telemetry.validate("telemetry", &mut e);
        e.finish(Config {
            telemetry,
            listen,
            etcd,
            keys,
            connect_timeout: raw.connect_timeout,
            request_timeout: raw.request_timeout,
            header_read_timeout: raw.header_read_timeout,
            max_body_bytes: raw.max_body_bytes,
            max_in_flight_per_cell: raw.max_in_flight_per_cell,
            max_in_flight: raw.max_in_flight,
            outliers: OutlierSettings {
                consecutive_failures: raw.outliers.consecutive_failures,
                base_ejection: raw.outliers.base_ejection,
                max_ejection: raw.outliers.max_ejection,
            },
            redis_url: raw.redis.map(|r| r.url),
            workers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, String> {
        let raw: RawConfig = common::config::parse_yaml(yaml)?;
        Config::validate(raw).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "listen: 127.0.0.1:0\netcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n";

    #[test]
    fn a_minimal_config_serves_with_a_worker_per_core() {
        let config = parse(MINIMAL).unwrap();
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(config.workers, cores);
        assert_eq!(config.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(config.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
    }

    #[test]
    fn reports_every_bad_field() {
        let yaml = "listen: nope\netcd: {endpoints: [\"http://127.0.0.1:2379\"]}\nworkers: 0\nmax_in_flight: 0\nmax_body_bytes: 10\nheader_read_timeout: 0s\n";
        let err = parse(yaml).unwrap_err();
        for field in [
            "listen",
            "workers",
            "max_in_flight",
            "max_body_bytes",
            "header_read_timeout",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
        assert!(err.contains("between 1 and 256"), "{err}");
    }
}
