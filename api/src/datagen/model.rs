//! The true people and households behind the generated records.
//!
//! A household is drawn whole: its family name, address, landline and its
//! members, who may be a single adult, a couple (sharing a family name most
//! of the time, one of them often known under a former family name in older
//! records), parents with adult children (a son named after his father is a
//! Jr, or a III when the father is a Jr; twins share a birth date), a single
//! parent, or room-mates. Every person then gets their own e-mail
//! addresses, mobile, employer and vehicles.

use super::pick::{chance, one, scramble, Rand, Weighted};
use super::text::email_local;
use super::words::{self, City};
use chrono::{Datelike, NaiveDate};
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Female,
    Male,
}

/// A North American number: area code, exchange and line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneNumber {
    pub area: u16,
    pub exchange: u16,
    pub line: u16,
}

/// A US street address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub number: u32,
    /// Index into [`words::DIRECTIONS`].
    pub direction: Option<usize>,
    pub street: String,
    /// Index into [`words::STREET_TYPES`].
    pub street_type: usize,
    /// Index into [`words::UNIT_TYPES`] and the unit's number.
    pub unit: Option<(usize, String)>,
    pub city: &'static City,
    pub zip: u32,
    pub plus4: u16,
}

#[derive(Debug, Clone)]
pub struct Vehicle {
    pub vin: String,
    pub model: &'static str,
    pub year: u16,
    pub brand_a: bool,
}

/// One true person.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: u64,
    pub household: u64,
    pub sex: Sex,
    pub given: &'static str,
    pub middle: Option<&'static str>,
    pub family: String,
    /// The family name this person had before (a married name change),
    /// still found in older records.
    pub former_family: Option<String>,
    pub suffix: Option<&'static str>,
    pub dob: NaiveDate,
    pub email: Option<String>,
    /// An address this person used before, still found in older records.
    pub old_email: Option<String>,
    /// An address the household shares (couples' family mailbox).
    pub shared_email: Option<String>,
    pub work_email: Option<String>,
    pub mobile: Option<PhoneNumber>,
    /// The household's landline.
    pub home: Option<PhoneNumber>,
    pub work_phone: Option<PhoneNumber>,
    pub address: Address,
    /// Where the household lived before it moved, still found in older records.
    pub previous: Option<Address>,
    pub vehicles: Vec<Vehicle>,
}

/// Lists with their weights, built once per run.
#[derive(Debug)]
pub struct Tables {
    male: Weighted,
    female: Weighted,
    family: Weighted,
    city: Weighted,
    street_type: Weighted,
    pub provider: Weighted,
    /// Exchanges (the middle three digits) that a real number could have:
    /// 200 to 999 without the N11 service codes and 555.
    exchanges: Vec<u16>,
    /// Keys of the number and id bijections, drawn from the seed.
    keys: [u64; 4],
}

/// Exchanges are split in three bands so that mobiles, landlines and direct
/// work lines never collide: each is a bijection of its own counter.
const MOBILE_BAND: usize = 380;
const HOME_BAND: usize = 300;

/// The day the data is "exported": ages and dates are relative to it.
pub const TODAY: NaiveDate = match NaiveDate::from_ymd_opt(2024, 6, 28) {
    Some(d) => d,
    None => panic!("valid date"),
};

impl Tables {
    pub fn new(seed: u64) -> Self {
        let exchanges: Vec<u16> = (200..1000u16).filter(|e| e % 100 != 11 && *e != 555).collect();
        let key = |i: u64| super::pick::mix64(seed, 0xD1CE_0000 + i);
        Self {
            male: Weighted::zipf(words::MALE.len(), 12),
            female: Weighted::zipf(words::FEMALE.len(), 12),
            family: Weighted::zipf(words::FAMILY.len(), 20),
            city: Weighted::new(words::CITIES.iter().map(|c| u64::from(c.span))),
            street_type: Weighted::new(words::STREET_TYPE_WEIGHTS.iter().map(|&w| u64::from(w))),
            provider: Weighted::new(words::EMAIL_PROVIDERS.iter().map(|&(_, w)| u64::from(w))),
            exchanges,
            keys: [key(0), key(1), key(2), key(3)],
        }
    }

