//! CSV files: the first row is the header, every other row a record.
//!
//! # How rows are found
//! A small splitter walks the bytes with the same state machine as the `csv`
//! crate's parser (`csv-core` with its defaults: `"` quotes, `""` inside
//! quotes is a quote, no escape character, no comments, and `\r`, `\n` or
//! `\r\n` ends a record; blank lines are skipped) and cuts the input into
//! records, keeping each record's bytes verbatim. Finding the boundaries
//! ourselves is what bounds memory: the `csv` crate reads a whole record
//! into memory before it says how long it was, so a 10 GB file with an
//! unclosed quote in row 2 would be read whole. Here a record past the
//! limit is dropped byte by byte as it arrives.
//!
//! Each record's bytes are then handed to a `csv::Reader` (kept for the
//! whole file) to split them into fields and undo the quoting. That the
//! splitter and the `csv` crate agree on where records end is tested
//! (property test `splitter_agrees_with_the_csv_crate`).

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Accumulator, ChangeOp, InputError, InputErrorKind, InputItem, InputRecord, Source};

/// How to read a CSV file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field delimiter; `b','` by default. A quote, `\r` or `\n` is
    /// refused (the reader yields one "header" error).
    pub delimiter: u8,
    /// A row (or the header) longer than this, in bytes, is rejected and
    /// skipped. 1 MiB by default.
    pub max_record_bytes: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            max_record_bytes: super::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// The rows of a CSV file as [`InputRecord`]s, located "row N" (1-based,
/// the header not counted, blank lines not counted).
///
/// A header that is missing, oversized, not UTF-8, has an unnamed column or
/// two columns of one name is fatal: the iterator yields one error located
/// "header" and stops. A bad row (wrong number of fields, not UTF-8, too
/// large, a quote left open at the end of the input) is rejected and reading
/// continues with the next row.
pub struct CsvRecords<R> {
    splitter: Splitter<R>,
    /// Splits each record into fields; reads what [`CsvRecords::split_fields`] feeds it.
    fields: csv::Reader<Feed>,
    /// Bytes fed to `fields` so far.
    fed: u64,
    record: csv::ByteRecord,
    header: Option<Header>,
    options: CsvOptions,
    row: u64,
    done: bool,
}

struct Header {
    names: Vec<String>,
    raw: Arc<str>,
}

impl<R> fmt::Debug for CsvRecords<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvRecords")
            .field("options", &self.options)
            .field("columns", &self.header.as_ref().map(|h| h.names.len()))
            .field("rows_read", &self.row)
            .field("done", &self.done)
            .finish()
    }
}

impl<R: BufRead> CsvRecords<R> {
    /// Reads `reader` as CSV. Nothing is read until the first `next`.
    pub fn new(reader: R, options: CsvOptions) -> Self {
        CsvRecords {
            splitter: Splitter::new(Source::new(reader), options.delimiter, options.max_record_bytes),
            fields: field_reader(options.delimiter),
            fed: 0,
            record: csv::ByteRecord::new(),
            header: None,
            options,
            row: 0,
            done: false,
        }
    }

    /// The header's column names, once the header has been read.
    pub fn headers(&self) -> Option<&[String]> {
        self.header.as_ref().map(|h| h.names.as_slice())
    }

    /// Splits one record's bytes into fields (into `self.record`).
    fn split_fields(&mut self, bytes: &[u8]) -> Result<(), InputError> {
        let feed = self.fields.get_mut();
        feed.data.clear();
        feed.data.extend_from_slice(bytes);
        feed.data.push(b'\n');
        feed.pos = 0;
        self.fed += feed.data.len() as u64;
        let read = self.fields.read_byte_record(&mut self.record);
        if matches!(read, Ok(true)) && self.fields.position().byte() == self.fed {
            return Ok(());
        }
        // Cannot happen (the splitter ends records where csv-core does, as
        // tested); should it, start afresh rather than let the rest of this
        // record leak into the next one.
        self.fields = field_reader(self.options.delimiter);
        self.fed = 0;
        Err(InputError::new(
            InputErrorKind::Malformed,
            "could not be split into fields",
        ))
    }

