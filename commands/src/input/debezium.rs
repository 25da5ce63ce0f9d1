//! Debezium change events, read as JSON (any shape [`JsonRecords`] reads:
//! NDJSON as written by a Kafka consumer, an array, concatenated values).
//!
//! Each value is one event, with the Kafka Connect JSON converter's wrapper
//! (`{"schema": …, "payload": {…}}`) or without it (the bare
//! `{"before", "after", "op", "source", "ts_ms"}`):
//! - `op` `c` (create), `r` (snapshot read), `u` (update): an
//!   [`ChangeOp::Upsert`] of `after`, which must be an object;
//! - `op` `d` (delete): a [`ChangeOp::Delete`] of `before`, which must be an
//!   object since the record's id is read from it;
//! - a `null` value or `payload: null` (the tombstone Kafka log compaction
//!   needs after a delete) and heartbeats (a payload with `ts_ms` but no
//!   `op`, `before` or `after`): [`ChangeOp::Ignore`];
//! - `op` `t` (truncate) and `m` (logical decoding message): rejected, since
//!   neither names the records it concerns.
//!
//! `raw` is the whole event verbatim; `compared` is the canonical form of the
//! row image, so that envelope metadata (`ts_ms`, `source.lsn`, binlog
//! positions), which changes on every delivery, does not count as a change.

use std::fmt;
use std::io::BufRead;

use mdm_domain::source_record::{OrderKey, SourceOrder};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::json::JsonRecords;
use super::{canonical_json, json_syntax_error, ChangeOp, InputError, InputErrorKind, InputItem, InputRecord};

/// Debezium change events as [`InputRecord`]s (locators as for
/// [`JsonRecords`]).
pub struct DebeziumRecords<R> {
    inner: JsonRecords<R>,
}

impl<R> fmt::Debug for DebeziumRecords<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebeziumRecords").field("inner", &self.inner).finish()
    }
}

impl<R: BufRead> DebeziumRecords<R> {
    /// Reads `reader` as Debezium events; an event longer than
    /// `max_record_bytes` is rejected and skipped.
    pub fn new(reader: R, max_record_bytes: usize) -> Self {
        DebeziumRecords {
            inner: JsonRecords::new(reader, max_record_bytes),
        }
    }
}

impl<R: BufRead> Iterator for DebeziumRecords<R> {
    type Item = InputRecord;

    fn next(&mut self) -> Option<InputRecord> {
        let (locator, raw) = self.inner.next_raw()?;
        Some(InputRecord {
            locator,
            item: raw.and_then(read_event),
        })
    }
}

fn malformed(field: &str, problem: impl Into<String>) -> InputError {
    InputError::new(InputErrorKind::Malformed, problem).in_field(field)
}

/// Reads one event. Only the row images become `Value`s: the rest of the
/// envelope (`source`, and the Kafka Connect `schema`, often larger than
/// the row) is skipped while parsing.
fn read_event(raw: String) -> Result<InputItem, InputError> {
    let ignored = |raw| InputItem {
        raw,
        raw_header: None,
        value: Value::Null,
        op: ChangeOp::Ignore,
        compared: None,
        source_order: None,
    };
    let parsed: Parsed = serde_json::from_str(&raw).map_err(|e| json_syntax_error(&e))?;
    let mut event = match parsed {
        // A tombstone.
        Parsed::Null => return Ok(ignored(raw)),
        Parsed::Other(kind) => {
            return Err(InputError::new(
                InputErrorKind::Malformed,
                format!("expected a JSON object, found {kind}"),
            ));
        }
        Parsed::Event(event) => event,
    };
    let (mut body, prefix) = match event.payload.take().map(|payload| *payload) {
        None => (event, ""),
        Some(Parsed::Event(body)) => (body, "payload."),
        Some(Parsed::Null) => return Ok(ignored(raw)),
        Some(Parsed::Other(kind)) => return Err(malformed("payload", format!("expected an object, found {kind}"))),
    };
    let field = |name: &str| format!("{prefix}{name}");
    let op = match &body.op {
        Some(Value::String(op)) => op.as_str(),
        Some(Value::Null) | None => {
            if body.ts_ms && body.before.is_none() && body.after.is_none() {
                return Ok(ignored(raw)); // a heartbeat
            }
            return Err(malformed(&field("op"), "is missing"));
        }
        Some(other) => {
            return Err(malformed(
                &field("op"),
                format!("expected a string, found {}", super::json_kind(other)),
            ));
        }
    };
    let (op, image_name, image) = match op {
        "c" | "r" | "u" => (ChangeOp::Upsert, "after", body.after.take()),
        "d" => (ChangeOp::Delete, "before", body.before.take()),
        "t" => {
            return Err(InputError::new(
                InputErrorKind::Unsupported,
                "truncate events (op \"t\") are not supported: they do not name the records removed",
            )
            .in_field(field("op")));
        }
        "m" => {
            return Err(InputError::new(
                InputErrorKind::Unsupported,
                "logical decoding messages (op \"m\") are not supported: they carry no record",
            )
            .in_field(field("op")));
        }
        _ => {
            return Err(malformed(
                &field("op"),
                "is not a known operation (expected c, r, u, d, t or m)",
            ))
        }
    };
    let value = match image {
        Some(image @ Value::Object(_)) => image,
        Some(Value::Null) | None => {
            let problem = if op == ChangeOp::Delete {
                "is missing or null; a delete needs the row image to know which record it removes"
            } else {
                "is missing or null; a create, read or update needs the row image"
            };
            return Err(malformed(&field(image_name), problem));
        }
        Some(other) => {
            let kind = super::json_kind(&other);
            return Err(malformed(
                &field(image_name),
                format!("expected an object, found {kind}"),
            ));
        }
    };
    let compared = Some(canonical_json(&value));
    Ok(InputItem {
        raw,
        raw_header: None,
        value,
        op,
        compared,
        source_order: body.source.as_ref().and_then(source_order),
    })
}

