//! Input readers: split a file or a request body into source records,
//! keeping each record's bytes exactly as received.
//!
//! Three readers, each an `Iterator<Item = InputRecord>` over any
//! [`std::io::BufRead`]:
//! - [`csv::CsvRecords`]: a CSV file whose first row is the header;
//! - [`json::JsonRecords`]: a JSON array of objects, NDJSON (one object a
//!   line), one document, or concatenated documents;
//! - [`debezium::DebeziumRecords`]: Debezium change events (JSON, with or
//!   without the Kafka Connect `schema`/`payload` wrapper).
//!
//! # Bounded memory
//! No reader holds more than one record (plus the `BufRead`'s own buffer):
//! records are found by a byte-level splitter that never parses ahead, and a
//! record longer than `max_record_bytes` is skipped while it is being read
//! (its bytes are dropped as they arrive) and reported as
//! [`InputErrorKind::TooLarge`]. Reading then continues with the next record.
//!
//! # Errors never quote the input
//! A record that cannot be read yields an [`InputRecord`] whose `item` is an
//! [`InputError`]; reading continues with the next record unless the error
//! says otherwise (a bad CSV header, an I/O error, data after a JSON array).
//! Messages name the row, line or field and the problem, never a value from
//! the record: records hold personal data and these messages go to logs and
//! HTTP responses. `Debug` of [`InputItem`] prints sizes, not contents.

pub mod csv;
pub mod debezium;
pub mod json;

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

/// The default limit on one record's size: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// One record read from an input, or why it could not be read.
pub struct InputRecord {
    /// Where it was, for messages: "row 17" (CSV: 1-based data row number,
    /// the header is not counted), "line 5" (NDJSON: 1-based line where the
    /// value starts), "record 3" (1-based element of a JSON array, or the
    /// n-th value of a stream of concatenated JSON values that are not one
    /// per line). Errors about the input as a whole use "header",
    /// "end of input" or "after the array".
    pub locator: String,
    /// The record, or why it was rejected.
    pub item: Result<InputItem, InputError>,
}

impl InputRecord {
    /// The error as one sentence with its locator ("row 17: has 5 fields,
    /// the header has 6"), or `None` for a good record.
    pub fn error_message(&self) -> Option<String> {
        self.item.as_ref().err().map(|e| format!("{}: {e}", self.locator))
    }

    pub(crate) fn err(locator: String, error: InputError) -> Self {
        InputRecord {
            locator,
            item: Err(error),
        }
    }
}

impl fmt::Debug for InputRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputRecord")
            .field("locator", &self.locator)
            .field("item", &self.item)
            .finish()
    }
}

/// A record that was read.
#[derive(Clone, PartialEq)]
pub struct InputItem {
    /// The record's bytes exactly as received (UTF-8 checked), without the
    /// line terminator / array separator and without whitespace around a
    /// JSON value.
    pub raw: String,
    /// Context needed to read `raw` on its own: for CSV the header line
    /// verbatim (shared by all rows, without a byte-order mark and without
    /// its line terminator); `None` otherwise.
    pub raw_header: Option<Arc<str>>,
    /// The record as a JSON value for mapping: the JSON document itself; a
    /// CSV row as an object header -> string (every field a string, empty
    /// fields included as ""); for Debezium the row image (`after` for
    /// c/r/u, `before` for d); `Null` for [`ChangeOp::Ignore`].
    pub value: serde_json::Value,
    /// What the source says happened.
    pub op: ChangeOp,
    /// For Debezium: the canonical serialization of the row image (see
    /// [`canonical_json`]), which is what change detection compares
    /// (envelope metadata such as `ts_ms` or binlog positions changes on
    /// every delivery and must not count as a change). `None` = compare
    /// `raw`.
    pub compared: Option<String>,
    /// For Debezium: where the change sits in the source's change log (see
    /// [`debezium::source_order`]); `None` for other inputs and for
    /// connectors without a position we know.
    pub source_order: Option<mdm_domain::source_record::SourceOrder>,
}

