//! Loading the source-system definitions from their TOML file.
//!
//! Each `[[sources]]` table is read on its own, so a key the definition does
//! not know, or a value of the wrong type, is reported with the system it
//! belongs to; then the whole set is validated by the domain
//! (`SourceDefinitions::new`), whose errors also name the system and field.

use std::path::PathBuf;

use mdm_domain::matching::features::FeatureSettings;
use mdm_domain::matching::model::DecisionRules;
use mdm_domain::source::{SourceDefinition, SourceDefinitions};
use mdm_domain::survivorship::RuleSet;
use serde::Deserialize;

/// The `[matching]` table of the sources file: how records are matched.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// The m/u parameters file written by `mdm train` (JSON); the built-in
    /// defaults when absent. Relative paths are relative to the sources file.
    pub parameters: Option<PathBuf>,
    /// `[matching.features]`: identifiers and the default phone region.
    #[serde(default)]
    pub features: FeatureSettings,
    /// `[matching.rules]`: thresholds and the household cap.
    #[serde(default)]
    pub rules: DecisionRules,
}

/// Parses the `[matching]` table of a sources file (defaults when absent).
pub fn parse_matching(text: &str) -> Result<MatchingConfig, SourcesError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| SourcesError::Syntax(without_values(e.message())))?;
    match doc.remove("matching") {
        None => Ok(MatchingConfig::default()),
        Some(v) => serde_path_to_error::deserialize(v)
            .map_err(|e| SourcesError::Syntax(format!("[matching]: {}", path_error(&e)))),
    }
}

/// Parses the `[survivorship]` table of a sources file: the versioned rule
/// set of the golden records (the built-in rules when absent).
pub fn parse_survivorship(text: &str) -> Result<RuleSet, SourcesError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| SourcesError::Syntax(without_values(e.message())))?;
    match doc.remove("survivorship") {
        None => Ok(RuleSet::default()),
        Some(v) => {
            let json = serde_json::to_value(v)
                .map_err(|e| SourcesError::Syntax(format!("[survivorship]: {}", without_values(&e.to_string()))))?;
            RuleSet::from_json(&json).map_err(|e| SourcesError::Syntax(format!("[survivorship]: {e}")))
        }
    }
}

/// A deserialization error as "path: problem", the problem without the
/// value at fault (see [`without_values`]).
pub(crate) fn path_error(error: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let problem = without_values(error.inner().message());
    match error.path().to_string().as_str() {
        "." | "" => problem,
        path => format!("`{path}`: {problem}"),
    }
}

/// Serde's messages quote the value at fault ("invalid type: string
/// \"hunter2\", expected u32", "unknown variant `jsn`, expected one of
/// ..."); configuration values may be secrets or personal data, so the
/// value is replaced by its kind ("invalid type: string, expected u32",
/// "unknown variant, expected one of ..."). Field names are kept: they are
/// the configuration's structure, and say where to look.
pub(crate) fn without_values(message: &str) -> String {
    // The value sits between the prefix and the last ", expected " (or the
    // end): whatever a value holds, what follows that is serde's own text.
    let cut = |rest: &str| -> usize {
        rest.rfind(", expected ")
            .or_else(|| rest.rfind(", there are no variants"))
            .unwrap_or(rest.len())
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(at) = message.find(prefix) {
            let (head, rest) = message.split_at(at + prefix.len());
            let end = cut(rest);
            let value = &rest[..end];
            // Serde writes the kind first: `string "..."`, `integer `5``,
            // `floating point `1.5``, `boolean `true``, `character `c``,
            // or a kind alone (`sequence`, `map`, `unit value`).
            let kind = [
                "string",
                "integer",
                "floating point",
                "boolean",
                "character",
                "byte array",
            ]
            .into_iter()
            .find(|kind| value.starts_with(&format!("{kind} ")))
            .unwrap_or(if value.contains(['"', '`']) { "a value" } else { value });
            return format!("{head}{kind}{}", &rest[end..]);
        }
    }
    {
        let prefix = "unknown variant ";
        if let Some(at) = message.find(prefix) {
            let head = message[..at + prefix.len()].trim_end();
            let rest = &message[at + prefix.len()..];
            let end = cut(rest);
            return format!("{head}{}", &rest[end..]);
        }
    }
    message.to_owned()
}

/// Why a sources file was refused. Every message names where to look.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourcesError {
    #[error("sources file: {0}")]
    Syntax(String),
    #[error("sources file: source `{system}`: {reason}")]
    Definition { system: String, reason: String },
    #[error("sources file:\n{0}")]
    Invalid(String),
}

