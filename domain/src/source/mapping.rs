//! Mapping one source record to canonical attributes with its definition.
//!
//! Values are kept as the source wrote them, apart from trimming whitespace
//! at both ends; splitting a full name or a "City, ST 12345" field and reading
//! a date are the only interpretation done here. Normalization for matching
//! (case, accents, phone formats, nicknames) is a later step and works on
//! these values.
//!
//! Conventions:
//! - a JSON number where text is expected (a numeric id, a postcode) becomes
//!   its decimal text; a whole number written as a float (`60610.0`) loses
//!   the `.0`;
//! - an empty or blank string and `null` count as missing;
//! - a missing source id is an error; any other missing attribute is simply
//!   absent;
//! - an object, array or boolean where text is expected, a date that no
//!   format reads, or a name or city line that does not fit its form is an
//!   error, because it means the mapping and the source disagree;
//! - the same e-mail address or phone (same kind and number) found twice is
//!   kept once, in the order first found;
//! - extras are stored under their path as written in the definition: text is
//!   trimmed, anything else is kept verbatim, and a path with `[*]` stores the
//!   list of values it found.
//!
//! Errors name the configuration key and the path, never a value from the
//! record: records hold personal data, and errors end up in logs and HTTP
//! responses.

use super::address::{parse_city_region_postcode, AddressError};
use super::date::parse_date;
use super::definition::{AddressMapping, InvalidDate, SourceDefinition};
use super::name::{parse_full_name, NameError, NameForm};
use super::path::{PathError, SourcePath};
use super::Presence;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A source record's id and attributes, as mapped by its definition.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedRecord {
    pub source_id: String,
    pub attributes: CanonicalAttributes,
}

impl std::fmt::Debug for MappedRecord {
    /// The source id may itself be personal (some systems key by e-mail), so
    /// `Debug` shows neither it nor the attributes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedRecord")
            .field("source_id", &Presence(&Some(())))
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// The attributes every source maps to. Single values are `None` when the
/// source did not give them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    /// The full name as the source wrote it, whether or not it was parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<PostalAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<NaiveDate>,
    /// Kept but never matched, keyed by the path they came from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: BTreeMap<String, Value>,
}

impl std::fmt::Debug for CanonicalAttributes {
    /// Attributes are personal data: `Debug` shows which are present and how
    /// many values the lists hold, never the values, so that a stray `{:?}`
    /// in a log line leaks nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanonicalAttributes")
            .field("given_name", &Presence(&self.given_name))
            .field("middle_name", &Presence(&self.middle_name))
            .field("family_name", &Presence(&self.family_name))
            .field("name_suffix", &Presence(&self.name_suffix))
            .field("full_name", &Presence(&self.full_name))
            .field("emails", &self.emails.len())
            .field("phones", &self.phones.len())
            .field("addresses", &self.addresses.len())
            .field("date_of_birth", &Presence(&self.date_of_birth))
            .field("extras", &self.extras.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A phone number as the source wrote it, with its kind when the definition
/// names one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub number: String,
}

impl std::fmt::Debug for Phone {
    /// The kind is configuration; the number is personal data and hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("kind", &self.kind)
            .field("number", &Presence(&Some(())))
            .finish()
    }
}

/// A postal address, each part as the source wrote it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostalAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl PostalAddress {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Debug for PostalAddress {
    /// Addresses are personal data: `Debug` shows only which parts are present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostalAddress")
            .field("line1", &Presence(&self.line1))
            .field("line2", &Presence(&self.line2))
            .field("city", &Presence(&self.city))
            .field("region", &Presence(&self.region))
            .field("postcode", &Presence(&self.postcode))
            .field("country", &Presence(&self.country))
            .finish()
    }
}

/// The kind of JSON value found where text was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonKind {
    Boolean,
    Array,
    Object,
}

impl std::fmt::Display for JsonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Boolean => "a boolean",
            // The usual mistake is a path to a list of values: say how to
            // take each of them.
            Self::Array => "an array (add `[*]` to the path to take each element)",
            Self::Object => "an object (the path should lead to a field inside it)",
        })
    }
}

