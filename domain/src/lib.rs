//! The pure domain of the MDM.
//!
//! Everything here is synchronous and does no I/O: no database, no network,
//! no clock, no random ids. Time and ids come in as arguments, so every rule
//! can be tested from a table of cases and every decision replays exactly.
//! `domain/clippy.toml` bans the clock and random ids to keep it that way.
//!
//! Code map:
//! - `metadata`: the metadata every event carries (who, when, why, which
//!   schema version) and deterministic event ids for idempotent appends.
//! - `source`: source definitions (the serde types of each system's mapping
//!   and their validation) and `map_record`, which maps one source record to
//!   canonical attributes.
//! - `source_record`: the source-record events (captured, changed,
//!   retracted), their sealed personal content and the pure decision whether
//!   an incoming record changes anything.
//! - `matching`: normalize, features, blocking keys, comparisons with
//!   levels, the Fellegi-Sunter model with its explanations, EM training.
//! - `resolution`: the decision events, the resolver's engine (which records
//!   are one customer, households, steward commands) and `membership`, the
//!   plain fold of decisions into record-to-customer assignments (as-of).
//! - `privacy`: the privacy request ledger (erasure and right-to-know
//!   requests, due dates with one extension, notices per recipient).
//! - `survivorship`: a customer's golden record from its source records,
//!   under a versioned rule set, with the lineage of every value.

pub mod matching;
pub mod metadata;
pub mod privacy;
pub mod resolution;
pub mod source;
pub mod source_record;
pub mod survivorship;
