//! Normalizers: each turns one attribute value as a source wrote it into the
//! form the comparisons read, or `None` when nothing comparable is left.
//!
//! Every function here is pure and total: no I/O, no clock, no panics on any
//! input (a property test holds them to it). The values are personal data, so
//! nothing here puts them in an error or in `Debug` output: `Street` prints
//! only which parts are present.
//!
//! - `fold` is the base of the text normalizers: NFKC, lower case, diacritics
//!   removed, punctuation to spaces, apostrophes dropped.
//! - Names: `name_part`, the nickname table (`given_roots`, `nickname_match`),
//!   generational `suffix`es, American `soundex`.
//! - Contact: `email` (gmail aliases folded), `phone` (E.164).
//! - Address: `street` (house number, unit, street name with USPS-style
//!   abbreviations), `postcode`, `city`.
//! - `digits` for identifiers written with separators.

use super::nicknames;
use phonenumber::country;
use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Characters dropped without leaving a space, so that "O'Brien" and
/// "OBrien" fold alike.
fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2018}' // left single quotation mark
            | '\u{2019}' // right single quotation mark
            | '\u{201B}' // single high-reversed-9 quotation mark
            | '\u{02BC}' // modifier letter apostrophe
            | '\u{02B9}' // modifier letter prime
            | '\u{0060}' // grave accent
            | '\u{00B4}' // acute accent
            | '\u{FF07}' // fullwidth apostrophe
    )
}

/// Letters that have no Unicode decomposition but a conventional ASCII
/// spelling. Takes a lower-case letter.
fn ascii_spelling(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'ł' => "l",
        'đ' => "d",
        'ð' => "d",
        'þ' => "th",
        'ı' => "i",
        'ħ' => "h",
        _ => return None,
    })
}

/// Dashes that count as a hyphen where `fold_keeping` keeps '-'.
fn is_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' | '\u{FF0D}')
}

/// `fold`, except that the characters in `keep` survive (and dashes become
/// '-' when `keep` holds '-').
fn fold_keeping(text: &str, keep: &[char]) -> String {
    let keep_dash = keep.contains(&'-');
    let mut out = String::with_capacity(text.len());
    // A space is owed before the next kept character (never at the start).
    let mut space = false;
    fn push(out: &mut String, space: &mut bool, piece: char) {
        if *space && !out.is_empty() {
            out.push(' ');
        }
        *space = false;
        out.push(piece);
    }
    let chars = text
        .chars()
        .filter(|c| !is_apostrophe(*c))
        .nfkc()
        .flat_map(char::to_lowercase)
        .nfd();
    for c in chars {
        if is_combining_mark(c) || is_apostrophe(c) {
            continue;
        }
        if let Some(spelling) = ascii_spelling(c) {
            spelling.chars().for_each(|s| push(&mut out, &mut space, s));
        } else if c.is_alphanumeric() || keep.contains(&c) {
            push(&mut out, &mut space, c);
        } else if keep_dash && is_dash(c) {
            push(&mut out, &mut space, '-');
        } else {
            space = true;
        }
    }
    // Decomposition split Hangul syllables into their jamo; compose them back
    // so that folding a folded text changes nothing.
    out.nfc().collect()
}

/// Unicode NFKC, lower case, diacritics removed (NFD then combining marks
/// dropped; also ß→ss, æ→ae, œ→oe, ø→o, ł→l, đ→d, ð→d, þ→th, ı→i, ħ→h);
/// every character that is not alphanumeric becomes a space, except
/// apostrophes (' ’ ‘ ʼ ` ´), which are removed ("O'Brien" → "obrien");
/// whitespace collapsed to single spaces and trimmed.
///
/// Letters of other scripts are kept (lower-cased where the script has case);
/// their combining marks (for example Indic vowel signs) are dropped like
/// accents, which is lossy but the same on both sides of a comparison.
pub fn fold(text: &str) -> String {
    fold_keeping(text, &[])
}

/// A name part for comparison: `fold` with the spaces and hyphens inside it
/// removed ("Smith-Jones" → "smithjones", "de la Cruz" → "delacruz",
/// "O’Neil" → "oneil"). `None` when nothing is left.
pub fn name_part(text: &str) -> Option<String> {
    // Compose again: Hangul jamo that a space kept apart now meet.
    let part: String = fold(text).chars().filter(|c| *c != ' ').nfc().collect();
    (!part.is_empty()).then_some(part)
}

/// The formal given names a normalized given name (as `name_part` gives it)
/// may stand for, from the nickname table: "bob" → ["robert"],
/// "chris" → ["christopher", "christina", "christine"]. A name that is not a
/// nickname in the table, formal or unknown, stands for itself:
/// "robert" → ["robert"]. The result borrows from the input or from the
/// static table, and is never empty.
pub fn given_roots(name: &str) -> Vec<&str> {
    match nicknames::formal_names(name) {
        Some(formal) => formal.to_vec(),
        None => vec![name],
    }
}

/// True when two normalized given names (as `name_part` gives them) are the
/// same name, or one is a nickname of the other, or both are nicknames of one
/// formal name: "bob" ~ "robert", "bob" ~ "rob", "liz" ~ "beth" (both
/// Elizabeth). Empty names match nothing. The inputs are not normalized
/// here: "Bob" and "robert" do not match.
pub fn nickname_match(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let roots_b = given_roots(b);
    given_roots(a).iter().any(|root| roots_b.contains(root))
}

/// A generational suffix of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Suffix {
    Jr,
    Sr,
    II,
    III,
    IV,
    V,
}

/// The generational suffix a text names: "Jr", "jr.", "JR", "Junior" → `Jr`;
/// "Sr", "Senior" → `Sr`; "II", "2nd" → `II`; "III", "3rd" → `III`;
/// "IV", "4th" → `IV`; "V", "5th" → `V`. Anything else (including "I" and
/// professional suffixes such as "PhD") → `None`.
pub fn suffix(text: &str) -> Option<Suffix> {
    let key: String = fold(text).chars().filter(|c| *c != ' ').collect();
    Some(match key.as_str() {
        "jr" | "jnr" | "junior" => Suffix::Jr,
        "sr" | "snr" | "senior" => Suffix::Sr,
        "ii" | "2nd" | "second" => Suffix::II,
        "iii" | "3rd" | "third" => Suffix::III,
        "iv" | "4th" | "fourth" => Suffix::IV,
        "v" | "5th" | "fifth" => Suffix::V,
        _ => return None,
    })
}

