//! Comparisons: for each attribute, how well two records agree, as one of a
//! fixed list of levels (best first), or `None` when either record lacks the
//! attribute (missing evidence weighs nothing).

use serde::{Deserialize, Serialize};

use super::features::{AddressFeatures, MatchFeatures};
use super::normalize;

/// How many characters of each side string similarity looks at. Jaro-Winkler
/// takes time proportional to the product of the lengths, and a record may
/// hold a name of a megabyte (the readers' record limit): two such names
/// would stall the resolver for minutes on one pair. No real name, street or
/// city is this long, and Jaro-Winkler weighs the start of a text most.
pub const MAX_SIMILARITY_CHARS: usize = 100;

/// `strsim::jaro_winkler` of the first [`MAX_SIMILARITY_CHARS`] characters
/// of each side.
fn jaro_winkler(a: &str, b: &str) -> f64 {
    fn head(s: &str) -> &str {
        match s.char_indices().nth(MAX_SIMILARITY_CHARS) {
            Some((end, _)) => &s[..end],
            None => s,
        }
    }
    strsim::jaro_winkler(head(a), head(b))
}

/// The attributes compared, in a fixed order (the order of a comparison
/// vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    GivenName,
    FamilyName,
    DateOfBirth,
    Suffix,
    Email,
    Phone,
    Street,
    City,
    Postcode,
    Identifier,
}

impl Attribute {
    pub const ALL: [Attribute; 10] = [
        Attribute::GivenName,
        Attribute::FamilyName,
        Attribute::DateOfBirth,
        Attribute::Suffix,
        Attribute::Email,
        Attribute::Phone,
        Attribute::Street,
        Attribute::City,
        Attribute::Postcode,
        Attribute::Identifier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attribute::GivenName => "given_name",
            Attribute::FamilyName => "family_name",
            Attribute::DateOfBirth => "date_of_birth",
            Attribute::Suffix => "suffix",
            Attribute::Email => "email",
            Attribute::Phone => "phone",
            Attribute::Street => "street",
            Attribute::City => "city",
            Attribute::Postcode => "postcode",
            Attribute::Identifier => "identifier",
        }
    }

    /// The levels of this attribute's comparison, best agreement first; the
    /// last is always "different".
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Attribute::GivenName => &[
                "exact",
                "nickname",
                "typo",
                "jw_0.92",
                "jw_0.80",
                "initial",
                "swapped",
                "different",
            ],
            Attribute::FamilyName => &["exact", "typo", "jw_0.92", "jw_0.80", "different"],
            Attribute::DateOfBirth => &["exact", "typo", "day_month_swapped", "same_year", "different"],
            Attribute::Suffix => &["same", "one_missing", "different"],
            Attribute::Email => &["exact", "different"],
            Attribute::Phone => &["exact", "same_last_7", "different"],
            Attribute::Street => &["exact", "close", "different"],
            Attribute::City => &["exact", "jw_0.88", "different"],
            Attribute::Postcode => &["exact", "typo", "different"],
            Attribute::Identifier => &["exact", "typo", "different"],
        }
    }

    pub fn from_index(i: usize) -> Option<Attribute> {
        Self::ALL.get(i).copied()
    }
}

/// The level of each attribute (index into `Attribute::levels`), `None`
/// where missing, in the order of `Attribute::ALL`.
pub type ComparisonVector = [Option<u8>; 10];

/// Compares two records on every attribute.
pub fn compare(a: &MatchFeatures, b: &MatchFeatures) -> ComparisonVector {
    let address = best_address_pair(&a.addresses, &b.addresses);
    let (given, family) = names(a, b);
    [
        given,
        family,
        date_of_birth(a.date_of_birth, b.date_of_birth),
        suffix(a, b),
        email(&a.emails, &b.emails),
        phone(&a.phones, &b.phones),
        address.and_then(|(x, y)| street(x, y)),
        address.and_then(|(x, y)| both(x.city.as_deref(), y.city.as_deref()).map(|(p, q)| city(p, q))),
        address.and_then(|(x, y)| both(x.postcode.as_deref(), y.postcode.as_deref()).map(|(p, q)| postcode(p, q))),
        identifier(a, b),
    ]
}

