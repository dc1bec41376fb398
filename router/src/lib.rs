//! The global router: authenticates tenants, places each on cells with a
//! consistent-hash ring, and proxies to the first cell that answers.
//! Modules follow the request path: `common::workers` (connections) → `auth` →
//! `placement` → `proxy`.

pub mod auth;
pub mod cell_client;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod placement;
pub mod proxy;
pub mod redis_conn;
pub mod replication;
pub mod server;
pub mod signing_key;
pub mod upstreams;