/// An e-mail address: trimmed, lower-cased, a "mailto:" dropped; `None`
/// unless it has exactly one '@', a non-empty local part, no whitespace, and
/// a domain of at least two non-empty dot-separated labels. For gmail.com and googlemail.com the
/// local part loses its dots and its "+tag", and googlemail.com becomes
/// gmail.com (Gmail ignores both). Other domains keep "+tag": not every
/// provider treats it as an alias.
pub fn email(text: &str) -> Option<String> {
    let lowered = text.trim().to_lowercase();
    let lowered = lowered.strip_prefix("mailto:").unwrap_or(&lowered);
    let (local, domain) = lowered.split_once('@')?;
    if local.is_empty() || domain.contains('@') || lowered.chars().any(char::is_whitespace) {
        return None;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
        return None;
    }
    if domain == "gmail.com" || domain == "googlemail.com" {
        let mailbox = local.split('+').next().unwrap_or_default();
        let mailbox: String = mailbox.chars().filter(|c| *c != '.').collect();
        if mailbox.is_empty() {
            return None;
        }
        return Some(format!("{mailbox}@gmail.com"));
    }
    Some(lowered.to_owned())
}

/// The digits of a phone number as written, with a leading '+' kept; `None`
/// when the text holds anything but digits, spaces and the usual separators
/// (after an optional "tel:" and before an extension, which is dropped).
/// This keeps letters and other oddities away from the parser.
fn phone_digits(text: &str) -> Option<String> {
    let text: String = text.nfkc().flat_map(char::to_lowercase).collect();
    let text = text.trim();
    let text = text.strip_prefix("tel:").unwrap_or(text);
    // "+44 (0)20 …": the national trunk prefix, written for callers at home.
    let text = if text.starts_with('+') {
        text.replacen("(0)", "", 1)
    } else {
        text.to_owned()
    };
    let text = text.as_str();
    let end = ["ext", "x", "#", ";", ","]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    let number = text.get(..end)?.trim();
    let plus = number.starts_with('+');
    let rest = if plus { number.get(1..)? } else { number };
    let mut digits = String::with_capacity(rest.len() + 1);
    if plus {
        digits.push('+');
    }
    for c in rest.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else if !(c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')' | '/' | '\u{2010}'..='\u{2015}')) {
            return None;
        }
    }
    let count = digits.chars().filter(char::is_ascii_digit).count();
    (3..=20).contains(&count).then_some(digits)
}

/// A phone number in E.164 ("+13125550123"), parsed and validated with
/// libphonenumber's metadata (the `phonenumber` crate). `default_region` is
/// an ISO 3166 alpha-2 code such as "US", used when the number has no '+'
/// prefix (a national number, or one dialled with that region's
/// international prefix such as "011"). An extension is dropped. `None` for
/// anything unparseable or invalid, including letters ("1-800-FLOWERS") and
/// an unknown region for a number without '+'.
pub fn phone(text: &str, default_region: &str) -> Option<String> {
    let digits = phone_digits(text)?;
    let region = default_region
        .trim()
        .to_ascii_uppercase()
        .parse::<country::Id>()
        .ok()
        // The parser expects metadata for the region it is given.
        .filter(|id| phonenumber::metadata::DATABASE.by_id(id.as_ref()).is_some());
    // With a '+' the region must not be given: the parser would apply that
    // region's national prefix to the foreign number ("+32 10 00 00 00" with
    // "US" loses its "1").
    let region = if digits.starts_with('+') { None } else { Some(region?) };
    let number = phonenumber::parse(region, &digits).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// A street address line broken into parts, each normalized (see `street`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Street {
    /// The house number: "1200", "12b", "12-14".
    pub number: Option<String>,
    /// The street name with its type and directionals abbreviated:
    /// "n michigan ave".
    pub name: Option<String>,
    /// The unit identifier without its designator: "4b" for "Apt 4B".
    pub unit: Option<String>,
    /// What line 2 held besides a unit (a building or locality name), folded.
    pub extra: Option<String>,
}

/// Presence only: every part is personal data.
struct Presence<'a>(&'a Option<String>);

impl std::fmt::Debug for Presence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl std::fmt::Debug for Street {
    /// The parts are personal data: `Debug` shows only which are present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Street")
            .field("number", &Presence(&self.number))
            .field("name", &Presence(&self.name))
            .field("unit", &Presence(&self.unit))
            .field("extra", &Presence(&self.extra))
            .finish()
    }
}

/// Words that introduce a unit identifier.
const UNIT_DESIGNATORS: &[&str] = &[
    "apartment",
    "apt",
    "fl",
    "flat",
    "floor",
    "rm",
    "room",
    "ste",
    "suite",
    "unit",
    "#",
];

/// A unit identifier: letters and digits (hyphens between them allowed) with
/// at least one digit, or a single letter ("4b", "200", "b", "2-1").
fn is_unit_id(token: &str) -> bool {
    let plain = token
        .split('-')
        .all(|part| !part.is_empty() && part.chars().all(char::is_alphanumeric));
    let mut chars = token.chars();
    let single_letter = matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphabetic());
    plain && (token.chars().any(|c| c.is_ascii_digit()) || single_letter)
}

/// Digits with an optional letter: "12", "12b".
fn is_house_number_part(part: &str) -> bool {
    let digits = part.chars().take_while(char::is_ascii_digit).count();
    let rest = part.get(digits..).unwrap_or_default();
    digits > 0 && rest.chars().count() <= 1 && rest.chars().all(|c| c.is_ascii_lowercase())
}

