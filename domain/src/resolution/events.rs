//! Decision events: what the resolver and stewards decided about which
//! source records are one customer.
//!
//! Every decision is one event in the single `resolution` stream, appended
//! by the single-writer resolver (steward commands go through it too). One
//! stream gives the decisions one order that replays exactly, makes a
//! multi-customer decision (a merge) one atomic append, lets the resolver
//! append a whole batch in one write, and fences a second resolver by the
//! stream's expected version. Decisions name records by their pseudonymous
//! stream and customers by token: no personal data, so erasure never has to
//! touch them. The one value a decision carries, a steward's override, is
//! sealed under a data key of its own ([`SealedValue`]), so destroying that
//! key erases it like a source record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::matching::model::Explanation;

/// The stream holding every decision.
pub const RESOLUTION_STREAM: &str = "resolution";

/// Payload schema version of every decision event.
pub const SCHEMA_VERSION: u32 = 1;

/// What caused a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// A source-record event at this global position.
    Source {
        stream: String,
        position: u64,
        event_id: Uuid,
    },
    /// A steward command with this id.
    Command { command_id: Uuid },
}

/// Who decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum DecidedBy {
    Resolver,
    Steward(String),
    /// A compliance user (erasure).
    Compliance(String),
}

/// A review item opened for stewards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub review_id: Uuid,
    /// The record that prompted it and its customer now.
    pub record: String,
    pub token: Uuid,
    /// The customer it might belong to instead.
    pub candidate: Uuid,
    /// The candidate record that scored best.
    pub candidate_record: String,
    pub explanation: Explanation,
}

/// A steward's override value, sealed by the service (AES-256-GCM under the
/// data key `key_id` of the key store, subject `override:<override id>`,
/// bound to that subject). The domain never sees the plaintext: it only
/// records and routes it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    pub key_id: Uuid,
    pub sealed: String,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SealedValue {
    /// The key-store subject (and the AEAD binding) of an override's value.
    pub fn subject(override_id: Uuid) -> String {
        format!("override:{override_id}")
    }
}

/// A source record an erasure kept under a legal exception: its key stays,
/// it leaves the customer and is never matched again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retained {
    pub record: String,
    /// The exception, as the request named it (e.g. "CCPA 1798.105(d)(8):
    /// legal obligation").
    pub exception: String,
}

/// A customer's household after a decision, when it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdChange {
    pub token: Uuid,
    /// `None`: the customer left its household and has no known dwelling.
    pub household: Option<Uuid>,
    /// Why: the customer's current records give this dwelling (a keyed
    /// fingerprint is not stored; the reason is the rule's name).
    pub reason: String,
}

/// The decision itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Decision {
    /// A new customer with a fresh token, holding one record.
    CustomerCreated {
        token: Uuid,
        record: String,
        /// The best candidate that scored below the link threshold, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nearest: Option<Explanation>,
    },
    /// A record joined an existing customer.
    RecordLinked {
        token: Uuid,
        record: String,
        /// How the record scored against the customer (absent when forced by
        /// a steward).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        explanation: Option<Explanation>,
        /// The best-scoring member of the customer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matched_record: Option<String>,
        /// Linked by a steward against the score.
        #[serde(default)]
        forced: bool,
    },
    /// Customers became one: the absorbed tokens redirect to the survivor.
    CustomersMerged {
        survivor: Uuid,
        absorbed: Vec<Uuid>,
        /// The record that bridged them (automatic merges).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<String>,
        /// Per absorbed customer, why (automatic merges).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        explanations: Vec<Explanation>,
    },
    /// A changed record now fits another customer better.
    RecordMoved {
        record: String,
        from: Uuid,
        to: Uuid,
        explanation: Explanation,
        matched_record: String,
    },
    /// A steward split a record off into its own customer (a new token, or
    /// the one it had before it was merged) or into a named one.
    RecordSplit {
        record: String,
        from: Uuid,
        to: Uuid,
        /// `to` is a new token.
        created: bool,
    },
    /// Two records are not the same person: never linked automatically.
    NotAMatchMarked { records: [String; 2], tokens: [Uuid; 2] },
    /// A review item for stewards.
    ReviewRequested { review: Review },
    /// A steward closed a review item.
    ReviewClosed { review_id: Uuid, outcome: ReviewOutcome },
    /// Only the customer's household changed (its record moved house);
    /// the change is in `households`.
    HouseholdChanged { token: Uuid },
    /// A steward set a golden value by hand: it wins over every record
    /// until it expires or is removed. It belongs to the customer it was set
    /// on and follows that customer's merges (and splits back).
    ValueOverridden {
        token: Uuid,
        override_id: Uuid,
        /// The golden attribute (`name`, `email`, `phone`, `address`,
        /// `date_of_birth`).
        attribute: String,
        /// `None`: permanent, until removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
        value: SealedValue,
    },
    /// An override no longer applies: a steward removed it, or it expired
    /// (`expired`, decided by the service when its time came).
    OverrideRemoved {
        token: Uuid,
        override_id: Uuid,
        #[serde(default)]
        expired: bool,
    },
    /// A compliance user erased the customer (CCPA): the data keys of
    /// `records` and `overrides` are destroyed, so nothing personal of
    /// them can be read again, also after a replay; the read models drop
    /// the person's rows; the token (and every token merged into it)
    /// answers "erased" for ever. Holds no personal data: pseudonymous
    /// record streams, tokens, ids and the legal basis.
    CustomerErased {
        token: Uuid,
        /// Tokens merged into it earlier: erased with it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        absorbed: Vec<Uuid>,
        /// Its source records (every version: one key per record).
        records: Vec<String>,
        /// Its value overrides (ids; one key each).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        overrides: Vec<Uuid>,
        /// Records kept under a legal exception named in the request.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retained: Vec<Retained>,
        /// The privacy request it fulfils, when one was named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<Uuid>,
        legal_basis: String,
    },
}