impl InputItem {
    /// What change detection compares: `compared` when set, else `raw`.
    pub fn comparable(&self) -> &str {
        self.compared.as_deref().unwrap_or(&self.raw)
    }
}

/// Prints sizes and the operation, never the record's contents.
impl fmt::Debug for InputItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputItem")
            .field("raw_bytes", &self.raw.len())
            .field("raw_header", &self.raw_header.is_some())
            .field("op", &self.op)
            .field("compared_bytes", &self.compared.as_ref().map(String::len))
            .finish_non_exhaustive()
    }
}

/// What the source says happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// The record exists with this content (a file row, a document, a
    /// Debezium create, read (snapshot) or update).
    Upsert,
    /// The source deleted the record (Debezium `op: "d"`); `value` is the
    /// last row image, which carries the id.
    Delete,
    /// Nothing to do: a Debezium tombstone (a null value after a delete) or
    /// a heartbeat.
    Ignore,
}

/// Why a record could not be read. The message names the field and the
/// problem, never a value from the record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    /// What kind of problem, for callers that react differently.
    pub kind: InputErrorKind,
    /// The field at fault: a CSV column name (from the header) or a JSON
    /// path such as `payload.after`; `None` when the record as a whole is
    /// at fault.
    pub field: Option<String>,
    /// The problem, as a sentence fragment without any record value.
    pub problem: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl InputError {
    pub(crate) fn new(kind: InputErrorKind, problem: impl Into<String>) -> Self {
        InputError {
            kind,
            field: None,
            problem: problem.into(),
        }
    }

    pub(crate) fn in_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn too_large(max: usize) -> Self {
        InputError::new(
            InputErrorKind::TooLarge,
            format!("is larger than the limit of {max} bytes and was skipped"),
        )
    }

    pub(crate) fn not_utf8() -> Self {
        InputError::new(InputErrorKind::NotUtf8, "is not valid UTF-8")
    }

    /// Reading the input failed; the reader stops. Only the error kind is
    /// kept: an I/O error's text is not ours to vouch for.
    pub(crate) fn io(error: &io::Error) -> Self {
        InputError::new(
            InputErrorKind::Io,
            format!("reading the input failed ({}); reading stopped", error.kind()),
        )
    }
}

/// The kinds of [`InputError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputErrorKind {
    /// The record is not well-formed (CSV field count, JSON syntax, not an
    /// object, a required Debezium field missing) or the input as a whole
    /// is (a CSV header, an unclosed JSON array, data after it).
    Malformed,
    /// The record's bytes are not valid UTF-8.
    NotUtf8,
    /// The record is larger than the configured limit.
    TooLarge,
    /// A well-formed record of a kind that is not supported (Debezium
    /// truncate and message events).
    Unsupported,
    /// Reading the input failed; nothing after this was read.
    Io,
}

/// The canonical serialization of a JSON value: compact, object keys in
/// byte order at every level. This is what `serde_json::to_string` prints
/// when serde_json's `preserve_order` feature is off; writing it out here
/// keeps change detection stable should some dependency turn that feature
/// on (it would make key order follow the input).
pub fn canonical_json(value: &serde_json::Value) -> String {
    // Serializing a `Value` into memory cannot fail (its keys are strings).
    serde_json::to_string(&Canonical(value)).unwrap_or_default()
}

/// A JSON value that serializes with sorted object keys.
struct Canonical<'a>(&'a serde_json::Value);