/// The position of a change in its source's change log, from the
/// envelope's `source` block: MySQL binlog (file, pos, row), PostgreSQL
/// `lsn`, SQL Server (commit_lsn, change_lsn, event_serial_no). `None` for
/// a connector without a position we know: timestamps alone (`ts_ms`) are
/// too coarse to order two changes within one second, so such records are
/// compared by content only.
pub fn source_order(source: &Value) -> Option<SourceOrder> {
    let int = |k: &str| source.get(k).and_then(Value::as_i64).map(OrderKey::Int);
    let text = |k: &str| {
        source
            .get(k)
            .and_then(Value::as_str)
            .map(|s| OrderKey::Text(s.to_owned()))
    };
    if let (Some(file), Some(pos)) = (text("file"), int("pos")) {
        return Some(vec![file, pos, int("row").unwrap_or(OrderKey::Int(0))]);
    }
    if let Some(lsn) = int("lsn") {
        return Some(vec![lsn]);
    }
    if let (Some(commit), Some(change)) = (text("commit_lsn"), text("change_lsn")) {
        return Some(vec![commit, change, int("event_serial_no").unwrap_or(OrderKey::Int(0))]);
    }
    None
}

/// A JSON value read as a Debezium event.
enum Parsed {
    Null,
    Event(Event),
    /// Not an object: what it was ("a number").
    Other(&'static str),
}

/// The fields of an envelope (or of its `payload`) that ingestion reads.
/// `None` = the key is absent. A repeated key keeps its last value, as
/// `serde_json::Value` does.
#[derive(Default)]
struct Event {
    before: Option<Value>,
    after: Option<Value>,
    op: Option<Value>,
    ts_ms: bool,
    /// The `source` block (small: connector, position, table).
    source: Option<Value>,
    /// Only read at the top level: the Kafka Connect wrapper.
    payload: Option<Box<Parsed>>,
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParsedVisitor { top: true })
    }
}

/// The payload, parsed like an envelope but without looking for a nested
/// payload.
struct Payload(Parsed);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParsedVisitor { top: false }).map(Payload)
    }
}

