//! The `mdm` service: configuration, the composition root and the HTTP API.
//!
//! Code map:
//! - `config`: typed configuration from a TOML file and `MDM_*` variables;
//! - `compose`: the one place that picks the event-store adapter;
//! - `sources`: loading and validating the source-system definitions file;
//! - `http`: the axum router (only `/health` so far);
//! - `main.rs`: the `mdm` CLI (`serve`, `bench store`).

pub mod compose;
pub mod config;
pub mod http;
pub mod sources;
