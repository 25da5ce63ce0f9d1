//! Hostile input for the input readers (CSV, JSON array / NDJSON, Debezium):
//! files made of good records and malformed ones of every kind we know.
//! Every good record is read exactly as written; every malformed one is
//! rejected on its own, located at its row, line or record and naming the
//! field at fault where there is one, without quoting any value; and the
//! records after it are still read. Nothing panics.
//!
//! Case counts are small so that CI stays fast; `PROPTEST_CASES` raises them.

use mdm_commands::input::csv::{CsvOptions, CsvRecords};
use mdm_commands::input::debezium::DebeziumRecords;
use mdm_commands::input::json::JsonRecords;
use mdm_commands::input::{ChangeOp, InputErrorKind, InputRecord};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A value that stands for personal data: no error message may contain it.
const MARKER: &str = "Zq9xW7secret";

const MAX: usize = 4096;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text for a field: the marker, arbitrary Unicode and CSV/JSON syntax.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(MARKER.to_owned()),
        2 => "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("{s}{MARKER}")),
        2 => any::<String>().prop_map(|s| format!("{MARKER}{s}")),
        1 => prop::sample::select(vec![",", "\"", "\"\"", "\n", "\r\n", "\r", "{", "}", "[", "]", "\\", "\u{FEFF}", "\0", "\u{202E}"])
            .prop_map(|s| format!("{MARKER}{s}{MARKER}")),
    ]
}

