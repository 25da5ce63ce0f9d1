//! Parsing a full name into given, middle and family name and suffix.
//!
//! Some sources hold only one name field, in one of two forms:
//! - `last_comma_first`: "GROVES, MATTHEW J", "GROVES JR, MATTHEW J",
//!   "Groves, Matthew J., Jr.";
//! - `first_last`: "Matthew J Groves", "Matthew Groves Jr.",
//!   "Matthew J. Groves, Jr.".
//!
//! Parsing only splits; it keeps each part as written (case, dots, accents),
//! because normalization for matching is a separate step and the steward
//! console should show what the source sent. Runs of spaces between words
//! become one space.
//!
//! Rules, in the order they apply:
//! - a suffix is one of Jr, Sr, II, III, IV in any case, with or without a
//!   trailing dot; it is only taken as a suffix when some other word of the
//!   name precedes it (so "Jr" alone stays a name), and a name may hold one;
//! - `last_comma_first`: the family name is everything before the first comma
//!   (a trailing suffix there, as in "GROVES JR, ...", is split off); after it
//!   come the given name and the middle names, then optionally more
//!   comma-separated parts that must each be a suffix. Without any comma the
//!   first word is the family name (with any particles such as "van" that
//!   lead it), then an optional suffix, the given name and the middle names;
//! - `first_last`: a comma may only introduce a suffix. The first word is the
//!   given name, the last the family name together with the particles just
//!   before it ("Vincent van Gogh", "Maria de la Cruz"), anything between is
//!   the middle name. A double given name ("Mary Ann Smith") cannot be told
//!   from a middle name and comes out as given "Mary", middle "Ann";
//! - a single word is the given name in `first_last` form and the family name
//!   in `last_comma_first` form, following the position it takes in each.

use serde::Deserialize;

/// How a full-name field is written, or that it is kept without parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameForm {
    /// "GROVES, MATTHEW J", "GROVES JR, MATTHEW J".
    LastCommaFirst,
    /// "Matthew J Groves", "Matthew Groves Jr.".
    FirstLast,
    /// Kept as the full name only; the parts come from other fields (or not
    /// at all).
    AsGiven,
}

impl NameForm {
    /// Whether this form yields name parts.
    pub fn is_parsed(self) -> bool {
        self != Self::AsGiven
    }
}

impl std::fmt::Display for NameForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LastCommaFirst => "last_comma_first",
            Self::FirstLast => "first_last",
            Self::AsGiven => "as_given",
        })
    }
}

/// The parts of a parsed name, each as written.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ParsedName {
    pub given: Option<String>,
    pub middle: Option<String>,
    pub family: Option<String>,
    pub suffix: Option<String>,
}

impl std::fmt::Debug for ParsedName {
    /// Names are personal data: `Debug` shows only which parts are present,
    /// so a stray `{:?}` in a log line leaks nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedName")
            .field("given", &super::Presence(&self.given))
            .field("middle", &super::Presence(&self.middle))
            .field("family", &super::Presence(&self.family))
            .field("suffix", &super::Presence(&self.suffix))
            .finish()
    }
}

/// Why a full name does not fit its form. The reasons never quote the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it holds a comma that is not followed by a suffix, which the `first_last` form does not allow (is the form `last_comma_first`?)")]
    CommaInFirstLast,
    #[error("it holds more than one comma before the suffix")]
    TooManyCommas,
    #[error("it holds more than one suffix")]
    TwoSuffixes,
}

const SUFFIXES: [&str; 5] = ["jr", "sr", "ii", "iii", "iv"];

/// Lower-case words that belong to the family name that follows them.
const PARTICLES: [&str; 18] = [
    "van", "von", "de", "der", "den", "del", "della", "da", "das", "dos", "di", "du", "la", "le", "ten", "ter", "st",
    "st.",
];