    fn given(&self, rng: &mut Rand, sex: Sex) -> &'static str {
        match sex {
            Sex::Male => words::MALE[self.male.index(rng)],
            Sex::Female => words::FEMALE[self.female.index(rng)],
        }
    }

    fn middle(&self, rng: &mut Rand, sex: Sex, given: &str) -> Option<&'static str> {
        if !chance(rng, 0.72) {
            return None;
        }
        let middle = self.given(rng, sex);
        (middle != given).then_some(middle)
    }

    fn family(&self, rng: &mut Rand) -> &'static str {
        words::FAMILY[self.family.index(rng)]
    }

    fn city(&self, rng: &mut Rand) -> &'static City {
        &words::CITIES[self.city.index(rng)]
    }

    fn address(&self, rng: &mut Rand, city: &'static City) -> Address {
        let street = if chance(rng, 0.12) {
            ordinal(rng.random_range(1..=60))
        } else {
            one(rng, words::STREETS).to_string()
        };
        let apartment = chance(rng, 0.22);
        let unit = apartment.then(|| {
            let kind = Weighted::new([6, 2, 2, 0]).index(rng);
            let number = if chance(rng, 0.5) {
                format!("{}{}", rng.random_range(1..=12), one(rng, &['A', 'B', 'C', 'D']))
            } else {
                rng.random_range(1..=450).to_string()
            };
            (kind, number)
        });
        let number = match rng.random_range(0..10) {
            0..=3 => rng.random_range(1..=999),
            4..=7 => rng.random_range(1000..=9999),
            _ => rng.random_range(10000..=39999),
        };
        Address {
            number,
            direction: chance(rng, 0.2).then(|| rng.random_range(0..words::DIRECTIONS.len())),
            street,
            street_type: self.street_type.index(rng),
            unit,
            city,
            zip: city.zip + rng.random_range(0..city.span.max(1)),
            plus4: rng.random_range(1..=9999),
        }
    }

    /// A number from band `band` of the exchanges, unique for each `n`
    /// below the band's capacity (10,000 lines per exchange).
    fn number(&self, area: u16, band: usize, n: u64) -> PhoneNumber {
        let (start, len) = match band {
            0 => (0, MOBILE_BAND),
            1 => (MOBILE_BAND, HOME_BAND),
            _ => (MOBILE_BAND + HOME_BAND, self.exchanges.len() - MOBILE_BAND - HOME_BAND),
        };
        let capacity = len as u64 * 10_000;
        let local = scramble(n % capacity, capacity, 2_654_435_761, self.keys[band]);
        PhoneNumber {
            area,
            exchange: self.exchanges[start + (local / 10_000) as usize],
            line: (local % 10_000) as u16,
        }
    }

    /// An employer's switchboard, shared by everyone who works there.
    fn switchboard(&self, employer: usize) -> PhoneNumber {
        let city = &words::CITIES[(employer * 7) % words::CITIES.len()];
        self.number(city.area, 2, (1 << 40) + employer as u64)
    }

    fn personal_email(
        &self,
        rng: &mut Rand,
        given: &str,
        middle: Option<&str>,
        family: &str,
        dob: NaiveDate,
    ) -> String {
        let first = email_local(given);
        let last = email_local(family);
        let initial = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
        let nick = words::nicknames(given).first().map(|n| email_local(n));
        let local = match rng.random_range(0..11) {
            0 | 1 => format!("{first}.{last}"),
            2 => format!("{first}{last}"),
            3 => format!("{}{last}", initial(&first)),
            4 => format!("{first}_{last}"),
            5 => match middle {
                Some(m) => format!("{first}.{}.{last}", initial(&email_local(m))),
                None => format!("{first}.{last}{}", rng.random_range(1..=99)),
            },
            6 => format!("{last}{}", initial(&first)),
            7 => format!("{first}{}", dob.year()),
            8 => format!("{first}.{last}{:02}", dob.year() % 100),
            9 => format!(
                "{}{}{}",
                nick.unwrap_or_else(|| first.clone()),
                last,
                rng.random_range(1..=999)
            ),
            _ => format!("{first}{}{}", initial(&last), rng.random_range(10..=9999)),
        };
        let provider = words::EMAIL_PROVIDERS[self.provider.index(rng)].0;
        format!("{local}@{provider}")
    }

    fn vehicle(&self, rng: &mut Rand, serial: u64) -> Vehicle {
        let brand_a = chance(rng, 0.55);
        let model = if brand_a {
            *one(rng, words::BRAND_A_MODELS)
        } else {
            *one(rng, words::BRAND_B_MODELS)
        };
        let year = rng.random_range(2012..=2025);
        let serial = scramble(serial % 10_000_000, 10_000_000, 7_777_777, self.keys[3]);
        Vehicle {
            vin: vin(rng, brand_a, year, serial),
            model,
            year,
            brand_a,
        }
    }
}

/// `1st`, `2nd`, `23rd`, `11th`.
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The characters a VIN may hold (no I, O or Q).
const VIN_CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ";