/// A house number: "12", "12b", or a range "12-14".
fn is_house_number(token: &str) -> bool {
    match token.split_once('-') {
        Some((from, to)) => is_house_number_part(from) && is_house_number_part(to),
        None => is_house_number_part(token),
    }
}

/// The words of an address line: folded, '#' split off as a word of its own,
/// and '-' and '/' kept only inside numbers ("12-14", "3/15"); elsewhere they
/// separate words like any other punctuation.
fn address_tokens(text: &str) -> Vec<String> {
    let folded = fold_keeping(text, &['#', '-', '/']);
    let mut tokens = Vec::new();
    for word in folded.split(' ') {
        for (i, piece) in word.split('#').enumerate() {
            if i > 0 {
                tokens.push("#".to_owned());
            }
            let piece = piece.trim_matches(|c| c == '-' || c == '/');
            if piece.is_empty() {
                continue;
            }
            let parts: Vec<&str> = piece.split(['-', '/']).collect();
            let numeric = parts.iter().all(|p| is_unit_id(p))
                && parts.iter().any(|p| p.starts_with(|c: char| c.is_ascii_digit()));
            if parts.len() == 1 || numeric {
                tokens.push(piece.to_owned());
            } else {
                tokens.extend(parts.into_iter().filter(|p| !p.is_empty()).map(str::to_owned));
            }
        }
    }
    tokens
}

/// Removes the first unit designator with its identifier ("apt 4b",
/// "suite # 200", "# 12") from the tokens and returns the identifier.
/// A designator without an identifier after it ("rue ste catherine") stays.
fn take_unit(tokens: &mut Vec<String>) -> Option<String> {
    for i in 0..tokens.len() {
        if !UNIT_DESIGNATORS.contains(&tokens[i].as_str()) {
            continue;
        }
        let mut j = i + 1;
        if tokens[i] != "#" && tokens.get(j).is_some_and(|t| t == "#") {
            j += 1;
        }
        if tokens.get(j).is_some_and(|t| is_unit_id(t)) {
            let id = tokens[j].clone();
            tokens.drain(i..=j);
            return Some(id);
        }
    }
    None
}

/// USPS-style abbreviations of street types and directionals (plus a few
/// Australian street types); any other word is returned as it is.
fn abbreviate(word: &str) -> &str {
    match word {
        "street" | "str" | "strt" => "st",
        "avenue" | "av" | "aven" | "avn" | "avnue" => "ave",
        "road" => "rd",
        "drive" | "drv" | "driv" => "dr",
        "lane" => "ln",
        "court" | "crt" => "ct",
        "boulevard" | "boul" | "boulv" => "blvd",
        "place" => "pl",
        "terrace" | "terr" => "ter",
        "circle" | "circ" | "crcl" => "cir",
        "parkway" | "parkwy" | "pky" => "pkwy",
        "highway" | "hiway" | "hway" => "hwy",
        "square" | "sqr" => "sq",
        "trail" => "trl",
        "crescent" | "cresent" | "cresc" | "crsnt" => "cres",
        "close" => "cl",
        "alley" => "aly",
        "expressway" => "expy",
        "freeway" => "fwy",
        "heights" => "hts",
        "parade" => "pde",
        "circuit" => "cct",
        "esplanade" => "esp",
        "grove" => "gr",
        "saint" => "st",
        "north" => "n",
        "south" => "s",
        "east" => "e",
        "west" => "w",
        "northeast" => "ne",
        "northwest" => "nw",
        "southeast" => "se",
        "southwest" => "sw",
        other => other,
    }
}

/// Joins words with single spaces; `None` when there are none.
fn joined(words: &[String]) -> Option<String> {
    (!words.is_empty()).then(|| words.join(" "))
}

/// Normalizes line 1 (and the optional line 2) of a postal address.
///
/// Both lines are folded. A unit designator with its identifier anywhere in
/// line 1 ("apt 4b", "apartment 4b", "unit 7", "ste 200", "suite 200", "#12",
/// "flat 3", "fl 2", "floor 2", "rm 5") gives `unit` the identifier
/// alone ("4b"); failing that, one in line 2 does. Then a leading house
/// number (digits with an optional letter, "1200", "12b", or a range "12-14")
/// goes to `number`; the Australian "3/15" form gives unit 3, number 15. The
/// rest is the street `name`, with street types and directionals abbreviated
/// USPS-style ("street" → "st", "avenue" → "ave", "north" → "n"; "st." stays
/// "st"). Words glued or misspelled in the source ("pridhamstreet") are left
/// as they are. What line 2 holds besides a unit (a building or locality
/// name) goes to `extra`, never into the name.
pub fn street(line1: &str, line2: Option<&str>) -> Street {
    let mut tokens = address_tokens(line1);
    let mut unit = take_unit(&mut tokens);
    let mut rest2 = line2.map(address_tokens).unwrap_or_default();
    if unit.is_none() {
        unit = take_unit(&mut rest2);
    }
    let mut number = None;
    if let Some(first) = tokens.first() {
        if is_house_number(first) {
            number = Some(first.clone());
            tokens.remove(0);
        } else if let Some((u, n)) = first.split_once('/') {
            if is_unit_id(u) && is_house_number(n) {
                if unit.is_none() {
                    unit = Some(u.to_owned());
                }
                number = Some(n.to_owned());
                tokens.remove(0);
            }
        }
    }
    let clean = |tokens: Vec<String>, abbreviated: bool| -> Vec<String> {
        tokens
            .into_iter()
            .flat_map(|t| t.split(['#', '-', '/']).map(str::to_owned).collect::<Vec<_>>())
            .filter(|t| !t.is_empty())
            .map(|t| if abbreviated { abbreviate(&t).to_owned() } else { t })
            .collect()
    };
    Street {
        number,
        name: joined(&clean(tokens, true)),
        unit,
        extra: joined(&clean(rest2, false)),
    }
}

