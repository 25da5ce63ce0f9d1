//! Parsing a combined "City, ST 12345" field into city, region and postcode.
//!
//! US sources often hold the last line of an address in one field:
//! "Chicago, IL 60610", "Salt Lake City, UT 84101-1234". The parts are kept as
//! written; only the split is done here.
//!
//! Rules:
//! - with a comma, the city is everything before the first comma; after it
//!   (further commas count as spaces) comes an optional region made of words
//!   of letters and dots ("IL", "N.Y.", "New York") and then an optional ZIP
//!   code, five digits with an optional `-` and four more;
//! - without a comma, a trailing ZIP code is the postcode, a two-letter word
//!   before it (or at the end, when no ZIP code follows) is the region if a
//!   city word precedes it, and the rest is the city; a word holding a digit
//!   anywhere but in the ZIP code is an error, because the field is then most
//!   likely something else (a street line, a foreign postcode);
//! - a part that is absent is `None`, not an error: "Chicago, IL" has no
//!   postcode, "60610" has only a postcode. Text that fits neither rule is an
//!   error, so that a mapping pointed at the wrong field is noticed.

/// The parts of a "City, ST 12345" field, each as written.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CityRegionPostcode {
    pub city: Option<String>,
    pub region: Option<String>,
    pub postcode: Option<String>,
}

impl std::fmt::Debug for CityRegionPostcode {
    /// Addresses are personal data: `Debug` shows only which parts are present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityRegionPostcode")
            .field("city", &super::Presence(&self.city))
            .field("region", &super::Presence(&self.region))
            .field("postcode", &super::Presence(&self.postcode))
            .finish()
    }
}

/// Why a "City, ST 12345" field does not parse. The reasons never quote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "the text after the comma is not a region followed by a ZIP code (`City, ST 12345` or `City, ST 12345-6789`)"
    )]
    AfterComma,
    #[error("it holds digits that are not a ZIP code at the end (expected `City, ST 12345`)")]
    StrayDigits,
}

fn is_zip(word: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match word.split_once('-') {
        Some((five, four)) => digits(five, 5) && digits(four, 4),
        None => digits(word, 5),
    }
}

fn is_region_word(word: &str) -> bool {
    word.chars().any(char::is_alphabetic) && word.chars().all(|c| c.is_alphabetic() || c == '.')
}

fn join(words: &[&str]) -> Option<String> {
    (!words.is_empty()).then(|| words.join(" "))
}

/// Splits a "City, ST 12345" field. Blank text gives all parts `None`.
pub fn parse_city_region_postcode(text: &str) -> Result<CityRegionPostcode, AddressError> {
    if let Some((city, rest)) = text.split_once(',') {
        let city: Vec<&str> = city.split_whitespace().collect();
        let mut words: Vec<&str> = rest
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let postcode = words.last().filter(|w| is_zip(w)).map(|w| (*w).to_owned());
        if postcode.is_some() {
            words.pop();
        }
        if !words.iter().all(|w| is_region_word(w)) {
            return Err(AddressError::AfterComma);
        }
        return Ok(CityRegionPostcode {
            city: join(&city),
            region: join(&words),
            postcode,
        });
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let postcode = words.last().filter(|w| is_zip(w)).map(|w| (*w).to_owned());
    if postcode.is_some() {
        words.pop();
    }
    let region = match words.as_slice() {
        [_, .., last] if last.chars().count() == 2 && last.chars().all(char::is_alphabetic) => words.pop(),
        _ => None,
    };
    if words.iter().any(|w| w.chars().any(|c| c.is_ascii_digit())) {
        return Err(AddressError::StrayDigits);
    }
    Ok(CityRegionPostcode {
        city: join(&words),
        region: region.map(str::to_owned),
        postcode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn check(cases: &[(&str, Parts)]) {
        for (text, expected) in cases {
            let parsed = parse_city_region_postcode(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let got = (
                parsed.city.as_deref(),
                parsed.region.as_deref(),
                parsed.postcode.as_deref(),
            );
            assert_eq!(got, *expected, "{text:?}");
        }
    }

    #[test]
    fn city_region_and_postcode_are_split_in_their_usual_forms() {
        check(&[
            ("Chicago, IL 60610", (Some("Chicago"), Some("IL"), Some("60610"))),
            (
                "Chicago, IL 60610-1234",
                (Some("Chicago"), Some("IL"), Some("60610-1234")),
            ),
            (
                "Salt Lake City, UT 84101",
                (Some("Salt Lake City"), Some("UT"), Some("84101")),
            ),
            (
                "  Chicago ,   IL    60610  ",
                (Some("Chicago"), Some("IL"), Some("60610")),
            ),
            ("Chicago,IL 60610", (Some("Chicago"), Some("IL"), Some("60610"))),
            ("Washington, DC, 20001", (Some("Washington"), Some("DC"), Some("20001"))),
            ("chicago, il 60610", (Some("chicago"), Some("il"), Some("60610"))),
            ("New York, N.Y. 10001", (Some("New York"), Some("N.Y."), Some("10001"))),
            (
                "Albany, New York 12207",
                (Some("Albany"), Some("New York"), Some("12207")),
            ),
            ("Chicago IL 60610", (Some("Chicago"), Some("IL"), Some("60610"))),
            (
                "Salt Lake City UT 84101-1234",
                (Some("Salt Lake City"), Some("UT"), Some("84101-1234")),
            ),
        ]);
    }

    #[test]
    fn missing_parts_are_none_rather_than_errors() {
        check(&[
            ("", (None, None, None)),
            ("   ", (None, None, None)),
            ("Chicago, IL", (Some("Chicago"), Some("IL"), None)),
            ("Chicago, 60610", (Some("Chicago"), None, Some("60610"))),
            ("Chicago,", (Some("Chicago"), None, None)),
            (", IL 60610", (None, Some("IL"), Some("60610"))),
            ("Chicago", (Some("Chicago"), None, None)),
            ("Salt Lake City", (Some("Salt Lake City"), None, None)),
            ("Chicago IL", (Some("Chicago"), Some("IL"), None)),
            ("IL 60610", (Some("IL"), None, Some("60610"))),
            ("60610", (None, None, Some("60610"))),
        ]);
    }

    #[test]
    fn text_that_is_not_a_city_line_is_rejected_without_quoting_it() {
        let cases = [
            ("Chicago, IL 6061", AddressError::AfterComma),
            ("Chicago, IL 606101", AddressError::AfterComma),
            ("Chicago, IL 60610-12", AddressError::AfterComma),
            ("London, SW1A 1AA", AddressError::AfterComma),
            ("Chicago, 60610 IL", AddressError::AfterComma),
            ("1200 Lake Shore Dr", AddressError::StrayDigits),
            ("Chicago 6061", AddressError::StrayDigits),
        ];
        for (text, expected) in cases {
            let error = parse_city_region_postcode(text).unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            assert!(
                !error.to_string().contains("Chicago") && !error.to_string().contains("6061"),
                "{error}"
            );
        }
    }
}
