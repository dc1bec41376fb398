//! Test harness: real `etcd`, `redis-server` and PostgreSQL on free ports with temp data
//! dirs, and the project's real binaries, each killed when dropped. Readiness
//! is waited for (a health endpoint, a `READY` line on stdout), never slept for.

pub mod cluster;
pub mod fake_kube;
pub mod fleet;
pub mod operator_fixture;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod terraform;
pub mod webdriver;

pub use cluster::{Cluster, ClusterOptions};
pub use process::{Etcd, Redis, RedisCluster, Service};

/// Polls a real condition every 100 ms until it holds; fails the test,
/// naming `what`, after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The value of one series in a Prometheus exposition, `series` being its
/// name and labels exactly as exposed (`name{a="x",b="y"}`); 0 when absent.
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
