//! The seven source systems: their ids and the shape each writes a record
//! in, following `config/sources.example.toml`.

use super::model::{PhoneNumber, Sex, TODAY};
use super::pick::{chance, mix64, one, scramble, Rand};
use super::text::{ascii_fold, epoch_days, line1, phone_as, unit, zip};
use super::view::{Profile, View};
use super::words;
use chrono::{Datelike, NaiveDateTime};
use rand::Rng;
use serde::Serialize;

/// A source system of the car maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    WebSignup,
    DealerA,
    DealerB,
    Finance,
    Loyalty,
    ShopCdc,
    Warranty,
}

impl System {
    pub const ALL: [System; 7] = [
        System::WebSignup,
        System::DealerA,
        System::DealerB,
        System::Finance,
        System::Loyalty,
        System::ShopCdc,
        System::Warranty,
    ];

    /// The `system` of its definition.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSignup => "web_signup",
            Self::DealerA => "dealer_a",
            Self::DealerB => "dealer_b",
            Self::Finance => "finance",
            Self::Loyalty => "loyalty",
            Self::ShopCdc => "shop_cdc",
            Self::Warranty => "warranty_api",
        }
    }

    /// The file its records go to.
    pub fn file(self) -> &'static str {
        match self {
            Self::WebSignup => "web_signup.ndjson",
            Self::DealerA => "dealer_a.ndjson",
            Self::DealerB => "dealer_b.ndjson",
            Self::Finance => "finance.csv",
            Self::Loyalty => "loyalty.csv",
            Self::ShopCdc => "shop_cdc.ndjson",
            Self::Warranty => "warranty_api.ndjson",
        }
    }

    /// How likely a person is to have a record here, relative to the others.
    pub fn weight(self) -> u64 {
        match self {
            Self::WebSignup => 16,
            Self::DealerA | Self::DealerB => 15,
            Self::Finance | Self::Loyalty | Self::ShopCdc => 14,
            Self::Warranty => 12,
        }
    }

    pub fn profile(self) -> Profile {
        let p = |nickname, middle, dob_missing, email_missing, work_email, mobile_missing, address_missing| Profile {
            nickname,
            middle,
            dob_missing,
            email_missing,
            work_email,
            mobile_missing,
            address_missing,
        };
        match self {
            Self::WebSignup => p(0.22, 0.0, 0.35, 0.02, 0.08, 0.12, 0.3),
            Self::DealerA => p(0.10, 0.6, 0.08, 0.10, 0.12, 0.10, 0.03),
            Self::DealerB => p(0.08, 0.5, 0.12, 0.20, 0.10, 0.20, 0.03),
            Self::Finance => p(0.02, 0.85, 0.01, 0.10, 0.25, 0.30, 0.0),
            Self::Loyalty => p(0.35, 0.15, 1.0, 0.0, 0.05, 1.0, 1.0),
            Self::ShopCdc => p(0.20, 0.0, 0.4, 0.0, 0.05, 0.3, 0.15),
            Self::Warranty => p(0.05, 0.4, 0.05, 0.05, 0.15, 0.10, 0.02),
        }
    }
}

/// Source ids: each system numbers its records with a counter and writes
/// the number its own way. Scrambled counters look random but never repeat.
#[derive(Debug, Clone)]
pub struct Ids {
    keys: [u64; 7],
}

impl Ids {
    pub fn new(seed: u64) -> Self {
        let mut keys = [0; 7];
        for (i, k) in keys.iter_mut().enumerate() {
            *k = mix64(seed, 0x1D5_0000 + i as u64);
        }
        Self { keys }
    }

    /// The id of record number `n` of `system`, as the mapping reads it.
    pub fn id(&self, system: System, n: u64) -> String {
        let key = self.keys[system as usize];
        match system {
            System::WebSignup => {
                let a = mix64(n, key);
                let b = mix64(n, key ^ 0xFFFF);
                let h = format!("{a:016x}");
                format!(
                    "{}-{}-4{}-{:x}{}{:02x}-{:012x}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..15],
                    8 + (b >> 62),
                    &h[15..16],
                    (b >> 54) & 0xFF,
                    b & 0xFFFF_FFFF_FFFF
                )
            }
            System::DealerA => format!("DA{:08}", scramble(n, 100_000_000, 48_271_093, key)),
            System::DealerB => (1_000_000 + scramble(n, 9_000_000, 7_654_321, key)).to_string(),
            System::Finance => format!("FA-{:07}", scramble(n, 10_000_000, 3_141_593, key)),
            System::Loyalty => format!("LY{:08}", scramble(n, 100_000_000, 27_182_819, key)),
            System::ShopCdc => (1001 + n).to_string(),
            System::Warranty => format!("{:016x}", mix64(n, key)),
        }
    }
}