impl serde::Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value;
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                // Already sorted unless serde_json's `preserve_order` is on.
                if map.keys().is_sorted() {
                    for (key, item) in map {
                        out.serialize_entry(key, &Canonical(item))?;
                    }
                } else {
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    for (key, item) in entries {
                        out.serialize_entry(key, &Canonical(item))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Canonical(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// What a JSON value is, for "expected a JSON object, found …" messages.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A serde_json syntax error as a message without input: serde_json's
/// messages are fixed texts ("expected `,` or `}`") plus a position; the
/// position is restated relative to the record.
pub(crate) fn json_syntax_error(error: &serde_json::Error) -> InputError {
    let text = error.to_string();
    let what = text.rsplit_once(" at line ").map_or(text.as_str(), |(what, _)| what);
    let problem = if error.line() <= 1 {
        format!("is not valid JSON: {what} (column {} of the record)", error.column())
    } else {
        format!(
            "is not valid JSON: {what} (line {}, column {} of the record)",
            error.line(),
            error.column()
        )
    };
    InputError::new(InputErrorKind::Malformed, problem)
}

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The input as the splitters see it: the caller's `BufRead` with a
/// leading UTF-8 byte-order mark removed and `Interrupted` retried.
pub(crate) struct Source<R> {
    inner: R,
    /// Bytes read while looking for a BOM that turned out not to be one,
    /// served before `inner`.
    pending: Vec<u8>,
    pending_pos: usize,
    bom_checked: bool,
}

impl<R: BufRead> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Source {
            inner,
            pending: Vec::new(),
            pending_pos: 0,
            bom_checked: false,
        }
    }

    fn check_bom(&mut self) -> io::Result<()> {
        loop {
            let buf = self.inner.fill_buf()?;
            if self.pending.is_empty() && (buf.len() >= BOM.len() || buf.is_empty()) {
                if buf.starts_with(BOM) {
                    self.inner.consume(BOM.len());
                }
                return Ok(());
            }
            // The input arrives in pieces shorter than a BOM: collect them.
            let Some(&byte) = buf.first() else {
                return Ok(()); // end of input: `pending` is served as is
            };
            self.inner.consume(1);
            self.pending.push(byte);
            if !BOM.starts_with(&self.pending) {
                return Ok(());
            }
            if self.pending.len() == BOM.len() {
                self.pending.clear();
                return Ok(());
            }
        }
    }
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.bom_checked {
            retry(|| self.check_bom())?;
            self.bom_checked = true;
        }
        if self.pending_pos < self.pending.len() {
            return Ok(&self.pending[self.pending_pos..]);
        }
        loop {
            match self.inner.fill_buf() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if self.pending_pos < self.pending.len() {
            self.pending_pos += amount;
            debug_assert!(self.pending_pos <= self.pending.len());
            if self.pending_pos >= self.pending.len() {
                self.pending.clear();
                self.pending_pos = 0;
            }
        } else {
            self.inner.consume(amount);
        }
    }
}

fn retry(mut f: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The bytes of the record being read, up to a limit: past it the record is
/// marked oversized and its bytes are dropped as they arrive.
pub(crate) struct Accumulator {
    bytes: Vec<u8>,
    max: usize,
    oversized: bool,
}

impl Accumulator {
    pub(crate) fn new(max: usize) -> Self {
        Accumulator {
            bytes: Vec::new(),
            max,
            oversized: false,
        }
    }

    pub(crate) fn push(&mut self, more: &[u8]) {
        if self.oversized {
            return;
        }
        if self.bytes.len() + more.len() > self.max {
            self.oversized = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(more);
        }
    }

    /// The record's bytes, or `None` if it was too large; resets for the
    /// next record.
    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        let oversized = std::mem::replace(&mut self.oversized, false);
        let bytes = std::mem::take(&mut self.bytes);
        (!oversized).then_some(bytes)
    }
}

/// The bytes without leading and trailing JSON whitespace.
pub(crate) fn trim_json_ws(mut bytes: Vec<u8>) -> Vec<u8> {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let end = bytes.iter().rposition(|b| !is_ws(b)).map_or(0, |i| i + 1);
    bytes.truncate(end);
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    if start > 0 {
        bytes.drain(..start);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A reader that hands out one byte at a time.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || out.is_empty() {
                return Ok(0);
            }
            out[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    fn read_all(source: impl BufRead) -> Vec<u8> {
        let mut source = Source::new(source);
        let mut out = Vec::new();
        source.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn readers_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<csv::CsvRecords<io::Cursor<Vec<u8>>>>();
        send::<json::JsonRecords<io::Cursor<Vec<u8>>>>();
        send::<debezium::DebeziumRecords<io::Cursor<Vec<u8>>>>();
        send::<InputRecord>();
    }

    #[test]
    fn source_removes_a_leading_bom_even_when_it_arrives_byte_by_byte() {
        for input in [
            &b"\xEF\xBB\xBFabc"[..],
            b"\xEF\xBBx",
            b"\xEF",
            b"",
            b"ab",
            b"\xEF\xBB\xBF",
            b"a\xEF\xBB\xBF",
        ] {
            let expected = input.strip_prefix(&BOM[..]).unwrap_or(input).to_vec();
            assert_eq!(read_all(input), expected, "{input:?}");
            assert_eq!(
                read_all(io::BufReader::with_capacity(1, Trickle(input))),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_matches_to_string() {
        let value = json!({"b": 1, "a": {"z": [1, {"y": null, "x": "é\"\n"}], "c": 2.5}, "A": true});
        let canonical = canonical_json(&value);
        assert_eq!(
            canonical,
            r#"{"A":true,"a":{"c":2.5,"z":[1,{"x":"é\"\n","y":null}]},"b":1}"#
        );
        assert_eq!(canonical, serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn debug_of_an_item_shows_no_content() {
        let item = InputItem {
            raw: "secret-value".into(),
            raw_header: None,
            value: json!({"name": "secret-value"}),
            op: ChangeOp::Upsert,
            compared: Some("secret-value".into()),
            source_order: None,
        };
        let record = InputRecord {
            locator: "row 1".into(),
            item: Ok(item),
        };
        let debug = format!("{record:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("row 1"));
    }

    #[test]
    fn error_message_names_locator_field_and_problem() {
        let record = InputRecord::err(
            "line 3".into(),
            InputError::new(InputErrorKind::Malformed, "is missing").in_field("payload.after"),
        );
        assert_eq!(
            record.error_message().unwrap(),
            "line 3: field `payload.after`: is missing"
        );
    }

    #[test]
    fn accumulator_drops_an_oversized_record_and_recovers() {
        let mut acc = Accumulator::new(4);
        acc.push(b"ab");
        acc.push(b"cde");
        assert_eq!(acc.take(), None);
        acc.push(b"abcd");
        assert_eq!(acc.take(), Some(b"abcd".to_vec()));
        assert_eq!(acc.take(), Some(Vec::new()));
    }

    /// Runs every reader over `input` (CSV twice: as given, and after a
    /// fixed header) and returns each reader's records.
    fn all_readers(input: &[u8], max: usize) -> Vec<(&'static str, Vec<InputRecord>)> {
        let with_header = [&b"a,b,c\n"[..], input].concat();
        let csv = |bytes: &[u8]| -> Vec<InputRecord> {
            csv::CsvRecords::new(
                bytes,
                csv::CsvOptions {
                    max_record_bytes: max,
                    ..csv::CsvOptions::default()
                },
            )
            .take(input.len() + 3)
            .collect()
        };
        vec![
            ("csv", csv(input)),
            ("csv with header", csv(&with_header)),
            (
                "json",
                json::JsonRecords::new(input, max).take(input.len() + 3).collect(),
            ),
            (
                "debezium",
                debezium::DebeziumRecords::new(input, max)
                    .take(input.len() + 3)
                    .collect(),
            ),
        ]
    }

    const MARKER: &str = "Zq9xW7";

    /// Inputs made of JSON and CSV syntax, personal-looking values holding
    /// the marker, and arbitrary bytes.
    fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            4 => Just(MARKER.as_bytes().to_vec()),
            6 => prop::sample::select(vec![
                "{", "}", "[", "]", "\"", ",", ":", "\\", "\n", "\r\n", " ", "null", "1", "tru", "\u{FEFF}",
                "{\"op\":\"c\",\"after\":", "{\"payload\":", "\"op\":\"d\"", "\"before\":", "\"after\":{\"id\":",
                "\"op\":\"t\"", "\"schema\":{},", "\"ts_ms\":1", "\"email\":\"", "a,b,c\n", "\"\"",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            2 => prop::collection::vec(any::<u8>(), 0..6),
        ];
        prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn readers_never_panic_on_arbitrary_bytes(
            input in prop::collection::vec(any::<u8>(), 0..600),
            max in 1usize..80,
        ) {
            for (name, records) in all_readers(&input, max) {
                // Every record consumes input: the readers end.
                prop_assert!(records.len() <= input.len() + 2, "{}", name);
            }
        }

        #[test]
        fn errors_never_quote_the_input_and_raw_is_verbatim(input in hostile_input(), max in 4usize..300) {
            let contains = |haystack: &[u8], needle: &[u8]| {
                needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
            };
            for (name, records) in all_readers(&input, max) {
                let mut header: Option<Vec<String>> = None;
                for record in &records {
                    match &record.item {
                        Ok(item) => {
                            prop_assert!(contains(&input, item.raw.as_bytes()), "{}: raw not in input", name);
                            if let Some(raw_header) = &item.raw_header {
                                prop_assert!(contains(&[&b"a,b,c"[..], &input].concat(), raw_header.as_bytes()));
                                if let serde_json::Value::Object(map) = &item.value {
                                    header = Some(map.keys().cloned().collect());
                                }
                            }
                        }
                        Err(e) => {
                            let message = record.error_message().unwrap_or_default();
                            match (&e.field, name) {
                                // A CSV column is named by its header, which
                                // here may hold the marker: only the header
                                // names may appear.
                                (Some(field), "csv") => {
                                    prop_assert!(!e.problem.contains(MARKER), "{}: {}", name, message);
                                    prop_assert!(header.is_none() || header.iter().flatten().any(|h| h == field));
                                }
                                _ => prop_assert!(!message.contains(MARKER), "{}: {}", name, message),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Throughput of the readers on generated data held in memory. Run with
    /// `cargo test --release -p mdm-commands input_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run in release mode"]
    fn input_throughput() {
        use std::time::Instant;
        const ROWS: usize = 500_000;

        let mut csv_input = String::from("id,first_name,last_name,email,phone,street,city,state,zip,dob\n");
        let mut ndjson_input = String::new();
        let mut debezium_input = String::new();
        let mut wrapped_input = String::new();
        // The Kafka Connect JSON converter's schema for such a row (about 2 KB).
        let columns = ["id", "name", "email", "phones", "address", "dob"];
        let row_schema = |name: &str| {
            let fields: Vec<_> = columns
                .iter()
                .map(|c| json!({"type": "string", "optional": true, "field": c}))
                .collect();
            json!({"type": "struct", "fields": fields, "optional": true, "name": format!("db.public.customers.{name}")})
        };
        let schema = json!({
            "type": "struct", "optional": false, "name": "db.public.customers.Envelope", "version": 1,
            "fields": [
                row_schema("Value"), row_schema("Value"),
                {"type": "struct", "field": "source", "optional": false, "name": "io.debezium.connector.postgresql.Source",
                 "fields": [{"type": "string", "optional": false, "field": "version"},
                            {"type": "string", "optional": false, "field": "connector"},
                            {"type": "int64", "optional": true, "field": "lsn"}]},
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"},
            ],
        });
        for i in 0..ROWS {
            let (first, last) = (
                ["Ann", "Bob", "Carla", "Dmitri"][i % 4],
                ["Lee", "O'Neil", "Smith"][i % 3],
            );
            let street = if i % 10 == 0 {
                format!("\"{i} Main St, Apt {}\"", i % 97)
            } else {
                format!("{i} Main St")
            };
            csv_input.push_str(&format!(
                "{i},{first},{last},{first}.{last}{i}@example.com,+1-555-{:04},{street},Springfield,IL,{:05},1980-{:02}-{:02}\n",
                i % 10_000,
                i % 100_000,
                i % 12 + 1,
                i % 28 + 1,
            ));
            let row = json!({
                "id": i, "name": {"first": first, "last": last}, "email": format!("{first}.{last}{i}@example.com"),
                "phones": [{"kind": "home", "number": format!("+1-555-{:04}", i % 10_000)}],
                "address": {"line1": format!("{i} Main St"), "city": "Springfield", "state": "IL", "zip": format!("{:05}", i % 100_000)},
                "dob": "1980-01-01",
            });
            ndjson_input.push_str(&row.to_string());
            ndjson_input.push('\n');
            let event = json!({"before": null, "after": row, "source": {"connector": "postgresql", "lsn": i}, "op": "c", "ts_ms": 1_700_000_000_000u64 + i as u64});
            debezium_input.push_str(&event.to_string());
            debezium_input.push('\n');
            wrapped_input.push_str(&json!({"schema": schema, "payload": event}).to_string());
            wrapped_input.push('\n');
        }

        /// CPU time of this thread, where Linux tells it: wall time is
        /// skewed when other processes share the two cores.
        fn thread_cpu_seconds() -> Option<f64> {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
            Some(nanos as f64 / 1e9)
        }

        /// Reads every record; returns records per second of CPU time (or of
        /// wall time where CPU time is unknown).
        fn measure(name: &str, input: &str, records: impl Iterator<Item = InputRecord>) -> f64 {
            let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
            let mut good = 0usize;
            for record in records {
                assert!(record.item.is_ok(), "{:?}", record.error_message());
                good += 1;
            }
            let wall = start.elapsed().as_secs_f64();
            let cpu = cpu_start.zip(thread_cpu_seconds()).map_or(wall, |(a, b)| b - a);
            assert_eq!(good, ROWS);
            let mb = input.len() as f64 / 1e6;
            eprintln!(
                "{name}: {good} records, {mb:.1} MB; wall {wall:.3} s = {:.0} MB/s, {:.0} records/s; \
                 CPU {cpu:.3} s = {:.0} MB/s, {:.0} records/s",
                mb / wall,
                good as f64 / wall,
                mb / cpu,
                good as f64 / cpu,
            );
            good as f64 / cpu
        }

        let rates = [
            measure(
                "csv",
                &csv_input,
                csv::CsvRecords::new(csv_input.as_bytes(), csv::CsvOptions::default()),
            ),
            measure(
                "ndjson",
                &ndjson_input,
                json::JsonRecords::new(ndjson_input.as_bytes(), DEFAULT_MAX_RECORD_BYTES),
            ),
            {
                let array = format!("[{}]", ndjson_input.trim_end().replace('\n', ",\n"));
                measure(
                    "json array",
                    &array,
                    json::JsonRecords::new(array.as_bytes(), DEFAULT_MAX_RECORD_BYTES),
                )
            },
            measure(
                "debezium",
                &debezium_input,
                debezium::DebeziumRecords::new(debezium_input.as_bytes(), DEFAULT_MAX_RECORD_BYTES),
            ),
            measure(
                "debezium with schema",
                &wrapped_input,
                debezium::DebeziumRecords::new(wrapped_input.as_bytes(), DEFAULT_MAX_RECORD_BYTES),
            ),
        ];
        // The target: well above 300k records/s for CSV and NDJSON (the whole
        // ingest pipeline must reach 30k records/s). Reported, not asserted:
        // a loaded machine must not fail a measurement.
        for (name, rate) in ["csv", "ndjson"].iter().zip(rates) {
            let verdict = if rate > 300_000.0 { "met" } else { "NOT met" };
            eprintln!("{name}: target of 300k records/s {verdict}");
        }
    }
}
