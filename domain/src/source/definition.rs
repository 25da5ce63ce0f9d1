//! Source definitions: how each source system's records map to canonical
//! attributes, as read from configuration, and their validation.
//!
//! The types deserialize with serde from any format (the configuration file
//! is TOML, parsed in the api crate) and reject unknown keys, so a typo such
//! as `emials` fails loudly instead of silently mapping nothing. Everything
//! serde cannot see (a path that does not parse, a date format chrono cannot
//! use, a name mapped twice) is checked by validation, whose errors name the
//! system and the configuration key at fault.

use super::date::{check_date_format, DateFormatError};
use super::name::NameForm;
use super::path::{PathError, SourcePath};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// How records of a source arrive. Mapping is the same for all of them; the
/// format tells ingestion how to read the records and what a path means:
/// for `csv` a path is a header name (CSV rows are handed over as flat JSON
/// objects of header to text), for `debezium` it is relative to the row image
/// (`payload.after`, or `payload.before` for a delete), not to the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// JSON records pushed over HTTP or read from JSON / NDJSON files.
    Json,
    /// CSV files, one record per row.
    Csv,
    /// Debezium change events.
    Debezium,
    /// A REST source asked per customer; its JSON answers are the records.
    RestPull,
}

impl InputFormat {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Json => "json",
            InputFormat::Csv => "csv",
            InputFormat::Debezium => "debezium",
            InputFormat::RestPull => "rest_pull",
        }
    }
}

/// One source system as declared in configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDefinition {
    /// The system's name: lowercase letters, digits, `-` and `_`.
    pub system: String,
    /// How much this system is trusted for survivorship; higher wins.
    pub trust_rank: u32,
    pub format: InputFormat,
    /// Where the record's id in its source system sits.
    pub id: SourcePath,
    #[serde(default)]
    pub name: NameMapping,
    /// Each path may give several e-mail addresses (`emails[*]`).
    #[serde(default)]
    pub emails: Vec<SourcePath>,
    #[serde(default)]
    pub phones: Vec<PhoneMapping>,
    #[serde(default)]
    pub addresses: Vec<AddressMapping>,
    #[serde(default)]
    pub date_of_birth: Option<DateMapping>,
    /// Values kept as they are, under their path, and never matched.
    #[serde(default)]
    pub extras: Vec<SourcePath>,
    /// Where and how fast to ask a `rest_pull` source; required for that
    /// format and refused for the others.
    #[serde(default)]
    pub pull: Option<PullDefinition>,
}

/// How a `rest_pull` source is asked, one customer per request:
///
/// ```toml
/// pull = { by_id = "http://warranty.internal/api/customers/{id}", by_email = "http://warranty.internal/api/customers?email={email}", requests_per_second = 5.0, max_attempts = 5, timeout_ms = 5000 }
/// ```
///
/// At least one of `by_id` (holding `{id}`) and `by_email` (holding
/// `{email}`); the key is URL-encoded into the placeholder.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullDefinition {
    /// URL template of the lookup by the customer's id in the source.
    pub by_id: Option<String>,
    /// URL template of the lookup by e-mail address.
    pub by_email: Option<String>,
    /// At most this many requests start per second (retries included).
    #[serde(default = "PullDefinition::default_requests_per_second")]
    pub requests_per_second: f64,
    /// Attempts per key in all, the first included (1 to 20).
    #[serde(default = "PullDefinition::default_max_attempts")]
    pub max_attempts: u32,
    /// How long one attempt may take, answer body included.
    #[serde(default = "PullDefinition::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl PullDefinition {
    pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 5.0;
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
    /// The most attempts per key a definition may ask for.
    pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
    /// The placeholder of `by_id`.
    pub const ID_PLACEHOLDER: &'static str = "{id}";
    /// The placeholder of `by_email`.
    pub const EMAIL_PLACEHOLDER: &'static str = "{email}";

    fn default_requests_per_second() -> f64 {
        Self::DEFAULT_REQUESTS_PER_SECOND
    }

    fn default_max_attempts() -> u32 {
        Self::DEFAULT_MAX_ATTEMPTS
    }

    fn default_timeout_ms() -> u64 {
        Self::DEFAULT_TIMEOUT_MS
    }

    /// The least time between two request starts (`1 / requests_per_second`);
    /// `None` when `requests_per_second` is not valid.
    pub fn interval(&self) -> Option<Duration> {
        if self.requests_per_second.is_finite() && self.requests_per_second > 0.0 {
            Duration::try_from_secs_f64(1.0 / self.requests_per_second).ok()
        } else {
            None
        }
    }

    /// The time limit of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Compares `requests_per_second` bit for bit, so equality is an