fn is_suffix(word: &str) -> bool {
    let bare = word.strip_suffix('.').unwrap_or(word);
    SUFFIXES.iter().any(|s| s.eq_ignore_ascii_case(bare))
}

fn is_particle(word: &str) -> bool {
    PARTICLES.iter().any(|p| p.eq_ignore_ascii_case(word))
}

/// Splits `text` (already known not to be blank) according to `form`.
/// `AsGiven` yields no parts.
pub fn parse_full_name(text: &str, form: NameForm) -> Result<ParsedName, NameError> {
    let mut parts = text.split(',').map(|p| p.split_whitespace().collect::<Vec<_>>());
    let head = parts.next().unwrap_or_default();
    let rest: Vec<Vec<&str>> = parts.filter(|p| !p.is_empty()).collect();
    match form {
        NameForm::AsGiven => Ok(ParsedName::default()),
        NameForm::FirstLast => {
            let mut suffix = comma_suffixes(&rest).ok_or(NameError::CommaInFirstLast)?;
            let mut words = head;
            take_suffix(&mut words, &mut suffix)?;
            Ok(split_first_last(&words, suffix))
        }
        NameForm::LastCommaFirst => {
            let Some((given_part, more)) = rest.split_first() else {
                let mut words = head;
                let mut suffix = None;
                take_suffix(&mut words, &mut suffix)?;
                return split_last_first_without_comma(&words, suffix);
            };
            let mut suffix = comma_suffixes(more).ok_or(NameError::TooManyCommas)?;
            let mut family = head;
            take_suffix(&mut family, &mut suffix)?;
            let mut given = given_part.clone();
            // "GROVES, JR" has a family name before the comma, so the lone
            // "JR" after it is a suffix, not a given name.
            if family.is_empty() {
                take_suffix(&mut given, &mut suffix)?;
            } else if given.last().is_some_and(|w| is_suffix(w)) {
                let word = given.pop().unwrap_or_default();
                set_suffix(&mut suffix, word)?;
            }
            Ok(ParsedName {
                given: given.first().map(|w| (*w).to_owned()),
                middle: join(given.get(1..).unwrap_or_default()),
                family: join(&family),
                suffix,
            })
        }
    }
}

/// The suffix given by comma-separated trailing parts ("..., Jr."), `None`
/// inside the outer option when there is none, or no value at all when some
/// part is not a lone suffix.
fn comma_suffixes(parts: &[Vec<&str>]) -> Option<Option<String>> {
    match parts {
        [] => Some(None),
        [only] if only.len() == 1 && is_suffix(only[0]) => Some(Some(only[0].to_owned())),
        _ => None,
    }
}

/// Moves a trailing suffix word out of `words` when another word precedes it.
fn take_suffix(words: &mut Vec<&str>, suffix: &mut Option<String>) -> Result<(), NameError> {
    if words.len() >= 2 && words.last().is_some_and(|w| is_suffix(w)) {
        let word = words.pop().unwrap_or_default();
        set_suffix(suffix, word)?;
    }
    Ok(())
}

fn set_suffix(suffix: &mut Option<String>, word: &str) -> Result<(), NameError> {
    if suffix.is_some() {
        return Err(NameError::TwoSuffixes);
    }
    *suffix = Some(word.to_owned());
    Ok(())
}

fn join(words: &[&str]) -> Option<String> {
    (!words.is_empty()).then(|| words.join(" "))
}

fn split_first_last(words: &[&str], suffix: Option<String>) -> ParsedName {
    match words {
        [] => ParsedName {
            suffix,
            ..ParsedName::default()
        },
        [only] => ParsedName {
            given: Some((*only).to_owned()),
            suffix,
            ..ParsedName::default()
        },
        [given, .., _] => {
            // The family name is the last word plus the particles just before
            // it, but never the given name.
            let mut family_start = words.len() - 1;
            while family_start > 1 && is_particle(words[family_start - 1]) {
                family_start -= 1;
            }
            ParsedName {
                given: Some((*given).to_owned()),
                middle: join(&words[1..family_start]),
                family: join(&words[family_start..]),
                suffix,
            }
        }
    }
}

