//! Source-record events: what each source system said about one record, as
//! facts in the record's own stream.
//!
//! A source record is identified by (system, source id). Its stream holds:
//! - [`CAPTURED`]: the record was received for the first time (or again after
//!   a retraction);
//! - [`CHANGED`]: the record was received again and its mapped attributes or
//!   its raw payload differ from the last version;
//! - [`RETRACTED`]: the source deleted it, or left it out of a full export.
//!
//! An identical re-send produces no event at all: [`decide`] compares the
//! incoming content with the stream's last event.
//!
//! # What is stored in plaintext and what is sealed
//! The log is immutable, so personal data in it is encrypted with a data key
//! per source record ("crypto-shredding": erasure destroys the key). The
//! event payloads here hold only non-personal fields in plaintext (system,
//! input format, why a record was retracted) and the personal
//! [`SourceRecordContent`] sealed, as base64 text, under the key whose id the
//! event metadata carries. The source id is sealed too: some systems key
//! their records by e-mail address. For the same reason stream names are
//! pseudonyms (a keyed hash of system and source id, see [`stream_name`]):
//! stream names are plaintext and outlive every key.
//!
//! This module is pure: sealing and opening happen at the edges (the ingest
//! pipeline, the resolver, the projections), which pass plaintext in and get
//! plaintext out.

use serde::{Deserialize, Serialize};

use crate::source::CanonicalAttributes;

/// Event type of the first version of a source record (stable public name).
pub const CAPTURED: &str = "SourceRecordCaptured";
/// Event type of a later version whose content differs (stable public name).
pub const CHANGED: &str = "SourceRecordChanged";
/// Event type of a record the source no longer holds (stable public name).
pub const RETRACTED: &str = "SourceRecordRetracted";

/// Schema version of the three payloads below.
pub const SCHEMA_VERSION: u32 = 1;

/// The prefix of every source-record stream.
pub const STREAM_PREFIX: &str = "source-";

/// The stream of a source record: `source-<system>-<pseudonym>`, where the
/// pseudonym is a keyed hash of (system, source id) computed by the caller
/// with a secret key, so that the stream name reveals neither the source id
/// nor, after erasure, anything that a dictionary of ids could confirm
/// without the key. The system name is configuration, not personal data, and
/// lets an operator see at a glance which system a stream belongs to.
pub fn stream_name(system: &str, pseudonym: &[u8]) -> String {
    let mut name = String::with_capacity(STREAM_PREFIX.len() + system.len() + 1 + pseudonym.len() * 2);
    name.push_str(STREAM_PREFIX);
    name.push_str(system);
    name.push('-');
    for byte in pseudonym {
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    name
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Payload of [`CAPTURED`] and [`CHANGED`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecordVersion {
    /// The configured system name.
    pub system: String,
    /// The input format it arrived in (`json`, `csv`, `debezium`, `rest_pull`).
    pub format: String,
    /// [`SourceRecordContent`] as JSON, sealed under the key named in the
    /// event metadata, base64.
    pub sealed: String,
}

/// Payload of [`RETRACTED`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecordRetracted {
    pub system: String,
    pub reason: RetractionReason,
    /// For a deletion the source announced (a Debezium `d` event), the
    /// announcement as received ([`RetractionContent`]), sealed like a
    /// version's content. `None` when there was nothing to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// Why a record was retracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetractionReason {
    /// The source announced the deletion (e.g. a Debezium `d` event).
    DeletedAtSource,
    /// An import declared a full snapshot of the system, and the record was
    /// not in it.
    MissingFromFullSnapshot,
}

/// The personal part of a source-record version. Only ever stored sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecordContent {
    /// The record's id in its source system.
    pub source_id: String,
    /// The record exactly as received: a JSON document, a CSV row (without
    /// its line ending), a Debezium envelope.
    pub raw: String,
    /// What `raw` needs to be read on its own: the CSV header line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_header: Option<String>,
    /// The attributes mapped from the record by the system's definition.
    pub attributes: CanonicalAttributes,
    /// A keyed digest (under the record's own data key, so it is shredded
    /// with it) of the part of the payload that counts for change detection:
    /// the raw record, or for change-data capture the row image without the
    /// envelope's delivery metadata. Hex.
    pub digest: String,
    /// Where the change sits in the source's own change log, for sources
    /// that have one (change-data capture): see [`SourceOrder`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_order: Option<SourceOrder>,
}

/// One component of a [`SourceOrder`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrderKey {
    Int(i64),
    Text(String),
}

