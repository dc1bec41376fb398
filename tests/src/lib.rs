//! Test harness: real `etcd` and `redis-server` on free ports with temp data
//! dirs, and the project's real binaries, each killed when dropped. Readiness
//! is waited for (a health endpoint, a `READY` line on stdout), never slept for.

pub mod cluster;
pub mod process;

pub use cluster::{Cluster, ClusterOptions};
pub use process::{Etcd, Redis, RedisCluster, Service};
