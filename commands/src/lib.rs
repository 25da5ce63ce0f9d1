//! Command handlers: the application layer between the API and the event
//! store. A handler loads the streams it needs through the
//! `mdm_store::EventStore` port, asks the pure domain what to do, and appends
//! the resulting events to one stream with an expected version.
//!
//! Code map:
//! - `input`: streaming readers that split CSV, JSON/NDJSON and Debezium
//!   inputs into records, keeping each record's bytes verbatim;
//! - `ingest`: the ingest pipeline (map, pseudonymise, key, decide, seal,
//!   append) shared by the HTTP endpoints, `mdm import` and the pull adapter;
//! - `import`: streaming a file of any size through the pipeline in batches;
//! - `pull`: asking a `rest_pull` source per customer (rate-limited, with
//!   retries) and ingesting its answers.
//!
//! The resolver and steward commands land here next (issue 4).
pub mod import;
pub mod ingest;
pub mod input;
pub mod opened;
pub mod pull;
pub mod resolver;
pub mod train;