/// A moment `days` back from the export day at most, written as UTC.
fn moment(rng: &mut Rand, min_days: i64, max_days: i64) -> NaiveDateTime {
    let start = TODAY.and_hms_opt(0, 0, 0).unwrap_or_default();
    start - chrono::Duration::seconds(rng.random_range(min_days * 86_400..=max_days * 86_400))
}

fn iso(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Upper case without accents, as legacy systems keep names.
fn legacy(s: &str) -> String {
    ascii_fold(s).to_uppercase()
}

/// How a person typed their name into a form.
fn typed(rng: &mut Rand, s: &str, noise: f64) -> String {
    if chance(rng, 0.12 * noise) {
        s.to_lowercase()
    } else if chance(rng, 0.05 * noise) {
        s.to_uppercase()
    } else {
        s.to_owned()
    }
}

fn suffix_text(rng: &mut Rand, suffix: &str) -> String {
    if suffix.len() == 2 && chance(rng, 0.4) {
        format!("{suffix}.")
    } else {
        suffix.to_owned()
    }
}

fn json_line<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    Ok(line)
}

// ---------------------------------------------------------------- web_signup

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebSignup<'a> {
    signup_id: &'a str,
    brand: &'a str,
    submitted_at: String,
    first_name: String,
    last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mobile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    birth_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postal_code: Option<String>,
    marketing_opt_in: bool,
    utm: Utm<'a>,
}

#[derive(Serialize)]
struct Utm<'a> {
    campaign: &'a str,
    source: &'a str,
    medium: &'a str,
}

pub fn web_signup(rng: &mut Rand, v: &View, id: &str, noise: f64) -> serde_json::Result<Vec<u8>> {
    let record = WebSignup {
        signup_id: id,
        brand: if chance(rng, 0.6) { "A" } else { "B" },
        submitted_at: iso(moment(rng, 1, 5 * 365)),
        first_name: typed(rng, &v.given, noise),
        last_name: typed(rng, &v.family, noise),
        email: v.email.clone(),
        mobile: v.mobile.as_ref().map(|m| phone_as(rng, m, 1, noise * 2.0)),
        birth_date: v.dob.map(|d| d.format("%Y-%m-%d").to_string()),
        postal_code: v.address.as_ref().map(|a| zip(a, false)),
        marketing_opt_in: chance(rng, 0.4),
        utm: Utm {
            campaign: one::<&str>(rng, words::CAMPAIGNS),
            source: one::<&str>(rng, &["newsletter", "google", "facebook", "dealer_site", "direct"]),
            medium: one::<&str>(rng, &["email", "cpc", "social", "referral", "none"]),
        },
    };
    json_line(&record)
}

// ------------------------------------------------------------------ dealer_a

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DealerA<'a> {
    customer_no: &'a str,
    name: DaName,
    contact: DaContact,
    address: Option<DaAddress<'a>>,
    dob: Option<String>,
    dealer: Dealer,
    vehicles: Vec<DaVehicle<'a>>,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct DaName {
    title: Option<&'static str>,
    first: String,
    middle: Option<String>,
    last: String,
    suffix: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DaContact {
    email: Option<String>,
    alt_email: Option<String>,
    phones: Vec<DaPhone>,
}

#[derive(Serialize)]
struct DaPhone {
    #[serde(rename = "type")]
    kind: &'static str,
    number: String,
    primary: bool,
}

#[derive(Serialize)]
struct DaAddress<'a> {
    street: String,
    unit: Option<String>,
    city: &'a str,
    state: &'a str,
    zip: String,
    country: Option<&'a str>,
}

#[derive(Serialize)]
struct Dealer {
    code: String,
    name: String,
}

#[derive(Serialize)]
struct DaVehicle<'a> {
    vin: &'a str,
    model: &'a str,
    year: u16,
}