/// Why a record could not be mapped. Never holds a value from the record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingProblem {
    #[error("the record has no value there")]
    Missing,
    #[error("found {0} where text was expected")]
    NotText(JsonKind),
    #[error("the path selects {0} values, but this attribute holds one")]
    SeveralValues(usize),
    #[error("the path does not parse: {0}")]
    Path(PathError),
    #[error("the name does not have the form `{form}`: {reason}")]
    Name { form: NameForm, reason: NameError },
    #[error("the city line does not parse: {0}")]
    Address(AddressError),
    #[error("the date matches none of the {0} configured formats")]
    Date(usize),
}

/// A field of a record that could not be mapped: the configuration key of the
/// attribute (`id`, `name.full`, `addresses[0].city_region_postcode`,
/// `date_of_birth`), the path it was read from, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` (path `{path}`): {problem}")]
pub struct MappingError {
    pub field: String,
    pub path: String,
    pub problem: MappingProblem,
}

/// Maps `record` with `def`. The record is a JSON value: a pushed or pulled
/// JSON document, a CSV row as an object of header to text, or a Debezium
/// row image. `def` should have been validated; a path that does not parse
/// is reported here too rather than ignored.
pub fn map_record(def: &SourceDefinition, record: &Value) -> Result<MappedRecord, MappingError> {
    let reader = Reader { record };
    let source_id = reader
        .one(Field::Named("id"), &def.id)?
        .ok_or_else(|| error(Field::Named("id"), &def.id, MappingProblem::Missing))?;
    let mut attributes = CanonicalAttributes::default();
    let name = &def.name;
    attributes.given_name = reader.optional(Field::Named("name.given"), name.given.as_ref())?;
    attributes.middle_name = reader.optional(Field::Named("name.middle"), name.middle.as_ref())?;
    attributes.family_name = reader.optional(Field::Named("name.family"), name.family.as_ref())?;
    attributes.name_suffix = reader.optional(Field::Named("name.suffix"), name.suffix.as_ref())?;
    if let Some(full) = &name.full {
        attributes.full_name = reader.one(Field::Named("name.full"), &full.path)?;
        if let Some(text) = &attributes.full_name {
            let parsed = parse_full_name(text, full.form).map_err(|reason| {
                error(
                    Field::Named("name.full"),
                    &full.path,
                    MappingProblem::Name {
                        form: full.form,
                        reason,
                    },
                )
            })?;
            // Validation refuses a part mapped both ways; for a definition
            // that skipped it, the separately mapped part wins.
            let fill = |slot: &mut Option<String>, part: Option<String>| {
                if slot.is_none() {
                    *slot = part;
                }
            };
            fill(&mut attributes.given_name, parsed.given);
            fill(&mut attributes.middle_name, parsed.middle);
            fill(&mut attributes.family_name, parsed.family);
            fill(&mut attributes.name_suffix, parsed.suffix);
        }
    }
    // Each value once, in the order first seen. A set, not `contains` on the
    // list: a record of a megabyte can list a hundred thousand values, and
    // checking each against all before it took minutes.
    let mut seen_emails = std::collections::HashSet::new();
    for (i, path) in def.emails.iter().enumerate() {
        for email in reader.all(Field::Listed("emails", i), path)? {
            if seen_emails.insert(email.clone()) {
                attributes.emails.push(email);
            }
        }
    }
    let mut seen_phones = std::collections::HashSet::new();
    for (i, mapping) in def.phones.iter().enumerate() {
        for number in reader.all(Field::Listed("phones", i), &mapping.path)? {
            let phone = Phone {
                kind: mapping.kind.as_ref().map(|k| k.trim().to_owned()),
                number,
            };
            if seen_phones.insert((phone.kind.clone(), phone.number.clone())) {
                attributes.phones.push(phone);
            }
        }
    }
    for (i, mapping) in def.addresses.iter().enumerate() {
        let address = reader.address(i, mapping)?;
        if !address.is_empty() {
            attributes.addresses.push(address);
        }
    }
    if let Some(dob) = &def.date_of_birth {
        if let Some(text) = reader.one(Field::Named("date_of_birth"), &dob.path)? {
            match parse_date(&text, &dob.formats) {
                Some(date) => attributes.date_of_birth = Some(date),
                None if dob.invalid == InvalidDate::Ignore => {}
                None => {
                    return Err(error(
                        Field::Named("date_of_birth"),
                        &dob.path,
                        MappingProblem::Date(dob.formats.len()),
                    ))
                }
            }
        }
    }
    for (i, path) in def.extras.iter().enumerate() {
        if let Some(value) = reader.extra(Field::Listed("extras", i), path)? {
            attributes.extras.insert(path.as_str().to_owned(), value);
        }
    }
    Ok(MappedRecord { source_id, attributes })
}

