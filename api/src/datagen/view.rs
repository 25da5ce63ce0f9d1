//! One source's view of a person: what a single record says about them,
//! with the gaps, mistakes and out-of-date values real records have.

use super::model::{Address, Person, PhoneNumber};
use super::pick::{chance, one, Rand};
use super::text::{date_typo, typo};
use super::words;
use chrono::NaiveDate;
use rand::Rng;

/// How a source treats people's data: the chance of each gap or habit, at
/// noise 1. Every chance is multiplied by the run's noise level, so noise 0
/// gives complete, exact, current records.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The person gave a short form of their given name (Bob for Robert).
    pub nickname: f64,
    /// The record holds the middle name (not scaled: a source either asks for it or not).
    pub middle: f64,
    pub dob_missing: f64,
    pub email_missing: f64,
    /// The e-mail given is the work address (not scaled: a choice, not a mistake).
    pub work_email: f64,
    pub mobile_missing: f64,
    pub address_missing: f64,
}

/// Chance of a typing mistake in a name, a street, an e-mail address and a
/// birth date, at noise 1.
const NAME_TYPO: f64 = 0.03;
const STREET_TYPO: f64 = 0.02;
const EMAIL_TYPO: f64 = 0.01;
const DOB_TYPO: f64 = 0.015;
/// Chance that a record is an old one: it holds the former family name,
/// the previous address or the old e-mail, when the person has them.
const HISTORIC: f64 = 0.3;

/// What one record says about a person.
#[derive(Debug, Clone)]
pub struct View<'p> {
    pub person: &'p Person,
    pub given: String,
    pub middle: Option<&'static str>,
    pub family: String,
    pub suffix: Option<&'static str>,
    pub dob: Option<NaiveDate>,
    pub email: Option<String>,
    /// A second address, for sources with two fields (the work address
    /// when the first is personal, or the other way round).
    pub other_email: Option<String>,
    pub mobile: Option<PhoneNumber>,
    pub home: Option<PhoneNumber>,
    pub work: Option<PhoneNumber>,
    pub address: Option<Address>,
}

impl View<'_> {
    /// The first letter of the middle name.
    pub fn middle_initial(&self) -> Option<String> {
        self.middle.and_then(|m| m.chars().next()).map(String::from)
    }
}

/// Draws one record's view of `p`.
pub fn view<'p>(rng: &mut Rand, p: &'p Person, prof: &Profile, noise: f64) -> View<'p> {
    let historic = chance(rng, HISTORIC * noise);
    view_as(rng, p, prof, noise, historic)
}

/// Draws one record's view of `p`, old (former name, previous address and
/// e-mail, where the person has them) or current as `historic` says.
pub fn view_as<'p>(rng: &mut Rand, p: &'p Person, prof: &Profile, noise: f64, historic: bool) -> View<'p> {
    let mut given = p.given.to_owned();
    let nicknames = words::nicknames(p.given);
    if !nicknames.is_empty() && chance(rng, prof.nickname * noise) {
        given = (*one(rng, nicknames)).to_owned();
    }
    if chance(rng, NAME_TYPO * noise) {
        given = typo(rng, &given);
    }
    let middle = p.middle.filter(|_| chance(rng, prof.middle));
    let mut family = match (&p.former_family, historic) {
        (Some(former), true) => former.clone(),
        _ => p.family.clone(),
    };
    if chance(rng, NAME_TYPO * noise) {
        family = typo(rng, &family);
    }
    let suffix = p.suffix.filter(|_| !chance(rng, 0.25 * noise));
    let dob = (!chance(rng, prof.dob_missing * noise)).then(|| {
        if chance(rng, DOB_TYPO * noise) {
            date_typo(rng, p.dob)
        } else {
            p.dob
        }
    });

    let personal = match (&p.old_email, historic) {
        (Some(old), true) => Some(old.clone()),
        _ => p.email.clone().or_else(|| p.old_email.clone()),
    };
    let personal = match &p.shared_email {
        Some(shared) if chance(rng, 0.35) => Some(shared.clone()),
        _ => personal,
    };
    let (mut email, mut other_email) = match &p.work_email {
        Some(work) if personal.is_none() || chance(rng, prof.work_email) => (Some(work.clone()), personal),
        Some(work) => (personal, chance(rng, 0.3).then(|| work.clone())),
        None => (personal, None),
    };
    if chance(rng, prof.email_missing * noise) {
        email = other_email.take();
    }
    if let Some(e) = email.as_mut() {
        if chance(rng, EMAIL_TYPO * noise) {
            if let Some((local, domain)) = e.split_once('@') {
                *e = format!("{}@{domain}", typo(rng, local));
            }
        }
        if chance(rng, 0.04 * noise) {
            *e = e.to_uppercase();
        } else if chance(rng, 0.06 * noise) {
            // First letter capitalised by a phone keyboard.
            let mut chars = e.chars();
            if let Some(first) = chars.next() {
                *e = first.to_uppercase().chain(chars).collect();
            }
        }
    }

    let mobile = p.mobile.filter(|_| !chance(rng, prof.mobile_missing * noise));
    let home = p.home.filter(|_| !chance(rng, 0.15 * noise));
    let work = p.work_phone.filter(|_| chance(rng, 0.6));

    let address = (!chance(rng, prof.address_missing * noise)).then(|| {
        let mut a = match (&p.previous, historic) {
            (Some(previous), true) => previous.clone(),
            _ => p.address.clone(),
        };
        if a.unit.is_some() && chance(rng, 0.15 * noise) {
            a.unit = None;
        }
        if chance(rng, STREET_TYPO * noise) {
            a.street = typo(rng, &a.street);
        }
        if chance(rng, 0.02 * noise) {
            // House numbers get two digits swapped too.
            let digits: Vec<char> = a.number.to_string().chars().collect();
            if digits.len() >= 2 {
                let i = rng.random_range(0..digits.len() - 1);
                let mut swapped = digits.clone();
                swapped.swap(i, i + 1);
                if swapped[0] != '0' {
                    a.number = swapped.iter().collect::<String>().parse().unwrap_or(a.number);
                }
            }
        }
        a
    });

    View {
        person: p,
        given,
        middle,
        family,
        suffix,
        dob,
        email,
        other_email,
        mobile,
        home,
        work,
        address,
    }
}
