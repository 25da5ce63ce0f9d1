//! Projections: read models built from the global log.
//!
//! Each projection follows the log from its own checkpoint through
//! `mdm_store::EventStore::subscribe_all`, writes a batch of rows and its
//! checkpoint in one transaction, and owns the read functions of its tables
//! (the API never writes SQL). The runner and the read models land here with
//! the projections issue (issue 5).