/// equivalence (`Eq`) even for a NaN that validation would refuse.
impl PartialEq for PullDefinition {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
            && self.by_email == other.by_email
            && self.requests_per_second.to_bits() == other.requests_per_second.to_bits()
            && self.max_attempts == other.max_attempts
            && self.timeout_ms == other.timeout_ms
    }
}

impl Eq for PullDefinition {}

/// Where the name parts are. A part comes either from its own path or from
/// parsing the full name, never both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameMapping {
    pub given: Option<SourcePath>,
    pub middle: Option<SourcePath>,
    pub family: Option<SourcePath>,
    pub suffix: Option<SourcePath>,
    pub full: Option<FullNameMapping>,
}

/// A full-name field and how it is written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullNameMapping {
    pub path: SourcePath,
    pub form: NameForm,
}

/// A phone number field, with the kind of number it holds when the source
/// says so by its field names (`home`, `mobile`, `work`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneMapping {
    pub path: SourcePath,
    pub kind: Option<String>,
}

/// One postal address: its parts each at their own path, or city, region and
/// postcode together in one "City, ST 12345" field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressMapping {
    /// The house number, when the source keeps it apart from the street
    /// (it is put in front of `line1`).
    pub house_number: Option<SourcePath>,
    pub line1: Option<SourcePath>,
    pub line2: Option<SourcePath>,
    pub city: Option<SourcePath>,
    pub region: Option<SourcePath>,
    pub postcode: Option<SourcePath>,
    pub country: Option<SourcePath>,
    pub city_region_postcode: Option<SourcePath>,
}

/// The date-of-birth field and the formats it may be written in, tried in
/// order (chrono strftime, or [`super::DAYS_SINCE_EPOCH`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateMapping {
    pub path: SourcePath,
    pub formats: Vec<String>,
    /// What to do with a date that matches none of the formats: `reject`
    /// the record (the default) or `ignore` the date and keep the record.
    #[serde(default)]
    pub invalid: InvalidDate,
}

/// What a date matching none of its formats does to the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidDate {
    #[default]
    Reject,
    Ignore,
}

