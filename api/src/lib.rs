//! The `mdm` service: configuration, the composition root and the HTTP API.
//!
//! Code map:
//! - `config`: typed configuration from a TOML file and `MDM_*` variables;
//! - `compose`: the one place that picks the event-store adapter;
//! - `sources`: loading and validating the source-system definitions file;
//! - `http`: the axum router: health and ingest, problem+json errors;
//! - `datagen`: `mdm datagen`, the synthetic seven-system data set with its ground truth;
//! - `demo`: `mdm demo`, a fresh folder with the sample data ingested, API keys and curl commands;
//! - `bench_ingest`: `mdm bench ingest`, bulk capture against plain SQLite;
//! - `webhooks`: webhook subscribers, signed delivery with retries and dead letters;
//! - `privacy`: the privacy request ledger's commands (CCPA erasure and
//!   right-to-know requests), shared by the HTTP API and `mdm privacy`;
//! - `privacy_verify`: `mdm privacy verify`, the proof that an erasure left
//!   nothing of the person (read models, a fresh rebuild, log, keys, logs);
//! - `main.rs`: the `mdm` CLI (`serve`, `import`, `datagen`, `sources check`, `bench`).

pub mod auth;
// `mdm backup`: a consistent copy of the embedded store while it serves.
pub mod backup;
pub mod bench_api;
pub mod bench_erasure;
pub mod bench_ingest;
pub mod bench_match;
pub mod bench_projections;
pub mod compose;
pub mod config;
pub mod console;
pub mod datagen;
// `mdm demo` (issue 6): sample data ingested, keys and curl commands printed.
pub mod demo;
pub mod http;
pub mod privacy;
// `mdm privacy verify`: the erasure proof.
pub mod privacy_verify;
pub mod sources;
// Feed and webhooks (issue 6): webhook delivery.
pub mod webhooks;