fn phones(rng: &mut Rand, v: &View, style: usize, noise: f64) -> Vec<(&'static str, String)> {
    let mut list = Vec::with_capacity(3);
    let mut add = |kind, p: Option<PhoneNumber>, rng: &mut Rand| {
        if let Some(p) = p {
            list.push((kind, phone_as(rng, &p, style, noise)));
        }
    };
    add("mobile", v.mobile, rng);
    add("home", v.home, rng);
    add("work", v.work, rng);
    list
}

pub fn dealer_a(rng: &mut Rand, v: &View, id: &str, noise: f64) -> serde_json::Result<Vec<u8>> {
    let middle = v.middle.map(|m| {
        if chance(rng, 0.35) {
            m.chars().next().map(String::from).unwrap_or_default()
        } else {
            m.to_owned()
        }
    });
    let dealer_city = v.address.as_ref().map_or(v.person.address.city, |a| a.city);
    let dealer_no = dealer_city.zip % 17 + 1;
    let contact_phones = phones(rng, v, 1, noise)
        .into_iter()
        .enumerate()
        .map(|(i, (kind, number))| DaPhone {
            kind,
            number,
            primary: i == 0,
        })
        .collect();
    let created = moment(rng, 30, 10 * 365);
    let record = DealerA {
        customer_no: id,
        name: DaName {
            title: chance(rng, 0.6).then(|| match v.person.sex {
                Sex::Male => "Mr.",
                Sex::Female if v.person.former_family.is_some() => "Mrs.",
                Sex::Female => "Ms.",
            }),
            first: v.given.clone(),
            middle,
            last: v.family.clone(),
            suffix: v.suffix.map(|s| suffix_text(rng, s)),
        },
        contact: DaContact {
            email: v.email.clone(),
            alt_email: v.other_email.clone(),
            phones: contact_phones,
        },
        address: v.address.as_ref().map(|a| DaAddress {
            street: line1(a, chance(rng, 0.1)),
            unit: unit(a, chance(rng, 0.2)),
            city: a.city.name,
            state: a.city.state,
            zip: zip(a, chance(rng, 0.15)),
            country: if chance(rng, 0.9) { Some("US") } else { None },
        }),
        dob: v.dob.map(|d| {
            if chance(rng, 0.5) {
                d.format("%m/%d/%Y").to_string()
            } else {
                format!("{}/{}/{}", d.month(), d.day(), d.year())
            }
        }),
        dealer: Dealer {
            code: format!("A-{}-{:03}", dealer_city.state, dealer_no),
            name: format!("Aurelia of {}", dealer_city.name),
        },
        vehicles: v
            .person
            .vehicles
            .iter()
            .filter(|x| x.brand_a)
            .map(|x| DaVehicle {
                vin: &x.vin,
                model: x.model,
                year: x.year,
            })
            .collect(),
        created_at: iso(created),
        updated_at: iso(created + chrono::Duration::seconds(rng.random_range(0..=20_000_000))),
    };
    json_line(&record)
}

// ------------------------------------------------------------------ dealer_b

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DealerB {
    cust_no: u64,
    cust_name: String,
    #[serde(rename = "EMail")]
    email: String,
    home_phone: String,
    cell_phone: String,
    addr1: String,
    addr2: String,
    city_st_zip: String,
    birth_dt: String,
    dealer_code: String,
    last_visit: String,
}

