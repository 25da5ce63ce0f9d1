//! Event metadata and deterministic event ids.
//!
//! Every event carries who caused it, when it happened, which request it
//! belongs to (correlation), which event or command caused it (causation) and
//! the schema version of its payload. Metadata never holds personal data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who caused an event. Ids only: never a person's name or e-mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// The automatic resolver.
    Resolver,
    /// A source system delivering records (its configured name).
    Source(String),
    /// An authenticated API client or console user (its client id).
    Client(String),
    /// The operator running a CLI command on the machine.
    Operator,
}

/// The metadata stored with every event (JSON, schema version 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// When the fact happened in the world (the command's time), as opposed to
    /// when the store recorded it.
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    /// The request or import run this event belongs to.
    pub correlation_id: Uuid,
    /// The event or command that caused this one, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Version of the event payload's schema, for upcasting.
    pub schema_version: u32,
    /// The data key that seals the event's personal data, when it has any.
    /// Only the key's id: the key itself lives in the key store, and once it
    /// is destroyed the sealed part of the event reads as erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
}

/// The namespace of every deterministic event id of this product.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d64_6d00_e5e1_4c0b_9f2a_6a7e_1d5c_0b01);

/// A deterministic event id: the same `kind` and `parts` give the same id, so
/// an append retried after a crash or a timeout stores nothing twice. Parts
/// are length-prefixed so that `("ab", "c")` and `("a", "bc")` differ.
pub fn deterministic_event_id(kind: &str, parts: &[&[u8]]) -> Uuid {
    let mut name = Vec::with_capacity(kind.len() + parts.iter().map(|p| p.len() + 8).sum::<usize>() + 8);
    for part in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part);
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// A deterministic event id that sorts near `anchor`: its first 8 bytes
/// are the anchor's (a UUID v7 carries its creation time there), the next
/// 8 come from [`deterministic_event_id`] of `kind` and `parts`, and the
/// id is marked UUID version 8 (custom).
///
/// Why: the SQL stores keep a unique index on event ids, and random ids
/// land in random leaves of it, so a bulk load of a million records paid a
/// random index write per event (about a third of SQLite's insert rate,
/// docs/bench/ingest.md). Anchored on the data key's v7 id, the events of
/// records keyed together in one import get neighbouring ids. Retries still
/// get the same id: the anchor is stored with the key.
pub fn anchored_event_id(anchor: Uuid, kind: &str, parts: &[&[u8]]) -> Uuid {
    let hashed = deterministic_event_id(kind, parts);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&anchor.as_bytes()[..8]);
    bytes[8..].copy_from_slice(&hashed.as_bytes()[..8]);
    Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_ids_depend_on_every_part_and_its_boundaries() {
        let id = |kind: &str, parts: &[&str]| {
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            deterministic_event_id(kind, &parts)
        };
        // (kind, parts) of two ids, and whether they must be equal.
        type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a [&'a str], bool);
        let cases: [Case; 5] = [
            ("captured", &["web", "1"], "captured", &["web", "1"], true),
            ("captured", &["web", "1"], "captured", &["web", "2"], false),
            ("captured", &["web", "1"], "changed", &["web", "1"], false),
            ("captured", &["ab", "c"], "captured", &["a", "bc"], false),
            ("captured", &["a"], "captureda", &[], false),
        ];
        for (k1, p1, k2, p2, same) in cases {
            assert_eq!(id(k1, p1) == id(k2, p2), same, "{k1}{p1:?} vs {k2}{p2:?}");
        }
    }

    #[test]
    fn anchored_ids_share_their_anchor_prefix_and_stay_deterministic() {
        let anchor = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let a = anchored_event_id(anchor, "captured", &[b"s", b"0"]);
        assert_eq!(a, anchored_event_id(anchor, "captured", &[b"s", b"0"]));
        assert_ne!(a, anchored_event_id(anchor, "captured", &[b"s", b"1"]));
        assert_eq!(&a.as_bytes()[..6], &anchor.as_bytes()[..6]);
        assert_eq!(a.get_version_num(), 8);
        let later = Uuid::from_u128(0x0190_0000_0001_7000_8000_0000_0000_0001);
        assert!(anchored_event_id(later, "captured", &[b"s", b"0"]) > a);
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let m = EventMetadata {
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
            actor: Actor::Source("finance".into()),
            correlation_id: Uuid::from_u128(1),
            causation_id: None,
            schema_version: 1,
            key_id: None,
        };
        let json = serde_json::to_string(&m).expect("serializes");
        assert_eq!(
            json,
            r#"{"occurred_at":"2023-11-14T22:13:20Z","actor":{"kind":"source","id":"finance"},"correlation_id":"00000000-0000-0000-0000-000000000001","schema_version":1}"#
        );
        assert_eq!(serde_json::from_str::<EventMetadata>(&json).expect("decodes"), m);
    }
}
