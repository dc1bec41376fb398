//! Pieces every service of the system shares and that belong to none of them:
//! config loading with field-named errors, the cell templates, logs and OTLP traces, the readiness
//! announcement that harnesses wait on, and the names of the headers that carry
//! a request's identity from router to cell to provider, and the worker
//! threads both router and cell serve their connections on.

pub mod config;
pub mod headers;
pub mod metrics;
pub mod process;
pub mod signing;
pub mod telemetry;
pub mod template;
pub mod workers;
