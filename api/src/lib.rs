//! The `mdm` service: configuration, the composition root and the HTTP API.
//!
//! Code map:
//! - `config`: typed configuration from a TOML file and `MDM_*` variables;
//! - `compose`: the one place that picks the event-store adapter;
//! - `sources`: loading and validating the source-system definitions file;
//! - `http`: the axum router: health and ingest, problem+json errors;
//! - `datagen`: `mdm datagen`, the synthetic seven-system data set with its ground truth;
//! - `bench_ingest`: `mdm bench ingest`, bulk capture against plain SQLite;
//! - `main.rs`: the `mdm` CLI (`serve`, `import`, `datagen`, `sources check`, `bench`).

pub mod bench_ingest;
pub mod bench_match;
pub mod compose;
pub mod config;
pub mod datagen;
pub mod http;
pub mod sources;