    fn read_header(&mut self) -> Result<(), InputError> {
        let fatal = |problem: String| InputError::new(InputErrorKind::Malformed, problem);
        let delimiter = self.options.delimiter;
        if matches!(delimiter, b'"' | b'\r' | b'\n') {
            return Err(fatal("the delimiter cannot be a quote or a line break".into()));
        }
        let bytes = match self.splitter.next_record() {
            None => return Err(fatal("the input is empty; a header row is expected".into())),
            Some(Err(e)) => return Err(InputError::io(&e)),
            Some(Ok(Split { bytes: None, .. })) => {
                return Err(InputError::too_large(self.options.max_record_bytes));
            }
            Some(Ok(Split { unterminated: true, .. })) => {
                return Err(fatal("a quoted field is not closed before the end of the input".into()));
            }
            Some(Ok(Split { bytes: Some(bytes), .. })) => bytes,
        };
        self.split_fields(&bytes)?;
        let mut names: Vec<String> = Vec::with_capacity(self.record.len());
        for (i, name) in self.record.iter().enumerate() {
            let column = i + 1;
            let Ok(name) = std::str::from_utf8(name) else {
                return Err(InputError::new(
                    InputErrorKind::NotUtf8,
                    format!("column {column} of the header is not valid UTF-8"),
                ));
            };
            if name.is_empty() {
                return Err(fatal(format!("column {column} of the header has no name")));
            }
            if let Some(first) = names.iter().position(|n| n == name) {
                return Err(fatal(format!(
                    "columns {} and {column} of the header have the same name",
                    first + 1
                )));
            }
            names.push(name.to_owned());
        }
        let raw = String::from_utf8(bytes).map_err(|_| InputError::not_utf8())?;
        self.header = Some(Header {
            names,
            raw: Arc::from(raw),
        });
        Ok(())
    }

    fn read_row(&mut self, split: Split) -> Result<InputItem, InputError> {
        let Some(bytes) = split.bytes else {
            return Err(InputError::too_large(self.options.max_record_bytes));
        };
        if split.unterminated {
            return Err(InputError::new(
                InputErrorKind::Malformed,
                "a quoted field is not closed before the end of the input",
            ));
        }
        self.split_fields(&bytes)?;
        let Some(header) = &self.header else {
            return Err(InputError::new(InputErrorKind::Malformed, "has no header"));
        };
        if self.record.len() != header.names.len() {
            let (n, m) = (self.record.len(), header.names.len());
            let fields = if n == 1 { "field" } else { "fields" };
            return Err(InputError::new(
                InputErrorKind::Malformed,
                format!("has {n} {fields}, the header has {m}"),
            ));
        }
        let mut object = Map::new();
        for (name, field) in header.names.iter().zip(self.record.iter()) {
            let Ok(field) = std::str::from_utf8(field) else {
                return Err(InputError::not_utf8().in_field(name.clone()));
            };
            object.insert(name.clone(), Value::String(field.to_owned()));
        }
        let raw = String::from_utf8(bytes).map_err(|_| InputError::not_utf8())?;
        Ok(InputItem {
            raw,
            raw_header: Some(Arc::clone(&header.raw)),
            value: Value::Object(object),
            op: ChangeOp::Upsert,
            compared: None,
            source_order: None,
        })
    }
}

impl<R: BufRead> Iterator for CsvRecords<R> {
    type Item = InputRecord;

    fn next(&mut self) -> Option<InputRecord> {
        if self.done {
            return None;
        }
        if self.header.is_none() {
            if let Err(e) = self.read_header() {
                self.done = true;
                return Some(InputRecord::err("header".into(), e));
            }
        }
        let split = match self.splitter.next_record() {
            None => {
                self.done = true;
                return None;
            }
            Some(Err(e)) => {
                self.done = true;
                return Some(InputRecord::err(format!("row {}", self.row + 1), InputError::io(&e)));
            }
            Some(Ok(split)) => split,
        };
        self.row += 1;
        let locator = format!("row {}", self.row);
        Some(InputRecord {
            locator,
            item: self.read_row(split),
        })
    }
}

fn field_reader(delimiter: u8) -> csv::Reader<Feed> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(Feed::default())
}

/// What the `csv::Reader` reads: one record's bytes at a time.
#[derive(Debug, Default)]
struct Feed {
    data: Vec<u8>,
    pos: usize,
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// One record as cut by the [`Splitter`].
#[derive(Debug)]
struct Split {
    /// The record's bytes without its terminator; `None` if it was larger
    /// than the limit.
    bytes: Option<Vec<u8>>,
    /// The input ended inside a quoted field.
    unterminated: bool,
}

/// The states of csv-core's reader that matter for record boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between records: line terminators are skipped here.
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    /// A quote inside a quoted field: another quote makes it a literal one.
    QuoteInQuotedField,
}