pub fn dealer_b(rng: &mut Rand, v: &View, id: &str, noise: f64) -> serde_json::Result<Vec<u8>> {
    let upper = !chance(rng, 0.15);
    let case = |s: &str| if upper { legacy(s) } else { s.to_owned() };
    let family = case(&v.family);
    let suffix_with_family = v.suffix.is_some() && chance(rng, 0.5);
    let mut name = match v.suffix {
        Some(s) if suffix_with_family => format!("{family} {}, {}", case(s), case(&v.given)),
        _ => format!("{family}, {}", case(&v.given)),
    };
    if let Some(m) = v.middle {
        name.push(' ');
        if chance(rng, 0.7) {
            name.extend(m.chars().next().map(|c| if upper { c.to_ascii_uppercase() } else { c }));
        } else {
            name.push_str(&case(m));
        }
    }
    if let (Some(s), false) = (v.suffix, suffix_with_family) {
        name.push(' ');
        name.push_str(&case(s));
    }
    let none = String::new;
    let (addr1, addr2, city_line) = match &v.address {
        Some(a) => {
            let zip = if chance(rng, 0.03 * noise) {
                String::new()
            } else {
                format!(" {}", zip(a, chance(rng, 0.1)))
            };
            let comma = if chance(rng, 0.05 * noise) { "" } else { "," };
            (
                case(&line1(a, false)),
                unit(a, false).map(|u| case(&u)).unwrap_or_default(),
                format!("{}{comma} {}{zip}", case(a.city.name), a.city.state),
            )
        }
        None => (none(), none(), none()),
    };
    let birth = v.dob.map_or_else(none, |d| {
        if chance(rng, 0.85) {
            d.format("%Y%m%d").to_string()
        } else {
            d.format("%m/%d/%Y").to_string()
        }
    });
    let record = DealerB {
        cust_no: id.parse().unwrap_or_default(),
        cust_name: name,
        email: v.email.clone().unwrap_or_default(),
        home_phone: v.home.map_or_else(none, |p| phone_as(rng, &p, 3, noise)),
        cell_phone: v.mobile.map_or_else(none, |p| phone_as(rng, &p, 8, noise)),
        addr1,
        addr2,
        city_st_zip: city_line,
        birth_dt: birth,
        dealer_code: format!("B-{:04}", v.person.address.city.zip % 997),
        last_visit: moment(rng, 1, 6 * 365).format("%Y-%m-%d").to_string(),
    };
    json_line(&record)
}

// ------------------------------------------------------------------- finance

/// The finance export's columns; `E.Mail` holds a dot, which is why the
/// definition quotes it.
pub const FINANCE_HEADERS: [&str; 18] = [
    "ACCOUNT_ID",
    "BORROWER_FIRST",
    "BORROWER_MI",
    "BORROWER_LAST",
    "BORROWER_SFX",
    "E.Mail",
    "HOME_PHONE",
    "WORK_PHONE",
    "ADDR_LINE1",
    "ADDR_LINE2",
    "CITY",
    "STATE",
    "ZIP",
    "COUNTRY",
    "DOB",
    "LOAN_TYPE",
    "OPEN_DATE",
    "BALANCE",
];

pub fn finance(rng: &mut Rand, v: &View, id: &str, noise: f64) -> Vec<String> {
    let a = v.address.as_ref();
    let zip_text = a.map_or_else(String::new, |a| {
        if a.zip < 10_000 && chance(rng, 0.3 * noise) {
            // A spreadsheet on the way dropped the leading zero.
            a.zip.to_string()
        } else {
            zip(a, chance(rng, 0.2))
        }
    });
    let dob = v.dob.map_or_else(String::new, |d| {
        if chance(rng, 0.88) {
            d.format("%d.%m.%Y").to_string()
        } else {
            d.format("%Y-%m-%d").to_string()
        }
    });
    let country = match rng.random_range(0..20) {
        0..=15 => "USA",
        16..=18 => "US",
        _ => "",
    };
    vec![
        id.to_owned(),
        legacy(&v.given),
        v.middle_initial().map(|m| legacy(&m)).unwrap_or_default(),
        legacy(&v.family),
        v.suffix.map(legacy).unwrap_or_default(),
        v.email.clone().unwrap_or_default(),
        v.home.map_or_else(String::new, |p| phone_as(rng, &p, 3, noise)),
        v.work.map_or_else(String::new, |p| phone_as(rng, &p, 3, noise)),
        a.map_or_else(String::new, |a| legacy(&line1(a, false))),
        a.and_then(|a| unit(a, false)).map(|u| legacy(&u)).unwrap_or_default(),
        a.map_or_else(String::new, |a| legacy(a.city.name)),
        a.map_or_else(String::new, |a| a.city.state.to_owned()),
        zip_text,
        country.to_owned(),
        dob,
        (*one(rng, words::LOAN_TYPES)).to_owned(),
        moment(rng, 10, 8 * 365).format("%Y-%m-%d").to_string(),
        format!("{}.{:02}", rng.random_range(0..60_000), rng.random_range(0..100)),
    ]
}

// ------------------------------------------------------------------- loyalty

pub const LOYALTY_HEADERS: [&str; 6] = ["member_id", "Member Name", "email", "tier", "points", "joined"];

/// "Matt J Groves Jr." or "Matt Groves, Jr.": a first-last name, with a
/// comma only before a suffix.
fn first_last(rng: &mut Rand, v: &View, middle_dot: bool) -> String {
    let mut name = v.given.clone();
    if let Some(m) = v.middle_initial() {
        name.push(' ');
        name.push_str(&m);
        if middle_dot {
            name.push('.');
        }
    }
    name.push(' ');
    name.push_str(&v.family);
    if let Some(s) = v.suffix {
        name.push_str(if chance(rng, 0.3) { ", " } else { " " });
        name.push_str(&suffix_text(rng, s));
    }
    name
}