/// Given and family name levels. When the given names differ but each
/// record's given name is the other's family name (give or take a typo),
/// the names were swapped at entry: given name `swapped`, and the family
/// level compares the crossed pair.
fn names(a: &MatchFeatures, b: &MatchFeatures) -> (Option<u8>, Option<u8>) {
    let given = given_name(a.given.as_deref(), b.given.as_deref());
    let family = family_name(a.family.as_deref(), b.family.as_deref());
    if given == Some(GIVEN_DIFFERENT) {
        let crossed_given = family_name(a.given.as_deref(), b.family.as_deref());
        let crossed_family = family_name(a.family.as_deref(), b.given.as_deref());
        if crossed_given.is_some_and(|l| l <= 2) && crossed_family.is_some_and(|l| l <= 2) {
            return (Some(GIVEN_SWAPPED), crossed_family);
        }
    }
    (given, family)
}

const GIVEN_SWAPPED: u8 = 6;
const GIVEN_DIFFERENT: u8 = 7;

fn both<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Option<(&'a str, &'a str)> {
    Some((a?, b?))
}

/// Within one edit: one character inserted, deleted or replaced, or two
/// adjacent characters swapped (Damerau-Levenshtein distance at most 1),
/// without allocating: this runs for most candidate pairs.
fn typo(a: &str, b: &str) -> bool {
    if a.len().abs_diff(b.len()) > 4 {
        return false;
    }
    if a.is_ascii() && b.is_ascii() {
        return within_one_edit(a.as_bytes(), b.as_bytes());
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    within_one_edit(&a, &b)
}

fn within_one_edit<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[..a.len() - suffix.min(a.len())], &b[..b.len() - suffix.min(b.len())]);
    match (a.len(), b.len()) {
        (0, 0) | (0, 1) | (1, 0) | (1, 1) => true,
        // An adjacent transposition: "ab" against "ba".
        (2, 2) => a[0] == b[1] && a[1] == b[0],
        _ => false,
    }
}

/// Given names: exact, nickname of one another, one typo, Jaro-Winkler
/// bands, one is the other's initial, different.
pub fn given_name(a: Option<&str>, b: Option<&str>) -> Option<u8> {
    let (a, b) = both(a, b)?;
    Some(if a == b {
        0
    } else if normalize::nickname_match(a, b) {
        1
    } else if a.chars().count() == 1 || b.chars().count() == 1 {
        if a.chars().next() == b.chars().next() {
            5
        } else {
            GIVEN_DIFFERENT
        }
    } else if typo(a, b) {
        2
    } else {
        let jw = jaro_winkler(a, b);
        if jw >= 0.92 {
            3
        } else if jw >= 0.80 {
            4
        } else {
            GIVEN_DIFFERENT
        }
    })
}

/// Family names: exact, one typo, Jaro-Winkler bands, different.
pub fn family_name(a: Option<&str>, b: Option<&str>) -> Option<u8> {
    let (a, b) = both(a, b)?;
    Some(if a == b {
        0
    } else if typo(a, b) {
        1
    } else {
        let jw = jaro_winkler(a, b);
        if jw >= 0.92 {
            2
        } else if jw >= 0.80 {
            3
        } else {
            4
        }
    })
}

/// Dates of birth: exact, one typo in `YYYYMMDD`, day and month swapped,
/// same year, different.
pub fn date_of_birth(a: Option<chrono::NaiveDate>, b: Option<chrono::NaiveDate>) -> Option<u8> {
    use chrono::Datelike;
    let (a, b) = (a?, b?);
    if a == b {
        return Some(0);
    }
    let digits = |d: chrono::NaiveDate| {
        let mut out = [0u8; 8];
        let (y, m, day) = (d.year().unsigned_abs(), d.month(), d.day());
        for (i, v) in [
            y / 1000,
            y / 100 % 10,
            y / 10 % 10,
            y % 10,
            m / 10,
            m % 10,
            day / 10,
            day % 10,
        ]
        .into_iter()
        .enumerate()
        {
            out[i] = v as u8;
        }
        out
    };
    Some(if within_one_edit(&digits(a), &digits(b)) {
        1
    } else if a.year() == b.year() && a.month() == b.day() && a.day() == b.month() {
        2
    } else if a.year() == b.year() {
        3
    } else {
        4
    })
}