fn split_last_first_without_comma(words: &[&str], mut suffix: Option<String>) -> Result<ParsedName, NameError> {
    // Leading particles belong to the family name ("VAN DYKE DICK"), as long
    // as a family word follows them.
    let mut family_end = 1;
    while family_end < words.len().saturating_sub(1) && is_particle(words[family_end - 1]) {
        family_end += 1;
    }
    let family_end = family_end.min(words.len());
    let (family, mut given) = words.split_at(family_end);
    // "GROVES JR MATTHEW" is "GROVES JR, MATTHEW" without its comma.
    if given.len() >= 2 && is_suffix(given[0]) {
        set_suffix(&mut suffix, given[0])?;
        given = &given[1..];
    }
    Ok(ParsedName {
        given: given.first().map(|w| (*w).to_owned()),
        middle: join(given.get(1..).unwrap_or_default()),
        family: join(family),
        suffix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (given, middle, family, suffix)
    type Parts<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn check(form: NameForm, cases: &[(&str, Parts)]) {
        for (text, expected) in cases {
            let parsed = parse_full_name(text, form).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let got = (
                parsed.given.as_deref(),
                parsed.middle.as_deref(),
                parsed.family.as_deref(),
                parsed.suffix.as_deref(),
            );
            assert_eq!(got, *expected, "{form} {text:?}");
        }
    }

    #[test]
    fn last_comma_first_names_split_into_their_parts() {
        check(
            NameForm::LastCommaFirst,
            &[
                ("GROVES, MATTHEW J", (Some("MATTHEW"), Some("J"), Some("GROVES"), None)),
                (
                    "GROVES JR, MATTHEW J",
                    (Some("MATTHEW"), Some("J"), Some("GROVES"), Some("JR")),
                ),
                (
                    "GROVES, MATTHEW J JR",
                    (Some("MATTHEW"), Some("J"), Some("GROVES"), Some("JR")),
                ),
                (
                    "Groves, Matthew J., Jr.",
                    (Some("Matthew"), Some("J."), Some("Groves"), Some("Jr.")),
                ),
                (
                    "GROVES III, MATTHEW",
                    (Some("MATTHEW"), None, Some("GROVES"), Some("III")),
                ),
                ("GROVES,MATTHEW", (Some("MATTHEW"), None, Some("GROVES"), None)),
                (
                    "  GROVES ,   MATTHEW    JAMES  ",
                    (Some("MATTHEW"), Some("JAMES"), Some("GROVES"), None),
                ),
                ("VAN DYKE, DICK", (Some("DICK"), None, Some("VAN DYKE"), None)),
                (
                    "groves sr, matthew",
                    (Some("matthew"), None, Some("groves"), Some("sr")),
                ),
                ("GROVES, JR", (None, None, Some("GROVES"), Some("JR"))),
                (
                    "GROVES, MATTHEW JOHN PAUL",
                    (Some("MATTHEW"), Some("JOHN PAUL"), Some("GROVES"), None),
                ),
                ("GROVES", (None, None, Some("GROVES"), None)),
                ("GROVES,", (None, None, Some("GROVES"), None)),
                (", MATTHEW", (Some("MATTHEW"), None, None, None)),
                ("GROVES MATTHEW J", (Some("MATTHEW"), Some("J"), Some("GROVES"), None)),
                ("GROVES JR MATTHEW", (Some("MATTHEW"), None, Some("GROVES"), Some("JR"))),
                ("VAN DYKE DICK", (Some("DICK"), None, Some("VAN DYKE"), None)),
                (
                    "GARCÍA MÁRQUEZ, GABRIEL",
                    (Some("GABRIEL"), None, Some("GARCÍA MÁRQUEZ"), None),
                ),
                ("Jr", (None, None, Some("Jr"), None)),
            ],
        );
    }

    #[test]
    fn first_last_names_split_into_their_parts() {
        check(
            NameForm::FirstLast,
            &[
                ("Matthew J Groves", (Some("Matthew"), Some("J"), Some("Groves"), None)),
                ("Matthew Groves", (Some("Matthew"), None, Some("Groves"), None)),
                (
                    "Matthew Groves Jr.",
                    (Some("Matthew"), None, Some("Groves"), Some("Jr.")),
                ),
                (
                    "Matthew J. Groves, Jr.",
                    (Some("Matthew"), Some("J."), Some("Groves"), Some("Jr.")),
                ),
                (
                    "Matthew Groves, Jr",
                    (Some("Matthew"), None, Some("Groves"), Some("Jr")),
                ),
                ("Matthew Groves IV", (Some("Matthew"), None, Some("Groves"), Some("IV"))),
                (
                    "matthew j groves sr",
                    (Some("matthew"), Some("j"), Some("groves"), Some("sr")),
                ),
                ("MATTHEW GROVES II", (Some("MATTHEW"), None, Some("GROVES"), Some("II"))),
                (
                    "  Matthew   John    Groves  ",
                    (Some("Matthew"), Some("John"), Some("Groves"), None),
                ),
                ("Mary Ann Smith", (Some("Mary"), Some("Ann"), Some("Smith"), None)),
                ("Vincent van Gogh", (Some("Vincent"), None, Some("van Gogh"), None)),
                ("Maria de la Cruz", (Some("Maria"), None, Some("de la Cruz"), None)),
                (
                    "Ludwig Maria van Beethoven",
                    (Some("Ludwig"), Some("Maria"), Some("van Beethoven"), None),
                ),
                ("Mary St. Clair", (Some("Mary"), None, Some("St. Clair"), None)),
                ("Di Smith", (Some("Di"), None, Some("Smith"), None)),
                (
                    "Anne-Marie Smith-Jones",
                    (Some("Anne-Marie"), None, Some("Smith-Jones"), None),
                ),
                ("José García", (Some("José"), None, Some("García"), None)),
                ("Cher", (Some("Cher"), None, None, None)),
                ("Jr", (Some("Jr"), None, None, None)),
                ("Matthew Jr", (Some("Matthew"), None, None, Some("Jr"))),
            ],
        );
    }

    #[test]
    fn as_given_yields_no_parts() {
        check(NameForm::AsGiven, &[("Matthew J Groves", (None, None, None, None))]);
    }

    #[test]
    fn names_that_do_not_fit_their_form_are_rejected_without_quoting_them() {
        let cases = [
            ("Groves, Matthew", NameForm::FirstLast, NameError::CommaInFirstLast),
            (
                "Matthew Groves, Jr., PhD",
                NameForm::FirstLast,
                NameError::CommaInFirstLast,
            ),
            ("Matthew Groves Jr, Sr", NameForm::FirstLast, NameError::TwoSuffixes),
            ("GROVES, MATTHEW, J", NameForm::LastCommaFirst, NameError::TooManyCommas),
            (
                "GROVES JR, MATTHEW SR",
                NameForm::LastCommaFirst,
                NameError::TwoSuffixes,
            ),
            (
                "GROVES JR, MATTHEW, SR",
                NameForm::LastCommaFirst,
                NameError::TwoSuffixes,
            ),
        ];
        for (text, form, expected) in cases {
            let error = parse_full_name(text, form).unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            for word in text.split([' ', ',']).filter(|w| w.len() > 2) {
                assert!(!error.to_string().contains(word), "{error} quotes {word}");
            }
        }
    }

    #[test]
    fn debug_output_hides_the_name() {
        let parsed = parse_full_name("Matthew Groves", NameForm::FirstLast).unwrap();
        let debug = format!("{parsed:?}");
        assert!(!debug.contains("Matthew") && !debug.contains("Groves"), "{debug}");
    }
}