pub fn loyalty(rng: &mut Rand, v: &View, id: &str, noise: f64) -> Vec<String> {
    let name = first_last(rng, v, false);
    let name = typed(rng, &name, noise);
    vec![
        id.to_owned(),
        name,
        v.email.clone().unwrap_or_default(),
        (*one(rng, words::TIERS)).to_owned(),
        rng.random_range(0..80_000).to_string(),
        moment(rng, 10, 9 * 365).format("%Y-%m-%d").to_string(),
    ]
}

// -------------------------------------------------------------- warranty_api

#[derive(Serialize)]
struct Warranty<'a> {
    data: WData<'a>,
    meta: WMeta,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WData<'a> {
    customer_id: &'a str,
    person: WPerson,
    emails: Vec<WEmail>,
    phones: Vec<WPhone>,
    addresses: Vec<WAddress<'a>>,
    vehicles: Vec<WVehicle<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WPerson {
    full_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    birth_date: Option<String>,
}

#[derive(Serialize)]
struct WEmail {
    address: String,
    primary: bool,
    verified: bool,
}

#[derive(Serialize)]
struct WPhone {
    number: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WAddress<'a> {
    lines: Vec<String>,
    locality: &'a str,
    region: &'a str,
    postal_code: String,
    country_code: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WVehicle<'a> {
    vin: &'a str,
    model: &'a str,
    model_year: u16,
    warranty_end: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WMeta {
    request_id: String,
    fetched_at: String,
    api_version: &'static str,
}

pub fn warranty(rng: &mut Rand, v: &View, id: &str, noise: f64) -> serde_json::Result<Vec<u8>> {
    let mut emails = Vec::with_capacity(2);
    for (i, e) in [&v.email, &v.other_email].into_iter().flatten().enumerate() {
        emails.push(WEmail {
            address: e.clone(),
            primary: i == 0,
            verified: chance(rng, 0.7),
        });
    }
    let phones = phones(rng, v, 4, noise)
        .into_iter()
        .map(|(kind, number)| WPhone {
            number,
            kind: match kind {
                "mobile" => "MOBILE",
                "home" => "HOME",
                _ => "WORK",
            },
        })
        .collect();
    let addresses = v
        .address
        .iter()
        .map(|a| WAddress {
            lines: std::iter::once(line1(a, chance(rng, 0.3)))
                .chain(unit(a, chance(rng, 0.3)))
                .collect(),
            locality: a.city.name,
            region: if chance(rng, 0.1) {
                words::state_name(a.city.state)
            } else {
                a.city.state
            },
            postal_code: zip(a, chance(rng, 0.25)),
            country_code: "US",
        })
        .collect();
    let record = Warranty {
        data: WData {
            customer_id: id,
            person: WPerson {
                full_name: first_last(rng, v, true),
                birth_date: v.dob.map(|d| {
                    if chance(rng, 0.7) {
                        format!("{}T00:00:00+00:00", d.format("%Y-%m-%d"))
                    } else {
                        d.format("%Y-%m-%d").to_string()
                    }
                }),
            },
            emails,
            phones,
            addresses,
            vehicles: v
                .person
                .vehicles
                .iter()
                .map(|x| WVehicle {
                    vin: &x.vin,
                    model: x.model,
                    model_year: x.year,
                    warranty_end: format!("{}-{:02}-01", x.year + 4, rng.random_range(1..=12)),
                })
                .collect(),
        },
        meta: WMeta {
            request_id: format!("req-{:012x}", rng.random::<u64>() >> 16),
            fetched_at: iso(moment(rng, 0, 30)),
            api_version: "2.3",
        },
    };
    json_line(&record)
}

// ------------------------------------------------------------------ shop_cdc

/// A row of the web shop's `customers` table.
#[derive(Debug, Clone, Serialize)]
pub struct ShopRow {
    pub id: u64,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub street: Option<String>,
    pub city: Option<&'static str>,
    pub state: Option<&'static str>,
    pub zip: Option<String>,
    /// Days since 1970-01-01 (`io.debezium.time.Date`).
    pub birth_date: Option<i64>,
    /// Milliseconds since the epoch (`io.debezium.time.Timestamp`).
    pub created_at: i64,
    pub updated_at: i64,
}

/// The row the shop holds for this view; its id and times are set when
/// the row is written.
pub fn shop_row(rng: &mut Rand, v: &View, noise: f64) -> ShopRow {
    let street = v.address.as_ref().map(|a| match unit(a, false) {
        Some(u) if chance(rng, 0.7) => format!("{} {u}", line1(a, false)),
        _ => line1(a, false),
    });
    ShopRow {
        id: 0,
        first_name: Some(typed(rng, &v.given, noise)),
        last_name: Some(typed(rng, &v.family, noise)),
        email: v.email.clone(),
        phone: v.mobile.or(v.home).map(|p| phone_as(rng, &p, 5, noise)),
        street,
        city: v.address.as_ref().map(|a| a.city.name),
        state: v.address.as_ref().map(|a| a.city.state),
        zip: v.address.as_ref().map(|a| zip(a, false)),
        birth_date: v.dob.map(epoch_days),
        created_at: 0,
        updated_at: 0,
    }
}

/// `before` as the customer later changed it towards `current` (their
/// data as it is now): a move, a new e-mail or phone, a corrected or
/// changed name, a birth date filled in; one of the changes, or all.
pub fn shop_update(rng: &mut Rand, before: &ShopRow, current: &ShopRow) -> ShopRow {
    let mut after = before.clone();
    let differs = [
        before.first_name != current.first_name || before.last_name != current.last_name,
        before.email != current.email && current.email.is_some(),
        before.phone != current.phone && current.phone.is_some(),
        before.street != current.street && current.street.is_some(),
        before.birth_date.is_none() && current.birth_date.is_some(),
    ];
    let candidates: Vec<usize> = (0..differs.len()).filter(|&i| differs[i]).collect();
    if candidates.is_empty() {
        return after;
    }
    let all = chance(rng, 0.3);
    let chosen = candidates[rng.random_range(0..candidates.len())];
    for group in candidates {
        if !all && group != chosen {
            continue;
        }
        match group {
            0 => {
                after.first_name.clone_from(&current.first_name);
                after.last_name.clone_from(&current.last_name);
            }
            1 => after.email.clone_from(&current.email),
            2 => after.phone.clone_from(&current.phone),
            3 => {
                after.street.clone_from(&current.street);
                after.city = current.city;
                after.state = current.state;
                after.zip.clone_from(&current.zip);
            }
            _ => after.birth_date = current.birth_date,
        }
    }
    after
}

/// The Kafka Connect JSON schema of the Debezium envelope of the shop's
/// `customers` table, written before each payload as the JSON converter
/// does with schemas enabled.
pub fn shop_schema() -> String {
    let row = |name: &str| {
        format!(
            r#"{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"id"}},{{"type":"string","optional":true,"field":"first_name"}},{{"type":"string","optional":true,"field":"last_name"}},{{"type":"string","optional":true,"field":"email"}},{{"type":"string","optional":true,"field":"phone"}},{{"type":"string","optional":true,"field":"street"}},{{"type":"string","optional":true,"field":"city"}},{{"type":"string","optional":true,"field":"state"}},{{"type":"string","optional":true,"field":"zip"}},{{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"birth_date"}},{{"type":"int64","optional":false,"name":"io.debezium.time.Timestamp","version":1,"field":"created_at"}},{{"type":"int64","optional":false,"name":"io.debezium.time.Timestamp","version":1,"field":"updated_at"}}],"optional":true,"name":"shop.shop.customers.Value","field":"{name}"}}"#
        )
    };
    let source = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"string","optional":true,"field":"table"},{"type":"int64","optional":false,"field":"server_id"},{"type":"string","optional":true,"field":"gtid"},{"type":"string","optional":false,"field":"file"},{"type":"int64","optional":false,"field":"pos"},{"type":"int32","optional":false,"field":"row"},{"type":"int64","optional":true,"field":"thread"},{"type":"string","optional":true,"field":"query"}],"optional":false,"name":"io.debezium.connector.mysql.Source","field":"source"}"#;
    format!(
        r#"{{"type":"struct","fields":[{},{},{source},{{"type":"string","optional":false,"field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}}],"optional":false,"name":"shop.shop.customers.Envelope","version":1}}"#,
        row("before"),
        row("after")
    )
}