/// What is wrong with one field of a definition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionProblem {
    #[error("the system name is empty")]
    EmptySystemName,
    #[error("a system name may only hold lowercase letters, digits, `-` and `_`")]
    InvalidSystemName,
    #[error("another source definition has the same system name")]
    DuplicateSystem,
    #[error("the path does not parse: {0}")]
    Path(PathError),
    #[error("the path selects several values (`[*]`), but this attribute holds one")]
    MultiValuedPath,
    #[error("CSV rows are flat, so the path must be one header name (quote a header that holds a dot: `\"E.Mail\"`)")]
    NotCsvHeader,
    #[error("no name is mapped: map `given`, `family` or `full`")]
    NoName,
    #[error("this name part is mapped on its own and also parsed from `name.full`; map one or the other (or give `name.full` the form `as_given`)")]
    NameMappedTwice,
    #[error("the address maps no part")]
    EmptyAddress,
    #[error("`city_region_postcode` already gives city, region and postcode")]
    AddressMappedTwice,
    #[error("no date format is listed")]
    NoDateFormat,
    #[error("{0}")]
    DateFormat(DateFormatError),
    #[error("the phone kind is empty; leave it out instead")]
    EmptyPhoneKind,
    #[error("the same path is listed twice")]
    DuplicateExtra,
    #[error(
        "a `rest_pull` source needs a `pull` table with the URL to ask by id (`by_id`) and/or by e-mail (`by_email`)"
    )]
    PullMissing,
    #[error("only a `rest_pull` source is pulled; remove `pull` or set `format = \"rest_pull\"`")]
    PullNotAllowed,
    #[error("neither `by_id` nor `by_email` is given: map at least one lookup URL")]
    PullNoLookup,
    #[error("the URL must start with http:// or https:// and name a host")]
    PullUrlNotHttp,
    #[error("the URL holds a space or a control character")]
    PullUrlSpace,
    #[error("the URL must hold `{0}` after its host: that is where the key is put")]
    PullUrlPlaceholder(&'static str),
    #[error("must be a number above 0")]
    PullRequestsPerSecond,
    #[error("must be between 1 and 20")]
    PullMaxAttempts,
    #[error("must be above 0")]
    PullTimeout,
}

/// A field of a definition that is wrong: which system, which configuration
/// key (`name.full.path`, `emails[1]`, `date_of_birth.formats[0]`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    pub system: String,
    pub field: String,
    pub problem: DefinitionProblem,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.system.is_empty() {
            write!(f, "source definition without a system name, ")?;
        } else {
            write!(f, "source `{}`, ", self.system)?;
        }
        write!(f, "field `{}`: {}", self.field, self.problem)
    }
}

/// Every problem found in a set of definitions, one per line when displayed,
/// so that an operator fixes them all in one go. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl std::fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

fn result(errors: Vec<DefinitionError>) -> Result<(), DefinitionErrors> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DefinitionErrors(errors))
    }
}

impl SourceDefinition {
    /// Checks this definition on its own (see [`SourceDefinitions::validate`]
    /// for a whole set, which also refuses duplicate system names).
    pub fn validate(&self) -> Result<(), DefinitionErrors> {
        result(self.problems())
    }

    fn problems(&self) -> Vec<DefinitionError> {
        let mut check = Checker {
            def: self,
            errors: Vec::new(),
        };
        check.system_name();
        check.single("id", &self.id);
        check.name();
        for (i, path) in self.emails.iter().enumerate() {
            check.multi(&format!("emails[{i}]"), path);
        }
        for (i, phone) in self.phones.iter().enumerate() {
            check.multi(&format!("phones[{i}].path"), &phone.path);
            if phone.kind.as_deref().is_some_and(|k| k.trim().is_empty()) {
                check.fail(format!("phones[{i}].kind"), DefinitionProblem::EmptyPhoneKind);
            }
        }
        for (i, address) in self.addresses.iter().enumerate() {
            check.address(i, address);
        }
        if let Some(dob) = &self.date_of_birth {
            check.date_of_birth(dob);
        }
        check.pull();
        let mut seen = BTreeSet::new();
        for (i, path) in self.extras.iter().enumerate() {
            let field = format!("extras[{i}]");
            check.multi(&field, path);
            // Extras are stored under their path, so a repeated path would
            // silently collide.
            if !seen.insert(path.as_str()) {
                check.fail(field, DefinitionProblem::DuplicateExtra);
            }
        }
        check.errors
    }
}

/// Collects the problems of one definition.
struct Checker<'a> {
    def: &'a SourceDefinition,
    errors: Vec<DefinitionError>,
}

