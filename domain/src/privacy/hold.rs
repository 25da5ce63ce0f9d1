//! Records held after an erasure ("erased at source pending").
//!
//! Once a person is erased, a source system that still sends one of their
//! records (the same system and source id) must not silently bring them
//! back. The record is held instead: nothing of it is stored, a
//! `RecordHeld` event in the record's hold stream
//! (`erased-hold-<record stream>`) notes that the source still has it and
//! must be told, and a compliance user decides:
//!
//! - **suppress**: the source was told to delete it; the record stays
//!   erased and later re-sends store nothing (they answer `erased`);
//! - **release**: the source holds the record lawfully again (the person
//!   came back to it), so the next re-send is captured as a new record,
//!   under a new pseudonymous stream (the *successor*) with a fresh data
//!   key, and resolved like any new record: its token is never the erased
//!   one.
//!
//! Hold events carry no personal data: the system name, the pseudonymous
//! record stream, ids, the compliance user and their reason.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Hold streams are named `erased-hold-<record stream>`.
pub const STREAM_PREFIX: &str = "erased-hold-";

/// Payload schema version of every hold event.
pub const SCHEMA_VERSION: u32 = 1;

/// How many releases the ingest follows from a record's first stream to
/// its current one (each release of an erased successor adds one).
pub const MAX_SUCCESSORS: usize = 16;

/// The hold stream of a record stream.
pub fn stream(record_stream: &str) -> String {
    format!("{STREAM_PREFIX}{record_stream}")
}

/// The record stream of a hold stream.
pub fn record_of_stream(stream: &str) -> Option<&str> {
    stream.strip_prefix(STREAM_PREFIX).filter(|r| !r.is_empty())
}

/// What the compliance user decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldDecision {
    /// The source is told to delete it; the record stays erased.
    Suppress,
    /// The source holds it lawfully again: the next re-send is a new record.
    Release,
}

impl HoldDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suppress => "suppressed",
            Self::Release => "released",
        }
    }
}

/// The events of a hold stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum HoldEvent {
    /// A source re-sent a record of an erased person: nothing was stored.
    RecordHeld {
        hold_id: Uuid,
        system: String,
        /// The erased record's pseudonymous stream.
        record: String,
        at: DateTime<Utc>,
    },
    /// A compliance user decided a pending hold.
    HoldDecided {
        hold_id: Uuid,
        decision: HoldDecision,
        by: String,
        reason: String,
        at: DateTime<Utc>,
        /// For a release: the stream the record is captured under from now
        /// on (pseudonymous, derived from the erased one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        successor: Option<String>,
    },
}

impl HoldEvent {
    /// The event type name (a public contract: never rename).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::RecordHeld { .. } => "RecordHeld",
            Self::HoldDecided { .. } => "HoldDecided",
        }
    }
}

/// Where a record's hold stands, from the last event of its hold stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldState {
    /// Never held.
    None,
    /// Held, waiting for a compliance decision.
    Pending { hold_id: Uuid, system: String },
    /// Suppressed: re-sends store nothing.
    Suppressed,
    /// Released: the record lives on under its successor stream.
    Released { successor: String },
}

impl HoldState {
    /// The state after the hold stream's last event (`None`: no stream).
    pub fn after(last: Option<&HoldEvent>) -> HoldState {
        match last {
            None => HoldState::None,
            Some(HoldEvent::RecordHeld { hold_id, system, .. }) => HoldState::Pending {
                hold_id: *hold_id,
                system: system.clone(),
            },
            Some(HoldEvent::HoldDecided {
                decision: HoldDecision::Suppress,
                ..
            }) => HoldState::Suppressed,
            Some(HoldEvent::HoldDecided {
                decision: HoldDecision::Release,
                successor,
                ..
            }) => match successor {
                Some(s) => HoldState::Released { successor: s.clone() },
                // A release always names its successor; one that does not
                // reads as suppressed, the safe side.
                None => HoldState::Suppressed,
            },
        }
    }
}

/// What the ingest does with a re-sent record of an erased person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resend {
    /// Append `RecordHeld` (a new hold): the source must be told.
    Hold,
    /// Held already: the same pending hold answers, nothing is appended.
    Pending(Uuid),
    /// Suppressed: nothing is appended; the record answers erased.
    Refuse,
    /// Released: ingest it under this stream instead.
    Follow(String),
}

/// Decides a re-send of a record of an erased person.
pub fn on_resend(state: &HoldState) -> Resend {
    match state {
        HoldState::None => Resend::Hold,
        HoldState::Pending { hold_id, .. } => Resend::Pending(*hold_id),
        HoldState::Suppressed => Resend::Refuse,
        HoldState::Released { successor } => Resend::Follow(successor.clone()),
    }
}

