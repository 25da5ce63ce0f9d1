//! Resolution: the decisions about which source records are one customer.
//!
//! - `events`: the decision events (a public contract);
//! - `engine`: the resolver's pure state and rules (link, merge, move,
//!   households, steward commands and their constraints);
//! - `membership`: a pure fold of decisions into records per token and
//!   token status (what an "as of" view of a customer folds).

pub mod engine;
pub mod events;
pub mod membership;

#[cfg(test)]
mod engine_tests;