/// Checks what every reader owes its caller: an error names no value.
fn no_value_in_errors(records: &[InputRecord]) -> Result<(), TestCaseError> {
    for record in records {
        if let Some(message) = record.error_message() {
            prop_assert!(!message.contains(MARKER), "an error quotes a value: {}", message);
            prop_assert!(!message.contains("secret"), "{}", message);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- CSV ----

/// One CSV row as the test writes it, and what the reader must make of it.
#[derive(Clone, Debug)]
enum CsvRow {
    /// Good: these fields, each written quoted or not.
    Good(Vec<String>),
    /// One field too many or too few.
    WrongCount(Vec<String>),
    /// Good fields, but one holds bytes that are not UTF-8.
    NotUtf8(Vec<String>),
    /// A field longer than the limit.
    TooLarge,
    /// A blank line (skipped, not counted).
    Blank,
}

fn quote(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

fn csv_line(fields: &[String]) -> Vec<u8> {
    fields
        .iter()
        .map(|f| quote(f))
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

fn csv_row(columns: usize) -> impl Strategy<Value = CsvRow> {
    let fields = move |n: usize| prop::collection::vec(field_text(), n..=n);
    prop_oneof![
        6 => fields(columns).prop_map(CsvRow::Good),
        2 => prop_oneof![fields(columns + 1), fields(columns.saturating_sub(1).max(1))]
            .prop_filter("another count", move |f| f.len() != columns)
            .prop_map(CsvRow::WrongCount),
        1 => fields(columns).prop_map(CsvRow::NotUtf8),
        1 => Just(CsvRow::TooLarge),
        1 => Just(CsvRow::Blank),
    ]
}

fn csv_file() -> impl Strategy<Value = (usize, bool, &'static str, Vec<CsvRow>)> {
    (1usize..6).prop_flat_map(|columns| {
        (
            Just(columns),
            any::<bool>(),
            prop::sample::select(vec!["\n", "\r\n", "\r"]),
            prop::collection::vec(csv_row(columns), 0..30),
        )
    })
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn csv_rows_are_read_or_rejected_one_by_one((columns, bom, eol, rows) in csv_file()) {
        let header: Vec<String> = (0..columns).map(|i| format!("col{i}")).collect();
        let mut input = Vec::new();
        if bom {
            input.extend_from_slice(b"\xEF\xBB\xBF");
        }
        input.extend_from_slice(header.join(",").as_bytes());
        for row in &rows {
            input.extend_from_slice(eol.as_bytes());
            match row {
                CsvRow::Good(f) | CsvRow::WrongCount(f) => input.extend(csv_line(f)),
                CsvRow::NotUtf8(f) => {
                    let mut line = csv_line(f);
                    line.insert(1, 0xFF);
                    line.insert(2, 0xC0);
                    input.extend(line);
                }
                CsvRow::TooLarge => input.extend(quote(&format!("{MARKER}{}", "x".repeat(MAX))).into_bytes()),
                CsvRow::Blank => {}
            }
        }
        input.extend_from_slice(eol.as_bytes());
        let options = CsvOptions { max_record_bytes: MAX, ..CsvOptions::default() };
        let records: Vec<InputRecord> = CsvRecords::new(&input[..], options).collect();
        no_value_in_errors(&records)?;
        let expected: Vec<&CsvRow> = rows.iter().filter(|r| !matches!(r, CsvRow::Blank)).collect();
        prop_assert_eq!(records.len(), expected.len(), "one outcome per row");
        for (i, (record, row)) in records.iter().zip(&expected).enumerate() {
            prop_assert_eq!(&record.locator, &format!("row {}", i + 1));
            match (row, &record.item) {
                (CsvRow::Good(fields), Ok(item)) => {
                    prop_assert_eq!(item.op, ChangeOp::Upsert);
                    for (name, field) in header.iter().zip(fields) {
                        prop_assert_eq!(item.value.get(name).and_then(Value::as_str), Some(field.as_str()));
                    }
                    prop_assert_eq!(item.raw.as_bytes(), &csv_line(fields)[..]);
                }
                (CsvRow::WrongCount(_), Err(e)) => prop_assert_eq!(e.kind, InputErrorKind::Malformed),
                (CsvRow::NotUtf8(_), Err(e)) => prop_assert_eq!(e.kind, InputErrorKind::NotUtf8),
                (CsvRow::TooLarge, Err(e)) => prop_assert_eq!(e.kind, InputErrorKind::TooLarge),
                (row, item) => prop_assert!(false, "{}: {:?} read as {:?}", record.locator, row, item),
            }
        }
    }

    /// A quote left open swallows the rest of the file (that is CSV); it is
    /// one rejected row, and the rows before it are read.
    #[test]
    fn an_unclosed_quote_is_one_rejected_row(good in prop::collection::vec(field_text(), 0..10), tail in field_text()) {
        let mut input = b"name\n".to_vec();
        for field in &good {
            input.extend(quote(field).into_bytes());
            input.push(b'\n');
        }
        input.extend(format!("\"{MARKER}{}", tail.replace('"', "")).into_bytes());
        let records: Vec<InputRecord> = CsvRecords::new(&input[..], CsvOptions::default()).collect();
        no_value_in_errors(&records)?;
        prop_assert_eq!(records.len(), good.len() + 1);
        prop_assert!(records[..good.len()].iter().all(|r| r.item.is_ok()));
        let last = records.last().expect("one record");
        prop_assert_eq!(last.item.as_ref().map_err(|e| e.kind).err(), Some(InputErrorKind::Malformed));
    }

    #[test]
    fn csv_headers_of_any_bytes_are_read_or_refused_once(header in prop::collection::vec(any::<u8>(), 0..80), rest in prop::collection::vec(any::<u8>(), 0..200)) {
        let input = [&header[..], b"\n", &rest[..]].concat();
        let records: Vec<InputRecord> = CsvRecords::new(&input[..], CsvOptions::default()).take(input.len() + 2).collect();
        // A bad header is reported once, located "header", and reading stops.
        if let Some(first) = records.first() {
            if first.locator == "header" {
                prop_assert_eq!(records.len(), 1);
            }
        }
        prop_assert!(records.len() <= input.len() + 1);
    }
}

// ------------------------------------------------------- JSON / NDJSON ----

/// One JSON record as written, and what the reader must make of it.
#[derive(Clone, Debug)]
enum JsonRecord {
    Good(Value),
    /// Syntax errors that keep brackets balanced (so that the splitter
    /// still finds the record's end in an array), and values that are not
    /// objects.
    Malformed(String),
    /// Nested deeper than serde_json's recursion limit.
    TooDeep(usize),
    /// A number too large for a float.
    HugeNumber,
    NotUtf8,
    TooLarge,
}

fn good_object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1_000_000i32..1_000_000).prop_map(|n| json!(f64::from(n) / 4.0)),
        field_text().prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z]{1,6}", value, 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn json_record() -> impl Strategy<Value = JsonRecord> {
    prop_oneof![
        8 => good_object().prop_map(JsonRecord::Good),
        3 => prop::sample::select(vec![
            format!("{{\"name\" \"{MARKER}\"}}"),
            format!("{{\"name\": \"{MARKER}\",}}"),
            format!("{{\"name\": '{MARKER}'}}"),
            format!("{{\"name\": \"{MARKER}\\q\"}}"),
            format!("{{\"n\": 01, \"name\": \"{MARKER}\"}}"),
            format!("{{\"name\": {MARKER}}}"),
            format!("\"{MARKER}\""),
            "12345".to_owned(),
            "true".to_owned(),
            format!("[\"{MARKER}\"]"),
            format!("{{\"name\": \"{MARKER}\"}} {{\"b\": 1}}"),
            format!("{{\"name\": \"\\ud800{MARKER}\"}}"),
            "{\"a\": NaN}".to_owned(),
            "{\"a\": -}".to_owned(),
        ]).prop_map(JsonRecord::Malformed),
        1 => (129usize..2000).prop_map(JsonRecord::TooDeep),
        1 => Just(JsonRecord::HugeNumber),
        1 => Just(JsonRecord::NotUtf8),
        1 => Just(JsonRecord::TooLarge),
    ]
}

fn json_bytes(record: &JsonRecord) -> Vec<u8> {
    match record {
        JsonRecord::Good(v) => v.to_string().into_bytes(),
        JsonRecord::Malformed(text) => text.clone().into_bytes(),
        JsonRecord::TooDeep(depth) => format!(
            "{{\"name\": \"{MARKER}\", \"deep\": {}{}}}",
            "[".repeat(*depth),
            "]".repeat(*depth)
        )
        .into_bytes(),
        JsonRecord::HugeNumber => format!("{{\"name\": \"{MARKER}\", \"n\": 1{}e99999}}", "9".repeat(400)).into_bytes(),
        JsonRecord::NotUtf8 => [&b"{\"name\": \""[..], MARKER.as_bytes(), b"\xFF\xFE\"}"].concat(),
        JsonRecord::TooLarge => format!("{{\"name\": \"{MARKER}{}\"}}", "x".repeat(MAX)).into_bytes(),
    }
}

fn check_json(records: &[InputRecord], expected: &[JsonRecord], locator: &str) -> Result<(), TestCaseError> {
    no_value_in_errors(records)?;
    prop_assert_eq!(records.len(), expected.len(), "one outcome per record");
    for (i, (record, want)) in records.iter().zip(expected).enumerate() {
        prop_assert_eq!(&record.locator, &format!("{locator} {}", i + 1));
        match (want, &record.item) {
            (JsonRecord::Good(v), Ok(item)) => {
                prop_assert_eq!(&item.value, v);
                prop_assert_eq!(item.raw.as_bytes(), &json_bytes(want)[..]);
            }
            (JsonRecord::Malformed(_) | JsonRecord::TooDeep(_) | JsonRecord::HugeNumber, Err(e)) => {
                prop_assert_eq!(e.kind, InputErrorKind::Malformed)
            }
            (JsonRecord::NotUtf8, Err(e)) => prop_assert_eq!(e.kind, InputErrorKind::NotUtf8),
            (JsonRecord::TooLarge, Err(e)) => prop_assert_eq!(e.kind, InputErrorKind::TooLarge),
            (want, item) => prop_assert!(false, "{}: {:?} read as {:?}", record.locator, want, item),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn ndjson_lines_are_read_or_rejected_one_by_one(
        first in good_object(),
        rest in prop::collection::vec(json_record(), 0..25),
        crlf in any::<bool>(),
        bom in any::<bool>(),
    ) {
        // The first line decides the shape: it is a good, complete object.
        let mut expected = vec![JsonRecord::Good(first)];
        expected.extend(rest);
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut input = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        for record in &expected {
            input.extend(json_bytes(record));
            input.extend_from_slice(eol);
        }
        let records: Vec<InputRecord> = JsonRecords::new(&input[..], MAX).collect();
        check_json(&records, &expected, "line")?;
    }

    #[test]
    fn array_elements_are_read_or_rejected_one_by_one(elements in prop::collection::vec(json_record(), 0..25), pretty in any::<bool>()) {
        let sep: &[u8] = if pretty { b",\n  " } else { b"," };
        let mut input = b"[".to_vec();
        for (i, record) in elements.iter().enumerate() {
            if i > 0 {
                input.extend_from_slice(sep);
            }
            input.extend(json_bytes(record));
        }
        input.extend_from_slice(b"]\n");
        let records: Vec<InputRecord> = JsonRecords::new(&input[..], MAX).collect();
        // An element with two values ("{..} {..}") is still one element.
        check_json(&records, &elements, "record")?;
    }

    /// A document cut anywhere: the records before the cut are read, the cut
    /// one is rejected, nothing panics and reading ends.
    #[test]
    fn truncated_documents_end_in_a_rejection(objects in prop::collection::vec(good_object(), 1..8), cut in any::<prop::sample::Index>(), array in any::<bool>()) {
        let text = if array {
            Value::Array(objects.clone()).to_string()
        } else {
            objects.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
        };
        let cut = cut.index(text.len());
        let bytes = &text.as_bytes()[..cut];
        let records: Vec<InputRecord> = JsonRecords::new(bytes, MAX).take(bytes.len() + 2).collect();
        no_value_in_errors(&records)?;
        prop_assert!(records.len() <= objects.len() + 1);
        let debezium: Vec<InputRecord> = DebeziumRecords::new(bytes, MAX).take(bytes.len() + 2).collect();
        no_value_in_errors(&debezium)?;
    }
}

// ------------------------------------------------------------ Debezium ----

/// One Debezium event as written, and the outcome it must have.
#[derive(Clone, Debug)]
enum Event {
    /// `op` c/r/u with an object `after`, or d with an object `before`.
    Good(&'static str, Value),
    Tombstone,
    Heartbeat,
    /// Rejected, naming this field (without the `payload.` prefix).
    Bad(&'static str, InputErrorKind),
    /// Rejected as a whole (not an object, or bad JSON).
    BadWhole,
}

fn row() -> impl Strategy<Value = Value> {
    (any::<u32>(), field_text()).prop_map(|(id, name)| json!({"id": id, "name": name}))
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (prop::sample::select(vec!["c", "r", "u", "d"]), row()).prop_map(|(op, row)| Event::Good(op, row)),
        1 => Just(Event::Tombstone),
        1 => Just(Event::Heartbeat),
        6 => prop::sample::select(vec![
            Event::Bad("op", InputErrorKind::Malformed),
            Event::Bad("after", InputErrorKind::Malformed),
            Event::Bad("before", InputErrorKind::Malformed),
            Event::Bad("payload", InputErrorKind::Malformed),
            Event::Bad("op", InputErrorKind::Unsupported),
        ]),
        1 => Just(Event::BadWhole),
    ]
}

/// The event's body (without the wrapper) and a variant number for the
/// ways a field can be wrong.
fn event_body(event: &Event, variant: usize) -> Option<Value> {
    let source = json!({"connector": "postgresql", "lsn": variant, "name": MARKER});
    Some(match event {
        Event::Good(op, row) => {
            let (before, after) = if *op == "d" {
                (row.clone(), Value::Null)
            } else {
                (Value::Null, row.clone())
            };
            json!({"before": before, "after": after, "op": op, "source": source, "ts_ms": 1})
        }
        Event::Heartbeat => json!({"ts_ms": 1, "source": source}),
        Event::Tombstone | Event::BadWhole => return None,
        Event::Bad("op", InputErrorKind::Malformed) => {
            let op = [json!(null), json!(1), json!(MARKER), json!(["c"]), json!({"c": MARKER})][variant % 5].clone();
            let mut body = json!({"after": {"id": 1, "name": MARKER}, "source": source});
            if variant % 6 != 5 {
                body["op"] = op;
            }
            body
        }
        Event::Bad("op", _) => {
            json!({"op": (["t", "m"][variant % 2]), "source": source, "ts_ms": 1, "message": {"prefix": MARKER}})
        }
        Event::Bad(image, _) => {
            let wrong = [json!(null), json!(MARKER), json!(7), json!([MARKER]), json!(true)][variant % 5].clone();
            let op = if *image == "before" {
                "d"
            } else {
                ["c", "r", "u"][variant % 3]
            };
            let mut body = json!({"op": op, "source": source});
            if variant % 7 != 6 {
                body[*image] = wrong;
            }
            body
        }
    })
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn debezium_events_are_read_or_rejected_naming_the_field(
        events in prop::collection::vec((event(), any::<bool>(), 0usize..100), 0..25),
        schema in any::<bool>(),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (event, wrapped, variant) in &events {
            let wrapped = *wrapped && schema;
            let text = match (event, event_body(event, *variant)) {
                (Event::Tombstone, _) => if wrapped { json!({"schema": null, "payload": null}).to_string() } else { "null".to_owned() },
                (Event::BadWhole, _) => [format!("\"{MARKER}\""), "[1,2]".to_owned(), format!("{{\"op\": \"c\", \"after\": {{\"name\": \"{MARKER}\"}}")]
                    [variant % 3].clone(),
                (Event::Bad("payload", _), _) => json!({"schema": {"type": "struct"}, "payload": ([json!(MARKER), json!(1), json!([])][variant % 3])}).to_string(),
                (_, Some(body)) if wrapped => json!({"schema": {"type": "struct", "name": MARKER, "fields": []}, "payload": body}).to_string(),
                (_, Some(body)) => body.to_string(),
                (_, None) => unreachable!("only tombstones and whole errors have no body"),
            };
            // An event cut short swallows nothing: it sits on its own line.
            input.extend(text.into_bytes());
            input.push(b'\n');
            let prefix = if wrapped { "payload." } else { "" };
            expected.push((event.clone(), prefix));
        }
        // The first line decides NDJSON: put a good event first.
        let first = json!({"op": "c", "after": {"id": 0}}).to_string();
        let input = [first.as_bytes(), b"\n", &input[..]].concat();
        let records: Vec<InputRecord> = DebeziumRecords::new(&input[..], MAX).collect();
        no_value_in_errors(&records)?;
        prop_assert_eq!(records.len(), expected.len() + 1);
        prop_assert!(records[0].item.is_ok());
        for (i, (record, (event, prefix))) in records[1..].iter().zip(&expected).enumerate() {
            prop_assert_eq!(&record.locator, &format!("line {}", i + 2));
            match (event, &record.item) {
                (Event::Good(op, row), Ok(item)) => {
                    prop_assert_eq!(item.op, if *op == "d" { ChangeOp::Delete } else { ChangeOp::Upsert });
                    prop_assert_eq!(&item.value, row);
                }
                (Event::Tombstone | Event::Heartbeat, Ok(item)) => prop_assert_eq!(item.op, ChangeOp::Ignore),
                (Event::Bad("payload", kind), Err(e)) => {
                    prop_assert_eq!(e.kind, *kind);
                    prop_assert_eq!(e.field.as_deref(), Some("payload"));
                }
                (Event::Bad(field, kind), Err(e)) => {
                    prop_assert_eq!(e.kind, *kind);
                    prop_assert_eq!(e.field.clone(), Some(format!("{prefix}{field}")), "{:?}", record.error_message());
                }
                (Event::BadWhole, Err(e)) => {
                    prop_assert_eq!(e.kind, InputErrorKind::Malformed);
                    prop_assert_eq!(&e.field, &None);
                }
                (event, item) => prop_assert!(false, "{}: {:?} read as {:?}", record.locator, event, item),
            }
        }
    }
}