/// Reads values from one record, turning path and type problems into errors
/// that name the field.
struct Reader<'a> {
    record: &'a Value,
}

impl<'a> Reader<'a> {
    fn select(&self, field: Field, path: &SourcePath) -> Result<Vec<&'a Value>, MappingError> {
        path.select(self.record)
            .map_err(|e| error(field, path, MappingProblem::Path(e)))
    }

    /// The text at a path that must give at most one value.
    fn one(&self, field: Field, path: &SourcePath) -> Result<Option<String>, MappingError> {
        match self.select(field, path)?.as_slice() {
            [] => Ok(None),
            [value] => text(value).map_err(|kind| error(field, path, MappingProblem::NotText(kind))),
            several => Err(error(field, path, MappingProblem::SeveralValues(several.len()))),
        }
    }

    fn optional(&self, field: Field, path: Option<&SourcePath>) -> Result<Option<String>, MappingError> {
        path.map_or(Ok(None), |path| self.one(field, path))
    }

    /// Every non-missing text at a path that may give several values.
    fn all(&self, field: Field, path: &SourcePath) -> Result<Vec<String>, MappingError> {
        let mut found = Vec::new();
        for value in self.select(field, path)? {
            if let Some(text) = text(value).map_err(|kind| error(field, path, MappingProblem::NotText(kind)))? {
                found.push(text);
            }
        }
        Ok(found)
    }

    fn address(&self, i: usize, mapping: &AddressMapping) -> Result<PostalAddress, MappingError> {
        let part = |name: &'static str, path: &Option<SourcePath>| {
            self.optional(Field::Part("addresses", i, name), path.as_ref())
        };
        let mut address = PostalAddress {
            line1: part("line1", &mapping.line1)?,
            line2: part("line2", &mapping.line2)?,
            city: part("city", &mapping.city)?,
            region: part("region", &mapping.region)?,
            postcode: part("postcode", &mapping.postcode)?,
            country: part("country", &mapping.country)?,
        };
        if let Some(number) = part("house_number", &mapping.house_number)? {
            address.line1 = Some(match address.line1 {
                Some(line) => format!("{number} {line}"),
                None => number,
            });
        }
        if let Some(path) = &mapping.city_region_postcode {
            let field = Field::Part("addresses", i, "city_region_postcode");
            if let Some(text) = self.one(field, path)? {
                let parsed =
                    parse_city_region_postcode(&text).map_err(|e| error(field, path, MappingProblem::Address(e)))?;
                address.city = address.city.or(parsed.city);
                address.region = address.region.or(parsed.region);
                address.postcode = address.postcode.or(parsed.postcode);
            }
        }
        Ok(address)
    }

    /// An extra value: text trimmed, anything else verbatim; a `[*]` path
    /// gives the list of what it found.
    fn extra(&self, field: Field, path: &SourcePath) -> Result<Option<Value>, MappingError> {
        let kept = |value: &Value| match value {
            Value::Null => None,
            Value::String(s) => Some(s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned())),
            other => Some(other.clone()),
        };
        let values = self.select(field, path)?;
        if path.is_multi_valued() {
            let list: Vec<Value> = values.into_iter().filter_map(kept).collect();
            return Ok((!list.is_empty()).then_some(Value::Array(list)));
        }
        match values.as_slice() {
            [] => Ok(None),
            [value] => Ok(kept(value)),
            several => Err(error(field, path, MappingProblem::SeveralValues(several.len()))),
        }
    }
}

/// The configuration entry an attribute is read with, spelled out only when
/// an error needs it, so that mapping a good record builds no field names.
#[derive(Clone, Copy)]
enum Field {
    /// `id`, `name.given`, `date_of_birth`.
    Named(&'static str),
    /// `emails[0]`.
    Listed(&'static str, usize),
    /// `addresses[0].city`.
    Part(&'static str, usize, &'static str),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Named(name) => f.write_str(name),
            Self::Listed(list, i) => write!(f, "{list}[{i}]"),
            Self::Part(list, i, part) => write!(f, "{list}[{i}].{part}"),
        }
    }
}