/// A decision refused by the hold's rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error("the hold was decided already")]
    Decided,
    #[error("no such hold is pending on this record")]
    NotPending,
    #[error("the reason is required")]
    ReasonRequired,
}

/// Checks a compliance decision on a pending hold. `successor` is the
/// stream a release moves the record to (derived by the caller, who holds
/// the naming key).
pub fn decide(
    state: &HoldState,
    hold_id: Uuid,
    decision: HoldDecision,
    by: &str,
    reason: &str,
    successor: impl FnOnce() -> String,
    at: DateTime<Utc>,
) -> Result<HoldEvent, HoldError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(HoldError::ReasonRequired);
    }
    match state {
        HoldState::Pending { hold_id: pending, .. } if *pending == hold_id => Ok(HoldEvent::HoldDecided {
            hold_id,
            decision,
            by: by.to_owned(),
            reason: reason.to_owned(),
            at,
            successor: (decision == HoldDecision::Release).then(successor),
        }),
        HoldState::Pending { .. } | HoldState::None => Err(HoldError::NotPending),
        HoldState::Suppressed | HoldState::Released { .. } => Err(HoldError::Decided),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().expect("a time")
    }

    fn held(id: u128) -> HoldEvent {
        HoldEvent::RecordHeld {
            hold_id: Uuid::from_u128(id),
            system: "finance".into(),
            record: "source-finance-00ff".into(),
            at: at(),
        }
    }

    #[test]
    fn a_resend_is_held_once_then_follows_the_decision() {
        assert_eq!(on_resend(&HoldState::after(None)), Resend::Hold);
        let pending = HoldState::after(Some(&held(1)));
        assert_eq!(on_resend(&pending), Resend::Pending(Uuid::from_u128(1)));

        let suppress = decide(
            &pending,
            Uuid::from_u128(1),
            HoldDecision::Suppress,
            "c",
            "told",
            || unreachable!("a suppression has no successor"),
            at(),
        )
        .expect("decided");
        assert_eq!(on_resend(&HoldState::after(Some(&suppress))), Resend::Refuse);

        let release = decide(
            &pending,
            Uuid::from_u128(1),
            HoldDecision::Release,
            "c",
            "new contract",
            || "source-finance-0aa0".into(),
            at(),
        )
        .expect("decided");
        assert_eq!(
            on_resend(&HoldState::after(Some(&release))),
            Resend::Follow("source-finance-0aa0".into())
        );
    }

    #[test]
    fn only_the_pending_hold_is_decided_and_with_a_reason() {
        let pending = HoldState::after(Some(&held(1)));
        let never = || String::new();
        assert_eq!(
            decide(
                &pending,
                Uuid::from_u128(1),
                HoldDecision::Release,
                "c",
                "  ",
                never,
                at()
            ),
            Err(HoldError::ReasonRequired)
        );
        assert_eq!(
            decide(
                &pending,
                Uuid::from_u128(2),
                HoldDecision::Suppress,
                "c",
                "x",
                never,
                at()
            ),
            Err(HoldError::NotPending)
        );
        assert_eq!(
            decide(
                &HoldState::None,
                Uuid::from_u128(1),
                HoldDecision::Suppress,
                "c",
                "x",
                never,
                at()
            ),
            Err(HoldError::NotPending)
        );
        assert_eq!(
            decide(
                &HoldState::Suppressed,
                Uuid::from_u128(1),
                HoldDecision::Suppress,
                "c",
                "x",
                never,
                at()
            ),
            Err(HoldError::Decided)
        );
    }

    #[test]
    fn events_keep_their_wire_names_and_streams_their_shape() {
        let json = serde_json::to_value(held(1)).expect("json");
        assert_eq!(json["type"], "RecordHeld");
        assert_eq!(serde_json::from_value::<HoldEvent>(json).expect("back"), held(1));
        let s = stream("source-finance-00ff");
        assert_eq!(s, "erased-hold-source-finance-00ff");
        assert_eq!(record_of_stream(&s), Some("source-finance-00ff"));
        assert_eq!(record_of_stream("erased-hold-"), None);
        // A release without its successor reads as suppressed.
        let odd = HoldEvent::HoldDecided {
            hold_id: Uuid::from_u128(1),
            decision: HoldDecision::Release,
            by: "c".into(),
            reason: "x".into(),
            at: at(),
            successor: None,
        };
        assert_eq!(HoldState::after(Some(&odd)), HoldState::Suppressed);
    }
}