impl Checker<'_> {
    fn fail(&mut self, field: String, problem: DefinitionProblem) {
        self.errors.push(DefinitionError {
            system: self.def.system.clone(),
            field,
            problem,
        });
    }

    fn system_name(&mut self) {
        let name = &self.def.system;
        if name.is_empty() {
            self.fail("system".into(), DefinitionProblem::EmptySystemName);
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            self.fail("system".into(), DefinitionProblem::InvalidSystemName);
        }
    }

    /// A path that may give several values.
    fn multi(&mut self, field: &str, path: &SourcePath) {
        if let Err(e) = path.segments() {
            self.fail(field.into(), DefinitionProblem::Path(e.clone()));
        } else if self.def.format == InputFormat::Csv && !path.is_single_key() {
            self.fail(field.into(), DefinitionProblem::NotCsvHeader);
        }
    }

    /// A path for an attribute that holds one value.
    fn single(&mut self, field: &str, path: &SourcePath) {
        let before = self.errors.len();
        self.multi(field, path);
        if self.errors.len() == before && path.is_multi_valued() {
            self.fail(field.into(), DefinitionProblem::MultiValuedPath);
        }
    }

    fn name(&mut self) {
        let name = &self.def.name;
        let parts = [
            ("given", &name.given),
            ("middle", &name.middle),
            ("family", &name.family),
            ("suffix", &name.suffix),
        ];
        for (part, path) in parts {
            if let Some(path) = path {
                self.single(&format!("name.{part}"), path);
                if name.full.as_ref().is_some_and(|full| full.form.is_parsed()) {
                    self.fail(format!("name.{part}"), DefinitionProblem::NameMappedTwice);
                }
            }
        }
        if let Some(full) = &name.full {
            self.single("name.full.path", &full.path);
        }
        if name.given.is_none() && name.family.is_none() && name.full.is_none() {
            self.fail("name".into(), DefinitionProblem::NoName);
        }
    }

    fn address(&mut self, i: usize, address: &AddressMapping) {
        let parts = [
            ("house_number", &address.house_number),
            ("line1", &address.line1),
            ("line2", &address.line2),
            ("city", &address.city),
            ("region", &address.region),
            ("postcode", &address.postcode),
            ("country", &address.country),
            ("city_region_postcode", &address.city_region_postcode),
        ];
        let mut any = false;
        for (part, path) in parts {
            if let Some(path) = path {
                any = true;
                self.single(&format!("addresses[{i}].{part}"), path);
                if address.city_region_postcode.is_some() && matches!(part, "city" | "region" | "postcode") {
                    self.fail(format!("addresses[{i}].{part}"), DefinitionProblem::AddressMappedTwice);
                }
            }
        }
        if !any {
            self.fail(format!("addresses[{i}]"), DefinitionProblem::EmptyAddress);
        }
    }

    fn pull(&mut self) {
        let pull = match (&self.def.pull, self.def.format) {
            (None, InputFormat::RestPull) => return self.fail("pull".into(), DefinitionProblem::PullMissing),
            (None, _) => return,
            (Some(_), format) if format != InputFormat::RestPull => {
                return self.fail("pull".into(), DefinitionProblem::PullNotAllowed)
            }
            (Some(pull), _) => pull,
        };
        if pull.by_id.is_none() && pull.by_email.is_none() {
            self.fail("pull".into(), DefinitionProblem::PullNoLookup);
        }
        let urls = [
            ("pull.by_id", &pull.by_id, PullDefinition::ID_PLACEHOLDER),
            ("pull.by_email", &pull.by_email, PullDefinition::EMAIL_PLACEHOLDER),
        ];
        for (field, url, placeholder) in urls {
            if let Some(url) = url {
                if let Some(problem) = url_problem(url, placeholder) {
                    self.fail(field.into(), problem);
                }
            }
        }
        if pull.interval().is_none() {
            self.fail(
                "pull.requests_per_second".into(),
                DefinitionProblem::PullRequestsPerSecond,
            );
        }
        if !(1..=PullDefinition::MAX_ATTEMPTS_LIMIT).contains(&pull.max_attempts) {
            self.fail("pull.max_attempts".into(), DefinitionProblem::PullMaxAttempts);
        }
        if pull.timeout_ms == 0 {
            self.fail("pull.timeout_ms".into(), DefinitionProblem::PullTimeout);
        }
    }

    fn date_of_birth(&mut self, dob: &DateMapping) {
        self.single("date_of_birth.path", &dob.path);
        if dob.formats.is_empty() {
            self.fail("date_of_birth.formats".into(), DefinitionProblem::NoDateFormat);
        }
        for (i, format) in dob.formats.iter().enumerate() {
            if let Err(e) = check_date_format(format) {
                self.fail(format!("date_of_birth.formats[{i}]"), DefinitionProblem::DateFormat(e));
            }
        }
    }
}