/// A postcode: `fold`, then upper-case letters and digits only
/// ("sw1a 1aa" → "SW1A1AA");
/// a US ZIP+4 ("60610-1234", "606101234") becomes its five digits. `None`
/// when nothing is left.
pub fn postcode(text: &str) -> Option<String> {
    let code: String = fold(text)
        .chars()
        .flat_map(char::to_uppercase)
        .filter(|c| c.is_alphanumeric())
        .nfc()
        .collect();
    if code.is_empty() {
        return None;
    }
    if code.len() == 9 && code.chars().all(|c| c.is_ascii_digit()) {
        return code.get(..5).map(str::to_owned);
    }
    Some(code)
}

/// A city or locality: `fold`, with the common words abbreviated wherever
/// they stand ("saint"/"st." → "st", "sainte" → "ste", "fort"/"ft." → "ft",
/// "mount"/"mt." → "mt"): "Saint Paul" → "st paul", "Port Saint Lucie" →
/// "port st lucie". `None` when nothing is left.
pub fn city(text: &str) -> Option<String> {
    let folded = fold(text);
    let words: Vec<&str> = folded
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| match w {
            "saint" => "st",
            "sainte" => "ste",
            "fort" => "ft",
            "mount" => "mt",
            other => other,
        })
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// The American Soundex code of a name: four characters, a letter and three
/// digits ("Robert" and "Rupert" → "R163", "Tymczak" → "T522", "Pfister" →
/// "P236", "Honeyman" → "H555"). The name is folded first ("Müller" → as
/// "muller"); only the letters a–z count. `None` when there are none.
pub fn soundex(text: &str) -> Option<String> {
    fn code(c: char) -> Option<char> {
        match c {
            'b' | 'f' | 'p' | 'v' => Some('1'),
            'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => Some('2'),
            'd' | 't' => Some('3'),
            'l' => Some('4'),
            'm' | 'n' => Some('5'),
            'r' => Some('6'),
            _ => None,
        }
    }
    let folded = fold(text);
    let mut letters = folded.chars().filter(char::is_ascii_lowercase);
    let first = letters.next()?;
    let mut out = String::with_capacity(4);
    out.push(first.to_ascii_uppercase());
    let mut previous = code(first);
    for c in letters {
        if out.len() == 4 {
            break;
        }
        match c {
            // 'h' and 'w' do not separate letters of the same code.
            'h' | 'w' => {}
            _ => {
                let current = code(c);
                if let Some(digit) = current {
                    if current != previous {
                        out.push(digit);
                    }
                }
                // A vowel separates: the same code after it counts again.
                previous = current;
            }
        }
    }
    while out.len() < 4 {
        out.push('0');
    }
    Some(out)
}

