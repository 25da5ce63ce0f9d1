//! Fellegi-Sunter scoring: m/u probabilities per comparison level, the match
//! weight of a pair with its explanation, and the three-band decision.
//!
//! A level's weight is `log2(m / u)`: how many bits of evidence for "same
//! person" it gives. A pair's total is the prior's log-odds plus the sum of
//! its levels' weights, except that evidence a household shares (address,
//! home phone, family email, family name) is correlated: its positive part
//! can lift the prior at most to `household_cap` bits (0: even odds), so only what tells people
//! apart (given name, date of birth, suffix, identifiers) can carry a pair
//! over the link threshold.

use serde::{Deserialize, Serialize};

use super::compare::{Attribute, ComparisonVector};

/// m and u of one level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelParams {
    pub level: String,
    /// P(level | same person).
    pub m: f64,
    /// P(level | different people).
    pub u: f64,
}

/// The parameters of one attribute's comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonParams {
    pub attribute: Attribute,
    pub levels: Vec<LevelParams>,
}

/// m/u parameters for every comparison and the prior probability that a
/// candidate pair (one found by blocking) is a match. Written by `mdm train`,
/// or the defaults below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchParameters {
    /// Identifies these parameters in every decision they produced.
    pub version: String,
    /// P(match) for a candidate pair.
    pub prior: f64,
    pub comparisons: Vec<ComparisonParams>,
}

/// The bands, in total bits (prior included).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// At or above: link automatically.
    pub link: f64,
    /// At or above (and below `link`): a steward reviews.
    pub review: f64,
    /// A record links to a customer, and two customers merge, only if no
    /// pair of their records scores below this: a record that strongly
    /// contradicts one member is not linked through another (no chains
    /// through a single similar record). Such a case goes to review.
    #[serde(default = "default_contradiction")]
    pub contradiction: f64,
}

fn default_contradiction() -> f64 {
    -12.0
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            link: 3.0,
            review: 0.0,
            contradiction: default_contradiction(),
        }
    }
}

/// The decision rules that are configuration rather than estimates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRules {
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The attributes one household shares, whose positive evidence is
    /// capped together.
    #[serde(default = "default_household_attributes")]
    pub household_attributes: Vec<Attribute>,
    /// The highest total the household attributes can lift the prior to
    /// on their own, in bits (0: even odds). Their positive weights add at
    /// most `household_cap - prior` together, so a household's shared
    /// address, phone, email and family name never make a link without
    /// evidence about the person (given name, birth date, identifiers).
    #[serde(default = "default_household_cap")]
    pub household_cap: f64,
    /// Levels that tell two people apart whatever the rest says: a pair at
    /// one of them is never linked automatically (review at most). Written
    /// `attribute:level`. Fellegi-Sunter cannot see these on its own: a Jr
    /// against a Sr is as rare among strangers as among duplicates, but
    /// between two records of one name at one address it means two people.
    #[serde(default = "default_vetoes")]
    pub vetoes: Vec<Veto>,
}

/// A comparison level that bars automatic linking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Veto {
    pub attribute: Attribute,
    pub level: u8,
}

impl TryFrom<String> for Veto {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let (a, l) = text
            .split_once(':')
            .ok_or_else(|| "expected attribute:level".to_owned())?;
        let attribute = Attribute::ALL
            .into_iter()
            .find(|x| x.name() == a)
            .ok_or_else(|| "the attribute is not a compared one".to_owned())?;
        let level = attribute
            .levels()
            .iter()
            .position(|x| *x == l)
            .ok_or_else(|| format!("the level is not one of `{}`", attribute.name()))?;
        Ok(Veto {
            attribute,
            level: u8::try_from(level).map_err(|_| "too many levels".to_owned())?,
        })
    }
}

impl From<Veto> for String {
    fn from(v: Veto) -> String {
        format!("{}:{}", v.attribute.name(), v.attribute.levels()[usize::from(v.level)])
    }
}

fn default_vetoes() -> Vec<Veto> {
    [
        "suffix:different",
        "suffix:one_missing",
        "given_name:different",
        "date_of_birth:different",
    ]
    .into_iter()
    .filter_map(|s| Veto::try_from(s.to_owned()).ok())
    .collect()
}

fn default_household_attributes() -> Vec<Attribute> {
    vec![
        Attribute::FamilyName,
        Attribute::Street,
        Attribute::City,
        Attribute::Postcode,
        Attribute::Phone,
        Attribute::Email,
    ]
}

fn default_household_cap() -> f64 {
    0.0
}

