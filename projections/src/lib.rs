//! Projections: read models built from the global log.
//!
//! Each projection follows the log from its own checkpoint, writes a batch
//! of rows and its checkpoint in one transaction, and owns the tables it
//! writes and the queries that read them (the API never writes SQL). The
//! tables live in PostgreSQL (schema `mdm_read`) or, embedded, in a SQLite
//! file beside the event log; they are disposable: dropping them and
//! replaying the log rebuilds them exactly.
//!
//! Code map:
//! - `db.rs`: the read-model pool (`sqlx::Any` over PostgreSQL or SQLite),
//!   the dialects and multi-row statement helpers;
//! - `runner.rs`: the `Projection` trait, checkpoints, the runner that
//!   catches up then follows the log, its supervisor, status and lag, and
//!   the rebuild beside the live tables with an atomic swap;
//! - `customer.rs`: golden records (survivorship), attribute lineage,
//!   cross-references, households, search;
//! - `source_record.rs`: source records as received, every version, their
//!   customers over time;
//! - `decision.rs`: decision history per customer and the review queue;
//! - `ledger.rs`: the privacy request ledger (requests, due dates,
//!   notices per recipient), read through `ledger_query.rs`;
//! - `query.rs`: the read functions the API and the CLI use;
//! - `changes.rs`: the customer change log (written by `customer.rs`), its
//!   change types, cursors and reads, for the feed and webhooks;
//! - `as_of.rs`: a customer as it was at a time or log position, folded
//!   from the log itself.
//!
//! Architecture invariants:
//! - A batch's rows and its checkpoint commit together or not at all.
//! - Projections are deterministic functions of the log and their
//!   configuration: no wall clock or random id reaches a row, so two
//!   replays give identical tables.
//! - An event whose data key is gone projects as erased: no personal data
//!   is written, and the runner does not stop.

pub mod as_of;
pub mod changes;
pub mod customer;
pub mod db;
pub mod decision;
pub mod ledger;
pub mod ledger_query;
pub mod query;
pub mod runner;
pub mod source_record;

use std::sync::Arc;

pub use customer::{CustomerSettings, CustomersProjection};
pub use db::{Dialect, ReadDb};
pub use decision::DecisionsProjection;
pub use ledger::LedgerProjection;
pub use runner::{Projection, ProjectionError, Runner};
pub use source_record::SourceRecordsProjection;

/// Every projection of the product, in the order status lists them.
pub fn all(settings: CustomerSettings) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(CustomersProjection::new(settings)),
        Arc::new(SourceRecordsProjection),
        Arc::new(DecisionsProjection),
        Arc::new(LedgerProjection),
    ]
}