/// A 17-character VIN with a correct check digit: maker code, model
/// section, check digit, model year, plant and serial number.
fn vin(rng: &mut Rand, brand_a: bool, year: u16, serial: u64) -> String {
    const YEARS: &[u8] = b"ABCDEFGHJKLMNPRSTVWXY";
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let mut v: Vec<u8> = Vec::with_capacity(17);
    v.extend_from_slice(if brand_a { b"5AR" } else { b"5BX" });
    for _ in 0..5 {
        v.push(*one(rng, &VIN_CHARS[10..]));
    }
    v.push(b'0');
    v.push(YEARS[usize::from(year.saturating_sub(2010)) % YEARS.len()]);
    v.push(b"ABCDEFGHJK"[(serial / 1_000_000 % 10) as usize]);
    v.extend_from_slice(format!("{:06}", serial % 1_000_000).as_bytes());
    let value = |c: u8| -> u32 {
        match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'H' => u32::from(c - b'A') + 1,
            b'J'..=b'R' => [1, 2, 3, 4, 5, 0, 7, 0, 9][usize::from(c - b'J')],
            b'S'..=b'Z' => u32::from(c - b'S') + 2,
            _ => 0,
        }
    };
    let sum: u32 = v.iter().zip(WEIGHTS).map(|(&c, w)| value(c) * w).sum();
    v[8] = match sum % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    };
    String::from_utf8_lossy(&v).into_owned()
}

/// A day drawn uniformly between two years, both included.
fn birth_date(rng: &mut Rand, from_year: i32, to_year: i32) -> NaiveDate {
    let from = NaiveDate::from_ymd_opt(from_year, 1, 1).unwrap_or(TODAY);
    let to = NaiveDate::from_ymd_opt(to_year.max(from_year), 12, 31).unwrap_or(TODAY);
    let days = (to - from).num_days().max(0);
    from + chrono::Duration::days(rng.random_range(0..=days))
}

/// The name and birth of a household member, before contact details.
struct Draft {
    sex: Sex,
    given: &'static str,
    middle: Option<&'static str>,
    family: String,
    former_family: Option<String>,
    suffix: Option<&'static str>,
    dob: NaiveDate,
    adult: bool,
}

impl Draft {
    fn new(rng: &mut Rand, t: &Tables, sex: Sex, family: &str, dob: NaiveDate, adult: bool) -> Self {
        let given = t.given(rng, sex);
        let middle = t.middle(rng, sex, given);
        // A suffix inherited from a father outside the household.
        let suffix = (sex == Sex::Male)
            .then(|| match rng.random_range(0..1000) {
                0..=19 => Some("Jr"),
                20..=24 => Some("III"),
                25..=27 => Some("II"),
                _ => None,
            })
            .flatten();
        Self {
            sex,
            given,
            middle,
            family: family.to_owned(),
            former_family: None,
            suffix,
            dob,
            adult,
        }
    }
}

fn other(sex: Sex) -> Sex {
    match sex {
        Sex::Female => Sex::Male,
        Sex::Male => Sex::Female,
    }
}

fn any_sex(rng: &mut Rand) -> Sex {
    if chance(rng, 0.5) {
        Sex::Female
    } else {
        Sex::Male
    }
}

