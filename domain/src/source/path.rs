//! Paths into a source record.
//!
//! A path names where a value sits in a record, written in the source
//! definition: `customer.name.first`, `emails[0]`, `phones[*].number`. CSV
//! rows arrive as flat JSON objects (header to text), so a CSV path is just the
//! header name, and a header holding a dot is quoted: `"E.Mail"`.
//!
//! Syntax:
//! - segments are separated by `.`; a bare segment is any text without `.`,
//!   `[`, `]` or `"`, and without spaces at either end (inner spaces are fine:
//!   `First Name`);
//! - a quoted segment, `"..."`, may hold any character; inside it `\"` is a
//!   quote and `\\` a backslash;
//! - `[N]` after a segment (or at the very start) takes element N of an array,
//!   counting from 0, and `[*]` takes every element, so the path may give
//!   several values.
//!
//! A path that leads nowhere (a missing key, an index past the end, a key
//! looked up in something that is not an object) gives no value: sources vary
//! from record to record, and whether a missing value is an error is for the
//! caller to decide.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A key of an object.
    Key(String),
    /// One element of an array, counting from 0.
    Index(usize),
    /// Every element of an array (`[*]`).
    Each,
}

/// Why a path does not parse. Positions count characters from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("a segment is empty at character {0} (two dots in a row, or a dot at either end)")]
    EmptySegment(usize),
    #[error("the segment starting at character {0} has spaces at an end; quote it if they belong to the key")]
    SpacesAround(usize),
    #[error("the quote at character {0} is never closed")]
    UnclosedQuote(usize),
    #[error("unknown escape at character {0}: only `\\\"` and `\\\\` may follow a backslash")]
    BadEscape(usize),
    #[error("the `[` at character {0} is never closed")]
    UnclosedBracket(usize),
    #[error("the brackets at character {0} hold neither an index (digits) nor `*`")]
    BadIndex(usize),
    #[error("unexpected `{found}` at character {at}")]
    Unexpected { found: char, at: usize },
}

/// A path as written in a source definition, parsed once.
///
/// Deserializing never fails on a bad path: the parse error is kept, so that
/// validation can report it together with the system and the field it belongs
/// to, which serde alone cannot name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePath {
    text: String,
    parsed: Result<Vec<Segment>, PathError>,
}

impl SourcePath {
    /// Parses `text`; a syntax error is kept and reported by [`Self::segments`].
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let parsed = parse(&text);
        Self { text, parsed }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments, or why the path does not parse.
    pub fn segments(&self) -> Result<&[Segment], &PathError> {
        self.parsed.as_deref()
    }

    /// Whether the path can give several values (it holds `[*]`).
    pub fn is_multi_valued(&self) -> bool {
        self.segments().is_ok_and(|s| s.contains(&Segment::Each))
    }

    /// Whether the path is a single key, the only shape a flat CSV row has.
    pub fn is_single_key(&self) -> bool {
        matches!(self.segments(), Ok([Segment::Key(_)]))
    }

    /// The values the path leads to in `record`, in document order. Nothing
    /// found is an empty list, not an error.
    pub fn select<'a>(&self, record: &'a Value) -> Result<Vec<&'a Value>, PathError> {
        let segments = self.parsed.as_deref().map_err(Clone::clone)?;
        let mut found = Vec::new();
        walk(record, segments, &mut found);
        Ok(found)
    }
}

impl From<&str> for SourcePath {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl<'de> Deserialize<'de> for SourcePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

fn walk<'a>(value: &'a Value, segments: &[Segment], found: &mut Vec<&'a Value>) {
    let Some((first, rest)) = segments.split_first() else {
        found.push(value);
        return;
    };
    match (first, value) {
        (Segment::Key(key), Value::Object(map)) => {
            if let Some(next) = map.get(key) {
                walk(next, rest, found);
            }
        }
        (Segment::Index(i), Value::Array(items)) => {
            if let Some(next) = items.get(*i) {
                walk(next, rest, found);
            }
        }
        (Segment::Each, Value::Array(items)) => {
            for item in items {
                walk(item, rest, found);
            }
        }
        _ => {}
    }
}

