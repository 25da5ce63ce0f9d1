//! Command handlers: the application layer between the API and the event
//! store. A handler loads the streams it needs through the
//! `mdm_store::EventStore` port, asks the pure domain what to do, and appends
//! the resulting events to one stream with an expected version.
//!
//! Ingestion, the resolver and steward commands land here (issues 3 and 4);
//! the foundation issue only fixes the crate's place in the workspace.
