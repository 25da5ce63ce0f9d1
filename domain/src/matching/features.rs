//! The normalized values of one source record that matching reads.
//!
//! Built once per record version from its canonical attributes, kept in the
//! resolver's memory, compared many times: everything costly (folding,
//! nickname roots, phone parsing, phonetic codes) happens here, not per pair.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::normalize::{self, Suffix};
use crate::source::CanonicalAttributes;

/// How features are drawn from attributes: which extras are identifiers
/// (matched exactly, like a social-security or customer number) and which
/// region a phone without a country code belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSettings {
    /// Extras (by their key in `CanonicalAttributes::extras`) compared as
    /// identifiers.
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// ISO 3166 region for phone numbers written without a `+` prefix.
    #[serde(default = "default_region")]
    pub default_phone_region: String,
}

fn default_region() -> String {
    "US".to_owned()
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self {
            identifiers: Vec::new(),
            default_phone_region: default_region(),
        }
    }
}

/// How many emails, phones and addresses of one record matching reads (the
/// first ones, in the record's order). A record of a megabyte can list a
/// hundred thousand values; comparing two such records value by value, and
/// indexing a blocking key for each, would stall the resolver. No person has
/// this many, and the record keeps them all: only matching looks at fewer.
pub const MAX_VALUES_PER_ATTRIBUTE: usize = 32;

/// One normalized postal address.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressFeatures {
    pub number: Option<String>,
    pub street: Option<String>,
    pub unit: Option<String>,
    pub city: Option<String>,
    pub postcode: Option<String>,
}

impl AddressFeatures {
    /// The key of the dwelling: house number, street, unit and postcode (or
    /// city when there is no postcode). `None` without a number and street.
    pub fn dwelling_key(&self) -> Option<String> {
        let number = self.number.as_deref()?;
        let street = self.street.as_deref()?;
        let place = self.postcode.as_deref().or(self.city.as_deref())?;
        Some(format!(
            "{number}|{street}|{}|{place}",
            self.unit.as_deref().unwrap_or("")
        ))
    }
}

/// The normalized values of one record.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchFeatures {
    pub given: Option<String>,
    pub middle_initial: Option<char>,
    pub family: Option<String>,
    pub suffix: Option<Suffix>,
    pub date_of_birth: Option<NaiveDate>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub addresses: Vec<AddressFeatures>,
    /// Identifier name (from the settings) to its normalized value.
    pub identifiers: BTreeMap<String, String>,
}

impl std::fmt::Debug for MatchFeatures {
    /// Personal data: only which features are present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchFeatures")
            .field("given", &self.given.is_some())
            .field("family", &self.family.is_some())
            .field("suffix", &self.suffix.is_some())
            .field("date_of_birth", &self.date_of_birth.is_some())
            .field("emails", &self.emails.len())
            .field("phones", &self.phones.len())
            .field("addresses", &self.addresses.len())
            .field("identifiers", &self.identifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl std::fmt::Debug for AddressFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressFeatures")
            .field("number", &self.number.is_some())
            .field("street", &self.street.is_some())
            .field("unit", &self.unit.is_some())
            .field("city", &self.city.is_some())
            .field("postcode", &self.postcode.is_some())
            .finish()
    }
}

impl MatchFeatures {
    /// Normalizes a record's attributes.
    pub fn from_attributes(attributes: &CanonicalAttributes, settings: &FeatureSettings) -> Self {
        let given = attributes.given_name.as_deref().and_then(normalize::name_part);
        let family = attributes.family_name.as_deref().and_then(normalize::name_part);
        let middle_initial = attributes
            .middle_name
            .as_deref()
            .and_then(normalize::name_part)
            .and_then(|m| m.chars().next());
        let suffix = attributes.name_suffix.as_deref().and_then(normalize::suffix);
        let mut emails: Vec<String> = attributes
            .emails
            .iter()
            .take(MAX_VALUES_PER_ATTRIBUTE)
            .filter_map(|e| normalize::email(e))
            .collect();
        emails.sort();
        emails.dedup();
        let mut phones: Vec<String> = attributes
            .phones
            .iter()
            .take(MAX_VALUES_PER_ATTRIBUTE)
            .filter_map(|p| normalize::phone(&p.number, &settings.default_phone_region))
            .collect();
        phones.sort();
        phones.dedup();
        let mut addresses: Vec<AddressFeatures> = attributes
            .addresses
            .iter()
            .take(MAX_VALUES_PER_ATTRIBUTE)
            .map(|a| {
                let street = a.line1.as_deref().map(|l1| normalize::street(l1, a.line2.as_deref()));
                let (number, street_name, unit) = match street {
                    Some(s) => (s.number, s.name, s.unit),
                    None => (None, None, None),
                };
                AddressFeatures {
                    number,
                    street: street_name,
                    unit,
                    city: a.city.as_deref().and_then(normalize::city),
                    postcode: a.postcode.as_deref().and_then(normalize::postcode),
                }
            })
            .filter(|a| *a != AddressFeatures::default())
            .collect();
        addresses.dedup();
        let identifiers = settings
            .identifiers
            .iter()
            .filter_map(|name| {
                let value = attributes.extras.get(name)?;
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                let folded: String = normalize::fold(&text).chars().filter(|c| !c.is_whitespace()).collect();
                (!folded.is_empty()).then(|| (name.clone(), folded))
            })
            .collect();
        Self {
            given,
            middle_initial,
            family,
            suffix,
            date_of_birth: attributes.date_of_birth,
            emails,
            phones,
            addresses,
            identifiers,
        }
    }

    /// Birth year, for blocking.
    pub fn birth_year(&self) -> Option<i32> {
        self.date_of_birth.map(|d| d.year())
    }

    /// Keys of the dwellings this record names (for households).
    pub fn dwelling_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.addresses.iter().filter_map(AddressFeatures::dwelling_key)
    }

    /// Approximate heap bytes held, for the resolver's memory figure.
    pub fn heap_bytes(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::capacity);
        s(&self.given)
            + s(&self.family)
            + self.emails.iter().map(|e| e.capacity() + 24).sum::<usize>()
            + self.phones.iter().map(|p| p.capacity() + 24).sum::<usize>()
            + self
                .addresses
                .iter()
                .map(|a| {
                    std::mem::size_of::<AddressFeatures>()
                        + s(&a.number)
                        + s(&a.street)
                        + s(&a.unit)
                        + s(&a.city)
                        + s(&a.postcode)
                })
                .sum::<usize>()
            + self
                .identifiers
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity() + 64)
                .sum::<usize>()
    }
}