/// Parses and validates a sources file.
pub fn parse_sources(text: &str) -> Result<SourceDefinitions, SourcesError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| SourcesError::Syntax(without_values(e.message())))?;
    if let Some(key) = doc
        .keys()
        .find(|k| !matches!(k.as_str(), "sources" | "matching" | "survivorship"))
    {
        return Err(SourcesError::Syntax(format!(
            "unknown top-level key `{key}`: only [[sources]] tables, [matching] and [survivorship] belong here"
        )));
    }
    let tables = match doc.remove("sources") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => return Err(SourcesError::Syntax("`sources` must be [[sources]] tables".into())),
    };
    let mut definitions = Vec::with_capacity(tables.len());
    for (index, table) in tables.into_iter().enumerate() {
        // Name the source by its system when it has one, else by its place.
        let system = table
            .get("system")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("#{}", index + 1), str::to_owned);
        let definition: SourceDefinition =
            serde_path_to_error::deserialize(table).map_err(|e| SourcesError::Definition {
                system,
                reason: path_error(&e),
            })?;
        definitions.push(definition);
    }
    SourceDefinitions::new(definitions).map_err(|e| SourcesError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_defines_the_seven_systems_of_the_brief() {
        let sources = parse_sources(include_str!("../../config/sources.example.toml")).expect("example is valid");
        let systems: Vec<&str> = sources.iter().map(|s| s.system.as_str()).collect();
        assert_eq!(
            systems,
            [
                "web_signup",
                "dealer_a",
                "dealer_b",
                "finance",
                "loyalty",
                "shop_cdc",
                "warranty_api"
            ]
        );
    }

    #[test]
    fn the_survivorship_table_is_read_and_checked() {
        let rules =
            parse_survivorship("[survivorship]\nversion = \"v2\"\n[survivorship.rules]\nname = [\"most_recent\"]\n")
                .expect("valid");
        assert_eq!(rules.version, "v2");
        assert_eq!(parse_survivorship("").expect("default"), RuleSet::default());
        let e = parse_survivorship("[survivorship]\nversion = \"v2\"\n[survivorship.rules]\nname = [\"loudest\"]\n")
            .expect_err("unknown rule");
        assert!(
            e.to_string().contains("entry 1 of the survivorship rules of `name`"),
            "{e}"
        );
        assert!(!e.to_string().contains("loudest"), "{e}");
        parse_sources("[survivorship]\nversion = \"v2\"\n").expect("allowed beside the sources");
    }

    #[test]
    fn the_example_file_spells_out_the_default_survivorship_rules() {
        let rules = parse_survivorship(include_str!("../../config/sources.example.toml")).expect("valid");
        assert_eq!(rules, RuleSet::default());
    }

    #[test]
    fn an_empty_file_defines_no_sources() {
        assert!(parse_sources("").expect("valid").is_empty());
    }

    /// Each bad file and what its message must name.
    #[test]
    fn bad_definitions_are_refused_naming_the_system_and_the_field() {
        let base = "[[sources]]\nsystem = \"crm\"\ntrust_rank = 1\nformat = \"json\"\nid = \"id\"\n";
        let cases: [(String, &[&str]); 7] = [
            (
                format!("{base}name = {{ given = \"first\" }}\ncolour = \"blue\"\n"),
                &["crm", "colour"],
            ),
            (
                format!("{base}name = {{ given = \"first\" }}\ntrust_rank = 2\n"),
                &["duplicate key"],
            ),
            (format!("{base}name = {{ given = \"a..b\" }}\n"), &["crm", "name.given"]),
            (
                format!("{base}name = {{ given = \"f\" }}\ndate_of_birth = {{ path = \"dob\", formats = [\"%Q\"] }}\n"),
                &["crm", "date_of_birth"],
            ),
            (format!("{base}\n"), &["crm", "name"]),
            (
                format!("{base}name = {{ given = \"f\" }}\n{}name = {{ given = \"f\" }}\n", base),
                &["crm", "system"],
            ),
            ("[[sources]]\ntrust_rank = \"high\"\n".to_owned(), &["#1"]),
        ];
        for (text, wanted) in cases {
            let message = parse_sources(&text).expect_err("refused").to_string();
            for w in wanted {
                assert!(message.contains(w), "`{w}` missing from: {message}\nfor:\n{text}");
            }
        }
    }

    #[test]
    fn a_stray_top_level_key_is_refused() {
        let e = parse_sources("version = 1\n").expect_err("refused");
        assert!(e.to_string().contains("version"));
    }
}