fn error(field: Field, path: &SourcePath, problem: MappingProblem) -> MappingError {
    MappingError {
        field: field.to_string(),
        path: path.as_str().into(),
        problem,
    }
}

/// The text of a scalar value, trimmed; `None` for null or blank text.
fn text(value: &Value) -> Result<Option<String>, JsonKind> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned)),
        Value::Number(n) => Ok(Some(number_text(n))),
        Value::Bool(_) => Err(JsonKind::Boolean),
        Value::Array(_) => Err(JsonKind::Array),
        Value::Object(_) => Err(JsonKind::Object),
    }
}

/// The decimal text of a JSON number. Integers print as they are; a float
/// that holds a whole number small enough to be exact prints without its
/// `.0`, because ids and postcodes exported through a spreadsheet or a
/// JavaScript client often arrive as `60610.0`.
fn number_text(n: &serde_json::Number) -> String {
    /// 2^53: above it, not every integer is exactly representable as an f64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(def: Value) -> SourceDefinition {
        let def: SourceDefinition = serde_json::from_value(def).unwrap();
        def.validate().unwrap();
        def
    }

    /// A definition that maps every attribute from a flat record.
    fn flat() -> SourceDefinition {
        definition(json!({
            "system": "test", "trust_rank": 1, "format": "json", "id": "id",
            "name": {"given": "given", "middle": "middle", "family": "family", "suffix": "suffix"},
            "emails": ["email", "emails[*]"],
            "phones": [{"path": "home", "kind": "home"}, {"path": "phones[*]"}],
            "addresses": [{"line1": "line1", "line2": "line2", "city": "city", "region": "region",
                           "postcode": "postcode", "country": "country"}],
            "date_of_birth": {"path": "dob", "formats": ["%Y-%m-%d", "%m/%d/%Y"]},
            "extras": ["tier", "tags[*]", "prefs"]
        }))
    }

    /// Maps `record` with `def` and compares the JSON form of the result,
    /// which shows the values when it fails (unlike the redacted `Debug`).
    fn check(def: &SourceDefinition, cases: &[(Value, Value)]) {
        for (record, expected) in cases {
            let mapped = map_record(def, record).unwrap_or_else(|e| panic!("{record}: {e}"));
            assert_eq!(serde_json::to_value(&mapped).unwrap(), *expected, "{record}");
        }
    }

    #[test]
    fn values_are_trimmed_and_numbers_become_their_decimal_text() {
        check(
            &flat(),
            &[
                (
                    json!({"id": 48213, "given": "  Matthew ", "family": "Groves", "postcode": 60610, "home": 3125550100_u64}),
                    json!({"source_id": "48213", "attributes": {
                        "given_name": "Matthew", "family_name": "Groves",
                        "phones": [{"kind": "home", "number": "3125550100"}],
                        "addresses": [{"postcode": "60610"}]}}),
                ),
                (
                    json!({"id": 12.0, "postcode": 2134.0}),
                    json!({"source_id": "12", "attributes": {"addresses": [{"postcode": "2134"}]}}),
                ),
                (json!({"id": 1.5}), json!({"source_id": "1.5", "attributes": {}})),
                (json!({"id": -7}), json!({"source_id": "-7", "attributes": {}})),
                (json!({"id": " x "}), json!({"source_id": "x", "attributes": {}})),
            ],
        );
    }

    #[test]
    fn empty_strings_and_nulls_count_as_missing() {
        check(
            &flat(),
            &[(
                json!({"id": "1", "given": "", "middle": "   ", "family": null, "email": "", "emails": [null, "", "a@x.example"],
                       "home": null, "phones": ["", " 555 "], "line1": "", "city": null, "dob": " ", "tier": "", "tags": [null, ""], "prefs": null}),
                json!({"source_id": "1", "attributes": {"emails": ["a@x.example"], "phones": [{"number": "555"}]}}),
            )],
        );
    }

    #[test]
    fn lists_gather_every_path_and_drop_exact_repeats() {
        check(
            &flat(),
            &[(
                json!({"id": "1", "email": "a@x.example", "emails": ["b@x.example", "a@x.example", "A@x.example"],
                       "home": "555-0100", "phones": ["555-0100", "555-0199", "555-0199"]}),
                json!({"source_id": "1", "attributes": {
                    "emails": ["a@x.example", "b@x.example", "A@x.example"],
                    "phones": [{"kind": "home", "number": "555-0100"}, {"number": "555-0100"}, {"number": "555-0199"}]}}),
            )],
        );
    }

    #[test]
    fn extras_are_kept_verbatim_under_their_path() {
        check(
            &flat(),
            &[(
                json!({"id": "1", "tier": " gold ", "tags": ["a", 2, null, {"b": true}], "prefs": {"sms": false, "note": " x "}}),
                json!({"source_id": "1", "attributes": {"extras": {
                    "tier": "gold", "tags[*]": ["a", 2, {"b": true}], "prefs": {"sms": false, "note": " x "}}}}),
            )],
        );
    }

    #[test]
    fn a_full_name_is_kept_as_given_and_parsed_by_its_form() {
        let def = |form: &str| {
            definition(json!({"system": "t", "trust_rank": 1, "format": "json", "id": "id",
                              "name": {"full": {"path": "name", "form": form}}}))
        };
        check(
            &def("last_comma_first"),
            &[(
                json!({"id": "1", "name": " GROVES JR,  MATTHEW J "}),
                json!({"source_id": "1", "attributes": {"given_name": "MATTHEW", "middle_name": "J", "family_name": "GROVES",
                       "name_suffix": "JR", "full_name": "GROVES JR,  MATTHEW J"}}),
            )],
        );
        check(
            &def("as_given"),
            &[(
                json!({"id": "1", "name": "Matthew Groves"}),
                json!({"source_id": "1", "attributes": {"full_name": "Matthew Groves"}}),
            )],
        );
        let as_given_beside_parts = definition(json!({"system": "t", "trust_rank": 1, "format": "json", "id": "id",
            "name": {"given": "first", "full": {"path": "display", "form": "as_given"}}}));
        check(
            &as_given_beside_parts,
            &[(
                json!({"id": "1", "first": "Matt", "display": "Matt G."}),
                json!({"source_id": "1", "attributes": {"given_name": "Matt", "full_name": "Matt G."}}),
            )],
        );
    }

    #[test]
    fn a_combined_city_line_fills_city_region_and_postcode() {
        let def = definition(
            json!({"system": "t", "trust_rank": 1, "format": "json", "id": "id", "name": {"given": "g"},
            "addresses": [{"line1": "street", "city_region_postcode": "cityline", "country": "country"}]}),
        );
        check(
            &def,
            &[
                (
                    json!({"id": "1", "street": "1200 N Lake Shore Dr", "cityline": "Chicago, IL 60610-1234", "country": "US"}),
                    json!({"source_id": "1", "attributes": {"addresses": [{"line1": "1200 N Lake Shore Dr", "city": "Chicago",
                           "region": "IL", "postcode": "60610-1234", "country": "US"}]}}),
                ),
                (
                    json!({"id": "1", "cityline": ""}),
                    json!({"source_id": "1", "attributes": {}}),
                ),
            ],
        );
    }

    #[test]
    fn bad_records_are_rejected_naming_the_field_and_path_but_no_value() {
        let full = |form: &str| {
            definition(json!({"system": "t", "trust_rank": 1, "format": "json", "id": "id",
                              "name": {"full": {"path": "person.name", "form": form}},
                              "addresses": [{"city_region_postcode": "cityline"}]}))
        };
        let cases: Vec<(SourceDefinition, Value, &str)> = vec![
            (flat(), json!({"given": "Matthew"}), "field `id` (path `id`): the record has no value there"),
            (flat(), json!({"id": ""}), "field `id` (path `id`): the record has no value there"),
            (flat(), json!({"id": null}), "field `id` (path `id`): the record has no value there"),
            (flat(), json!(["not", "an", "object"]), "field `id` (path `id`): the record has no value there"),
            (flat(), json!({"id": {"n": 481}}), "field `id` (path `id`): found an object"),
            (flat(), json!({"id": "1", "given": true}), "field `name.given` (path `given`): found a boolean"),
            (flat(), json!({"id": "1", "email": ["m@x.example"]}), "field `emails[0]` (path `email`): found an array (add `[*]`"),
            (flat(), json!({"id": "1", "phones": [["5550100"]]}), "field `phones[1]` (path `phones[*]`): found an array"),
            (flat(), json!({"id": "1", "city": {"name": "Chicago"}}), "field `addresses[0].city` (path `city`): found an object"),
            (
                flat(),
                json!({"id": "1", "dob": "1987-02-30"}),
                "field `date_of_birth` (path `dob`): the date matches none of the 2 configured formats",
            ),
            (
                flat(),
                json!({"id": "1", "dob": "23.11.1987"}),
                "field `date_of_birth` (path `dob`): the date matches none of the 2 configured formats",
            ),
            (
                full("first_last"),
                json!({"id": "1", "person": {"name": "Groves, Matthew"}}),
                "field `name.full` (path `person.name`): the name does not have the form `first_last`: it holds a comma",
            ),
            (
                full("last_comma_first"),
                json!({"id": "1", "cityline": "Chicago, IL 6061"}),
                "field `addresses[0].city_region_postcode` (path `cityline`): the city line does not parse",
            ),
        ];
        for (def, record, expected) in cases {
            let message = map_record(&def, &record).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}\nexpected: {expected}");
            for value in [
                "Matthew", "Groves", "Chicago", "6061", "1987", "23.11", "5550100", "m@x", "481",
            ] {
                assert!(!message.contains(value), "{message} leaks {value}");
            }
        }
    }

    #[test]
    fn an_unvalidated_definition_reports_its_bad_paths_and_several_values() {
        let def: SourceDefinition = serde_json::from_value(json!({"system": "t", "trust_rank": 1, "format": "json",
            "id": "ids[*]", "name": {"given": "a[", "full": {"path": "n", "form": "first_last"}}, "extras": ["x"]}))
        .unwrap();
        let message = map_record(&def, &json!({"ids": ["1", "2"]})).unwrap_err().to_string();
        assert_eq!(
            message,
            "field `id` (path `ids[*]`): the path selects 2 values, but this attribute holds one"
        );
        let message = map_record(&def, &json!({"ids": ["1"]})).unwrap_err().to_string();
        assert_eq!(
            message,
            "field `name.given` (path `a[`): the path does not parse: the `[` at character 2 is never closed"
        );
    }

    #[test]
    fn separately_mapped_parts_win_over_the_parsed_full_name_when_validation_was_skipped() {
        let def: SourceDefinition =
            serde_json::from_value(json!({"system": "t", "trust_rank": 1, "format": "json", "id": "id",
            "name": {"given": "first", "full": {"path": "name", "form": "first_last"}}}))
            .unwrap();
        let mapped = map_record(&def, &json!({"id": "1", "first": "Matt", "name": "Matthew Groves"})).unwrap();
        assert_eq!(mapped.attributes.given_name.as_deref(), Some("Matt"));
        assert_eq!(mapped.attributes.family_name.as_deref(), Some("Groves"));
    }

    #[test]
    fn debug_output_shows_the_shape_but_no_value() {
        let record = json!({"id": "cust-981", "given": "Matthew", "email": "mg@x.example", "home": "5550100",
                            "city": "Chicago", "dob": "1987-11-23", "tier": "gold"});
        let mapped = map_record(&flat(), &record).unwrap();
        let debug = format!("{mapped:?}");
        for value in ["cust-981", "Matthew", "mg@x", "5550100", "Chicago", "1987", "gold"] {
            assert!(!debug.contains(value), "{debug} leaks {value}");
        }
        assert!(debug.contains("emails: 1") && debug.contains("phones: 1"), "{debug}");
    }

    #[test]
    fn canonical_attributes_round_trip_through_json() {
        let record = json!({"id": "1", "given": "Matthew", "family": "Groves", "email": "mg@x.example", "home": "5550100",
                            "city": "Chicago", "dob": "11/23/1987", "tier": "gold"});
        let mapped = map_record(&flat(), &record).unwrap();
        let json = serde_json::to_value(&mapped).unwrap();
        assert_eq!(json["attributes"]["date_of_birth"], json!("1987-11-23"));
        assert_eq!(serde_json::from_value::<MappedRecord>(json).unwrap(), mapped);
    }
}
