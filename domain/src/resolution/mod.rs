//! Resolution: the decisions about which source records are one customer.
//!
//! - `events`: the decision events (a public contract);
//! - `engine`: the resolver's pure state and rules (link, merge, move,
//!   households, steward commands and their constraints).

pub mod engine;
pub mod events;

#[cfg(test)]
mod engine_tests;
