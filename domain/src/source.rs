//! Source systems: their definitions and the mapping of their records to
//! canonical attributes.
//!
//! Each source system is declared once in configuration, not in code: its
//! name, trust rank, input format, where the record id is, and where each
//! canonical attribute is found. The configuration file is parsed elsewhere
//! (the api crate); this module holds the serde types, their validation and
//! the pure function that maps one record. In TOML a definition reads:
//!
//! ```toml
//! [[sources]]
//! system = "dealer_b"
//! trust_rank = 40
//! format = "json"                  # json | csv | debezium | rest_pull
//! id = "CustNo"
//! name.full = { path = "CustName", form = "last_comma_first" }
//! emails = ["EMail", "contacts[*].email"]
//! phones = [{ path = "HomePhone", kind = "home" }, { path = "CellPhone", kind = "mobile" }]
//! addresses = [{ line1 = "Addr1", line2 = "Addr2", city_region_postcode = "CityStZip" }]
//! date_of_birth = { path = "BirthDt", formats = ["%Y%m%d", "%m/%d/%Y"] }
//! extras = ["DealerCode"]
//! ```
//!
//! `name` takes `given`, `middle`, `family` and `suffix` paths, and/or `full`
//! with a `form`: `last_comma_first`, `first_last` or `as_given` (kept, not
//! parsed). An address takes `line1`, `line2`, `city`, `region`, `postcode`,
//! `country`, or `city_region_postcode` in place of the middle three.
//! `date_of_birth.formats` are chrono strftime formats tried in order, or
//! `days_since_epoch` for Debezium dates. Unknown keys are refused.
//!
//! Paths (see [`SourcePath`]): `a.b.c` for nesting, `a[0]` for an element,
//! `a[*].b` for every element (several values), `"E.Mail"` for a key holding
//! a dot (inside quotes, `\"` and `\\` escape a quote and a backslash). A CSV
//! path is a header name.
//!
//! Code map:
//! - `definition`: the serde types and [`SourceDefinitions::validate`];
//! - `path`: the path syntax and selecting values with it;
//! - `mapping`: [`map_record`] and the canonical attributes it produces;
//! - `name`, `address`, `date`: parsing a full name, a "City, ST 12345" line
//!   and a date in the configured formats.

mod address;
mod date;
mod definition;
mod mapping;
mod name;
mod path;

#[cfg(test)]
mod examples;

pub use address::{parse_city_region_postcode, AddressError, CityRegionPostcode};
pub use date::{check_date_format, parse_date, DateFormatError, DAYS_SINCE_EPOCH};
pub use definition::{
    AddressMapping, DateMapping, DefinitionError, DefinitionErrors, DefinitionProblem, FullNameMapping, InputFormat,
    InvalidDate, NameMapping, PhoneMapping, PullDefinition, SourceDefinition, SourceDefinitions,
};
pub use mapping::{
    map_record, CanonicalAttributes, JsonKind, MappedRecord, MappingError, MappingProblem, Phone, PostalAddress,
};
pub use name::{parse_full_name, NameError, NameForm, ParsedName};
pub use path::{PathError, Segment, SourcePath};

/// Debug-prints whether an optional personal value is present, never the
/// value itself, for the redacting `Debug` impls of this module.
struct Presence<'a, T>(&'a Option<T>);

impl<T> std::fmt::Debug for Presence<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