/// The digits of a text ("180-4974" → "1804974"; full-width digits count).
/// `None` when it has none.
pub fn digits(text: &str) -> Option<String> {
    let digits: String = text.nfkc().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fold_cases() {
        let long = "Ab-".repeat(10_000);
        let long_folded = vec!["ab"; 10_000].join(" ");
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("   ", ""),
            ("\t\n\r", ""),
            ("!!!", ""),
            ("-- / .. ,;", ""),
            ("'", ""),
            ("Hello", "hello"),
            ("  Hello   World  ", "hello world"),
            ("José Ñúñez", "jose nunez"),
            ("Müller", "muller"),
            ("MÜLLER", "muller"),
            ("Straße", "strasse"),
            ("STRASSE", "strasse"),
            ("ẞ", "ss"),
            ("Æsir Ørsted", "aesir orsted"),
            ("Œuvre", "oeuvre"),
            ("Łódź", "lodz"),
            ("Đorđević", "dordevic"),
            ("Þór Guðmundsdóttir", "thor gudmundsdottir"),
            ("İstanbul", "istanbul"),
            ("Dvořák", "dvorak"),
            ("François-Xavier", "francois xavier"),
            ("O'Brien", "obrien"),
            ("O’Brien", "obrien"),
            ("O‘Brien", "obrien"),
            ("Oʼbrien", "obrien"),
            ("D`Angelo", "dangelo"),
            ("D´Angelo", "dangelo"),
            ("Smith-Jones", "smith jones"),
            ("Smith – Jones", "smith jones"),
            ("de la Cruz", "de la cruz"),
            ("St. John", "st john"),
            ("a.b.c", "a b c"),
            ("ﬁnance", "finance"),
            ("Ｆｕｌｌｗｉｄｔｈ １２３", "fullwidth 123"),
            ("x²", "x2"),
            ("Ⅻ", "xii"),
            ("①②", "12"),
            ("Иван Петров", "иван петров"),
            ("Ελένη", "ελενη"),
            ("王小明", "王小明"),
            ("김민준", "김민준"),
            ("محمد", "محمد"),
            ("José 😀 Núñez", "jose nunez"),
            ("😀😀", ""),
            ("a\u{0301}", "a"),
            ("\u{0301}", ""),
            ("e\u{200B}f", "e f"),
            ("tab\there", "tab here"),
            ("line\nbreak", "line break"),
            ("100%", "100"),
            ("R2-D2", "r2 d2"),
        ];
        for (input, want) in cases {
            assert_eq!(fold(input), *want, "fold({input:?})");
        }
        assert_eq!(fold(&long), long_folded);
    }

    #[test]
    fn fold_postcode_and_city_are_idempotent_character_by_character() {
        // Every assigned plane but the ideographs and the private use area,
        // whose letters fold to themselves (kept out for the test's speed).
        let skipped = |u: &u32| matches!(u, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xE000..=0xF8FF);
        let chars = (0..=0x1FFFF_u32)
            .chain(0xE0000..=0xE01EF)
            .filter(|u| !skipped(u))
            .filter_map(char::from_u32);
        for c in chars {
            let once = fold(&c.to_string());
            assert_eq!(fold(&once), once, "U+{:04X}", c as u32);
            let framed = fold(&format!("a{c}b"));
            assert_eq!(fold(&framed), framed, "U+{:04X} framed", c as u32);
            if let Some(code) = postcode(&c.to_string()) {
                assert_eq!(postcode(&code), Some(code.clone()), "postcode U+{:04X}", c as u32);
            }
            if let Some(name) = city(&c.to_string()) {
                assert_eq!(city(&name), Some(name.clone()), "city U+{:04X}", c as u32);
            }
        }
    }

    #[test]
    fn name_part_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            ("   ", None),
            ("-", None),
            ("''", None),
            ("😀", None),
            ("Smith-Jones", Some("smithjones")),
            ("Smith - Jones", Some("smithjones")),
            ("de la Cruz", Some("delacruz")),
            ("De La Cruz", Some("delacruz")),
            ("O’Neil", Some("oneil")),
            ("O'Neil", Some("oneil")),
            ("  Robert ", Some("robert")),
            ("José", Some("jose")),
            ("Müller", Some("muller")),
            ("Weiß", Some("weiss")),
            ("van der Berg", Some("vanderberg")),
            ("Mary Ann", Some("maryann")),
            ("Иван", Some("иван")),
            ("J.", Some("j")),
            ("㈀ㅏ", Some("가")),
        ];
        for (input, want) in cases {
            assert_eq!(name_part(input).as_deref(), *want, "name_part({input:?})");
        }
    }

    #[test]
    fn given_roots_cases() {
        let cases: &[(&str, &[&str])] = &[
            ("bob", &["robert"]),
            ("bobby", &["robert"]),
            ("rob", &["robert"]),
            ("robbie", &["robert"]),
            ("robert", &["robert"]),
            ("bill", &["william"]),
            ("will", &["william"]),
            ("liam", &["william"]),
            ("william", &["william"]),
            ("liz", &["elizabeth"]),
            ("beth", &["elizabeth"]),
            ("betty", &["elizabeth"]),
            ("chris", &["christopher", "christina", "christine"]),
            ("alex", &["alexander", "alexandra"]),
            ("jim", &["james"]),
            ("jamie", &["james"]),
            ("mike", &["michael"]),
            ("dick", &["richard"]),
            ("tom", &["thomas"]),
            ("kate", &["katherine", "catherine", "kathleen"]),
            ("peggy", &["margaret"]),
            ("zeke", &["ezekiel"]),
            ("abbie", &["abigail"]),
            ("zebedee", &["zebedee"]),
            ("xyzzy", &["xyzzy"]),
            ("", &[""]),
            ("Bob", &["Bob"]),
        ];
        for (input, want) in cases {
            assert_eq!(given_roots(input), want.to_vec(), "given_roots({input:?})");
        }
    }

    #[test]
    fn nickname_match_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("bob", "robert", true),
            ("robert", "bob", true),
            ("bob", "rob", true),
            ("bobby", "robbie", true),
            ("robert", "robert", true),
            ("liz", "beth", true),
            ("liz", "elizabeth", true),
            ("bill", "william", true),
            ("will", "liam", true),
            ("chris", "christina", true),
            ("chris", "christopher", true),
            ("christopher", "christina", false),
            ("kate", "kathy", true),
            ("jim", "james", true),
            ("peggy", "maggie", true),
            ("bob", "william", false),
            ("bob", "bill", false),
            ("robert", "roberto", false),
            ("alice", "alison", false),
            ("xyzzy", "xyzzy", true),
            ("xyzzy", "plugh", false),
            ("", "", false),
            ("", "bob", false),
            ("bob", "", false),
            ("Bob", "robert", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(nickname_match(a, b), *want, "nickname_match({a:?}, {b:?})");
        }
    }

    #[test]
    fn suffix_cases() {
        let cases: &[(&str, Option<Suffix>)] = &[
            ("Jr", Some(Suffix::Jr)),
            ("jr.", Some(Suffix::Jr)),
            ("JR", Some(Suffix::Jr)),
            (" Jr. ", Some(Suffix::Jr)),
            ("Junior", Some(Suffix::Jr)),
            ("jnr", Some(Suffix::Jr)),
            ("Sr", Some(Suffix::Sr)),
            ("Sr.", Some(Suffix::Sr)),
            ("Senior", Some(Suffix::Sr)),
            ("II", Some(Suffix::II)),
            ("ii", Some(Suffix::II)),
            ("2nd", Some(Suffix::II)),
            ("III", Some(Suffix::III)),
            ("3rd", Some(Suffix::III)),
            ("IV", Some(Suffix::IV)),
            ("4th", Some(Suffix::IV)),
            ("V", Some(Suffix::V)),
            ("5th", Some(Suffix::V)),
            ("Ⅲ", Some(Suffix::III)),
            ("I", None),
            ("VI", None),
            ("PhD", None),
            ("MD", None),
            ("Esq.", None),
            ("", None),
            (".", None),
            ("jr jr", None),
        ];
        for (input, want) in cases {
            assert_eq!(suffix(input), *want, "suffix({input:?})");
        }
    }

    #[test]
    fn suffix_serializes_by_name() {
        assert_eq!(serde_json::to_string(&Suffix::III).ok().as_deref(), Some("\"III\""));
        assert_eq!(serde_json::from_str::<Suffix>("\"Jr\"").ok(), Some(Suffix::Jr));
        assert!(Suffix::Jr < Suffix::V);
    }

    #[test]
    fn email_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("john@example.com", Some("john@example.com")),
            ("  John.Smith@Example.COM  ", Some("john.smith@example.com")),
            ("john+news@example.com", Some("john+news@example.com")),
            ("John.Smith+News@Gmail.com", Some("johnsmith@gmail.com")),
            ("j.o.h.n@googlemail.com", Some("john@gmail.com")),
            ("john+a+b@gmail.com", Some("john@gmail.com")),
            ("john@gmail.co.uk", Some("john@gmail.co.uk")),
            ("mailto:John@Example.com", Some("john@example.com")),
            ("josé@exämple.com", Some("josé@exämple.com")),
            ("a@b.co", Some("a@b.co")),
            ("", None),
            ("   ", None),
            ("@", None),
            ("john", None),
            ("john@", None),
            ("@example.com", None),
            ("john@example", None),
            ("john@@example.com", None),
            ("john@ex@ample.com", None),
            ("john@.com", None),
            ("john@example.", None),
            ("john@example..com", None),
            ("john smith@example.com", None),
            ("john@exa mple.com", None),
            ("+tag@gmail.com", None),
            ("...@gmail.com", None),
            ("😀@😀.😀", Some("😀@😀.😀")),
        ];
        for (input, want) in cases {
            assert_eq!(email(input).as_deref(), *want, "email({input:?})");
        }
    }

    #[test]
    fn phone_cases() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("(312) 555-0123", "US", Some("+13125550123")),
            ("312-555-0123", "US", Some("+13125550123")),
            ("312.555.0123", "US", Some("+13125550123")),
            ("3125550123", "US", Some("+13125550123")),
            ("1 312 555 0123", "US", Some("+13125550123")),
            ("+1 312 555 0123", "US", Some("+13125550123")),
            ("+1 (312) 555-0123", "GB", Some("+13125550123")),
            ("+13125550123", "", Some("+13125550123")),
            ("312-555-0123 ext. 45", "US", Some("+13125550123")),
            ("312-555-0123 x45", "US", Some("+13125550123")),
            ("tel:+1-312-555-0123", "US", Some("+13125550123")),
            ("011 44 20 7946 0958", "US", Some("+442079460958")),
            ("+44 20 7946 0958", "US", Some("+442079460958")),
            ("+44 (0)20 7946 0958", "US", Some("+442079460958")),
            ("+32 10 00 00 00", "US", Some("+3210000000")),
            ("+32 10 00 00 00", "GB", Some("+3210000000")),
            ("020 7946 0958", "GB", Some("+442079460958")),
            ("0044 20 7946 0958", "GB", Some("+442079460958")),
            ("07911 123456", "GB", Some("+447911123456")),
            ("07700 900123", "GB", None), // Ofcom drama range, invalid in the metadata
            ("(02) 4578 1234", "AU", Some("+61245781234")),
            ("0412 345 678", "AU", Some("+61412345678")),
            ("030 123456", "DE", Some("+4930123456")),
            ("３１２-５５５-０１２３", "US", Some("+13125550123")),
            ("312-555-0123", "us", Some("+13125550123")),
            ("312-555-0123", "", None),
            ("312-555-0123", "XX", None),
            ("312-555-0123", "USA", None),
            ("", "US", None),
            ("   ", "US", None),
            ("+", "US", None),
            ("---", "US", None),
            ("12", "US", None),
            ("123", "US", None),
            ("555-0123", "US", None),
            ("000-000-0000", "US", None),
            ("1-800-FLOWERS", "US", None),
            ("call me", "US", None),
            ("312-555-0123-312-555-0123", "US", None),
            ("++13125550123", "US", None),
            ("+999 1234 5678", "US", None),
            ("99999999999999999999999", "US", None),
            ("😀", "US", None),
            ("+1 312 555 0123 😀", "US", None),
        ];
        for (input, region, want) in cases {
            assert_eq!(phone(input, region).as_deref(), *want, "phone({input:?}, {region:?})");
        }
    }

    #[test]
    fn street_cases() {
        struct Case {
            line1: &'static str,
            line2: Option<&'static str>,
            number: Option<&'static str>,
            name: Option<&'static str>,
            unit: Option<&'static str>,
            extra: Option<&'static str>,
        }
        let case = |line1, line2, number, name, unit, extra| Case {
            line1,
            line2,
            number,
            name,
            unit,
            extra,
        };
        let cases = [
            case(
                "1200 N. Michigan Avenue",
                None,
                Some("1200"),
                Some("n michigan ave"),
                None,
                None,
            ),
            case(
                "1200 North Michigan Ave",
                None,
                Some("1200"),
                Some("n michigan ave"),
                None,
                None,
            ),
            case(
                "1200 N Michigan Ave Apt 4B",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("4b"),
                None,
            ),
            case(
                "1200 N Michigan Ave, Apartment 4B",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("4b"),
                None,
            ),
            case(
                "1200 N Michigan Ave",
                Some("Apt 4B"),
                Some("1200"),
                Some("n michigan ave"),
                Some("4b"),
                None,
            ),
            case(
                "1200 N Michigan Ave",
                Some("Suite 200"),
                Some("1200"),
                Some("n michigan ave"),
                Some("200"),
                None,
            ),
            case(
                "1200 N Michigan Ave",
                Some("#12"),
                Some("1200"),
                Some("n michigan ave"),
                Some("12"),
                None,
            ),
            case(
                "1200 N Michigan Ave #12",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("12"),
                None,
            ),
            case(
                "1200 N Michigan Ave # 12",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("12"),
                None,
            ),
            case(
                "1200 N Michigan Ave Ste. 200",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("200"),
                None,
            ),
            case(
                "1200 N Michigan Ave Unit 7",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("7"),
                None,
            ),
            case(
                "1200 N Michigan Ave apt #7",
                None,
                Some("1200"),
                Some("n michigan ave"),
                Some("7"),
                None,
            ),
            case(
                "Unit 7, 12 Smith Street",
                None,
                Some("12"),
                Some("smith st"),
                Some("7"),
                None,
            ),
            case(
                "Flat 3, 12 Smith Street",
                None,
                Some("12"),
                Some("smith st"),
                Some("3"),
                None,
            ),
            case(
                "12 Smith Street",
                Some("Fl 2"),
                Some("12"),
                Some("smith st"),
                Some("2"),
                None,
            ),
            case(
                "12 Smith Street",
                Some("Apt B"),
                Some("12"),
                Some("smith st"),
                Some("b"),
                None,
            ),
            case("3/15 Smith Street", None, Some("15"), Some("smith st"), Some("3"), None),
            case("12b Baker Street", None, Some("12b"), Some("baker st"), None, None),
            case("12-14 Baker St.", None, Some("12-14"), Some("baker st"), None, None),
            case("12–14 Baker St.", None, Some("12-14"), Some("baker st"), None, None),
            case("221B Baker St", None, Some("221b"), Some("baker st"), None, None),
            case("5th Avenue", None, None, Some("5th ave"), None, None),
            case("350 Fifth Avenue", None, Some("350"), Some("fifth ave"), None, None),
            case(
                "10 Downing Street",
                Some("Westminster"),
                Some("10"),
                Some("downing st"),
                None,
                Some("westminster"),
            ),
            case(
                "pridhamstreet",
                Some("delmar"),
                None,
                Some("pridhamstreet"),
                None,
                Some("delmar"),
            ),
            case(
                "14 pridham street",
                Some("delmar"),
                Some("14"),
                Some("pridham st"),
                None,
                Some("delmar"),
            ),
            case(
                "27 Brereton Crescent",
                Some("Rosetta Village"),
                Some("27"),
                Some("brereton cres"),
                None,
                Some("rosetta village"),
            ),
            case(
                "1 Main Rd",
                Some("Apt 5, Building C"),
                Some("1"),
                Some("main rd"),
                Some("5"),
                Some("building c"),
            ),
            case(
                "1 Main Rd Apt 4",
                Some("Apt 5"),
                Some("1"),
                Some("main rd"),
                Some("4"),
                Some("apt 5"),
            ),
            case(
                "100 Sunset Boulevard",
                None,
                Some("100"),
                Some("sunset blvd"),
                None,
                None,
            ),
            case(
                "9 Lakeshore Drive West",
                None,
                Some("9"),
                Some("lakeshore dr w"),
                None,
                None,
            ),
            case("9 Lakeshore Dr W", None, Some("9"), Some("lakeshore dr w"), None, None),
            case("4 Elm Court", None, Some("4"), Some("elm ct"), None, None),
            case("4 Elm Lane", None, Some("4"), Some("elm ln"), None, None),
            case("4 Elm Place", None, Some("4"), Some("elm pl"), None, None),
            case("4 Elm Terrace", None, Some("4"), Some("elm ter"), None, None),
            case("4 Elm Circle", None, Some("4"), Some("elm cir"), None, None),
            case(
                "4 Blue Ridge Parkway",
                None,
                Some("4"),
                Some("blue ridge pkwy"),
                None,
                None,
            ),
            case(
                "4 Pacific Coast Highway",
                None,
                Some("4"),
                Some("pacific coast hwy"),
                None,
                None,
            ),
            case("4 Town Square", None, Some("4"), Some("town sq"), None, None),
            case("4 Oregon Trail", None, Some("4"), Some("oregon trl"), None, None),
            case("4 Milky Way", None, Some("4"), Some("milky way"), None, None),
            case("4 Elm Close", None, Some("4"), Some("elm cl"), None, None),
            case("4 Northeast Elm Road", None, Some("4"), Some("ne elm rd"), None, None),
            case("4 SW Elm Rd.", None, Some("4"), Some("sw elm rd"), None, None),
            case(
                "12 Saint James Street",
                None,
                Some("12"),
                Some("st james st"),
                None,
                None,
            ),
            case("12 St. James St.", None, Some("12"), Some("st james st"), None, None),
            case(
                "7 rue Ste Catherine",
                None,
                Some("7"),
                Some("rue ste catherine"),
                None,
                None,
            ),
            case(
                "12 Smith-Jones Road",
                None,
                Some("12"),
                Some("smith jones rd"),
                None,
                None,
            ),
            case("12 O'Connell Street", None, Some("12"), Some("oconnell st"), None, None),
            case("8 Königstraße", None, Some("8"), Some("konigstrasse"), None, None),
            case(
                "8 Avenida José Ñúñez",
                None,
                Some("8"),
                Some("avenida jose nunez"),
                None,
                None,
            ),
            case("12", None, Some("12"), None, None, None),
            case("Apt 4", None, None, None, Some("4"), None),
            case("", None, None, None, None, None),
            case("   ", Some(""), None, None, None, None),
            case("!!! ###", Some("---"), None, None, None, None),
            case("😀 Main St", None, None, Some("main st"), None, None),
            case("ул. Ленина 5", None, None, Some("ул ленина 5"), None, None),
        ];
        for c in cases {
            let got = street(c.line1, c.line2);
            let want = Street {
                number: c.number.map(str::to_owned),
                name: c.name.map(str::to_owned),
                unit: c.unit.map(str::to_owned),
                extra: c.extra.map(str::to_owned),
            };
            assert_eq!(
                (&got.number, &got.name, &got.unit, &got.extra),
                (&want.number, &want.name, &want.unit, &want.extra),
                "street({:?}, {:?})",
                c.line1,
                c.line2
            );
        }
    }

    #[test]
    fn street_debug_shows_presence_only() {
        let s = street("1200 N Michigan Ave", Some("Apt 4B"));
        let shown = format!("{s:?}");
        assert_eq!(
            shown,
            "Street { number: Some(..), name: Some(..), unit: Some(..), extra: None }"
        );
        assert!(!shown.contains("1200") && !shown.contains("michigan"));
    }

    #[test]
    fn postcode_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("60610", Some("60610")),
            (" 60610 ", Some("60610")),
            ("60610-1234", Some("60610")),
            ("606101234", Some("60610")),
            ("60610 1234", Some("60610")),
            ("07302", Some("07302")),
            ("sw1a 1aa", Some("SW1A1AA")),
            ("SW1A-1AA", Some("SW1A1AA")),
            ("k1a 0b6", Some("K1A0B6")),
            ("2600", Some("2600")),
            ("100-0001", Some("1000001")),
            ("75008", Some("75008")),
            ("６０６１０", Some("60610")),
            ("6061012345", Some("6061012345")),
            ("", None),
            ("   ", None),
            ("--", None),
            ("😀", None),
        ];
        for (input, want) in cases {
            assert_eq!(postcode(input).as_deref(), *want, "postcode({input:?})");
        }
    }

    #[test]
    fn city_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Chicago", Some("chicago")),
            ("  CHICAGO  ", Some("chicago")),
            ("Saint Paul", Some("st paul")),
            ("St. Paul", Some("st paul")),
            ("St Paul", Some("st paul")),
            ("Port Saint Lucie", Some("port st lucie")),
            ("Sainte-Foy", Some("ste foy")),
            ("Fort Worth", Some("ft worth")),
            ("Ft. Worth", Some("ft worth")),
            ("Mount Vernon", Some("mt vernon")),
            ("Mt. Vernon", Some("mt vernon")),
            ("Winston-Salem", Some("winston salem")),
            ("Coeur d'Alene", Some("coeur dalene")),
            ("Montréal", Some("montreal")),
            ("São Paulo", Some("sao paulo")),
            ("Zürich", Some("zurich")),
            ("Москва", Some("москва")),
            ("東京", Some("東京")),
            ("", None),
            ("  ", None),
            ("...", None),
            ("🏙️", None),
        ];
        for (input, want) in cases {
            assert_eq!(city(input).as_deref(), *want, "city({input:?})");
        }
    }

    #[test]
    fn soundex_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Robert", Some("R163")),
            ("Rupert", Some("R163")),
            ("Rubin", Some("R150")),
            ("Tymczak", Some("T522")),
            ("Pfister", Some("P236")),
            ("Honeyman", Some("H555")),
            ("Ashcraft", Some("A261")),
            ("Ashcroft", Some("A261")),
            ("Washington", Some("W252")),
            ("Lee", Some("L000")),
            ("Gutierrez", Some("G362")),
            ("Jackson", Some("J250")),
            ("A", Some("A000")),
            ("Müller", Some("M460")),
            ("Mueller", Some("M460")),
            ("O'Brien", Some("O165")),
            ("van der Berg", Some("V536")),
            ("  smith ", Some("S530")),
            ("SMITH", Some("S530")),
            ("Smyth", Some("S530")),
            ("", None),
            ("1234", None),
            ("---", None),
            ("Иван", None),
            ("王", None),
            ("😀", None),
        ];
        for (input, want) in cases {
            assert_eq!(soundex(input).as_deref(), *want, "soundex({input:?})");
        }
    }

    #[test]
    fn digits_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("1804974", Some("1804974")),
            ("180-4974", Some("1804974")),
            (" 180 4974 ", Some("1804974")),
            ("A-123/45", Some("12345")),
            ("００７", Some("007")),
            ("0", Some("0")),
            ("", None),
            ("abc", None),
            ("---", None),
            ("٣٤", None),
            ("😀", None),
        ];
        for (input, want) in cases {
            assert_eq!(digits(input).as_deref(), *want, "digits({input:?})");
        }
    }

    #[test]
    fn very_long_input_is_handled() {
        let long = "9".repeat(100_000);
        assert_eq!(digits(&long).map(|d| d.len()), Some(100_000));
        assert_eq!(phone(&long, "US"), None);
        assert_eq!(email(&format!("{long}@example.com")).map(|e| e.len()), Some(100_012));
        assert_eq!(postcode(&long).map(|p| p.len()), Some(100_000));
        assert_eq!(soundex(&"a".repeat(100_000)).as_deref(), Some("A000"));
        let street_line = format!("12 {} Street", "Long ".repeat(10_000));
        assert_eq!(street(&street_line, None).number.as_deref(), Some("12"));
        assert_eq!(name_part(&"ab ".repeat(50_000)).map(|n| n.len()), Some(100_000));
    }

    proptest! {
        // No regression files: a failure prints its minimal input instead.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn nothing_panics_and_fold_is_idempotent(text in any::<String>(), other in any::<String>(), region in "[A-Za-z]{0,3}") {
            let folded = fold(&text);
            prop_assert_eq!(fold(&folded), folded.clone());
            prop_assert!(!folded.starts_with(' ') && !folded.ends_with(' ') && !folded.contains("  "));
            if let Some(part) = name_part(&text) {
                prop_assert!(!part.contains(' '));
                prop_assert_eq!(name_part(&part), Some(part.clone()));
                let _ = given_roots(&part);
                prop_assert!(nickname_match(&part, &part));
            }
            let _ = nickname_match(&text, &other);
            let _ = suffix(&text);
            let _ = email(&text);
            let _ = phone(&text, &region);
            let _ = street(&text, Some(&other));
            let _ = street(&text, None);
            let _ = postcode(&text);
            let _ = city(&text);
            if let Some(code) = soundex(&text) {
                prop_assert_eq!(code.len(), 4);
            }
            let _ = digits(&text);
        }

        #[test]
        fn phone_never_panics_on_phone_like_text(text in "[+]?[0-9 ()./-]{0,30}", region in "(US|GB|AU|DE|FR|NZ|IN|BR|JP|CN|[A-Z]{2}|)") {
            if let Some(e164) = phone(&text, &region) {
                prop_assert!(e164.starts_with('+'));
                prop_assert_eq!(phone(&e164, "US"), Some(e164.clone()));
            }
        }

        #[test]
        fn street_parts_are_clean(line1 in "[0-9a-zA-Z#/ .,'-]{0,40}", line2 in proptest::option::of("[0-9a-zA-Z#/ .,'-]{0,20}")) {
            let s = street(&line1, line2.as_deref());
            for part in [&s.number, &s.name, &s.unit, &s.extra].into_iter().flatten() {
                prop_assert!(!part.is_empty() && !part.starts_with(' ') && !part.ends_with(' ') && !part.contains("  "));
                prop_assert!(!part.contains('#'));
            }
            if let Some(number) = &s.number {
                prop_assert!(is_house_number(number));
            }
        }

        #[test]
        fn normalizers_are_idempotent(text in "\\PC{0,40}") {
            if let Some(e) = email(&text) {
                prop_assert_eq!(email(&e), Some(e.clone()));
            }
            if let Some(p) = postcode(&text) {
                prop_assert_eq!(postcode(&p), Some(p.clone()));
            }
            if let Some(c) = city(&text) {
                prop_assert_eq!(city(&c), Some(c.clone()));
            }
        }
    }
}