/// Parses the syntax described in the module documentation.
fn parse(text: &str) -> Result<Vec<Segment>, PathError> {
    if text.is_empty() {
        return Err(PathError::Empty);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut segments = Vec::new();
    let mut i = 0;
    // A key is expected at the start (unless the path opens with an index)
    // and after every dot.
    let mut expect_key = chars.first() != Some(&'[');
    while i < chars.len() {
        if expect_key {
            let (key, next) = match chars[i] {
                '"' => parse_quoted(&chars, i)?,
                '.' | '[' => return Err(PathError::EmptySegment(i + 1)),
                _ => parse_bare(&chars, i)?,
            };
            segments.push(Segment::Key(key));
            i = next;
            expect_key = false;
            continue;
        }
        match chars[i] {
            '.' => {
                if i + 1 == chars.len() {
                    return Err(PathError::EmptySegment(i + 2));
                }
                expect_key = true;
                i += 1;
            }
            '[' => {
                let (segment, next) = parse_index(&chars, i)?;
                segments.push(segment);
                i = next;
            }
            found => return Err(PathError::Unexpected { found, at: i + 1 }),
        }
    }
    Ok(segments)
}

/// A bare key runs up to the next `.` or `[`; returns it and where it ends.
fn parse_bare(chars: &[char], start: usize) -> Result<(String, usize), PathError> {
    let mut end = start;
    while end < chars.len() {
        match chars[end] {
            '.' | '[' => break,
            found @ (']' | '"') => return Err(PathError::Unexpected { found, at: end + 1 }),
            _ => end += 1,
        }
    }
    let key: String = chars[start..end].iter().collect();
    if key.trim() != key {
        return Err(PathError::SpacesAround(start + 1));
    }
    Ok((key, end))
}

/// A quoted key starts at the quote at `start`; returns it and the position
/// after its closing quote.
fn parse_quoted(chars: &[char], start: usize) -> Result<(String, usize), PathError> {
    let mut key = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((key, i + 1)),
            '\\' => match chars.get(i + 1) {
                Some(&c @ ('"' | '\\')) => {
                    key.push(c);
                    i += 2;
                }
                Some(_) => return Err(PathError::BadEscape(i + 1)),
                None => return Err(PathError::UnclosedQuote(start + 1)),
            },
            c => {
                key.push(c);
                i += 1;
            }
        }
    }
    Err(PathError::UnclosedQuote(start + 1))
}