/// The position of a change in its source's change log (for MySQL: binlog
/// file, position and row; for PostgreSQL: the LSN), compared component by
/// component. A change-data-capture pipeline delivers at least once and
/// replays from an offset after a restart, so a change at or before the
/// one a record already reflects is a re-delivery, not news.
pub type SourceOrder = Vec<OrderKey>;

impl std::fmt::Debug for SourceRecordContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRecordContent")
            .field("raw_bytes", &self.raw.len())
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

/// The personal part of a retraction the source announced. Sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetractionContent {
    pub source_id: String,
    /// The deletion as received, e.g. the Debezium envelope.
    pub raw: String,
    /// Where the deletion sits in the source's change log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_order: Option<SourceOrder>,
}

impl std::fmt::Debug for RetractionContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetractionContent")
            .field("raw_bytes", &self.raw.len())
            .finish_non_exhaustive()
    }
}

/// What the log says about a source record now: the last event of its
/// stream, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// No event yet.
    Absent,
    /// The last event is a version; its content.
    Live(Box<SourceRecordContent>),
    /// The last event is a retraction, with the source position of the
    /// deletion when the source announced it with one.
    Retracted(Option<SourceOrder>),
    /// The record's data key is destroyed: the person was erased.
    Erased,
}

/// What a source says now about one of its records.
#[derive(Clone, Copy, Debug)]
pub enum Incoming<'a> {
    /// The record as it is now: its mapped attributes and the digest of its
    /// compared payload.
    Upsert {
        attributes: &'a CanonicalAttributes,
        digest: &'a str,
        order: Option<&'a SourceOrder>,
    },
    /// The source deleted it.
    Delete { order: Option<&'a SourceOrder> },
}

impl Incoming<'_> {
    fn order(&self) -> Option<&SourceOrder> {
        match self {
            Incoming::Upsert { order, .. } | Incoming::Delete { order } => *order,
        }
    }
}

/// What to do with an incoming record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Append [`CAPTURED`].
    Capture,
    /// Append [`CHANGED`].
    Change,
    /// Same attributes and payload as the last version: append nothing.
    Unchanged,
    /// Append [`RETRACTED`].
    Retract,
    /// A deletion of a record that is absent or already retracted: nothing.
    NothingToRetract,
    /// A change from the source's change log at or before the change the
    /// record already reflects (a re-delivery or a replay): nothing.
    Stale,
    /// The record belongs to an erased person: nothing is stored; the
    /// caller reports it (a later issue turns this into a held item for a
    /// compliance decision).
    Erased,
}

/// Decides what an incoming record means given the record's current state.
pub fn decide(state: &RecordState, incoming: Incoming<'_>) -> Decision {
    let held_order = match state {
        RecordState::Live(last) => last.source_order.as_ref(),
        RecordState::Retracted(order) => order.as_ref(),
        RecordState::Absent | RecordState::Erased => None,
    };
    if let (Some(held), Some(new)) = (held_order, incoming.order()) {
        if !matches!(state, RecordState::Erased) && new <= held {
            return Decision::Stale;
        }
    }
    match (state, incoming) {
        (RecordState::Erased, _) => Decision::Erased,
        (RecordState::Absent | RecordState::Retracted(_), Incoming::Upsert { .. }) => Decision::Capture,
        (RecordState::Live(last), Incoming::Upsert { attributes, digest, .. }) => {
            if last.attributes == *attributes && last.digest == digest {
                Decision::Unchanged
            } else {
                Decision::Change
            }
        }
        (RecordState::Live(_), Incoming::Delete { .. }) => Decision::Retract,
        (RecordState::Absent | RecordState::Retracted(_), Incoming::Delete { .. }) => Decision::NothingToRetract,
    }
}