/// Reads any JSON value without ever producing an error that quotes it
/// (serde's "invalid type" errors would print the value).
struct ParsedVisitor {
    top: bool,
}

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Debezium event")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Parsed, E> {
        Ok(Parsed::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Parsed, E> {
        Ok(Parsed::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed::Other("a string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Parsed::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut event = Event::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Before => event.before = Some(map.next_value()?),
                Key::After => event.after = Some(map.next_value()?),
                Key::Op => event.op = Some(map.next_value()?),
                Key::Source => event.source = Some(map.next_value()?),
                Key::TsMs => {
                    map.next_value::<IgnoredAny>()?;
                    event.ts_ms = true;
                }
                Key::Payload if self.top => {
                    let Payload(payload) = map.next_value()?;
                    event.payload = Some(Box::new(payload));
                }
                Key::Payload | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Parsed::Event(event))
    }
}

/// The envelope keys ingestion reads.
enum Key {
    Before,
    After,
    Op,
    TsMs,
    Source,
    Payload,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "before" => Key::Before,
                    "after" => Key::After,
                    "op" => Key::Op,
                    "ts_ms" => Key::TsMs,
                    "source" => Key::Source,
                    "payload" => Key::Payload,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(input: &str) -> Vec<InputRecord> {
        DebeziumRecords::new(input.as_bytes(), super::super::DEFAULT_MAX_RECORD_BYTES).collect()
    }

    #[test]
    fn positions_come_from_the_source_block_of_either_envelope_form() {
        let read = |raw: &str| {
            DebeziumRecords::new(raw.as_bytes(), 1 << 20)
                .next()
                .and_then(|r| r.item.ok())
                .and_then(|i| i.source_order)
        };
        let mysql = r#"{"schema": {}, "payload": {"op": "u", "after": {"id": 1}, "source": {"file": "mysql-bin.000003", "pos": 154, "row": 1, "ts_ms": 5}}}"#;
        assert_eq!(
            read(mysql),
            Some(vec![
                OrderKey::Text("mysql-bin.000003".into()),
                OrderKey::Int(154),
                OrderKey::Int(1)
            ])
        );
        let postgres = r#"{"op": "c", "after": {"id": 1}, "source": {"lsn": 24023128, "ts_ms": 5}}"#;
        assert_eq!(read(postgres), Some(vec![OrderKey::Int(24023128)]));
        let unknown = r#"{"op": "c", "after": {"id": 1}, "source": {"ts_ms": 5}}"#;
        assert_eq!(read(unknown), None);
        assert_eq!(read(r#"{"op": "c", "after": {"id": 1}}"#), None);
    }

    fn ok(record: &InputRecord) -> &InputItem {
        match &record.item {
            Ok(item) => item,
            Err(e) => panic!("{}: {e}", record.locator),
        }
    }

    const CREATE: &str = r#"{"before":null,"after":{"id":1,"email":"ann@example.com"},"source":{"version":"2.5.0.Final","connector":"postgresql","lsn":24023128},"op":"c","ts_ms":1700000000001}"#;

    #[test]
    fn a_bare_event_is_read_with_its_envelope_verbatim() {
        let spaced =
            r#"{ "op" : "u",  "after": { "name":"Ann",  "id": 7 }, "before": {"id": 7, "name": "An"}, "ts_ms": 1 }"#;
        let input = format!("{CREATE}\n{spaced}\n");
        let records = read(&input);
        assert_eq!(records.len(), 2);
        let created = ok(&records[0]);
        assert_eq!(records[0].locator, "line 1");
        assert_eq!(created.raw, CREATE);
        assert_eq!(created.op, ChangeOp::Upsert);
        assert_eq!(created.value, json!({"id": 1, "email": "ann@example.com"}));
        assert_eq!(
            created.compared.as_deref(),
            Some(r#"{"email":"ann@example.com","id":1}"#)
        );
        let updated = ok(&records[1]);
        assert_eq!(updated.raw, spaced);
        assert_eq!(updated.value, json!({"id": 7, "name": "Ann"}));
        assert_eq!(updated.compared.as_deref(), Some(r#"{"id":7,"name":"Ann"}"#));
        assert_eq!(updated.comparable(), r#"{"id":7,"name":"Ann"}"#);
    }

    #[test]
    fn an_event_in_the_schema_wrapper() {
        let event = r#"{"schema":{"type":"struct","fields":[],"optional":false,"name":"db.public.customers.Envelope"},"payload":{"before":null,"after":{"id":3,"first_name":"Bo"},"source":{"connector":"mysql","file":"binlog.000003","pos":154},"op":"r","ts_ms":1700000000000}}"#;
        let records = read(&format!("[{event}]"));
        let item = ok(&records[0]);
        assert_eq!(records[0].locator, "record 1");
        assert_eq!(item.raw, event);
        assert_eq!(item.op, ChangeOp::Upsert);
        assert_eq!(item.value, json!({"id": 3, "first_name": "Bo"}));
    }

    #[test]
    fn every_op() {
        let event = |op: &str, before: &str, after: &str| {
            format!(r#"{{"before":{before},"after":{after},"op":"{op}","ts_ms":5}}"#)
        };
        let row = r#"{"id":9}"#;
        for (op, before, after, expected) in [
            ("c", "null", row, ChangeOp::Upsert),
            ("r", "null", row, ChangeOp::Upsert),
            ("u", row, r#"{"id":9,"x":1}"#, ChangeOp::Upsert),
            ("d", row, "null", ChangeOp::Delete),
        ] {
            let records = read(&event(op, before, after));
            let item = ok(&records[0]);
            assert_eq!(item.op, expected, "{op}");
            let image = if expected == ChangeOp::Delete { before } else { after };
            assert_eq!(item.value, serde_json::from_str::<Value>(image).unwrap(), "{op}");
            assert_eq!(item.compared.as_deref(), Some(image), "{op}");
        }
    }

    #[test]
    fn envelope_metadata_does_not_change_what_is_compared() {
        let first = r#"{"after":{"b":2,"a":1},"op":"u","ts_ms":1,"source":{"lsn":100}}"#;
        let second = r#"{"op":"u","ts_ms":2,"source":{"lsn":200},"after":{"a":1,"b":2}}"#;
        let records = read(&format!("{first}\n{second}\n"));
        assert_ne!(ok(&records[0]).raw, ok(&records[1]).raw);
        assert_eq!(ok(&records[0]).compared, ok(&records[1]).compared);
    }

    #[test]
    fn tombstones_and_heartbeats_are_ignored() {
        let input = "{\"before\":{\"id\":1},\"after\":null,\"op\":\"d\"}\nnull\n{\"schema\":null,\"payload\":null}\n{\"ts_ms\":1700000000000}\n{\"schema\":{},\"payload\":{\"ts_ms\":1}}\n";
        let records = read(input);
        assert_eq!(records.len(), 5);
        assert_eq!(ok(&records[0]).op, ChangeOp::Delete);
        for record in &records[1..] {
            let item = ok(record);
            assert_eq!(
                (item.op, &item.value, &item.compared),
                (ChangeOp::Ignore, &Value::Null, &None),
                "{record:?}"
            );
        }
        assert_eq!(ok(&records[1]).raw, "null");
        assert_eq!(ok(&records[2]).raw, r#"{"schema":null,"payload":null}"#);
    }

    #[test]
    fn truncate_and_message_events_are_rejected_as_unsupported() {
        let input = r#"{"op":"t","before":null,"after":null,"ts_ms":1}
{"schema":{},"payload":{"op":"m","ts_ms":1,"message":{"prefix":"p","content":"c2VjcmV0"}}}
{"op":"c","after":{"id":1}}
"#;
        let records = read(input);
        let e = records[0].item.as_ref().unwrap_err();
        assert_eq!(e.kind, InputErrorKind::Unsupported);
        assert_eq!(
            records[0].error_message().unwrap(),
            "line 1: field `op`: truncate events (op \"t\") are not supported: they do not name the records removed"
        );
        let e = records[1].item.as_ref().unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (InputErrorKind::Unsupported, Some("payload.op"))
        );
        assert_eq!(ok(&records[2]).op, ChangeOp::Upsert);
    }

    #[test]
    fn missing_or_wrong_fields_are_named() {
        let cases = [
            (r#"{"op":"c","after":null}"#, "field `after`: is missing or null; a create, read or update needs the row image"),
            (r#"{"payload":{"op":"u","before":{}}}"#, "field `payload.after`: is missing or null; a create, read or update needs the row image"),
            (r#"{"payload":{"op":"d","before":null,"after":null}}"#, "field `payload.before`: is missing or null; a delete needs the row image to know which record it removes"),
            (r#"{"op":"c","after":[1]}"#, "field `after`: expected an object, found an array"),
            (r#"{"before":null,"after":{"id":1}}"#, "field `op`: is missing"),
            (r#"{"payload":{"after":{"id":1},"op":"secret-op"}}"#, "field `payload.op`: is not a known operation (expected c, r, u, d, t or m)"),
            (r#"{"op":7,"after":{"id":1}}"#, "field `op`: expected a string, found a number"),
            (r#"{"schema":{},"payload":"secret"}"#, "field `payload`: expected an object, found a string"),
            ("42", "expected a JSON object, found a number"),
        ];
        for (event, expected) in cases {
            let records = read(event);
            assert_eq!(records.len(), 1, "{event}");
            let message = records[0].item.as_ref().unwrap_err().to_string();
            assert_eq!(message, expected);
        }
    }

    #[test]
    fn a_bad_event_does_not_stop_the_stream() {
        let input = format!("{CREATE}\n{{\"op\":\"c\",\"after\":\n{CREATE}\n");
        let records = read(&input);
        assert_eq!(records.len(), 3);
        assert!(records[1].item.is_err());
        assert_eq!(records[2].locator, "line 3");
        assert_eq!(ok(&records[2]).raw, CREATE);
    }
}
