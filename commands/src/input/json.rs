//! JSON inputs: an array of objects, NDJSON, one document, or concatenated
//! documents; each object is a record.
//!
//! # Shapes
//! The first byte that is not whitespace (after an optional UTF-8 BOM)
//! decides:
//! - `[`: a JSON array whose elements are the records, located "record N".
//! - anything else: a sequence of JSON values. If the first value is
//!   complete on its line (only whitespace after it before the line break
//!   or the end of the input), the input is NDJSON and is split strictly on
//!   line breaks, located "line N" (blank lines are skipped but counted), so
//!   a broken line never swallows the lines after it. Otherwise (a
//!   pretty-printed document, or several documents on one line) values are
//!   delimited by their brackets, located "record N".
//!
//! # How records are found
//! A byte-level splitter tracks strings, escapes and bracket depth to find
//! each record's bytes without parsing the input; only then is the record
//! parsed with serde_json. So a malformed element is rejected on its own
//! and reading continues with the next one, and memory holds one record.
//! An array's element ends at the next `,` or `]` outside strings and
//! brackets, so `[{"a":1} x, {"b":2}]` rejects record 1 and reads record 2.
//!
//! Limits of the guessing: a stream whose *first* line is broken with a
//! bracket left open (`{"a": 1` then a line break) looks like the start of
//! a pretty-printed document, so the reader takes the values to span lines;
//! the open bracket then swallows the rest of the input, reported as one
//! malformed record.

use std::fmt;
use std::io::BufRead;

use serde_json::Value;

use super::{
    json_kind, json_syntax_error, trim_json_ws, Accumulator, ChangeOp, InputError, InputErrorKind, InputItem,
    InputRecord, Source,
};

/// The records of a JSON input (see the module documentation for shapes).
///
/// Every record must be a JSON object (`null` included: only the Debezium
/// reader, built on the same splitter, takes `null` for a tombstone).
pub struct JsonRecords<R> {
    source: Source<R>,
    acc: Accumulator,
    max: usize,
    mode: Mode,
    /// The 1-based line the reader is on (counted outside arrays).
    line: u64,
    /// Records started so far, for "record N".
    count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing read yet.
    Start,
    /// Inside an array, before an element; `after_comma` when a `,` was
    /// just read.
    Array {
        after_comma: bool,
    },
    /// The input ended inside the array after its last element.
    ArrayNotClosed,
    /// After the array's closing `]`.
    AfterArray,
    /// NDJSON: one value a line.
    Lines,
    /// Values delimited by their brackets.
    Values,
    Done,
}

impl<R> fmt::Debug for JsonRecords<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRecords")
            .field("mode", &self.mode)
            .field("max_record_bytes", &self.max)
            .field("line", &self.line)
            .field("records_started", &self.count)
            .finish()
    }
}

/// How a scanned value ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The value is complete.
    Complete,
    /// An array element ended at `,` (consumed).
    Comma,
    /// An array element ended at the array's `]` (consumed).
    Close,
    /// The input ended.
    Eof,
    /// While probing the first value: a line break inside a string, which
    /// JSON does not allow, so the input is taken to be NDJSON with a
    /// broken first line. The line break is consumed.
    NewlineInString,
}

/// Where a value is being scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    /// A value of a stream; `probe` for the first one, whose shape decides
    /// between NDJSON and bracket-delimited values.
    TopLevel { probe: bool },
    /// An element of an array.
    Element,
}

/// The brackets open at a point of a value. Their kinds are kept up to a
/// nesting of [`Brackets::TRACKED`] (serde_json refuses deeper values
/// anyway); deeper ones are only counted, so memory stays bounded.
#[derive(Debug, Default)]
struct Brackets {
    depth: usize,
    /// `true` for `{`, `false` for `[`, outermost first.
    kinds: Vec<bool>,
}

/// What a closing bracket did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// Closed a bracket inside the value.
    Inner,
    /// Closed the value's outermost bracket.
    Outermost,
    /// No open bracket matches it (nothing was changed).
    Unmatched,
}

impl Brackets {
    const TRACKED: usize = 1024;