impl Decision {
    /// The event type this decision appends, if any.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Decision::Capture => Some(CAPTURED),
            Decision::Change => Some(CHANGED),
            Decision::Retract => Some(RETRACTED),
            Decision::Unchanged | Decision::NothingToRetract | Decision::Stale | Decision::Erased => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(given: &str, digest: &str) -> SourceRecordContent {
        SourceRecordContent {
            source_id: "1".into(),
            raw: "{}".into(),
            raw_header: None,
            attributes: CanonicalAttributes {
                given_name: Some(given.into()),
                ..CanonicalAttributes::default()
            },
            digest: digest.into(),
            source_order: None,
        }
    }

    #[test]
    fn decisions_follow_the_state_and_the_content() {
        let live = RecordState::Live(Box::new(content("Ann", "d1")));
        let ann = CanonicalAttributes {
            given_name: Some("Ann".into()),
            ..CanonicalAttributes::default()
        };
        let bob = CanonicalAttributes {
            given_name: Some("Bob".into()),
            ..CanonicalAttributes::default()
        };
        let up = |attributes, digest| Incoming::Upsert {
            attributes,
            digest,
            order: None,
        };
        let delete = Incoming::Delete { order: None };
        let cases = [
            (RecordState::Absent, up(&ann, "d1"), Decision::Capture),
            (RecordState::Retracted(None), up(&ann, "d1"), Decision::Capture),
            (live.clone(), up(&ann, "d1"), Decision::Unchanged),
            (live.clone(), up(&bob, "d1"), Decision::Change),
            (live.clone(), up(&ann, "d2"), Decision::Change),
            (live.clone(), delete, Decision::Retract),
            (RecordState::Absent, delete, Decision::NothingToRetract),
            (RecordState::Retracted(None), delete, Decision::NothingToRetract),
            (RecordState::Erased, up(&ann, "d1"), Decision::Erased),
            (RecordState::Erased, delete, Decision::Erased),
        ];
        for (state, incoming, expected) in cases {
            assert_eq!(decide(&state, incoming), expected, "{state:?} / {incoming:?}");
        }
    }

    #[test]
    fn changes_at_or_before_the_held_source_position_are_stale() {
        let at = |n: i64| vec![OrderKey::Text("mysql-bin.000003".into()), OrderKey::Int(n)];
        let mut held = content("Ann", "d1");
        held.source_order = Some(at(10));
        let live = RecordState::Live(Box::new(held));
        let bob = CanonicalAttributes {
            given_name: Some("Bob".into()),
            ..CanonicalAttributes::default()
        };
        let up = |order| Incoming::Upsert {
            attributes: &bob,
            digest: "d2",
            order,
        };
        let (p9, p10, p11) = (at(9), at(10), at(11));
        assert_eq!(decide(&live, up(Some(&p9))), Decision::Stale);
        assert_eq!(decide(&live, up(Some(&p10))), Decision::Stale);
        assert_eq!(decide(&live, up(Some(&p11))), Decision::Change);
        assert_eq!(decide(&live, up(None)), Decision::Change, "a source without order");
        assert_eq!(decide(&live, Incoming::Delete { order: Some(&p9) }), Decision::Stale);
        // A replayed create after the deletion stays deleted.
        let gone = RecordState::Retracted(Some(at(12)));
        assert_eq!(decide(&gone, up(Some(&p11))), Decision::Stale);
        let p13 = at(13);
        assert_eq!(decide(&gone, up(Some(&p13))), Decision::Capture);
        // Binlog file names order before positions.
        let next_file = vec![OrderKey::Text("mysql-bin.000004".into()), OrderKey::Int(1)];
        assert_eq!(decide(&live, up(Some(&next_file))), Decision::Change);
    }

    #[test]
    fn stream_names_are_hex_pseudonyms() {
        assert_eq!(stream_name("finance", &[0x01, 0xab, 0xff]), "source-finance-01abff");
    }

    #[test]
    fn payloads_have_stable_json() {
        let v = SourceRecordRetracted {
            system: "finance".into(),
            reason: RetractionReason::MissingFromFullSnapshot,
            sealed: None,
        };
        assert_eq!(
            serde_json::to_string(&v).expect("serializes"),
            r#"{"system":"finance","reason":"missing_from_full_snapshot"}"#
        );
        let debug = format!("{:?}", content("Ann", "d1"));
        assert!(!debug.contains("Ann"), "{debug}");
    }
}