/// Draws household `hid`, whose first member gets person number
/// `first_person`; at most `room` members.
pub fn household(rng: &mut Rand, t: &Tables, hid: u64, first_person: u64, room: u64) -> Vec<Person> {
    let family = t.family(rng).to_owned();
    let city = t.city(rng);
    let address = t.address(rng, city);
    let previous = chance(rng, 0.22).then(|| {
        let before = if chance(rng, 0.5) { city } else { t.city(rng) };
        t.address(rng, before)
    });
    let mut drafts: Vec<Draft> = Vec::with_capacity(4);
    let mut couple = false;
    match rng.random_range(0..100) {
        // One adult.
        0..=37 => {
            let dob = birth_date(rng, 1940, 2005);
            let sex = any_sex(rng);
            drafts.push(Draft::new(rng, t, sex, &family, dob, true));
        }
        // A couple, or parents with adult children.
        38..=88 => {
            couple = true;
            let (sex, dob) = (any_sex(rng), birth_date(rng, 1942, 2002));
            let first = Draft::new(rng, t, sex, &family, dob, true);
            let sex = if chance(rng, 0.9) { other(first.sex) } else { first.sex };
            let year = (first.dob.year() + rng.random_range(-6..=6)).min(2004);
            let dob = birth_date(rng, year, year);
            let second = Draft::new(rng, t, sex, &family, dob, true);
            // `partner` is the one who took the family name: the wife of a
            // mixed couple, else the second drawn.
            let (father, mut partner) = if first.sex == Sex::Female && second.sex == Sex::Male {
                (second, first)
            } else {
                (first, second)
            };
            if chance(rng, 0.82) {
                if chance(rng, 0.6) {
                    let maiden = t.family(rng).to_owned();
                    if maiden != family {
                        if chance(rng, 0.07) {
                            partner.family = format!("{maiden}-{family}");
                        }
                        partner.former_family = Some(maiden);
                    }
                }
            } else {
                partner.family = t.family(rng).to_owned();
            }
            let younger = father.dob.year().max(partner.dob.year());
            let children = if rng.random_range(0..100) < 45 && younger + 20 <= 2006 {
                rng.random_range(1..=3)
            } else {
                0
            };
            let father_is_male = father.sex == Sex::Male;
            let (father_given, father_middle, father_suffix) = (father.given, father.middle, father.suffix);
            drafts.push(father);
            drafts.push(partner);
            add_children(
                rng,
                t,
                &mut drafts,
                &family,
                younger,
                children,
                father_is_male.then_some((father_given, father_middle, father_suffix)),
            );
        }
        // A single parent with one or two adult children.
        89..=94 => {
            let (sex, dob) = (any_sex(rng), birth_date(rng, 1945, 1984));
            let parent = Draft::new(rng, t, sex, &family, dob, true);
            let year = parent.dob.year();
            let father = (parent.sex == Sex::Male).then_some((parent.given, parent.middle, parent.suffix));
            drafts.push(parent);
            let n = rng.random_range(1..=2);
            add_children(rng, t, &mut drafts, &family, year, n, father);
        }
        // Room-mates: adults of about the same age, each with their own name.
        _ => {
            let year = rng.random_range(1975..=2002);
            for i in 0..rng.random_range(2..=3) {
                let name = if i == 0 {
                    family.clone()
                } else {
                    t.family(rng).to_owned()
                };
                let dob = birth_date(rng, year, (year + 3).min(2005));
                let sex = any_sex(rng);
                drafts.push(Draft::new(rng, t, sex, &name, dob, true));
            }
        }
    }
    // A father whose son is named after him may call himself Sr.
    let named_after = |d: &Draft, father: &Draft| d.given == father.given && matches!(d.suffix, Some("Jr"));
    if drafts[0].sex == Sex::Male
        && drafts[0].suffix.is_none()
        && drafts.iter().skip(1).any(|d| named_after(d, &drafts[0]))
        && chance(rng, 0.5)
    {
        drafts[0].suffix = Some("Sr");
    }
    drafts.truncate(room.try_into().unwrap_or(usize::MAX));

    let landline = chance(rng, if drafts.len() > 1 { 0.6 } else { 0.4 }).then(|| t.number(city.area, 1, hid));
    let shared_email = (couple && drafts.len() >= 2 && chance(rng, 0.2)).then(|| {
        let last = email_local(&family);
        let local = match rng.random_range(0..3) {
            0 if last.ends_with(['s', 'x', 'z']) => format!("the{last}es"),
            0 => format!("the{last}s"),
            1 => format!("{last}family{}", rng.random_range(1..=99)),
            _ => format!(
                "{}and{}",
                email_local(drafts[0].given),
                email_local(drafts.get(1).map_or("", |d| d.given))
            ),
        };
        format!("{local}@{}", words::EMAIL_PROVIDERS[t.provider.index(rng)].0)
    });

    let mut people = Vec::with_capacity(drafts.len());
    for (i, d) in drafts.into_iter().enumerate() {
        let id = first_person + i as u64;
        let email = chance(rng, if d.adult { 0.93 } else { 0.88 })
            .then(|| t.personal_email(rng, d.given, d.middle, &d.family, d.dob));
        let old_email = chance(rng, 0.3).then(|| {
            let family = d.former_family.as_deref().unwrap_or(&d.family);
            t.personal_email(rng, d.given, d.middle, family, d.dob)
        });
        let working = (1955..=2003).contains(&d.dob.year()) && chance(rng, 0.45);
        let (work_email, work_phone) = if working {
            let employer = rng.random_range(0..words::EMPLOYER_PREFIXES.len() * words::EMPLOYER_SUFFIXES.len());
            let domain = format!(
                "{}{}.example",
                words::EMPLOYER_PREFIXES[employer / words::EMPLOYER_SUFFIXES.len()],
                words::EMPLOYER_SUFFIXES[employer % words::EMPLOYER_SUFFIXES.len()]
            )
            .to_lowercase();
            let first = email_local(d.given);
            let last = email_local(&d.family);
            let local = match rng.random_range(0..3) {
                0 => format!("{first}.{last}"),
                1 => format!("{}{last}", first.chars().next().unwrap_or('x')),
                _ => format!("{first}{}", last.chars().next().unwrap_or('x')),
            };
            let phone = if chance(rng, 0.3) {
                t.switchboard(employer)
            } else {
                t.number(t.city(rng).area, 2, id)
            };
            (Some(format!("{local}@{domain}")), chance(rng, 0.8).then_some(phone))
        } else {
            (None, None)
        };
        let mobile_area = if chance(rng, 0.75) { city.area } else { t.city(rng).area };
        let mobile = chance(rng, 0.93).then(|| t.number(mobile_area, 0, id));
        let vehicles = (0..Weighted::new([30, 50, 15, 5]).index(rng))
            .map(|k| t.vehicle(rng, id * 3 + k as u64))
            .collect();
        people.push(Person {
            id,
            household: hid,
            sex: d.sex,
            given: d.given,
            middle: d.middle,
            family: d.family,
            former_family: d.former_family,
            suffix: d.suffix,
            dob: d.dob,
            email,
            old_email,
            shared_email: shared_email.clone(),
            work_email,
            mobile,
            home: landline,
            work_phone,
            address: address.clone(),
            previous: previous.clone(),
            vehicles,
        });
    }
    people
}

