//! Writing values the ways sources write them, and the mistakes they make.

use super::model::{Address, PhoneNumber};
use super::pick::{chance, Rand};
use super::words;
use chrono::{Datelike, NaiveDate};
use rand::Rng;

/// `s` without accents: what an ASCII-only system keeps of it.
pub fn ascii_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
            'Á' | 'À' | 'Â' | 'Ä' | 'Ã' | 'Å' => 'A',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'É' | 'È' | 'Ê' | 'Ë' => 'E',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'Í' | 'Ì' | 'Î' | 'Ï' => 'I',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'Ó' | 'Ò' | 'Ô' | 'Ö' | 'Õ' => 'O',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'Ú' | 'Ù' | 'Û' | 'Ü' => 'U',
            'ñ' => 'n',
            'Ñ' => 'N',
            'ç' => 'c',
            'Ç' => 'C',
            other => other,
        })
        .collect()
}

/// The part of a name that goes into an e-mail address: ASCII letters and
/// digits, lower case.
pub fn email_local(s: &str) -> String {
    ascii_fold(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Letters next to each letter on a US keyboard.
fn neighbours(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'a' => "qwsz",
        'b' => "vghn",
        'c' => "xdfv",
        'd' => "serfcx",
        'e' => "wsdr",
        'f' => "drtgvc",
        'g' => "ftyhbv",
        'h' => "gyujnb",
        'i' => "ujko",
        'j' => "huikmn",
        'k' => "jiolm",
        'l' => "kop",
        'm' => "njk",
        'n' => "bhjm",
        'o' => "iklp",
        'p' => "ol",
        'q' => "wa",
        'r' => "edft",
        's' => "awedxz",
        't' => "rfgy",
        'u' => "yhji",
        'v' => "cfgb",
        'w' => "qase",
        'x' => "zsdc",
        'y' => "tghu",
        'z' => "asx",
        _ => "",
    }
}

/// One typing mistake in `s`: two neighbouring letters swapped, a letter
/// dropped, a letter replaced by a key next to it, or a letter doubled. Only
/// letters after the first are touched (people rarely get an initial
/// wrong), and words shorter than four letters are left alone.
pub fn typo(rng: &mut Rand, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let letters: Vec<usize> = (1..chars.len()).filter(|&i| chars[i].is_ascii_alphabetic()).collect();
    if letters.len() < 3 {
        return s.to_owned();
    }
    let i = letters[rng.random_range(0..letters.len())];
    match rng.random_range(0..4) {
        0 if i + 1 < chars.len() && chars[i + 1].is_ascii_alphabetic() && chars[i + 1] != chars[i] => {
            chars.swap(i, i + 1);
        }
        1 => {
            chars.remove(i);
        }
        2 | 0 => {
            let keys = neighbours(chars[i]);
            if let Some(k) = keys.chars().nth(rng.random_range(0..keys.len().max(1))) {
                chars[i] = if chars[i].is_ascii_uppercase() {
                    k.to_ascii_uppercase()
                } else {
                    k
                };
            }
        }
        _ => chars.insert(i, chars[i]),
    }
    chars.into_iter().collect()
}

/// A wrong but valid birth date: day and month swapped, a day off, a year
/// off by one or ten, or the last two digits of the year swapped.
pub fn date_typo(rng: &mut Rand, d: NaiveDate) -> NaiveDate {
    let (y, m, day) = (d.year(), d.month(), d.day());
    let candidate = match rng.random_range(0..5) {
        0 => NaiveDate::from_ymd_opt(y, day, m),
        1 => d.checked_add_signed(chrono::Duration::days(if chance(rng, 0.5) { 1 } else { -1 })),
        2 => NaiveDate::from_ymd_opt(y + if chance(rng, 0.5) { 1 } else { -1 }, m, day),
        3 => NaiveDate::from_ymd_opt(y + if chance(rng, 0.5) { 10 } else { -10 }, m, day),
        _ => NaiveDate::from_ymd_opt(y - y % 100 + (y % 10) * 10 + (y % 100) / 10, m, day),
    };
    candidate
        .filter(|c| *c != d && c.year() >= 1900 && *c < super::model::TODAY)
        .unwrap_or_else(|| d.checked_add_signed(chrono::Duration::days(1)).unwrap_or(d))
}

/// How many ways [`phone`] writes a number.
pub const PHONE_STYLES: usize = 9;

/// A number in one of the ways people and systems write it.
pub fn phone(p: &PhoneNumber, style: usize) -> String {
    let PhoneNumber { area, exchange, line } = *p;
    match style % PHONE_STYLES {
        0 => format!("({area}) {exchange}-{line:04}"),
        1 => format!("{area}-{exchange}-{line:04}"),
        2 => format!("{area}.{exchange}.{line:04}"),
        3 => format!("{area}{exchange}{line:04}"),
        4 => format!("+1 {area} {exchange} {line:04}"),
        5 => format!("+1{area}{exchange}{line:04}"),
        6 => format!("1-{area}-{exchange}-{line:04}"),
        7 => format!("{area} {exchange} {line:04}"),
        _ => format!("({area}){exchange}-{line:04}"),
    }
}

/// `style` most of the time, another style now and then (scaled by `noise`).
pub fn phone_as(rng: &mut Rand, p: &PhoneNumber, style: usize, noise: f64) -> String {
    let style = if chance(rng, 0.2 * noise) {
        rng.random_range(0..PHONE_STYLES)
    } else {
        style
    };
    phone(p, style)
}

/// The street line: "1200 N Lake Shore Dr", or with the words spelled out
/// ("1200 North Lake Shore Drive").
pub fn line1(a: &Address, spelled_out: bool) -> String {
    let (ty_short, ty_long) = words::STREET_TYPES[a.street_type];
    let ty = if spelled_out { ty_long } else { ty_short };
    match a.direction {
        Some(d) => {
            let (short, long) = words::DIRECTIONS[d];
            let dir = if spelled_out { long } else { short };
            format!("{} {dir} {} {ty}", a.number, a.street)
        }
        None => format!("{} {} {ty}", a.number, a.street),
    }
}

/// The unit line: "Apt 4B", "Apartment 4B", "# 12", "Unit 3".
pub fn unit(a: &Address, spelled_out: bool) -> Option<String> {
    a.unit.as_ref().map(|(kind, number)| {
        let (short, long) = words::UNIT_TYPES[*kind];
        let word = if spelled_out { long } else { short };
        format!("{word} {number}")
    })
}

/// The ZIP code, with its +4 extension when asked.
pub fn zip(a: &Address, plus4: bool) -> String {
    if plus4 {
        format!("{:05}-{:04}", a.zip, a.plus4)
    } else {
        format!("{:05}", a.zip)
    }
}

/// Days from 1970-01-01 to `d` (a MySQL DATE as Debezium sends it).
pub fn epoch_days(d: NaiveDate) -> i64 {
    (d - NaiveDate::default()).num_days()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn typos_change_one_letter_and_keep_short_words() {
        let mut rng = Rand::seed_from_u64(7);
        for _ in 0..500 {
            let t = typo(&mut rng, "Elizabeth");
            assert!(t.starts_with('E'), "{t}");
            assert!((8..=10).contains(&t.len()), "{t}");
            assert!(t.chars().all(char::is_alphabetic), "{t}");
        }
        assert_eq!(typo(&mut rng, "Al"), "Al");
        assert_eq!(typo(&mut rng, "Lee"), "Lee");
    }

    #[test]
    fn date_typos_are_valid_other_dates() {
        let mut rng = Rand::seed_from_u64(7);
        let d = NaiveDate::from_ymd_opt(1987, 11, 23).unwrap();
        for _ in 0..500 {
            let t = date_typo(&mut rng, d);
            assert_ne!(t, d);
        }
    }

    #[test]
    fn phones_are_written_in_every_style() {
        let p = PhoneNumber {
            area: 312,
            exchange: 274,
            line: 100,
        };
        let all: Vec<String> = (0..PHONE_STYLES).map(|s| phone(&p, s)).collect();
        assert_eq!(
            all,
            [
                "(312) 274-0100",
                "312-274-0100",
                "312.274.0100",
                "3122740100",
                "+1 312 274 0100",
                "+13122740100",
                "1-312-274-0100",
                "312 274 0100",
                "(312)274-0100"
            ]
        );
    }

    #[test]
    fn accents_fold_and_email_parts_keep_letters_and_digits() {
        assert_eq!(ascii_fold("José Muñoz Zoë"), "Jose Munoz Zoe");
        assert_eq!(email_local("O'Brien-De La Cruz"), "obriendelacruz");
        assert_eq!(epoch_days(NaiveDate::from_ymd_opt(1987, 11, 23).unwrap()), 6535);
    }
}