/// What is wrong with a lookup URL template, if anything.
fn url_problem(url: &str, placeholder: &'static str) -> Option<DefinitionProblem> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(DefinitionProblem::PullUrlSpace);
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.starts_with(scheme).then(|| &url[scheme.len()..]))
    else {
        return Some(DefinitionProblem::PullUrlNotHttp);
    };
    // The authority ends at the first `/`, `?` or `#`; a key placed in it
    // would choose the host that is asked.
    let (authority, after) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if authority.is_empty() || authority.starts_with(':') || authority.ends_with('@') {
        return Some(DefinitionProblem::PullUrlNotHttp);
    }
    if !after.contains(placeholder) || authority.contains('{') {
        return Some(DefinitionProblem::PullUrlPlaceholder(placeholder));
    }
    None
}

/// A validated set of source definitions, one per system. Deserializing it
/// from a list validates the list, so a configuration type holding it cannot
/// exist with a bad definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<SourceDefinition>")]
pub struct SourceDefinitions(Vec<SourceDefinition>);

impl SourceDefinitions {
    /// Checks every definition and that no two share a system name; reports
    /// every problem found, not just the first.
    pub fn validate(defs: &[SourceDefinition]) -> Result<(), DefinitionErrors> {
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for def in defs {
            errors.extend(def.problems());
            if !def.system.is_empty() && !seen.insert(def.system.as_str()) {
                errors.push(DefinitionError {
                    system: def.system.clone(),
                    field: "system".into(),
                    problem: DefinitionProblem::DuplicateSystem,
                });
            }
        }
        result(errors)
    }

    /// Validates `defs` and keeps them.
    pub fn new(defs: Vec<SourceDefinition>) -> Result<Self, DefinitionErrors> {
        Self::validate(&defs)?;
        Ok(Self(defs))
    }

    /// The definition of `system`, if there is one.
    pub fn get(&self, system: &str) -> Option<&SourceDefinition> {
        self.0.iter().find(|def| def.system == system)
    }

    /// The definitions in configuration order.
    pub fn iter(&self) -> std::slice::Iter<'_, SourceDefinition> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<SourceDefinition>> for SourceDefinitions {
    type Error = DefinitionErrors;

    fn try_from(defs: Vec<SourceDefinition>) -> Result<Self, Self::Error> {
        Self::new(defs)
    }
}

impl<'a> IntoIterator for &'a SourceDefinitions {
    type Item = &'a SourceDefinition;
    type IntoIter = std::slice::Iter<'a, SourceDefinition>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A small valid definition that each case below breaks in one place.
    fn base() -> Value {
        json!({
            "system": "web",
            "trust_rank": 10,
            "format": "json",
            "id": "id",
            "name": {"given": "first", "family": "last"},
            "emails": ["email"],
            "phones": [{"path": "phone", "kind": "mobile"}],
            "addresses": [{"line1": "street", "city_region_postcode": "city"}],
            "date_of_birth": {"path": "dob", "formats": ["%Y-%m-%d"]},
            "extras": ["tier"]
        })
    }

    fn with(changes: Value) -> SourceDefinition {
        let mut def = base();
        if let (Some(def), Value::Object(changes)) = (def.as_object_mut(), changes) {
            for (key, value) in changes {
                if value.is_null() {
                    def.remove(&key);
                } else {
                    def.insert(key, value);
                }
            }
        }
        serde_json::from_value(def).unwrap()
    }