impl Default for DecisionRules {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            household_attributes: default_household_attributes(),
            household_cap: default_household_cap(),
            vetoes: default_vetoes(),
        }
    }
}

/// The band a pair falls into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    New,
    Review,
    Link,
}

/// One comparison's contribution to a score. No values: explanations are
/// stored in decision events, which must hold no personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonOutcome {
    pub attribute: Attribute,
    /// `None` when either record lacks the attribute.
    pub level: Option<String>,
    pub weight: f64,
}

/// Why a pair scored what it scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub parameters: String,
    /// Log-odds of the prior, in bits.
    pub prior: f64,
    pub comparisons: Vec<ComparisonOutcome>,
    /// Positive household evidence before the cap.
    pub household_evidence: f64,
    /// Bits removed by the cap (0 when under it).
    pub household_capped: f64,
    /// The veto that kept the pair from linking (`attribute:level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto: Option<String>,
    /// Term-frequency adjustment of exact name agreements: agreeing on a
    /// common name is weaker evidence than agreeing on a rare one.
    #[serde(default)]
    pub term_frequency: f64,
    pub total: f64,
    pub band: Band,
    pub link_threshold: f64,
    pub review_threshold: f64,
}

/// Parameters and rules ready to score pairs: weights precomputed per level.
#[derive(Clone, Debug)]
pub struct Scorer {
    parameters: MatchParameters,
    rules: DecisionRules,
    prior_bits: f64,
    /// weights[attribute index][level index]
    weights: Vec<Vec<f64>>,
    household: [bool; 10],
}