/// How a review item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewOutcome {
    Linked,
    KeptApart,
    Skipped,
}

/// A decision with its sequence number, cause, actor and reason: the payload
/// of a decision event. Its event type is the decision's `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// 1, 2, 3, ...: the resolver's decision counter. Dense, so a replay can
    /// check that nothing is missing.
    pub seq: u64,
    pub cause: Cause,
    pub by: DecidedBy,
    /// Mandatory for stewards; the rule for automatic decisions.
    pub reason: String,
    /// The parameters and rules that scored it.
    pub rule_set: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// Household changes this decision brought.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub households: Vec<HouseholdChange>,
}

impl Decision {
    /// The event type name (a public contract: never rename).
    pub fn event_type(&self) -> &'static str {
        match self {
            Decision::CustomerCreated { .. } => "CustomerCreated",
            Decision::RecordLinked { .. } => "RecordLinked",
            Decision::CustomersMerged { .. } => "CustomersMerged",
            Decision::RecordMoved { .. } => "RecordMoved",
            Decision::RecordSplit { .. } => "RecordSplit",
            Decision::NotAMatchMarked { .. } => "NotAMatchMarked",
            Decision::ReviewRequested { .. } => "ReviewRequested",
            Decision::ReviewClosed { .. } => "ReviewClosed",
            Decision::HouseholdChanged { .. } => "HouseholdChanged",
            Decision::ValueOverridden { .. } => "ValueOverridden",
            Decision::OverrideRemoved { .. } => "OverrideRemoved",
            Decision::CustomerErased { .. } => "CustomerErased",
        }
    }

    /// Every event type of decisions.
    pub const EVENT_TYPES: [&'static str; 12] = [
        "CustomerCreated",
        "RecordLinked",
        "CustomersMerged",
        "RecordMoved",
        "RecordSplit",
        "NotAMatchMarked",
        "ReviewRequested",
        "ReviewClosed",
        "HouseholdChanged",
        "ValueOverridden",
        "OverrideRemoved",
        "CustomerErased",
    ];

    /// The tokens this decision names.
    pub fn tokens(&self) -> Vec<Uuid> {
        match self {
            Decision::CustomerCreated { token, .. }
            | Decision::RecordLinked { token, .. }
            | Decision::HouseholdChanged { token }
            | Decision::ValueOverridden { token, .. }
            | Decision::OverrideRemoved { token, .. } => vec![*token],
            Decision::CustomersMerged { survivor, absorbed, .. } => {
                std::iter::once(*survivor).chain(absorbed.iter().copied()).collect()
            }
            Decision::RecordMoved { from, to, .. } | Decision::RecordSplit { from, to, .. } => vec![*from, *to],
            Decision::NotAMatchMarked { tokens, .. } => tokens.to_vec(),
            Decision::CustomerErased { token, absorbed, .. } => {
                std::iter::once(*token).chain(absorbed.iter().copied()).collect()
            }
            Decision::ReviewRequested { review } => vec![review.token, review.candidate],
            Decision::ReviewClosed { .. } => Vec::new(),
        }
    }

    /// The tokens whose version this decision advances (once each): every
    /// token it names, except that opening or closing a review item changes
    /// no customer.
    pub fn versioned_tokens(&self) -> Vec<Uuid> {
        if matches!(self, Decision::ReviewRequested { .. } | Decision::ReviewClosed { .. }) {
            return Vec::new();
        }
        let mut tokens = self.tokens();
        let mut seen = std::collections::HashSet::new();
        tokens.retain(|t| seen.insert(*t));
        tokens
    }
}