    fn open(&mut self, b: u8) {
        if self.kinds.len() == self.depth && self.depth < Self::TRACKED {
            self.kinds.push(b == b'{');
        }
        self.depth += 1;
    }

    /// Closes the innermost bracket of the same kind, and every bracket
    /// opened inside it (left open by mistake), so that a missing `]` or
    /// `}` does not swallow the records after it.
    fn close(&mut self, b: u8) -> Closed {
        if self.depth == 0 {
            return Closed::Unmatched;
        }
        if self.depth > self.kinds.len() {
            self.depth -= 1; // too deep to know the kind
        } else {
            let brace = b == b'}';
            let Some(at) = self.kinds.iter().rposition(|&k| k == brace) else {
                return Closed::Unmatched;
            };
            self.kinds.truncate(at);
            self.depth = at;
        }
        if self.depth == 0 {
            Closed::Outermost
        } else {
            Closed::Inner
        }
    }
}

/// One record's bytes as cut by the splitter.
type Piece = (String, Result<Vec<u8>, InputError>);

impl<R: BufRead> JsonRecords<R> {
    /// Reads `reader` as JSON; a record longer than `max_record_bytes` is
    /// rejected and skipped. Nothing is read until the first `next`.
    pub fn new(reader: R, max_record_bytes: usize) -> Self {
        JsonRecords {
            source: Source::new(reader),
            acc: Accumulator::new(max_record_bytes),
            max: max_record_bytes,
            mode: Mode::Start,
            line: 1,
            count: 0,
        }
    }

    /// The bytes of the record just scanned, or the too-large error.
    fn take(&mut self) -> Result<Vec<u8>, InputError> {
        self.acc
            .take()
            .map(trim_json_ws)
            .ok_or_else(|| InputError::too_large(self.max))
    }

    fn record_locator(&self) -> String {
        format!("record {}", self.count)
    }

