//! The golden attributes, the survivorship rules and the versioned rule set
//! that orders them per attribute, with its parsing from configuration.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Each golden attribute is survived as a unit: the name's parts come from one record, an address's parts from one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoldenAttribute {
    Name,
    Email,
    Phone,
    Address,
    DateOfBirth,
}

impl GoldenAttribute {
    /// Every attribute, in the order a golden record lists them.
    pub const ALL: [GoldenAttribute; 5] = [
        GoldenAttribute::Name,
        GoldenAttribute::Email,
        GoldenAttribute::Phone,
        GoldenAttribute::Address,
        GoldenAttribute::DateOfBirth,
    ];

    /// The name used in configuration and in serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Address => "address",
            Self::DateOfBirth => "date_of_birth",
        }
    }

    /// The attribute with this configuration name, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for GoldenAttribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A survivorship rule: one way of preferring one candidate value over
/// another. See the module documentation for what each one compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    TrustRank,
    MostRecent,
    MostFrequent,
    MostComplete,
}

impl Rule {
    /// Every rule, for listing the expected names in errors.
    pub const ALL: [Rule; 4] = [
        Rule::TrustRank,
        Rule::MostRecent,
        Rule::MostFrequent,
        Rule::MostComplete,
    ];

    /// The name used in configuration and in serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrustRank => "trust_rank",
            Self::MostRecent => "most_recent",
            Self::MostFrequent => "most_frequent",
            Self::MostComplete => "most_complete",
        }
    }

    /// The rule with this configuration name, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A versioned rule set: per attribute an ordered list of rules; the first rule that separates the best candidate from the others decides, later ones break its ties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    pub version: String,
    pub rules: BTreeMap<GoldenAttribute, Vec<Rule>>,
}

/// The version of the built-in rule set.
const DEFAULT_VERSION: &str = "default-1";

/// The built-in rule list of an attribute.
///
/// A name is a claim about identity, so the most trusted source speaks for
/// it, and a fuller name beats a shorter one from an equally trusted source.
/// Contact points (e-mail, phone, address) move, so the latest one wins and
/// trust only separates equally recent ones; among addresses seen at the same
/// time a fuller one is preferred. A date of birth does not change, so a
/// value that several records agree on beats a single typo, whatever its age.
fn default_rules(attribute: GoldenAttribute) -> &'static [Rule] {
    match attribute {
        GoldenAttribute::Name => &[Rule::TrustRank, Rule::MostComplete, Rule::MostRecent],
        GoldenAttribute::Email | GoldenAttribute::Phone => &[Rule::MostRecent, Rule::TrustRank],
        GoldenAttribute::Address => &[Rule::MostRecent, Rule::MostComplete, Rule::TrustRank],
        GoldenAttribute::DateOfBirth => &[Rule::MostFrequent, Rule::TrustRank],
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            version: DEFAULT_VERSION.to_owned(),
            rules: GoldenAttribute::ALL
                .into_iter()
                .map(|attribute| (attribute, default_rules(attribute).to_vec()))
                .collect(),
        }
    }
}

/// Why the `[survivorship]` table of the sources config was refused. Keys
/// and attribute names are quoted (they are the configuration's structure);
/// values are not: an unknown rule is named by its place in the list, since
/// configuration values may hold secrets or personal data pasted by mistake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleSetError {
    #[error("the survivorship configuration must be a table with `version` and `rules`")]
    NotATable,
    #[error("unknown key `{0}` in the survivorship table (expected `version` and `rules`)")]
    UnknownKey(String),
    #[error("survivorship `version` is missing, empty or not text; golden records name the rule set that built them")]
    EmptyVersion,
    #[error("survivorship `rules` must be a table of attribute to list of rules")]
    RulesNotATable,
    #[error("unknown attribute `{0}` in survivorship rules (expected name, email, phone, address or date_of_birth)")]
    UnknownAttribute(String),
    #[error("the survivorship rules of `{0}` must be a list of rule names")]
    NotAList(GoldenAttribute),
    #[error(
        "entry {entry} of the survivorship rules of `{attribute}` is not a rule name \
         (expected trust_rank, most_recent, most_frequent or most_complete)"
    )]
    UnknownRule {
        attribute: GoldenAttribute,
        /// The entry's place in the list, from 1.
        entry: usize,
    },
    #[error("the survivorship rules of `{0}` are an empty list; leave the attribute out to use the default rules")]
    EmptyRuleList(GoldenAttribute),
    #[error("rule `{rule}` appears more than once in the survivorship rules of `{attribute}`")]
    RepeatedRule { attribute: GoldenAttribute, rule: Rule },
}

impl RuleSet {
    /// Parses the `[survivorship]` table of the sources config file, which
    /// the caller has converted to JSON, e.g.
    /// `{"version": "2026-11-a", "rules": {"name": ["trust_rank", "most_complete"]}}`.
    ///
    /// Attributes not listed keep their default rules, so a configuration
    /// only has to say what it changes. The version is required because each
    /// golden record carries it: a steward looking at a value must be able to
    /// tell which rules chose it. Unknown keys are refused, as in the source
    /// definitions, because a misspelt key would otherwise silently leave the
    /// defaults in force.
    pub fn from_json(value: &Value) -> Result<RuleSet, RuleSetError> {
        let table = value.as_object().ok_or(RuleSetError::NotATable)?;
        if let Some(key) = table.keys().find(|key| !matches!(key.as_str(), "version" | "rules")) {
            return Err(RuleSetError::UnknownKey(key.clone()));
        }
        let version = table
            .get("version")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|version| !version.is_empty())
            .ok_or(RuleSetError::EmptyVersion)?;
        let mut rules = RuleSet::default().rules;
        if let Some(listed) = table.get("rules") {
            let listed = listed.as_object().ok_or(RuleSetError::RulesNotATable)?;
            for (name, list) in listed {
                let attribute =
                    GoldenAttribute::parse(name).ok_or_else(|| RuleSetError::UnknownAttribute(name.clone()))?;
                rules.insert(attribute, parse_rule_list(attribute, list)?);
            }
        }
        Ok(RuleSet {
            version: version.to_owned(),
            rules,
        })
    }

    /// The ordered rules of `attribute`. An attribute missing from a rule
    /// set built by hand gets its default rules, as it would from
    /// [`RuleSet::from_json`].
    pub fn rules_for(&self, attribute: GoldenAttribute) -> &[Rule] {
        self.rules
            .get(&attribute)
            .map_or_else(|| default_rules(attribute), Vec::as_slice)
    }
}

/// One attribute's list of rule names. A repeated rule is refused rather
/// than ignored because it can never decide anything the first time did not,
/// so it is a sign that the author meant another rule.
fn parse_rule_list(attribute: GoldenAttribute, list: &Value) -> Result<Vec<Rule>, RuleSetError> {
    let entries = list.as_array().ok_or(RuleSetError::NotAList(attribute))?;
    if entries.is_empty() {
        return Err(RuleSetError::EmptyRuleList(attribute));
    }
    let mut rules = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let rule = entry.as_str().and_then(Rule::parse).ok_or(RuleSetError::UnknownRule {
            attribute,
            entry: index + 1,
        })?;
        if rules.contains(&rule) {
            return Err(RuleSetError::RepeatedRule { attribute, rule });
        }
        rules.push(rule);
    }
    Ok(rules)
}