/// Errors in a parameters file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParametersError {
    #[error("comparison `{0}` is missing")]
    MissingComparison(&'static str),
    #[error("comparison `{attribute}` lists levels {found:?}, expected {expected:?}")]
    Levels {
        attribute: &'static str,
        found: Vec<String>,
        expected: Vec<&'static str>,
    },
    #[error("comparison `{attribute}` level `{level}`: m and u must be in (0, 1]")]
    Probability { attribute: &'static str, level: String },
    #[error("prior must be in (0, 1)")]
    Prior,
}

impl Scorer {
    pub fn new(parameters: MatchParameters, rules: DecisionRules) -> Result<Self, ParametersError> {
        if !(parameters.prior > 0.0 && parameters.prior < 1.0) {
            return Err(ParametersError::Prior);
        }
        let mut weights = Vec::with_capacity(Attribute::ALL.len());
        for attribute in Attribute::ALL {
            let params = parameters
                .comparisons
                .iter()
                .find(|c| c.attribute == attribute)
                .ok_or(ParametersError::MissingComparison(attribute.name()))?;
            let expected = attribute.levels();
            if params.levels.len() != expected.len() || params.levels.iter().zip(expected).any(|(l, e)| l.level != *e) {
                return Err(ParametersError::Levels {
                    attribute: attribute.name(),
                    found: params.levels.iter().map(|l| l.level.clone()).collect(),
                    expected: expected.to_vec(),
                });
            }
            let mut row = Vec::with_capacity(expected.len());
            for l in &params.levels {
                if !(l.m > 0.0 && l.m <= 1.0 && l.u > 0.0 && l.u <= 1.0) {
                    return Err(ParametersError::Probability {
                        attribute: attribute.name(),
                        level: l.level.clone(),
                    });
                }
                row.push((l.m / l.u).log2());
            }
            weights.push(row);
        }
        let mut household = [false; 10];
        for a in &rules.household_attributes {
            household[*a as usize] = true;
        }
        let prior_bits = (parameters.prior / (1.0 - parameters.prior)).log2();
        Ok(Self {
            parameters,
            rules,
            prior_bits,
            weights,
            household,
        })
    }

    pub fn parameters(&self) -> &MatchParameters {
        &self.parameters
    }

    pub fn rules(&self) -> &DecisionRules {
        &self.rules
    }

    /// The weight of one attribute's level.
    pub fn weight(&self, attribute: Attribute, level: u8) -> f64 {
        self.weights[attribute as usize][usize::from(level)]
    }

    /// The total bits of a comparison vector (the hot path: no allocation).
    pub fn total(&self, v: &ComparisonVector) -> f64 {
        let mut total = self.prior_bits;
        let mut household_positive = 0.0;
        for (i, level) in v.iter().enumerate() {
            if let Some(level) = level {
                let w = self.weights[i][usize::from(*level)];
                if self.household[i] && w > 0.0 {
                    household_positive += w;
                } else {
                    total += w;
                }
            }
        }
        total + household_positive.min(self.household_room())
    }

    /// The veto a comparison vector hits, if any. An exact match on an
    /// identifier (a national id, a customer number: personal, never shared
    /// by a household) lifts vetoes.
    pub fn veto(&self, v: &ComparisonVector) -> Option<&Veto> {
        if v[Attribute::Identifier as usize] == Some(0) {
            return None;
        }
        self.rules
            .vetoes
            .iter()
            .find(|x| v[x.attribute as usize] == Some(x.level))
    }

    /// How many bits the household attributes may add together.
    fn household_room(&self) -> f64 {
        (self.rules.household_cap - self.prior_bits).max(0.0)
    }

    /// The band of a pair: its total's band, at most review when vetoed.
    pub fn pair_band(&self, v: &ComparisonVector, total: f64) -> Band {
        let band = self.band(total);
        if band == Band::Link && self.veto(v).is_some() {
            Band::Review
        } else {
            band
        }
    }

    pub fn band(&self, total: f64) -> Band {
        if total >= self.rules.thresholds.link {
            Band::Link
        } else if total >= self.rules.thresholds.review {
            Band::Review
        } else {
            Band::New
        }
    }

    /// The adjustment for an exact agreement on a value held by this share
    /// of records, as Splink computes it: `log2(u_exact / share)`, bounded.
    /// Family names only weaken (a rare family name is shared by a whole
    /// household, so it must not add to the capped household evidence).
    pub fn term_frequency(&self, attribute: Attribute, share: f64) -> f64 {
        let u = self
            .parameters
            .comparisons
            .get(attribute as usize)
            .and_then(|c| c.levels.first())
            .map_or(1.0, |l| l.u);
        if share <= 0.0 {
            return 0.0;
        }
        let adj = (u / share).log2();
        match attribute {
            Attribute::FamilyName => adj.clamp(-6.0, 0.0),
            _ => adj.clamp(-6.0, 3.0),
        }
    }

    /// The full explanation of a comparison vector.
    pub fn explain(&self, v: &ComparisonVector) -> Explanation {
        self.explain_adjusted(v, 0.0)
    }

    /// The explanation with a term-frequency adjustment added.
    pub fn explain_adjusted(&self, v: &ComparisonVector, term_frequency: f64) -> Explanation {
        let mut comparisons = Vec::with_capacity(v.len());
        let mut household_positive = 0.0;
        for (i, level) in v.iter().enumerate() {
            let attribute = Attribute::ALL[i];
            let weight = level.map_or(0.0, |l| self.weights[i][usize::from(l)]);
            if self.household[i] && weight > 0.0 {
                household_positive += weight;
            }
            comparisons.push(ComparisonOutcome {
                attribute,
                level: level.map(|l| attribute.levels()[usize::from(l)].to_owned()),
                weight: round(weight),
            });
        }
        let total = self.total(v) + term_frequency;
        Explanation {
            parameters: self.parameters.version.clone(),
            prior: round(self.prior_bits),
            comparisons,
            household_evidence: round(household_positive),
            household_capped: round((household_positive - self.household_room()).max(0.0)),
            term_frequency: round(term_frequency),
            veto: self.veto(v).cloned().map(String::from),
            total: round(total),
            band: self.pair_band(v, total),
            link_threshold: self.rules.thresholds.link,
            review_threshold: self.rules.thresholds.review,
        }
    }
}

/// Four decimals are plenty for an explanation and keep events stable.
fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl MatchParameters {
    /// Configured starting values: what an analyst would guess before any
    /// data, and where EM starts from. m falls and u rises level by level.
    pub fn defaults() -> Self {
        let comparisons = Attribute::ALL
            .iter()
            .map(|&attribute| {
                let levels = attribute.levels();
                let (m, u): (&[f64], &[f64]) = match attribute {
                    Attribute::GivenName => (
                        &[0.85, 0.03, 0.04, 0.02, 0.02, 0.01, 0.01, 0.02],
                        &[0.005, 0.001, 0.002, 0.003, 0.02, 0.01, 0.0001, 0.9589],
                    ),
                    Attribute::FamilyName => (&[0.88, 0.05, 0.02, 0.02, 0.03], &[0.003, 0.002, 0.003, 0.02, 0.972]),
                    Attribute::DateOfBirth => (&[0.88, 0.06, 0.01, 0.03, 0.02], &[0.0001, 0.002, 0.0001, 0.02, 0.9778]),
                    Attribute::Suffix => (&[0.7, 0.295, 0.005], &[0.4, 0.3, 0.3]),
                    Attribute::Email => (&[0.85, 0.15], &[0.0005, 0.9995]),
                    Attribute::Phone => (&[0.8, 0.05, 0.15], &[0.001, 0.002, 0.997]),
                    Attribute::Street => (&[0.85, 0.08, 0.07], &[0.001, 0.004, 0.995]),
                    Attribute::City => (&[0.9, 0.04, 0.06], &[0.02, 0.01, 0.97]),
                    Attribute::Postcode => (&[0.9, 0.05, 0.05], &[0.01, 0.01, 0.98]),
                    Attribute::Identifier => (&[0.9, 0.05, 0.05], &[0.0001, 0.001, 0.9989]),
                };
                ComparisonParams {
                    attribute,
                    levels: levels
                        .iter()
                        .zip(m.iter().zip(u))
                        .map(|(level, (m, u))| LevelParams {
                            level: (*level).to_owned(),
                            m: *m,
                            u: *u,
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            version: "defaults-1".to_owned(),
            prior: 0.01,
            comparisons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scorer() -> Scorer {
        Scorer::new(MatchParameters::defaults(), DecisionRules::default()).expect("defaults are valid")
    }

    fn vector(levels: &[(Attribute, &str)]) -> ComparisonVector {
        let mut v: ComparisonVector = [None; 10];
        for (a, l) in levels {
            let i = a.levels().iter().position(|x| x == l).expect("level exists");
            v[*a as usize] = Some(u8::try_from(i).expect("few levels"));
        }
        v
    }

    #[test]
    fn defaults_are_consistent_with_the_levels() {
        let s = scorer();
        for a in Attribute::ALL {
            let weights: Vec<f64> = (0..a.levels().len()).map(|l| s.weight(a, l as u8)).collect();
            assert!(weights[0] > 0.0, "{a:?} exact must be evidence for");
            assert!(
                *weights.last().expect("levels") < 0.0,
                "{a:?} different must be evidence against"
            );
        }
    }

    #[test]
    fn household_evidence_is_capped_and_personal_evidence_decides() {
        use Attribute::*;
        let s = scorer();
        let household = [
            (FamilyName, "exact"),
            (Street, "exact"),
            (City, "exact"),
            (Postcode, "exact"),
            (Phone, "exact"),
            (Email, "exact"),
        ];
        // A spouse: everything the household shares, another given name.
        let mut spouse = household.to_vec();
        spouse.push((GivenName, "different"));
        let e = s.explain(&vector(&spouse));
        assert_eq!(e.band, Band::New, "{e:?}");
        assert!(e.household_capped > 0.0);
        // Jr and Sr: same given name, different suffix and birth date.
        let mut junior = household.to_vec();
        junior.extend([(GivenName, "exact"), (Suffix, "different"), (DateOfBirth, "different")]);
        assert_eq!(s.explain(&vector(&junior)).band, Band::New);
        // The same person: the household evidence plus the given name.
        let mut same = household.to_vec();
        same.push((GivenName, "exact"));
        assert_eq!(s.explain(&vector(&same)).band, Band::Link);
        // Loyalty-style record: name and email only.
        let loyalty = vector(&[(GivenName, "exact"), (FamilyName, "exact"), (Email, "exact")]);
        assert_eq!(s.explain(&loyalty).band, Band::Link);
    }

    #[test]
    fn explanation_adds_up() {
        use Attribute::*;
        let s = scorer();
        let v = vector(&[(GivenName, "typo"), (FamilyName, "exact"), (DateOfBirth, "exact")]);
        let e = s.explain(&v);
        let sum: f64 =
            e.prior + e.comparisons.iter().map(|c| c.weight).sum::<f64>() - e.household_capped + e.term_frequency;
        assert!((sum - e.total).abs() < 0.01, "{sum} vs {}", e.total);
        assert_eq!(e.comparisons.iter().filter(|c| c.level.is_none()).count(), 7);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut p = MatchParameters::defaults();
        p.comparisons[0].levels[0].m = 0.0;
        assert!(matches!(
            Scorer::new(p, DecisionRules::default()),
            Err(ParametersError::Probability { .. })
        ));
        let mut p = MatchParameters::defaults();
        p.comparisons.pop();
        assert_eq!(
            Scorer::new(p, DecisionRules::default()).err(),
            Some(ParametersError::MissingComparison("identifier"))
        );
        let mut p = MatchParameters::defaults();
        p.prior = 1.0;
        assert_eq!(
            Scorer::new(p, DecisionRules::default()).err(),
            Some(ParametersError::Prior)
        );
    }
}