    /// Skips whitespace, counting lines; returns the next byte (not
    /// consumed), or `None` at the end of the input.
    fn skip_ws(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.source.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            for (i, &b) in buf.iter().enumerate() {
                match b {
                    b'\n' => self.line += 1,
                    b' ' | b'\t' | b'\r' => {}
                    _ => {
                        self.source.consume(i);
                        return Ok(Some(b));
                    }
                }
            }
            let n = buf.len();
            self.source.consume(n);
        }
    }

    /// Skips spaces, tabs and carriage returns; returns the next byte (not
    /// consumed), or `None` at the end of the input.
    fn skip_blanks(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.source.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
                Some(i) => {
                    let b = buf[i];
                    self.source.consume(i);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.source.consume(n);
                }
            }
        }
    }

    /// Scans one value into `acc`. Returns how it ended and, for a probe,
    /// whether it went on past a line break.
    fn scan(&mut self, context: Context) -> std::io::Result<(Stop, bool)> {
        let top = matches!(context, Context::TopLevel { .. });
        let probe = context == Context::TopLevel { probe: true };
        let mut brackets = Brackets::default();
        let mut in_string = false;
        let mut escaped = false;
        let mut spans_lines = false;
        loop {
            let buf = self.source.fill_buf()?;
            if buf.is_empty() {
                return Ok((Stop::Eof, spans_lines));
            }
            // (how it ended, bytes of the value in `buf`, bytes to consume)
            let mut stop = None;
            let mut i = 0;
            while i < buf.len() {
                let b = buf[i];
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if top && brackets.depth == 0 {
                            stop = Some((Stop::Complete, i + 1, i + 1));
                            break;
                        }
                    } else if b == b'\n' && probe {
                        stop = Some((Stop::NewlineInString, i, i + 1));
                        break;
                    } else {
                        // Fast path: skip ordinary string bytes.
                        let rest = &buf[i + 1..];
                        let skip = rest.iter().position(|&c| c == b'"' || c == b'\\' || c == b'\n');
                        i += 1 + skip.unwrap_or(rest.len());
                        continue;
                    }
                    i += 1;
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => brackets.open(b),
                    b'}' | b']' => match brackets.close(b) {
                        Closed::Inner => {}
                        Closed::Outermost if top => {
                            stop = Some((Stop::Complete, i + 1, i + 1));
                            break;
                        }
                        Closed::Outermost => {}
                        // A stray closing bracket at the top level: a
                        // one-byte bad value (or the end of a bad one).
                        Closed::Unmatched if top => {
                            stop = Some((Stop::Complete, i + 1, i + 1));
                            break;
                        }
                        // In an array element, a `]` that no `[` of the
                        // element opened closes the array.
                        Closed::Unmatched if b == b']' => {
                            stop = Some((Stop::Close, i, i + 1));
                            break;
                        }
                        // A stray `}` in an element: part of a bad element.
                        Closed::Unmatched => {}
                    },
                    b',' if !top && brackets.depth == 0 => {
                        stop = Some((Stop::Comma, i, i + 1));
                        break;
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        if top && brackets.depth == 0 {
                            // The end of a scalar; the whitespace is left.
                            stop = Some((Stop::Complete, i, i));
                            break;
                        }
                        if b == b'\n' && probe {
                            spans_lines = true;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            match stop {
                Some((how, data_end, consumed)) => {
                    self.acc.push(&buf[..data_end]);
                    self.source.consume(consumed);
                    return Ok((how, spans_lines));
                }
                None => {
                    let n = buf.len();
                    self.acc.push(buf);
                    self.source.consume(n);
                }
            }
        }
    }

    /// Reads one NDJSON line that is not blank.
    fn next_line(&mut self) -> std::io::Result<Option<Piece>> {
        loop {
            let line = self.line;
            let mut saw_end = false;
            loop {
                let buf = self.source.fill_buf()?;
                if buf.is_empty() {
                    saw_end = true;
                    break;
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.acc.push(&buf[..i]);
                        self.source.consume(i + 1);
                        self.line += 1;
                        break;
                    }
                    None => {
                        let n = buf.len();
                        self.acc.push(buf);
                        self.source.consume(n);
                    }
                }
            }
            let bytes = self.take();
            let blank = matches!(&bytes, Ok(b) if b.is_empty());
            if !blank {
                return Ok(Some((format!("line {line}"), bytes)));
            }
            if saw_end {
                return Ok(None);
            }
        }
    }

    /// Reads the first value and decides the shape of the input.
    fn start(&mut self) -> std::io::Result<Option<Piece>> {
        match self.skip_ws()? {
            None => {
                self.mode = Mode::Done;
                return Ok(None);
            }
            Some(b'[') => {
                self.source.consume(1);
                self.mode = Mode::Array { after_comma: false };
                return self.next_piece();
            }
            Some(_) => {}
        }
        let line = self.line;
        self.count = 1;
        let (stop, spans_lines) = self.scan(Context::TopLevel { probe: true })?;
        let ndjson = match stop {
            Stop::NewlineInString => {
                self.line += 1;
                true
            }
            _ if spans_lines => false,
            Stop::Complete => match self.skip_blanks()? {
                None => true,
                Some(b'\n') => {
                    self.source.consume(1);
                    self.line += 1;
                    true
                }
                Some(_) => false,
            },
            _ => true,
        };
        let bytes = self.take();
        if ndjson {
            self.mode = Mode::Lines;
            Ok(Some((format!("line {line}"), bytes)))
        } else {
            self.mode = Mode::Values;
            Ok(Some((self.record_locator(), bytes)))
        }
    }

    fn next_piece(&mut self) -> std::io::Result<Option<Piece>> {
        match self.mode {
            Mode::Done => Ok(None),
            Mode::Start => self.start(),
            Mode::Lines => {
                let piece = self.next_line()?;
                if piece.is_none() {
                    self.mode = Mode::Done;
                }
                Ok(piece)
            }
            Mode::Values => {
                if self.skip_ws()?.is_none() {
                    self.mode = Mode::Done;
                    return Ok(None);
                }
                self.count += 1;
                self.scan(Context::TopLevel { probe: false })?;
                Ok(Some((self.record_locator(), self.take())))
            }
            Mode::Array { after_comma } => {
                let not_closed = || InputError::new(InputErrorKind::Malformed, "the JSON array is not closed");
                match self.skip_ws()? {
                    None => {
                        self.mode = Mode::Done;
                        Ok(Some(("end of input".into(), Err(not_closed()))))
                    }
                    Some(b']') => {
                        self.source.consume(1);
                        self.mode = Mode::AfterArray;
                        if after_comma {
                            self.count += 1;
                            let error = InputError::new(InputErrorKind::Malformed, "is empty (a comma before `]`)");
                            return Ok(Some((self.record_locator(), Err(error))));
                        }
                        self.next_piece()
                    }
                    Some(b',') => {
                        self.source.consume(1);
                        self.count += 1;
                        self.mode = Mode::Array { after_comma: true };
                        let error = InputError::new(InputErrorKind::Malformed, "is empty (two commas in a row)");
                        Ok(Some((self.record_locator(), Err(error))))
                    }
                    Some(_) => {
                        self.count += 1;
                        let (stop, _) = self.scan(Context::Element)?;
                        self.mode = match stop {
                            Stop::Comma => Mode::Array { after_comma: true },
                            Stop::Close => Mode::AfterArray,
                            _ => Mode::ArrayNotClosed,
                        };
                        Ok(Some((self.record_locator(), self.take())))
                    }
                }
            }
            Mode::ArrayNotClosed => {
                self.mode = Mode::Done;
                let error = InputError::new(InputErrorKind::Malformed, "the JSON array is not closed");
                Ok(Some(("end of input".into(), Err(error))))
            }
            Mode::AfterArray => {
                self.mode = Mode::Done;
                match self.skip_ws()? {
                    None => Ok(None),
                    // The `]` was a stray bracket in an element (which was
                    // rejected): the array goes on.
                    Some(b',') => {
                        self.source.consume(1);
                        self.mode = Mode::Array { after_comma: true };
                        self.next_piece()
                    }
                    Some(_) => {
                        let error = InputError::new(
                            InputErrorKind::Malformed,
                            "unexpected data after the end of the JSON array; reading stopped",
                        );
                        Ok(Some(("after the array".into(), Err(error))))
                    }
                }
            }
        }
    }

    /// The next record's text, UTF-8 checked but not parsed.
    pub(crate) fn next_raw(&mut self) -> Option<(String, Result<String, InputError>)> {
        match self.next_piece() {
            Ok(None) => None,
            Ok(Some((locator, bytes))) => {
                let raw = bytes.and_then(|b| String::from_utf8(b).map_err(|_| InputError::not_utf8()));
                Some((locator, raw))
            }
            Err(e) => {
                self.mode = Mode::Done;
                Some(("end of input".into(), Err(InputError::io(&e))))
            }
        }
    }
}

