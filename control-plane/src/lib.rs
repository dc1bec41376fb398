//! The control plane: the etcd model every component agrees on, the client
//! surface that router and cells embed (`store`, `watch`, `registration`), and
//! the control-plane service's own internals (`admin`, `dashboard`, `service`).
//!
//! Router and cells must use only `model`, `store`, `watch` and
//! `registration`; `admin`, `dashboard`, `service`, `leader` and `placement` are the
//! server's internals.

pub mod admin;
pub mod dashboard;
pub mod leader;
pub mod model;
pub mod placement;
pub mod registration;
pub mod service;
pub mod sizing;
pub mod store;
pub mod watch;