/// Generational suffixes: both given and equal, one given, both given and
/// different. Missing when neither record has one.
pub fn suffix(a: &MatchFeatures, b: &MatchFeatures) -> Option<u8> {
    match (a.suffix, b.suffix) {
        (None, None) => None,
        (Some(x), Some(y)) if x == y => Some(0),
        (Some(_), Some(_)) => Some(2),
        _ => Some(1),
    }
}

/// Emails (sets): one in common, or different. (The same local part at
/// another provider is no level of its own: local parts are mostly made of
/// the name, so it would count the name twice.)
pub fn email(a: &[String], b: &[String]) -> Option<u8> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    Some(if a.iter().any(|x| b.contains(x)) { 0 } else { 1 })
}

/// Phones (sets of E.164 numbers): one in common, the same last seven digits
/// (a number written with another area or country code), different.
pub fn phone(a: &[String], b: &[String]) -> Option<u8> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    if a.iter().any(|x| b.contains(x)) {
        return Some(0);
    }
    let last7 = |p: &String| {
        p.get(p.len().saturating_sub(7)..)
            .map(str::to_owned)
            .unwrap_or_default()
    };
    Some(if a.iter().any(|x| b.iter().any(|y| last7(x) == last7(y))) {
        1
    } else {
        2
    })
}

/// How much two addresses agree, for picking the best pair of two records'
/// addresses.
fn address_agreement(a: &AddressFeatures, b: &AddressFeatures) -> u32 {
    let eq = |x: &Option<String>, y: &Option<String>| u32::from(x.is_some() && x == y);
    4 * eq(&a.number, &b.number)
        + 4 * eq(&a.street, &b.street)
        + 2 * eq(&a.postcode, &b.postcode)
        + eq(&a.city, &b.city)
}

/// The pair of addresses (one of each record) that agree best.
pub fn best_address_pair<'a>(
    a: &'a [AddressFeatures],
    b: &'a [AddressFeatures],
) -> Option<(&'a AddressFeatures, &'a AddressFeatures)> {
    let mut best: Option<(u32, &AddressFeatures, &AddressFeatures)> = None;
    for x in a {
        for y in b {
            let score = address_agreement(x, y);
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, x, y));
            }
        }
    }
    best.map(|(_, x, y)| (x, y))
}

/// Street lines: house number and street equal (and units not different),
/// close (same number and a street within Jaro-Winkler 0.85, or the same
/// street and a number one typo away), different. Missing without a street.
pub fn street(a: &AddressFeatures, b: &AddressFeatures) -> Option<u8> {
    let (sa, sb) = both(a.street.as_deref(), b.street.as_deref())?;
    let units_differ = matches!((&a.unit, &b.unit), (Some(x), Some(y)) if x != y);
    let (na, nb) = (a.number.as_deref(), b.number.as_deref());
    let same_number = na.is_some() && na == nb;
    if sa == sb && same_number && !units_differ {
        return Some(0);
    }
    let number_typo = matches!((na, nb), (Some(x), Some(y)) if typo(x, y));
    let close =
        (same_number && jaro_winkler(sa, sb) >= 0.85) || (sa == sb && (number_typo || na.is_none() || nb.is_none()));
    Some(if close && !units_differ { 1 } else { 2 })
}

/// Cities: exact, within Jaro-Winkler 0.88, different.
pub fn city(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if jaro_winkler(a, b) >= 0.88 {
        1
    } else {
        2
    }
}