    #[test]
    fn the_base_definition_is_valid() {
        assert_eq!(with(json!({})).validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_reported_with_its_system_field_and_reason() {
        let name_error = |field: &str, message: &str| (field.to_owned(), message.to_owned());
        let cases: Vec<(Value, Vec<(String, String)>)> = vec![
            (
                json!({"system": ""}),
                vec![name_error("system", "the system name is empty")],
            ),
            (
                json!({"system": "Dealer B"}),
                vec![name_error("system", "lowercase letters")],
            ),
            (json!({"id": ""}), vec![name_error("id", "the path is empty")]),
            (json!({"id": "ids[*]"}), vec![name_error("id", "holds one")]),
            (
                json!({"id": "a..b"}),
                vec![name_error("id", "a segment is empty at character 3")],
            ),
            (
                json!({"name": {"middle": "m"}}),
                vec![name_error("name", "no name is mapped")],
            ),
            (json!({"name": {}}), vec![name_error("name", "no name is mapped")]),
            (json!({"name": null}), vec![name_error("name", "no name is mapped")]),
            (
                json!({"name": {"given": "first", "suffix": "sfx", "full": {"path": "name", "form": "first_last"}}}),
                vec![
                    name_error("name.given", "also parsed"),
                    name_error("name.suffix", "also parsed"),
                ],
            ),
            (
                json!({"name": {"full": {"path": "names[*]", "form": "first_last"}}}),
                vec![name_error("name.full.path", "holds one")],
            ),
            (
                json!({"name": {"given": "first["}}),
                vec![name_error("name.given", "never closed")],
            ),
            (
                json!({"emails": ["email", "\"mail"]}),
                vec![name_error("emails[1]", "never closed")],
            ),
            (
                json!({"phones": [{"path": "p", "kind": " "}]}),
                vec![name_error("phones[0].kind", "empty")],
            ),
            (
                json!({"phones": [{"path": "p[x]"}]}),
                vec![name_error("phones[0].path", "neither an index")],
            ),
            (
                json!({"addresses": [{}]}),
                vec![name_error("addresses[0]", "maps no part")],
            ),
            (
                json!({"addresses": [{"line1": "a"}, {"city": "c", "city_region_postcode": "crp"}]}),
                vec![name_error("addresses[1].city", "already gives city")],
            ),
            (
                json!({"addresses": [{"line1": "lines[*]"}]}),
                vec![name_error("addresses[0].line1", "holds one")],
            ),
            (
                json!({"date_of_birth": {"path": "dob", "formats": []}}),
                vec![name_error("date_of_birth.formats", "no date format")],
            ),
            (
                json!({"date_of_birth": {"path": "dob", "formats": ["%Y-%m-%d", "%Q", "%m/%d", "%d.%m.%y"]}}),
                vec![
                    name_error("date_of_birth.formats[1]", "chrono cannot use"),
                    name_error("date_of_birth.formats[2]", "cannot be read back"),
                    name_error("date_of_birth.formats[3]", "two-digit years"),
                ],
            ),
            (
                json!({"date_of_birth": {"path": "", "formats": ["%Y"]}}),
                vec![
                    name_error("date_of_birth.path", "the path is empty"),
                    name_error("date_of_birth.formats[0]", "cannot be read back"),
                ],
            ),
            (
                json!({"extras": ["tier", "tier"]}),
                vec![name_error("extras[1]", "listed twice")],
            ),
            (
                json!({"format": "csv", "id": "customer.id", "extras": ["tier", "a[0]"]}),
                vec![
                    name_error("id", "one header name"),
                    name_error("extras[1]", "one header name"),
                ],
            ),
            (
                json!({"format": "rest_pull"}),
                vec![name_error("pull", "needs a `pull` table")],
            ),
            (
                json!({"pull": {"by_id": "http://h/c/{id}"}}),
                vec![name_error("pull", "only a `rest_pull` source is pulled")],
            ),
            (
                json!({"format": "csv", "pull": {"by_id": "http://h/c/{id}"}}),
                vec![name_error("pull", "only a `rest_pull` source is pulled")],
            ),
            (
                json!({"format": "rest_pull", "pull": {}}),
                vec![name_error("pull", "neither `by_id` nor `by_email`")],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_id": "ftp://h/c/{id}", "by_email": "h/c?email={email}"}}),
                vec![
                    name_error("pull.by_id", "http:// or https://"),
                    name_error("pull.by_email", "http:// or https://"),
                ],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_id": "http:///c/{id}", "by_email": "https://"}}),
                vec![
                    name_error("pull.by_id", "name a host"),
                    name_error("pull.by_email", "name a host"),
                ],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_id": "http://h/c/{email}", "by_email": "http://h/c?email={id}"}}),
                vec![
                    name_error("pull.by_id", "must hold `{id}`"),
                    name_error("pull.by_email", "must hold `{email}`"),
                ],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_id": "http://{id}.h/c", "by_email": "http://h/c?email= {email}"}}),
                vec![
                    name_error("pull.by_id", "after its host"),
                    name_error("pull.by_email", "a space"),
                ],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_id": "http://h/c/{id}", "requests_per_second": 0,
                                                       "max_attempts": 0, "timeout_ms": 0}}),
                vec![
                    name_error("pull.requests_per_second", "above 0"),
                    name_error("pull.max_attempts", "between 1 and 20"),
                    name_error("pull.timeout_ms", "above 0"),
                ],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_email": "HTTPS://h/c?email={email}", "requests_per_second": -1.5,
                                                       "max_attempts": 21}}),
                vec![
                    name_error("pull.requests_per_second", "above 0"),
                    name_error("pull.max_attempts", "between 1 and 20"),
                ],
            ),
            (
                json!({"format": "rest_pull", "pull": {"by_id": "http://h/c/{id}", "requests_per_second": 1e-300}}),
                vec![name_error("pull.requests_per_second", "above 0")],
            ),
        ];
        for (changes, expected) in cases {
            let def = with(changes.clone());
            let errors = def.validate().expect_err(&changes.to_string()).0;
            let got: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            let want: Vec<&str> = expected.iter().map(|(field, _)| field.as_str()).collect();
            assert_eq!(got, want, "{changes}");
            for (error, (field, reason)) in errors.iter().zip(&expected) {
                let message = error.to_string();
                let system = if def.system.is_empty() {
                    "without a system name".to_owned()
                } else {
                    format!("`{}`", def.system)
                };
                assert!(message.contains(&system), "{message}");
                assert!(message.contains(&format!("field `{field}`")), "{message}");
                assert!(message.contains(reason), "{message} lacks {reason}");
            }
        }
    }

    #[test]
    fn full_names_kept_as_given_may_sit_beside_separate_parts() {
        let def = with(
            json!({"name": {"given": "first", "family": "last", "full": {"path": "display", "form": "as_given"}}}),
        );
        assert_eq!(def.validate(), Ok(()));
    }

    #[test]
    fn a_pull_table_takes_defaults_and_one_lookup_is_enough() {
        let def = with(json!({"format": "rest_pull", "pull": {"by_email": "https://h:8443/c?email={email}&v=2"}}));
        assert_eq!(def.validate(), Ok(()));
        let pull = def.pull.unwrap();
        assert_eq!(pull.by_id, None);
        assert_eq!(pull.requests_per_second, 5.0);
        assert_eq!(pull.max_attempts, 5);
        assert_eq!(pull.timeout_ms, 5000);
        assert_eq!(pull.interval(), Some(std::time::Duration::from_millis(200)));
        assert_eq!(pull.timeout(), std::time::Duration::from_secs(5));

        let def = with(json!({"format": "rest_pull", "pull": {
            "by_id": "http://warranty.internal/api/customers/{id}",
            "by_email": "http://warranty.internal/api/customers?email={email}",
            "requests_per_second": 20, "max_attempts": 20, "timeout_ms": 250
        }}));
        assert_eq!(def.validate(), Ok(()));
        let pull = def.pull.as_ref().unwrap();
        assert_eq!(pull.interval(), Some(std::time::Duration::from_millis(50)));
        assert_eq!(def.clone(), def);
    }

    #[test]
    fn pull_errors_do_not_print_the_url() {
        let def = with(json!({"format": "rest_pull", "pull": {"by_id": "http://user:s3cret@h/c/{email}"}}));
        let message = def.validate().unwrap_err().to_string();
        assert_eq!(
            message,
            "source `web`, field `pull.by_id`: the URL must hold `{id}` after its host: that is where the key is put"
        );
    }

    #[test]
    fn a_quoted_header_with_a_dot_is_a_valid_csv_path() {
        let def = with(json!({"format": "csv", "emails": ["\"E.Mail\""], "addresses": [], "extras": []}));
        assert_eq!(def.validate(), Ok(()));
    }

    #[test]
    fn a_set_refuses_duplicate_systems_and_reports_every_problem() {
        let defs = vec![
            with(json!({})),
            with(json!({"id": ""})),
            with(json!({"system": "finance"})),
        ];
        let errors = SourceDefinitions::validate(&defs).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "source `web`, field `id`: the path does not parse: the path is empty\n\
             source `web`, field `system`: another source definition has the same system name"
        );
        assert!(SourceDefinitions::new(vec![with(json!({})), with(json!({"system": "finance"}))]).is_ok());
    }

    #[test]
    fn deserializing_a_set_validates_it_and_lookup_finds_a_system() {
        let good: SourceDefinitions = serde_json::from_value(json!([base(), {
            "system": "loyalty", "trust_rank": 5, "format": "csv", "id": "member_id",
            "name": {"full": {"path": "Member Name", "form": "first_last"}}
        }]))
        .unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good.get("loyalty").map(|d| d.trust_rank), Some(5));
        assert!(good.get("finance").is_none());
        assert_eq!(
            good.iter().map(|d| d.system.as_str()).collect::<Vec<_>>(),
            ["web", "loyalty"]
        );

        let bad = serde_json::from_value::<SourceDefinitions>(json!([base(), base()])).unwrap_err();
        assert!(bad.to_string().contains("source `web`, field `system`"), "{bad}");
    }

    #[test]
    fn unknown_keys_and_formats_are_rejected_by_serde() {
        let cases = [
            json!({"emials": ["email"]}),
            json!({"format": "xml"}),
            json!({"name": {"given": "first", "famly": "last"}}),
            json!({"name": {"full": {"path": "n", "form": "last_first"}}}),
            json!({"phones": [{"path": "p", "knd": "home"}]}),
            json!({"addresses": [{"street": "s"}]}),
            json!({"date_of_birth": {"path": "dob", "format": "%Y"}}),
            json!({"trust_rank": -1}),
            json!({"id": null}),
            json!({"pull": {"by_id": "http://h/{id}", "rate": 5}}),
            json!({"pull": {"by_id": "http://h/{id}", "max_attempts": -1}}),
            json!({"pull": {"by_id": "http://h/{id}", "timeout_ms": 1.5}}),
            json!({"pull": "http://h/{id}"}),
        ];
        for changes in cases {
            let mut def = base();
            for (key, value) in changes.as_object().unwrap() {
                if value.is_null() {
                    def.as_object_mut().unwrap().remove(key);
                } else {
                    def[key] = value.clone();
                }
            }
            assert!(serde_json::from_value::<SourceDefinition>(def).is_err(), "{changes}");
        }
    }
}