/// Parses a record that must be a JSON object (also used for the answers
/// of the pull adapter).
pub(crate) fn parse(raw: String) -> Result<InputItem, InputError> {
    let value: Value = serde_json::from_str(&raw).map_err(|e| json_syntax_error(&e))?;
    if !value.is_object() {
        return Err(InputError::new(
            InputErrorKind::Malformed,
            format!("expected a JSON object, found {}", json_kind(&value)),
        ));
    }
    Ok(InputItem {
        raw,
        raw_header: None,
        value,
        op: ChangeOp::Upsert,
        compared: None,
        source_order: None,
    })
}

impl<R: BufRead> Iterator for JsonRecords<R> {
    type Item = InputRecord;

    fn next(&mut self) -> Option<InputRecord> {
        let (locator, raw) = self.next_raw()?;
        Some(InputRecord {
            locator,
            item: raw.and_then(parse),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(input: &[u8]) -> Vec<InputRecord> {
        JsonRecords::new(input, super::super::DEFAULT_MAX_RECORD_BYTES).collect()
    }

    /// (locator, raw or error message) of every record.
    fn summary(records: &[InputRecord]) -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| {
                let text = match &r.item {
                    Ok(item) => item.raw.clone(),
                    Err(e) => format!("ERROR {e}"),
                };
                (r.locator.clone(), text)
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn array_elements_are_verbatim() {
        let input = b" [ {\"z\" : 1,  \"a\":[1, 2 ]} ,\n\t{ \"s\":\"x,]}\\\"y\" }\r\n]  \n";
        let records = read(input);
        assert_eq!(
            summary(&records),
            pairs(&[
                ("record 1", "{\"z\" : 1,  \"a\":[1, 2 ]}"),
                ("record 2", "{ \"s\":\"x,]}\\\"y\" }")
            ])
        );
        let Ok(item) = &records[1].item else { panic!() };
        assert_eq!(item.value, json!({"s": "x,]}\"y"}));
        assert_eq!(
            (item.op, item.raw_header.is_none(), item.compared.is_none()),
            (ChangeOp::Upsert, true, true)
        );
    }

    #[test]
    fn a_malformed_array_element_is_rejected_and_reading_goes_on() {
        let input = br#"[{"a":1}, {"name": "secret" "x": 2}, {"b": [1,2}, 3, {"c":3}]"#;
        let records = read(input);
        let summary = summary(&records);
        assert_eq!(summary[0], ("record 1".into(), r#"{"a":1}"#.into()));
        assert_eq!(
            summary[1],
            (
                "record 2".into(),
                "ERROR is not valid JSON: expected `,` or `}` (column 19 of the record)".into()
            )
        );
        assert!(summary[2].1.starts_with("ERROR is not valid JSON"), "{:?}", summary[2]);
        assert_eq!(
            summary[3],
            ("record 4".into(), "ERROR expected a JSON object, found a number".into())
        );
        assert_eq!(summary[4], ("record 5".into(), r#"{"c":3}"#.into()));
        assert_eq!(records.len(), 5);
    }

    #[test]
    fn a_bracket_left_open_in_an_element_does_not_swallow_the_rest() {
        assert_eq!(
            summary(&read(br#"[{"a":[1}, {"b":{"c":2], {"d":3}]"#)),
            pairs(&[
                (
                    "record 1",
                    "ERROR is not valid JSON: expected `,` or `]` (column 8 of the record)"
                ),
                (
                    "record 2",
                    "ERROR is not valid JSON: EOF while parsing an object (column 11 of the record)"
                ),
                ("record 3", r#"{"d":3}"#),
            ])
        );
        let values = summary(&read(b"{\"a\":[1}\n{\"b\":{\"c\":2]\n{\"d\":3}"));
        assert_eq!(values[2], ("line 3".into(), r#"{"d":3}"#.into()));
    }

    #[test]
    fn empty_arrays_and_empty_elements() {
        assert!(read(b"[]").is_empty());
        assert!(read(b" [ \n ] ").is_empty());
        assert_eq!(
            summary(&read(br#"[{"a":1},,{"b":2},]"#)),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                ("record 2", "ERROR is empty (two commas in a row)"),
                ("record 3", r#"{"b":2}"#),
                ("record 4", "ERROR is empty (a comma before `]`)"),
            ])
        );
    }

    #[test]
    fn an_unclosed_array_keeps_the_records_before_the_end() {
        assert_eq!(
            summary(&read(br#"[{"a":1}, {"b":2}"#)),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                ("record 2", r#"{"b":2}"#),
                ("end of input", "ERROR the JSON array is not closed"),
            ])
        );
        let records = read(br#"[{"a":1}, {"b":"#);
        assert_eq!(records.len(), 3);
        assert!(records[1].item.is_err());
        assert_eq!(
            records[2].error_message().unwrap(),
            "end of input: the JSON array is not closed"
        );
        assert_eq!(
            summary(&read(br#"[{"a":1},"#)),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                ("end of input", "ERROR the JSON array is not closed")
            ])
        );
    }

    #[test]
    fn data_after_the_array_is_an_error_and_stops() {
        assert_eq!(
            summary(&read(br#"[{"a":1}] {"b":2}"#)),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                (
                    "after the array",
                    "ERROR unexpected data after the end of the JSON array; reading stopped"
                ),
            ])
        );
    }

    #[test]
    fn ndjson_lines_are_located_by_line_and_a_broken_line_does_not_swallow_the_next() {
        let input = b"{\"a\":1}\n\n{\"b\": 2\n{\"c\":\"un\n  {\"d\":4}  \r\n[1]\nnull\n{\"e\":5}";
        assert_eq!(
            summary(&read(input)),
            pairs(&[
                ("line 1", r#"{"a":1}"#),
                (
                    "line 3",
                    "ERROR is not valid JSON: EOF while parsing an object (column 7 of the record)"
                ),
                (
                    "line 4",
                    "ERROR is not valid JSON: EOF while parsing a string (column 8 of the record)"
                ),
                ("line 5", r#"{"d":4}"#),
                ("line 6", "ERROR expected a JSON object, found an array"),
                ("line 7", "ERROR expected a JSON object, found null"),
                ("line 8", r#"{"e":5}"#),
            ])
        );
    }

    #[test]
    fn a_broken_first_line_is_still_read_as_ndjson() {
        // A line break inside a string cannot be JSON: the first line is broken.
        assert_eq!(
            summary(&read(b"{\"a\":\"x\n{\"b\":2}\n")),
            pairs(&[
                (
                    "line 1",
                    "ERROR is not valid JSON: EOF while parsing a string (column 7 of the record)"
                ),
                ("line 2", r#"{"b":2}"#),
            ])
        );
        // More on the first line after the first value: values delimited by
        // brackets; the stray bracket is a bad record of its own.
        assert_eq!(
            summary(&read(b"{\"a\":1}}\n{\"b\":2}\n")),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                (
                    "record 2",
                    "ERROR is not valid JSON: expected value (column 1 of the record)"
                ),
                ("record 3", r#"{"b":2}"#),
            ])
        );
    }

    #[test]
    fn crlf_ndjson_and_leading_blank_lines() {
        assert_eq!(
            summary(&read(b"\r\n\r\n{\"a\":1}\r\n{\"b\":2}\r\n")),
            pairs(&[("line 3", r#"{"a":1}"#), ("line 4", r#"{"b":2}"#)])
        );
    }

    #[test]
    fn a_single_document() {
        let pretty = b"{\n  \"name\": \"Ann\",\n  \"tags\": [\n    1\n  ]\n}\n";
        let records = read(pretty);
        assert_eq!(
            summary(&records),
            pairs(&[("record 1", "{\n  \"name\": \"Ann\",\n  \"tags\": [\n    1\n  ]\n}")])
        );
        assert_eq!(summary(&read(br#"{"a": 1}"#)), pairs(&[("line 1", r#"{"a": 1}"#)]));
    }

    #[test]
    fn concatenated_documents() {
        let input = b"{\n \"a\": 1\n}\n{\n \"b\": 2\n}{\"c\":3} 7 {\"d\":\n4}";
        assert_eq!(
            summary(&read(input)),
            pairs(&[
                ("record 1", "{\n \"a\": 1\n}"),
                ("record 2", "{\n \"b\": 2\n}"),
                ("record 3", r#"{"c":3}"#),
                ("record 4", "ERROR expected a JSON object, found a number"),
                ("record 5", "{\"d\":\n4}"),
            ])
        );
        assert_eq!(
            summary(&read(br#"{"a":1} {"b":2}"#)),
            pairs(&[("record 1", r#"{"a":1}"#), ("record 2", r#"{"b":2}"#)])
        );
    }

    #[test]
    fn top_level_scalars_are_rejected() {
        assert_eq!(
            summary(&read(b"42")),
            pairs(&[("line 1", "ERROR expected a JSON object, found a number")])
        );
        assert_eq!(
            summary(&read(br#"[{"a":1}, true, "s", 3]"#)),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                ("record 2", "ERROR expected a JSON object, found a boolean"),
                ("record 3", "ERROR expected a JSON object, found a string"),
                ("record 4", "ERROR expected a JSON object, found a number"),
            ])
        );
        assert_eq!(
            summary(&read(b"\"text\"\n{}\n")),
            pairs(&[
                ("line 1", "ERROR expected a JSON object, found a string"),
                ("line 2", "{}")
            ])
        );
    }

    #[test]
    fn null_is_rejected() {
        assert_eq!(
            summary(&read(b"[null]")),
            pairs(&[("record 1", "ERROR expected a JSON object, found null")])
        );
    }

    #[test]
    fn invalid_utf8_is_rejected_and_reading_goes_on() {
        let records = read(b"[{\"a\":\"\xFF\"}, {\"b\":1}]");
        assert_eq!(records[0].error_message().unwrap(), "record 1: is not valid UTF-8");
        assert_eq!(records[0].item.as_ref().unwrap_err().kind, InputErrorKind::NotUtf8);
        assert_eq!(summary(&records)[1], ("record 2".into(), r#"{"b":1}"#.into()));
    }

    #[test]
    fn a_bom_is_skipped() {
        assert_eq!(
            summary(&read(b"\xEF\xBB\xBF[{\"a\":1}]")),
            pairs(&[("record 1", r#"{"a":1}"#)])
        );
        assert_eq!(
            summary(&read(b"\xEF\xBB\xBF{\"a\":1}\n")),
            pairs(&[("line 1", r#"{"a":1}"#)])
        );
    }

    #[test]
    fn oversized_records_are_skipped_and_reading_goes_on() {
        let long = "x".repeat(200);
        let too_large = "ERROR is larger than the limit of 32 bytes and was skipped";
        let input = format!(r#"[{{"a":1}}, {{"b":"{long}", "c": [{{"d": "]"}}]}}, {{"e":2}}]"#);
        let records: Vec<_> = JsonRecords::new(input.as_bytes(), 32).collect();
        assert_eq!(
            summary(&records),
            pairs(&[
                ("record 1", r#"{"a":1}"#),
                ("record 2", too_large),
                ("record 3", r#"{"e":2}"#)
            ])
        );
        assert_eq!(records[1].item.as_ref().unwrap_err().kind, InputErrorKind::TooLarge);
        let input = format!("{{\"a\":1}}\n{{\"b\":\"{long}\"}}\n{{\"e\":2}}\n");
        let records: Vec<_> = JsonRecords::new(input.as_bytes(), 32).collect();
        assert_eq!(
            summary(&records),
            pairs(&[
                ("line 1", r#"{"a":1}"#),
                ("line 2", too_large),
                ("line 3", r#"{"e":2}"#)
            ])
        );
        let input = format!("{{\"b\":\"{long}\"}}\n{{\"e\":2}}\n");
        let records: Vec<_> = JsonRecords::new(input.as_bytes(), 32).collect();
        assert_eq!(
            summary(&records),
            pairs(&[("line 1", too_large), ("line 2", r#"{"e":2}"#)])
        );
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert!(read(b"").is_empty());
        assert!(read(b" \n\r\n\t").is_empty());
        assert!(read(b"\xEF\xBB\xBF").is_empty());
    }

    #[test]
    fn reads_in_small_pieces_give_the_same_records() {
        let inputs: [&[u8]; 4] = [
            b"\xEF\xBB\xBF[ {\"a\":\"x\\\"]\"}, 1 ,{\"b\":[{}]} ]",
            b"{\"a\":1}\r\n\n{\"b\":\"\\\\\"}\n",
            b"{\n\"a\":1}{\"b\":2}",
            b"{\"a\":\"x\n{\"b\":2}\n",
        ];
        for input in inputs {
            let whole = summary(&read(input));
            let pieces: Vec<_> = JsonRecords::new(std::io::BufReader::with_capacity(1, input), 1024).collect();
            assert_eq!(summary(&pieces), whole, "{input:?}");
        }
    }

    #[test]
    fn syntax_errors_do_not_quote_the_record() {
        let input = b"{\"name\": \"Secret Person\" \"email\": \"secret@example.com\"}\n{\"n\": Secret}\n";
        for record in read(input) {
            let message = record.error_message().unwrap();
            assert!(!message.to_lowercase().contains("secret"), "{message}");
        }
    }
}