/// Cuts the input into records where csv-core would, without parsing fields.
struct Splitter<R> {
    source: Source<R>,
    delimiter: u8,
    state: State,
    acc: Accumulator,
}

impl<R: BufRead> Splitter<R> {
    fn new(source: Source<R>, delimiter: u8, max: usize) -> Self {
        Splitter {
            source,
            delimiter,
            state: State::StartRecord,
            acc: Accumulator::new(max),
        }
    }

    fn next_record(&mut self) -> Option<io::Result<Split>> {
        loop {
            let buf = match self.source.fill_buf() {
                Ok(buf) => buf,
                Err(e) => return Some(Err(e)),
            };
            if buf.is_empty() {
                if self.state == State::StartRecord {
                    return None;
                }
                let unterminated = self.state == State::InQuotedField;
                self.state = State::StartRecord;
                return Some(Ok(Split {
                    bytes: self.acc.take(),
                    unterminated,
                }));
            }
            let delimiter = self.delimiter;
            let mut state = self.state;
            // Where the record's bytes start in `buf` (leading terminators
            // are blank lines, not part of the record) and where it ends.
            let mut start = 0;
            let mut end = None;
            let mut i = 0;
            while i < buf.len() {
                let b = buf[i];
                match state {
                    State::StartRecord => {
                        if b == b'\r' || b == b'\n' {
                            i += 1;
                            start = i;
                        } else {
                            // csv-core's epsilon move: the byte is read again.
                            state = State::StartField;
                        }
                    }
                    State::InQuotedField => match buf[i..].iter().position(|&c| c == b'"') {
                        Some(offset) => {
                            i += offset + 1;
                            state = State::QuoteInQuotedField;
                        }
                        None => i = buf.len(),
                    },
                    State::StartField | State::InField | State::QuoteInQuotedField => {
                        if b == b'\r' || b == b'\n' {
                            end = Some(i);
                            break;
                        }
                        state = if b == b'"' && state != State::InField {
                            State::InQuotedField
                        } else if b == delimiter {
                            State::StartField
                        } else {
                            State::InField
                        };
                        i += 1;
                    }
                }
            }
            match end {
                Some(end) => {
                    self.acc.push(&buf[start..end]);
                    self.source.consume(end + 1);
                    self.state = State::StartRecord;
                    return Some(Ok(Split {
                        bytes: self.acc.take(),
                        unterminated: false,
                    }));
                }
                None => {
                    let len = buf.len();
                    self.acc.push(&buf[start..]);
                    self.source.consume(len);
                    self.state = state;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn read(input: &[u8]) -> Vec<InputRecord> {
        read_with(input, CsvOptions::default())
    }

    fn read_with(input: &[u8], options: CsvOptions) -> Vec<InputRecord> {
        CsvRecords::new(input, options).collect()
    }

    fn ok(record: &InputRecord) -> &InputItem {
        match &record.item {
            Ok(item) => item,
            Err(e) => panic!("{}: {e}", record.locator),
        }
    }

    fn error(record: &InputRecord) -> String {
        record
            .error_message()
            .unwrap_or_else(|| panic!("{} was read", record.locator))
    }

    #[test]
    fn raw_rows_are_verbatim_and_values_are_strings() {
        let input = b"id, name ,note\n7,  Ann  ,\"say \"\"hi\"\", ok\"\n8,Bob,\n";
        let records = read(input);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].locator, "row 1");
        let first = ok(&records[0]);
        assert_eq!(first.raw, "7,  Ann  ,\"say \"\"hi\"\", ok\"");
        assert_eq!(first.raw_header.as_deref(), Some("id, name ,note"));
        assert_eq!(
            first.value,
            json!({"id": "7", " name ": "  Ann  ", "note": "say \"hi\", ok"})
        );
        assert_eq!(first.op, ChangeOp::Upsert);
        assert_eq!(first.compared, None);
        let second = ok(&records[1]);
        assert_eq!(second.raw, "8,Bob,");
        assert_eq!(second.value, json!({"id": "8", " name ": "Bob", "note": ""}));
        assert_eq!(records[1].locator, "row 2");
    }

    #[test]
    fn crlf_files_and_a_last_row_without_terminator() {
        let records = read(b"a,b\r\n1,2\r\n3,4");
        assert_eq!(records.len(), 2);
        assert_eq!(ok(&records[0]).raw, "1,2");
        assert_eq!(ok(&records[0]).raw_header.as_deref(), Some("a,b"));
        assert_eq!(ok(&records[1]).raw, "3,4");
        assert_eq!(ok(&records[1]).value, json!({"a": "3", "b": "4"}));
        // Old Mac line ends (a lone CR) end records too, as in the csv crate.
        let records = read(b"a,b\r1,2\r3,4\r");
        assert_eq!(
            records.iter().map(|r| ok(r).raw.as_str()).collect::<Vec<_>>(),
            ["1,2", "3,4"]
        );
    }

    #[test]
    fn quoted_fields_may_hold_line_breaks_commas_and_quotes() {
        let input = b"id,address,x\r\n1,\"12 Main St\r\nApt 4, rear\",\"\"\"\"\r\n2,b,c\r\n";
        let records = read(input);
        assert_eq!(records.len(), 2);
        let first = ok(&records[0]);
        assert_eq!(first.raw, "1,\"12 Main St\r\nApt 4, rear\",\"\"\"\"");
        assert_eq!(
            first.value,
            json!({"id": "1", "address": "12 Main St\r\nApt 4, rear", "x": "\""})
        );
        assert_eq!(records[1].locator, "row 2");
        assert_eq!(ok(&records[1]).raw, "2,b,c");
    }

    #[test]
    fn a_bom_is_not_part_of_the_header() {
        let records = read(b"\xEF\xBB\xBFid,name\n1,Ann\n");
        let item = ok(&records[0]);
        assert_eq!(item.raw_header.as_deref(), Some("id,name"));
        assert_eq!(item.value, json!({"id": "1", "name": "Ann"}));
    }

    #[test]
    fn blank_lines_are_skipped_and_not_counted() {
        let records = read(b"\n\na,b\n\n1,2\n\r\n\n3,4\n\n");
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].locator.as_str(), ok(&records[0]).raw.as_str()),
            ("row 1", "1,2")
        );
        assert_eq!(
            (records[1].locator.as_str(), ok(&records[1]).raw.as_str()),
            ("row 2", "3,4")
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_rejected_and_reading_goes_on() {
        let records = read(b"a,b,c\n1,2,3\nsecret,x\n4,5,6,7\n8,9,10\n");
        assert_eq!(records.len(), 4);
        assert_eq!(ok(&records[0]).raw, "1,2,3");
        assert_eq!(error(&records[1]), "row 2: has 2 fields, the header has 3");
        assert_eq!(error(&records[2]), "row 3: has 4 fields, the header has 3");
        assert_eq!(records[1].item.as_ref().unwrap_err().kind, InputErrorKind::Malformed);
        assert_eq!(ok(&records[3]).raw, "8,9,10");
        assert_eq!(records[3].locator, "row 4");
    }

    #[test]
    fn invalid_utf8_names_the_column_and_reading_goes_on() {
        let records = read(b"id,name\n1,Ann\n2,B\xFFob\n3,\"Zo\xC3\xAB\"\n");
        assert_eq!(records.len(), 3);
        let e = records[1].item.as_ref().unwrap_err();
        assert_eq!(e.kind, InputErrorKind::NotUtf8);
        assert_eq!(e.field.as_deref(), Some("name"));
        assert_eq!(error(&records[1]), "row 2: field `name`: is not valid UTF-8");
        assert_eq!(ok(&records[2]).value, json!({"id": "3", "name": "Zoë"}));
    }

    #[test]
    fn an_oversized_row_is_skipped_and_reading_goes_on() {
        let options = CsvOptions {
            max_record_bytes: 16,
            ..CsvOptions::default()
        };
        let long = "x".repeat(100);
        let input = format!("a,b\n1,2\n3,{long}\n4,\"{long}\n{long}\"\n5,6\n");
        let records = read_with(input.as_bytes(), options);
        assert_eq!(records.len(), 4);
        assert_eq!(ok(&records[0]).raw, "1,2");
        assert_eq!(
            error(&records[1]),
            "row 2: is larger than the limit of 16 bytes and was skipped"
        );
        assert_eq!(records[2].item.as_ref().unwrap_err().kind, InputErrorKind::TooLarge);
        assert_eq!(
            (records[3].locator.as_str(), ok(&records[3]).raw.as_str()),
            ("row 4", "5,6")
        );
        // Exactly at the limit is fine.
        let records = read_with(b"a\n0123456789abcdef\n", options);
        assert_eq!(ok(&records[0]).raw.len(), 16);
    }

    #[test]
    fn a_quote_left_open_at_the_end_is_rejected() {
        let records = read(b"a,b\n1,2\n3,\"never closed\n4,5\n");
        assert_eq!(records.len(), 2);
        assert_eq!(
            error(&records[1]),
            "row 2: a quoted field is not closed before the end of the input"
        );
    }

    #[test]
    fn header_problems_are_fatal() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "header: the input is empty; a header row is expected"),
            (b"\r\n\n", "header: the input is empty; a header row is expected"),
            (
                b"id,name,id\n1,2,3\n",
                "header: columns 1 and 3 of the header have the same name",
            ),
            (b"id,,x\n1,2,3\n", "header: column 2 of the header has no name"),
            (
                b"id,n\xFFme\n1,2\n",
                "header: column 2 of the header is not valid UTF-8",
            ),
            (
                b"id,\"name\n",
                "header: a quoted field is not closed before the end of the input",
            ),
            (
                b"0123456789abcdefXYZ,b\n1,2\n",
                "header: is larger than the limit of 16 bytes and was skipped",
            ),
        ];
        for (input, expected) in cases {
            let records = read_with(
                input,
                CsvOptions {
                    max_record_bytes: 16,
                    ..CsvOptions::default()
                },
            );
            assert_eq!(records.len(), 1, "{expected}");
            assert_eq!(error(&records[0]), expected);
        }
        let records = read_with(
            b"a\"b\n",
            CsvOptions {
                delimiter: b'"',
                ..CsvOptions::default()
            },
        );
        assert_eq!(
            error(&records[0]),
            "header: the delimiter cannot be a quote or a line break"
        );
    }

    #[test]
    fn a_header_without_rows_yields_nothing() {
        let mut reader = CsvRecords::new(&b"id,name\n"[..], CsvOptions::default());
        assert!(reader.next().is_none());
        assert_eq!(reader.headers(), Some(&["id".to_owned(), "name".to_owned()][..]));
    }

    #[test]
    fn other_delimiters() {
        let records = read_with(
            b"a;b\n\"x;y\";2\n",
            CsvOptions {
                delimiter: b';',
                ..CsvOptions::default()
            },
        );
        assert_eq!(ok(&records[0]).value, json!({"a": "x;y", "b": "2"}));
        let records = read_with(
            b"a\tb\n1\t\n",
            CsvOptions {
                delimiter: b'\t',
                ..CsvOptions::default()
            },
        );
        assert_eq!(ok(&records[0]).value, json!({"a": "1", "b": ""}));
    }

    #[test]
    fn reads_in_small_pieces_give_the_same_records() {
        let input = b"\xEF\xBB\xBFid,note\r\n1,\"a\r\nb\"\r\n2,\"\"\"q\"\"\"\r\n";
        let whole = read(input);
        let pieces: Vec<InputRecord> =
            CsvRecords::new(std::io::BufReader::with_capacity(1, &input[..]), CsvOptions::default()).collect();
        assert_eq!(whole.len(), 2);
        for (a, b) in whole.iter().zip(&pieces) {
            assert_eq!(a.locator, b.locator);
            assert_eq!(ok(a), ok(b));
        }
    }

    /// The records of `input` as the csv crate reads them on its own.
    fn csv_crate_records(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        reader
            .byte_records()
            .map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect())
            .collect()
    }

    proptest! {
        #[test]
        fn splitter_agrees_with_the_csv_crate(input in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'\r'), Just(b'\n'), Just(b' ')], 0..200)
        ) {
            let mut reader = CsvRecords::new(&input[..], CsvOptions::default());
            let mut ours = Vec::new();
            while let Some(split) = reader.splitter.next_record() {
                let split = split.unwrap();
                let bytes = split.bytes.unwrap();
                // Each record's bytes are a verbatim piece of the input.
                prop_assert!(input.windows(bytes.len().max(1)).any(|w| w == &bytes[..]) || bytes.is_empty());
                if split.unterminated {
                    // The csv crate reads up to the end; we reject the row.
                    ours.push(None);
                    break;
                }
                reader.split_fields(&bytes).unwrap();
                ours.push(Some(reader.record.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()));
            }
            let theirs = csv_crate_records(&input);
            prop_assert_eq!(ours.len(), theirs.len());
            for (ours, theirs) in ours.iter().zip(&theirs) {
                if let Some(ours) = ours {
                    prop_assert_eq!(ours, theirs);
                }
            }
        }
    }
}
