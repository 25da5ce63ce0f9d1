//! Dates of birth in the formats each source writes them.
//!
//! A source definition lists chrono strftime formats ("%Y-%m-%d",
//! "%m/%d/%Y", "%Y%m%d", "%d.%m.%Y", ...), tried in order; the first that
//! parses wins, so "01/02/1980" is January 2 when "%m/%d/%Y" comes first.
//! Formats may hold time fields ("%Y-%m-%dT%H:%M:%SZ"): the time is checked
//! and dropped.
//!
//! One format is not strftime: [`DAYS_SINCE_EPOCH`] reads a whole number of
//! days since 1970-01-01, which is how Debezium sends a SQL `DATE` column
//! (`io.debezium.time.Date`).

use chrono::format::{Item, Numeric, StrftimeItems};
use chrono::{NaiveDate, NaiveTime};
use std::fmt::Write;

/// The format name for a count of days since 1970-01-01 (Debezium dates).
pub const DAYS_SINCE_EPOCH: &str = "days_since_epoch";

/// The day from which [`DAYS_SINCE_EPOCH`] counts, as days from 0001-01-01
/// (chrono's common-era day numbers, where 0001-01-01 is day 1).
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The date every format must write and read back to be usable. Day, month
/// and year are all different, so a format that drops or confuses one of
/// them fails the round trip.
const PROBE: NaiveDate = match NaiveDate::from_ymd_opt(1987, 11, 23) {
    Some(date) => date,
    None => panic!("the probe date is valid"),
};

/// Why a configured date format cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateFormatError {
    #[error("the format is empty")]
    Empty,
    #[error("chrono cannot use this format: it holds an unknown or incomplete `%` specifier")]
    Invalid,
    #[error("a date written with this format cannot be read back (it needs a year, a month and a day, or a year and a day of the year)")]
    NoRoundTrip,
    #[error("`%y` writes two-digit years, which cannot place a date of birth in its century (use `%Y`)")]
    TwoDigitYear,
}

/// Checks that chrono can both write and read back a date with `format`.
pub fn check_date_format(format: &str) -> Result<(), DateFormatError> {
    if format == DAYS_SINCE_EPOCH {
        return Ok(());
    }
    if format.trim().is_empty() {
        return Err(DateFormatError::Empty);
    }
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(DateFormatError::Invalid);
    }
    let has = |wanted: Numeric| {
        items
            .iter()
            .any(|item| matches!(item, Item::Numeric(n, _) if *n == wanted))
    };
    if has(Numeric::YearMod100) && !has(Numeric::YearDiv100) {
        return Err(DateFormatError::TwoDigitYear);
    }
    // Formats may carry time and offset fields, so the probe is written as a
    // full UTC date-time at midnight.
    let probe = PROBE.and_time(NaiveTime::MIN).and_utc();
    let mut written = String::new();
    write!(written, "{}", probe.format_with_items(items.iter())).map_err(|_| DateFormatError::Invalid)?;
    match NaiveDate::parse_from_str(&written, format) {
        Ok(date) if date == PROBE => Ok(()),
        _ => Err(DateFormatError::NoRoundTrip),
    }
}

/// Reads `text` (already trimmed and not empty) with the first of `formats`
/// that accepts it, or `None` when none does.
pub fn parse_date(text: &str, formats: &[String]) -> Option<NaiveDate> {
    formats.iter().find_map(|format| {
        if format == DAYS_SINCE_EPOCH {
            let days: i32 = text.parse().ok()?;
            NaiveDate::from_num_days_from_ce_opt(days.checked_add(EPOCH_DAYS_FROM_CE)?)
        } else {
            NaiveDate::parse_from_str(text, format).ok()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
    }

    #[test]
    fn dates_are_read_with_the_first_format_that_fits() {
        let formats: Vec<String> = [
            "%Y-%m-%d",
            "%m/%d/%Y",
            "%Y%m%d",
            "%d.%m.%Y",
            "%Y-%m-%dT%H:%M:%SZ",
            "%d %b %Y",
            DAYS_SINCE_EPOCH,
        ]
        .map(String::from)
        .to_vec();
        let cases = [
            ("1987-11-23", date(1987, 11, 23)),
            ("11/23/1987", date(1987, 11, 23)),
            ("1/2/1980", date(1980, 1, 2)),
            ("19871123", date(1987, 11, 23)),
            ("23.11.1987", date(1987, 11, 23)),
            ("1987-11-23T08:15:00Z", date(1987, 11, 23)),
            ("23 Nov 1987", date(1987, 11, 23)),
            ("6535", date(1987, 11, 23)),
            ("0", date(1970, 1, 1)),
            ("-1", date(1969, 12, 31)),
            ("2000-02-29", date(2000, 2, 29)),
            // Impossible or malformed dates match no format.
            ("2023-02-30", None),
            ("1987-13-01", None),
            ("02/30/2023", None),
            ("1900-02-29", None),
            ("1987-11-23 extra", None),
            ("23/11/1987", None),
            ("yesterday", None),
            ("99999999999", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_date(text, &formats), expected, "{text:?}");
        }
    }

    #[test]
    fn the_order_of_formats_decides_ambiguous_dates() {
        let us = ["%m/%d/%Y".to_owned(), "%d/%m/%Y".to_owned()];
        let european = ["%d/%m/%Y".to_owned(), "%m/%d/%Y".to_owned()];
        assert_eq!(parse_date("01/02/1980", &us), date(1980, 1, 2));
        assert_eq!(parse_date("01/02/1980", &european), date(1980, 2, 1));
        assert_eq!(parse_date("01/02/1980", &[]), None);
    }

    #[test]
    fn formats_are_checked_by_writing_and_reading_back_a_date() {
        let cases = [
            ("%Y-%m-%d", Ok(())),
            ("%m/%d/%Y", Ok(())),
            ("%Y%m%d", Ok(())),
            ("%d.%m.%Y", Ok(())),
            ("%Y-%m-%dT%H:%M:%S%z", Ok(())),
            ("%Y-%m-%dT%H:%M:%SZ", Ok(())),
            ("%Y-%j", Ok(())),
            ("%d %B %Y", Ok(())),
            ("%C%y-%m-%d", Ok(())),
            (DAYS_SINCE_EPOCH, Ok(())),
            ("", Err(DateFormatError::Empty)),
            ("  ", Err(DateFormatError::Empty)),
            ("%Q-%m", Err(DateFormatError::Invalid)),
            ("%Y-%m-%", Err(DateFormatError::Invalid)),
            ("%m/%d", Err(DateFormatError::NoRoundTrip)),
            ("%Y", Err(DateFormatError::NoRoundTrip)),
            ("%s", Err(DateFormatError::NoRoundTrip)),
            // chrono skips a zone name when reading, so this one is usable.
            ("%Y-%m-%d %Z", Ok(())),
            ("birthday", Err(DateFormatError::NoRoundTrip)),
            ("%d.%m.%y", Err(DateFormatError::TwoDigitYear)),
        ];
        for (format, expected) in cases {
            assert_eq!(check_date_format(format), expected, "{format:?}");
        }
    }
}