/// Postcodes: exact, one typo, different.
pub fn postcode(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if typo(a, b) {
        1
    } else {
        2
    }
}

/// Identifiers of the same name (e.g. a national id): exact, one typo,
/// different. Missing when the records share no identifier name.
pub fn identifier(a: &MatchFeatures, b: &MatchFeatures) -> Option<u8> {
    let mut best: Option<u8> = None;
    for (name, x) in &a.identifiers {
        if let Some(y) = b.identifiers.get(name) {
            let level = if x == y {
                0
            } else if typo(x, y) {
                1
            } else {
                2
            };
            best = Some(best.map_or(level, |b| b.min(level)));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(attribute: Attribute, l: Option<u8>) -> Option<&'static str> {
        l.map(|i| attribute.levels()[usize::from(i)])
    }

    #[test]
    fn one_edit_is_what_damerau_levenshtein_calls_one() {
        let words = [
            "",
            "a",
            "ab",
            "ba",
            "abc",
            "acb",
            "abd",
            "abcd",
            "bacd",
            "abdc",
            "xbcd",
            "mccarthy",
            "maccarthy",
            "smith",
            "smiht",
            "smyth",
            "jose",
            "josé",
            "jsoé",
        ];
        for a in words {
            for b in words {
                let want = strsim::damerau_levenshtein(a, b) <= 1;
                assert_eq!(typo(a, b), want, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn given_names() {
        let cases = [
            ("robert", "robert", Some("exact")),
            ("bob", "robert", Some("nickname")),
            ("robret", "robert", Some("typo")),
            ("katherine", "kathryn", Some("jw_0.80")),
            ("r", "robert", Some("initial")),
            ("j", "robert", Some("different")),
            ("mary", "robert", Some("different")),
        ];
        let f = |g: &str, fam: &str| MatchFeatures {
            given: Some(g.into()),
            family: Some(fam.into()),
            ..Default::default()
        };
        let v = compare(&f("barnaby", "siggins"), &f("siggins", "barnaby"));
        assert_eq!(level(Attribute::GivenName, v[0]), Some("swapped"));
        assert_eq!(level(Attribute::FamilyName, v[1]), Some("exact"));
        let v = compare(&f("barnaby", "siggins"), &f("mary", "siggins"));
        assert_eq!(level(Attribute::GivenName, v[0]), Some("different"));
        for (a, b, want) in cases {
            assert_eq!(
                level(Attribute::GivenName, given_name(Some(a), Some(b))),
                want,
                "{a} vs {b}"
            );
        }
        assert_eq!(given_name(None, Some("x")), None);
    }

    #[test]
    fn family_names() {
        let cases = [
            ("smith", "smith", "exact"),
            ("smith", "smtih", "typo"),
            ("mccarthy", "maccarthy", "typo"),
            ("johnson", "johnston", "typo"),
            ("williamson", "williams", "jw_0.92"),
            ("smith", "jones", "different"),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                level(Attribute::FamilyName, family_name(Some(a), Some(b))),
                Some(want),
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn dates_of_birth() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let cases = [
            ("1980-03-07", "1980-03-07", "exact"),
            ("1980-03-07", "1980-03-08", "typo"),
            ("1980-03-07", "1980-07-03", "day_month_swapped"),
            ("1980-03-07", "1980-11-21", "same_year"),
            ("1980-03-07", "1955-01-01", "different"),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                level(Attribute::DateOfBirth, date_of_birth(d(a), d(b))),
                Some(want),
                "{a} vs {b}"
            );
        }
        assert_eq!(date_of_birth(None, d("1980-01-01")), None);
    }

    #[test]
    fn suffixes() {
        use normalize::Suffix;
        let f = |s: Option<Suffix>| MatchFeatures {
            suffix: s,
            ..MatchFeatures::default()
        };
        assert_eq!(suffix(&f(None), &f(None)), None);
        assert_eq!(
            level(Attribute::Suffix, suffix(&f(Some(Suffix::Jr)), &f(Some(Suffix::Jr)))),
            Some("same")
        );
        assert_eq!(
            level(Attribute::Suffix, suffix(&f(Some(Suffix::Jr)), &f(None))),
            Some("one_missing")
        );
        assert_eq!(
            level(Attribute::Suffix, suffix(&f(Some(Suffix::Jr)), &f(Some(Suffix::Sr)))),
            Some("different")
        );
    }

    #[test]
    fn emails_and_phones() {
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(email(&v(&["a@x.com", "b@y.com"]), &v(&["b@y.com"])), Some(0));
        assert_eq!(email(&v(&["jsmith@x.com"]), &v(&["jsmith@y.com"])), Some(1));
        assert_eq!(email(&v(&[]), &v(&["js@y.com"])), None);
        assert_eq!(phone(&v(&["+13125550123"]), &v(&["+13125550123"])), Some(0));
        assert_eq!(phone(&v(&["+13125550123"]), &v(&["+17735550123"])), Some(1));
        assert_eq!(phone(&v(&["+13125550123"]), &v(&["+13125550199"])), Some(2));
        assert_eq!(phone(&v(&["+13125550123"]), &v(&[])), None);
    }

    #[test]
    fn streets_cities_postcodes() {
        let a = |n: Option<&str>, s: &str, u: Option<&str>| AddressFeatures {
            number: n.map(str::to_owned),
            street: Some(s.to_owned()),
            unit: u.map(str::to_owned),
            ..AddressFeatures::default()
        };
        let cases = [
            (a(Some("12"), "oak st", None), a(Some("12"), "oak st", None), "exact"),
            (
                a(Some("12"), "oak st", Some("4")),
                a(Some("12"), "oak st", None),
                "exact",
            ),
            (
                a(Some("12"), "oak st", Some("4")),
                a(Some("12"), "oak st", Some("5")),
                "different",
            ),
            (
                a(Some("12"), "maple st", None),
                a(Some("12"), "mapel st", None),
                "close",
            ),
            (
                a(Some("12"), "oak st", None),
                a(Some("12"), "oak ave", None),
                "different",
            ),
            (a(Some("12"), "oak st", None), a(Some("13"), "oak st", None), "close"),
            (
                a(Some("12"), "oak st", None),
                a(Some("48"), "oak st", None),
                "different",
            ),
            (
                a(Some("12"), "oak st", None),
                a(Some("12"), "elm rd", None),
                "different",
            ),
        ];
        for (x, y, want) in cases {
            assert_eq!(level(Attribute::Street, street(&x, &y)), Some(want));
        }
        assert_eq!(city("chicago", "chicago"), 0);
        assert_eq!(city("chicago", "chicaco"), 1);
        assert_eq!(city("chicago", "boston"), 2);
        assert_eq!(postcode("60610", "60610"), 0);
        assert_eq!(postcode("60610", "60611"), 1);
        assert_eq!(postcode("60610", "10001"), 2);
    }

    #[test]
    fn identifiers_and_best_address() {
        let f = |id: Option<&str>| MatchFeatures {
            identifiers: id.map(|v| ("ssn".to_owned(), v.to_owned())).into_iter().collect(),
            ..MatchFeatures::default()
        };
        assert_eq!(identifier(&f(Some("1804974")), &f(Some("1804974"))), Some(0));
        assert_eq!(identifier(&f(Some("1804974")), &f(Some("1804947"))), Some(1));
        assert_eq!(identifier(&f(Some("1804974")), &f(Some("2222222"))), Some(2));
        assert_eq!(identifier(&f(Some("1804974")), &f(None)), None);

        let home = AddressFeatures {
            number: Some("1".into()),
            street: Some("oak st".into()),
            ..Default::default()
        };
        let work = AddressFeatures {
            number: Some("9".into()),
            street: Some("elm rd".into()),
            ..Default::default()
        };
        let both = [work, home.clone()];
        let pair = best_address_pair(&both, std::slice::from_ref(&home)).map(|(x, _)| x.clone());
        assert_eq!(pair, Some(home));
    }
}
