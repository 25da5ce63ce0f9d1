//! Blocking keys: cheap keys that put likely matches together.
//!
//! Records are compared only when they share a key. Each record gets several
//! keys built from different attributes, so a typo in one attribute (or a
//! missing one) still leaves other keys in common. Keys are hashed to `u64`
//! with a fixed hasher, so they are stable across runs and hold no readable
//! personal data in memory dumps of the index.

use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::Datelike;

use super::features::MatchFeatures;
use super::normalize;

/// The kinds of key, for tests and statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Email,
    Phone,
    Identifier,
    FamilySoundexBirthYear,
    GivenRootBirthDate,
    FamilyInitialBirthDate,
    PostcodeGivenSoundex,
    NameSoundexes,
    StreetNumberPostcode,
    /// The birth date alone: too coarse for resolving, used to train the
    /// name comparisons on pairs not chosen by name.
    BirthDate,
}

/// The keys the resolver blocks on.
pub const RESOLVER_KEYS: [KeyKind; 9] = [
    KeyKind::Email,
    KeyKind::Phone,
    KeyKind::Identifier,
    KeyKind::FamilySoundexBirthYear,
    KeyKind::GivenRootBirthDate,
    KeyKind::FamilyInitialBirthDate,
    KeyKind::PostcodeGivenSoundex,
    KeyKind::NameSoundexes,
    KeyKind::StreetNumberPostcode,
];

fn key(kind: KeyKind, parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// Every blocking key of a record the resolver uses (deduplicated, any
/// order).
pub fn keys(f: &MatchFeatures) -> Vec<u64> {
    keys_of(f, &RESOLVER_KEYS)
}

/// The keys of the given kinds.
pub fn keys_of(f: &MatchFeatures, kinds: &[KeyKind]) -> Vec<u64> {
    let mut out = Vec::with_capacity(12);
    let mut push = |kind: KeyKind, parts: &[&str]| {
        if kinds.contains(&kind) {
            out.push(key(kind, parts));
        }
    };
    for e in &f.emails {
        push(KeyKind::Email, &[e]);
    }
    for p in &f.phones {
        push(KeyKind::Phone, &[p]);
    }
    for (name, v) in &f.identifiers {
        push(KeyKind::Identifier, &[name, v]);
    }
    let family_sx = f.family.as_deref().and_then(normalize::soundex);
    let given_roots: Vec<&str> = f.given.as_deref().map(normalize::given_roots).unwrap_or_default();
    let given_sx = f.given.as_deref().and_then(normalize::soundex);
    if let Some(dob) = f.date_of_birth {
        push(KeyKind::BirthDate, &[&dob.format("%Y%m%d").to_string()]);
        let year = dob.year().to_string();
        let date = dob.format("%Y%m%d").to_string();
        if let Some(fs) = &family_sx {
            push(KeyKind::FamilySoundexBirthYear, &[fs, &year]);
        }
        for root in &given_roots {
            push(KeyKind::GivenRootBirthDate, &[root, &date]);
        }
        if let Some(initial) = f.family.as_deref().and_then(|s| s.get(..1)) {
            push(KeyKind::FamilyInitialBirthDate, &[initial, &date]);
        }
    }
    if let Some(fs) = &family_sx {
        for root in &given_roots {
            if let Some(rs) = normalize::soundex(root) {
                push(KeyKind::NameSoundexes, &[&rs, fs]);
            }
        }
    }
    for a in &f.addresses {
        if let (Some(pc), Some(gs)) = (&a.postcode, &given_sx) {
            push(KeyKind::PostcodeGivenSoundex, &[pc, gs]);
        }
        if let (Some(n), Some(pc)) = (&a.number, &a.postcode) {
            push(KeyKind::StreetNumberPostcode, &[n, pc]);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::features::AddressFeatures;

    fn person() -> MatchFeatures {
        MatchFeatures {
            given: Some("robert".into()),
            family: Some("smith".into()),
            date_of_birth: chrono::NaiveDate::from_ymd_opt(1970, 5, 17),
            emails: vec!["bob@example.com".into()],
            addresses: vec![AddressFeatures {
                number: Some("12".into()),
                street: Some("oak st".into()),
                postcode: Some("60610".into()),
                ..AddressFeatures::default()
            }],
            ..MatchFeatures::default()
        }
    }

    fn shared(a: &MatchFeatures, b: &MatchFeatures) -> usize {
        let kb = keys(b);
        keys(a).iter().filter(|k| kb.contains(k)).count()
    }

    #[test]
    fn one_typo_leaves_keys_in_common() {
        let a = person();
        type Change = Box<dyn Fn(&mut MatchFeatures)>;
        let cases: Vec<(&str, Change)> = vec![
            ("family typo", Box::new(|f| f.family = Some("smiht".into()))),
            ("nickname", Box::new(|f| f.given = Some("bob".into()))),
            (
                "dob typo",
                Box::new(|f| f.date_of_birth = chrono::NaiveDate::from_ymd_opt(1970, 5, 18)),
            ),
            ("email changed", Box::new(|f| f.emails = vec!["rs@work.example".into()])),
            ("moved", Box::new(|f| f.addresses.clear())),
            (
                "no dob, no email",
                Box::new(|f| {
                    f.date_of_birth = None;
                    f.emails.clear();
                }),
            ),
        ];
        for (name, change) in cases {
            let mut b = person();
            change(&mut b);
            assert!(shared(&a, &b) > 0, "{name}");
        }
    }

    #[test]
    fn strangers_share_no_key_and_keys_are_stable() {
        let a = person();
        let b = MatchFeatures {
            given: Some("mary".into()),
            family: Some("jones".into()),
            date_of_birth: chrono::NaiveDate::from_ymd_opt(1985, 1, 2),
            emails: vec!["mj@example.org".into()],
            ..MatchFeatures::default()
        };
        assert_eq!(shared(&a, &b), 0);
        assert_eq!(keys(&a), keys(&person()));
        assert!(keys(&MatchFeatures::default()).is_empty());
    }
}