/// Adds `n` adult children born 20 to 38 years after `parent_year`. The
/// first son may be named after `father` (Jr, or III after a Jr); the
/// second child may be the first one's twin.
fn add_children(
    rng: &mut Rand,
    t: &Tables,
    drafts: &mut Vec<Draft>,
    family: &str,
    parent_year: i32,
    n: u32,
    father: Option<(&'static str, Option<&'static str>, Option<&'static str>)>,
) {
    let latest = TODAY.year() - 18;
    let mut first_dob = None;
    for k in 0..n {
        let from = parent_year + 20;
        if from > latest {
            return;
        }
        let to = (parent_year + 38).min(latest);
        let twin = k == 1 && chance(rng, 0.12);
        let dob = match (twin, first_dob) {
            (true, Some(d)) => d,
            _ => birth_date(rng, from, to),
        };
        let sex = any_sex(rng);
        let mut child = Draft::new(rng, t, sex, family, dob, true);
        child.adult = dob.year() <= TODAY.year() - 21;
        if twin {
            if let Some(first) = drafts.last() {
                // Twins' names often share their first letter.
                if chance(rng, 0.4) {
                    let initial = first.given.chars().next();
                    let list = if child.sex == Sex::Male {
                        words::MALE
                    } else {
                        words::FEMALE
                    };
                    if let Some(name) = list.iter().find(|n| n.chars().next() == initial && **n != first.given) {
                        child.given = name;
                    }
                }
                if child.given == first.given {
                    child.given = t.given(rng, child.sex);
                }
            }
        }
        if let Some((given, middle, suffix)) = father {
            if k == 0 && chance(rng, 0.3) {
                child.sex = Sex::Male;
                child.given = given;
                child.middle = middle;
                child.suffix = Some(if suffix == Some("Jr") { "III" } else { "Jr" });
            } else if child.suffix.is_some() {
                child.suffix = None;
            }
        }
        first_dob = Some(dob);
        drafts.push(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vins_carry_a_correct_check_digit() {
        use rand::SeedableRng;
        let mut rng = Rand::seed_from_u64(3);
        for serial in 0..200 {
            let v = vin(&mut rng, serial % 2 == 0, 2020, serial);
            assert_eq!(v.len(), 17, "{v}");
            assert!(!v.contains(['I', 'O', 'Q']), "{v}");
        }
        // A published example: 1M8GDM9AXKP042788 has check digit X.
        let known = b"1M8GDM9A0KP042788";
        let value = |c: u8| -> u32 {
            match c {
                b'0'..=b'9' => u32::from(c - b'0'),
                b'A'..=b'H' => u32::from(c - b'A') + 1,
                b'J'..=b'R' => [1, 2, 3, 4, 5, 0, 7, 0, 9][usize::from(c - b'J')],
                b'S'..=b'Z' => u32::from(c - b'S') + 2,
                _ => 0,
            }
        };
        let weights = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
        let sum: u32 = known.iter().zip(weights).map(|(&c, w)| value(c) * w).sum();
        assert_eq!(sum % 11, 10);
    }

    #[test]
    fn ordinals_read_right() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111].map(ordinal).to_vec();
        assert_eq!(
            got,
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th"]
        );
    }
}
