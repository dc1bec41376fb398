//! The cell operator: a `Cell` custom resource becomes a serving cell (a
//! one-pod StatefulSet with its shard volume, a headless Service and a
//! ConfigMap rendered from its template), registered with the control plane;
//! deleting it drains its tenants through the control plane first.
//!
//! `crd` is the resource, `render` what it becomes, `status` how its status
//! is judged, `admin` the control plane's admin API, `controller` the
//! reconciler, `run` the process around it.

pub mod admin;
pub mod config;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod render;
pub mod run;
pub mod status;

#[cfg(test)]
mod render_tests;