/// An index starts at the `[` at `start`; returns it and the position after
/// its `]`.
fn parse_index(chars: &[char], start: usize) -> Result<(Segment, usize), PathError> {
    let Some(close) = chars[start..].iter().position(|&c| c == ']').map(|p| start + p) else {
        return Err(PathError::UnclosedBracket(start + 1));
    };
    let inside: String = chars[start + 1..close].iter().collect();
    let segment = if inside == "*" {
        Segment::Each
    } else if !inside.is_empty() && inside.chars().all(|c| c.is_ascii_digit()) {
        Segment::Index(inside.parse().map_err(|_| PathError::BadIndex(start + 1))?)
    } else {
        return Err(PathError::BadIndex(start + 1));
    };
    Ok((segment, close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn paths_parse_into_keys_indexes_and_wildcards() {
        let cases: Vec<(&str, Vec<Segment>)> = vec![
            ("email", vec![key("email")]),
            ("customer.name.first", vec![key("customer"), key("name"), key("first")]),
            ("emails[0]", vec![key("emails"), Segment::Index(0)]),
            ("phones[*].number", vec![key("phones"), Segment::Each, key("number")]),
            ("grid[1][12]", vec![key("grid"), Segment::Index(1), Segment::Index(12)]),
            ("[0].id", vec![Segment::Index(0), key("id")]),
            ("First Name", vec![key("First Name")]),
            (r#""E.Mail""#, vec![key("E.Mail")]),
            (
                r#"contact."e.mail"[0]"#,
                vec![key("contact"), key("e.mail"), Segment::Index(0)],
            ),
            (r#""say \"hi\" \\ bye""#, vec![key(r#"say "hi" \ bye"#)]),
            (r#""""#, vec![key("")]),
            ("Straße.Größe", vec![key("Straße"), key("Größe")]),
        ];
        for (text, expected) in cases {
            assert_eq!(SourcePath::new(text).segments(), Ok(expected.as_slice()), "{text}");
        }
    }

    #[test]
    fn bad_paths_are_rejected_with_the_position_at_fault() {
        let cases = [
            ("", PathError::Empty),
            ("a..b", PathError::EmptySegment(3)),
            (".a", PathError::EmptySegment(1)),
            ("a.", PathError::EmptySegment(3)),
            ("a.[0]", PathError::EmptySegment(3)),
            (" a", PathError::SpacesAround(1)),
            ("a.b ", PathError::SpacesAround(3)),
            (r#""E.Mail"#, PathError::UnclosedQuote(1)),
            (r#""E\nMail""#, PathError::BadEscape(3)),
            ("a[0", PathError::UnclosedBracket(2)),
            ("a[]", PathError::BadIndex(2)),
            ("a[-1]", PathError::BadIndex(2)),
            ("a[x]", PathError::BadIndex(2)),
            ("a[99999999999999999999999]", PathError::BadIndex(2)),
            ("a]", PathError::Unexpected { found: ']', at: 2 }),
            (r#"a"b""#, PathError::Unexpected { found: '"', at: 2 }),
            (r#""a"b"#, PathError::Unexpected { found: 'b', at: 4 }),
            ("a[0]b", PathError::Unexpected { found: 'b', at: 5 }),
        ];
        for (text, expected) in cases {
            assert_eq!(SourcePath::new(text).segments(), Err(&expected), "{text}");
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn selecting_follows_nesting_indexes_and_wildcards_and_skips_what_is_missing() {
        let record = json!({
            "customer": {"name": {"first": "Ann"}, "id": 7},
            "emails": ["a@x.example", "b@x.example"],
            "phones": [{"number": "1"}, {"kind": "home"}, {"number": "3"}],
            "E.Mail": "dot@x.example",
            "E": {"Mail": "nested@x.example"},
            "scalar": "text"
        });
        let cases: [(&str, Vec<Value>); 12] = [
            ("customer.name.first", vec![json!("Ann")]),
            ("customer.id", vec![json!(7)]),
            ("emails[1]", vec![json!("b@x.example")]),
            ("emails[2]", vec![]),
            ("emails[*]", vec![json!("a@x.example"), json!("b@x.example")]),
            ("phones[*].number", vec![json!("1"), json!("3")]),
            (r#""E.Mail""#, vec![json!("dot@x.example")]),
            ("E.Mail", vec![json!("nested@x.example")]),
            ("customer.missing", vec![]),
            ("scalar.deeper", vec![]),
            ("scalar[*]", vec![]),
            ("customer[0]", vec![]),
        ];
        for (text, expected) in cases {
            let found = SourcePath::new(text).select(&record).unwrap();
            let found: Vec<Value> = found.into_iter().cloned().collect();
            assert_eq!(found, expected, "{text}");
        }
    }

    #[test]
    fn selecting_with_a_bad_path_reports_the_syntax_error() {
        assert_eq!(
            SourcePath::new("a[").select(&json!({})),
            Err(PathError::UnclosedBracket(2))
        );
    }

    #[test]
    fn a_path_deserializes_from_a_string_even_when_it_does_not_parse() {
        let path: SourcePath = serde_json::from_value(json!("a..b")).unwrap();
        assert_eq!(path.as_str(), "a..b");
        assert_eq!(path.segments(), Err(&PathError::EmptySegment(3)));
    }

    #[test]
    fn shape_queries_tell_wildcards_and_single_keys_apart() {
        let cases = [
            ("a", false, true),
            (r#""E.Mail""#, false, true),
            ("a.b", false, false),
            ("a[0]", false, false),
            ("a[*].b", true, false),
            ("a[", false, false),
        ];
        for (text, multi, single) in cases {
            let path = SourcePath::new(text);
            assert_eq!(
                (path.is_multi_valued(), path.is_single_key()),
                (multi, single),
                "{text}"
            );
        }
    }
}
