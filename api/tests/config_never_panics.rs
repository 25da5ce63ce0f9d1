//! Hostile configuration: the configuration file (`Config::from_sources`)
//! and the sources file (`[[sources]]`, `[matching]`, `[survivorship]`),
//! fed arbitrary text and valid files with one value changed. Parsing ends
//! in a value or an error, never a panic; an error names the system and the
//! key at fault; and no error quotes a value, since configuration values
//! may be passwords, keys or personal data pasted by mistake. The last test
//! runs the real binary (`mdm sources check`, `mdm serve --config`) on
//! hostile files: it refuses them with an error, not a panic.
//!
//! Case counts are small so that CI stays fast; `PROPTEST_CASES` raises them.

use std::collections::BTreeMap;
use std::process::Command;

use mdm_api::config::Config;
use mdm_api::sources::{parse_matching, parse_sources, parse_survivorship};
use proptest::prelude::*;

/// A value standing for a secret: no error may contain it.
const MARKER: &str = "Zq9xW7secret";
/// A number standing for a secret.
const MARKER_NUMBER: &str = "7315926";

const SOURCES: &str = include_str!("../../config/sources.example.toml");

/// A configuration file that sets every key.
const CONFIG: &str = r#"
data_dir = "/var/lib/mdm"
sources_file = "sources.toml"

[event_store]
url = "postgres://mdm:Pa55word@db.example:5432/mdm"
postgres_schema = "mdm_store"
sqlite_fsync = true

[http]
listen = "0.0.0.0:8080"
max_body_bytes = 1000000
tls_cert = "cert.pem"
tls_key = "key.pem"

[keys]
store_url = "postgres://mdm:Pa55word@keys.example/mdm"
postgres_schema = "mdm_keys"
master_key = "c2VjcmV0LWtleS1vZi10aGlydHktdHdvLWJ5dGVzLg=="

[read_models]
url = "postgres://mdm:Pa55word@db.example:5432/mdm"
postgres_schema = "mdm_read"

[feed]
keep_alive_ms = 15000
poll_ms = 100

[webhooks]
max_attempts = 5
retry_base_ms = 1000
retry_cap_ms = 60000
timeout_ms = 10000
poll_ms = 500
"#;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every parser of configuration text, with each error's message.
fn all_errors(text: &str) -> Vec<String> {
    let env = BTreeMap::new();
    let mut errors = Vec::new();
    if let Err(e) = Config::from_sources(Some(text), &env) {
        errors.push(e.to_string());
    }
    if let Err(e) = parse_sources(text) {
        errors.push(e.to_string());
    }
    if let Err(e) = parse_matching(text) {
        errors.push(e.to_string());
    }
    if let Err(e) = parse_survivorship(text) {
        errors.push(e.to_string());
    }
    errors
}

fn assert_no_secret(errors: &[String], text: &str) -> Result<(), TestCaseError> {
    for message in errors {
        prop_assert!(
            !message.contains(MARKER) && !message.contains(MARKER_NUMBER),
            "an error quotes a value: {}\nfor:\n{}",
            message,
            text
        );
        prop_assert!(!message.contains("Pa55word"), "{}", message);
    }
    Ok(())
}

/// Where the literals of a TOML text are: strings, numbers and booleans
/// (byte ranges), with the key they are the value of (or an element of).
fn literals(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut key = String::new();
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                    if quote == b'"' && bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                // A quoted key ('"E.Mail"' is a value; `"a b" = 1` a key).
                let rest = text.get(i..).unwrap_or_default().trim_start_matches([' ', '\t']);
                if !rest.starts_with('=') {
                    found.push((start..i.min(bytes.len()), key.clone()));
                }
                continue;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-' | b'.')) {
                    i += 1;
                }
                let word = &text[start..i];
                let rest = text[i..].trim_start_matches([' ', '\t']);
                if rest.starts_with('=') {
                    key = word.to_owned();
                } else if word.bytes().all(|b| b.is_ascii_digit()) || word == "true" || word == "false" {
                    found.push((start..i, key.clone()));
                }
                continue;
            }
            b'\n' => key.clear(),
            _ => {}
        }
        i += 1;
    }
    found
}

/// The system a byte offset of a sources file belongs to.
fn system_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset];
    let table = before.rfind("[[sources]]")?;
    let line = text[table..].lines().find(|l| l.trim_start().starts_with("system"))?;
    Some(line.split('"').nth(1)?.to_owned())
}

/// Replacements of another type than the value they replace, each holding
/// the marker.
fn replacement() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        MARKER_NUMBER.to_owned(),
        format!("-{MARKER_NUMBER}.5"),
        "true".to_owned(),
        format!("[\"{MARKER}\", {MARKER_NUMBER}]"),
        format!("{{ {MARKER} = \"{MARKER}\" }}"),
        format!("\"{MARKER}\""),
        format!("\"%{MARKER}\""),
        format!("'{MARKER}\\'"),
        format!("\"\"\"{MARKER}\n{MARKER}\"\"\""),
        "1979-05-27T07:32:00Z".to_owned(),
    ])
}

/// Changes to a whole file: cut it, drop or repeat a line, splice in bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(prop::sample::Index),
    DropLine(prop::sample::Index),
    RepeatLine(prop::sample::Index),
    Insert(prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        any::<prop::sample::Index>().prop_map(Mutation::DropLine),
        any::<prop::sample::Index>().prop_map(Mutation::RepeatLine),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                any::<String>(),
                prop::sample::select(vec![
                    "[", "]", "[[", "{", "}", "=", "\"", "'''", "\n", ",", "\0", "\\u0000", "#"
                ])
                .prop_map(str::to_owned),
                // Keys are the configuration's structure and may be named;
                // values may not.
                Just(format!("\nunknown_key = \"{MARKER}\"\n")),
                Just(format!("\nsecret = {MARKER_NUMBER}\n")),
            ],
        )
            .prop_map(|(at, s)| Mutation::Insert(at, s)),
    ]
}

fn mutate(text: &str, m: &Mutation) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() && matches!(m, Mutation::DropLine(_) | Mutation::RepeatLine(_)) {
        return text.to_owned();
    }
    match m {
        Mutation::Truncate(at) => {
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        }
        Mutation::DropLine(at) => {
            let skip = at.index(lines.len());
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Mutation::RepeatLine(at) => {
            let again = at.index(lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.insert(again, lines[again]);
            out.join("\n")
        }
        Mutation::Insert(at, s) => {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            format!("{}{s}{}", &text[..pos], &text[pos..])
        }
    }
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn arbitrary_text_is_refused_without_panicking(text in prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\"'.,a-z0-9 \n#_-]{0,200}",
    ]) {
        let errors = all_errors(&text);
        assert_no_secret(&errors, &text)?;
    }

    /// One value of the sources file replaced by one of another type: the
    /// file is refused naming the system and the key, never the value.
    #[test]
    fn a_wrong_value_in_the_sources_file_names_system_and_key(at in any::<prop::sample::Index>(), new in replacement()) {
        let found = literals(SOURCES);
        let (range, key) = found[at.index(found.len())].clone();
        // A system's name is how errors name its table: it is quoted.
        prop_assume!(key != "system");
        let text = format!("{}{new}{}", &SOURCES[..range.start], &SOURCES[range.end..]);
        let errors = all_errors(&text);
        assert_no_secret(&errors, &text)?;
        if let Err(e) = parse_sources(&text) {
            let message = e.to_string();
            // A value may be syntactically bad (a TOML error names no
            // table); otherwise the system and key are named.
            let syntax = matches!(e, mdm_api::sources::SourcesError::Syntax(_));
            if !syntax {
                if let Some(system) = system_at(SOURCES, range.start).filter(|_| key != "system") {
                    prop_assert!(message.contains(&system), "{} not named in: {}", system, message);
                }
                if !key.is_empty() && key != "system" {
                    prop_assert!(message.contains(&key) || message.contains("survivorship") || message.contains("matching"),
                        "`{}` not named in: {}", key, message);
                }
            }
        }
    }

    #[test]
    fn a_wrong_value_in_the_config_file_names_the_key(at in any::<prop::sample::Index>(), new in replacement()) {
        let found = literals(CONFIG);
        let (range, key) = found[at.index(found.len())].clone();
        let text = format!("{}{new}{}", &CONFIG[..range.start], &CONFIG[range.end..]);
        let env = BTreeMap::new();
        match Config::from_sources(Some(&text), &env) {
            Ok(config) => {
                // What was accepted never prints a secret.
                let debug = format!("{config:?}");
                prop_assert!(!debug.contains("Pa55word"), "{}", debug);
            }
            Err(e) => {
                let message = e.to_string();
                assert_no_secret(std::slice::from_ref(&message), &text)?;
                prop_assert!(message.contains(&key), "`{}` not named in: {}", key, message);
            }
        }
    }

    #[test]
    fn mutated_files_are_read_or_refused(mutations in prop::collection::vec(mutation(), 1..4), config in any::<bool>()) {
        let mut text = if config { CONFIG.to_owned() } else { SOURCES.to_owned() };
        for m in &mutations {
            text = mutate(&text, m);
        }
        let errors = all_errors(&text);
        assert_no_secret(&errors, &text)?;
    }
}

/// The binary on hostile files: each is refused with an error message and a
/// failing exit status, never a panic (exit status 101), and the message
/// quotes no value.
#[test]
fn the_binary_refuses_hostile_files_without_panicking() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let deep = format!("a = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let deep_tables = format!("a = {}1{}\n", "{ b = ".repeat(50_000), " }".repeat(50_000));
    let long_key = format!("{} = 1\n", "k".repeat(5 << 20));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("not UTF-8", b"[[sources]]\nsystem = \"\xFF\xFE\"\n".to_vec()),
        (
            "NUL bytes",
            format!("[[sources]]\0\nsystem = \"{MARKER}\0\"\n").into_bytes(),
        ),
        ("deep arrays", deep.into_bytes()),
        ("deep inline tables", deep_tables.into_bytes()),
        ("a 5 MB key", long_key.into_bytes()),
        (
            "a secret of the wrong type",
            format!("[[sources]]\nsystem = \"crm\"\ntrust_rank = \"{MARKER}\"\n").into_bytes(),
        ),
        (
            "an unknown format",
            format!("[[sources]]\nsystem = \"crm\"\ntrust_rank = 1\nformat = \"{MARKER}\"\n").into_bytes(),
        ),
        (
            "a secret in a broken string",
            format!("[event_store]\nurl = \"postgres://u:{MARKER}@h/d\n").into_bytes(),
        ),
        (
            "a secret of the wrong type in the config",
            format!("[event_store]\nurl = {MARKER_NUMBER}\n[keys]\nmaster_key = [\"{MARKER}\"]\n").into_bytes(),
        ),
    ];
    for (name, bytes) in &files {
        let path = dir.path().join("hostile.toml");
        std::fs::write(&path, bytes).expect("write");
        for args in [
            vec!["sources".to_owned(), "check".to_owned(), path.display().to_string()],
            vec!["--config".to_owned(), path.display().to_string(), "serve".to_owned()],
        ] {
            let started = std::time::Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
                .args(&args)
                .current_dir(dir.path())
                .env_clear()
                .env("MDM_HTTP_LISTEN", "127.0.0.1:0")
                .env("MDM_LOG", "warn")
                .output()
                .expect("mdm runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name}: `mdm {}` accepted it", args[0]);
            assert_ne!(
                out.status.code(),
                Some(101),
                "{name}: `mdm {}` panicked: {stderr}",
                args[0]
            );
            assert!(
                out.status.code().is_some(),
                "{name}: `mdm {}` died by a signal: {stderr}",
                args[0]
            );
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
            assert!(
                !stderr.contains(MARKER) && !stderr.contains(MARKER_NUMBER),
                "{name}: `mdm {}` quotes a value: {stderr}",
                args[0]
            );
            assert!(!stderr.trim().is_empty(), "{name}: no message");
            eprintln!(
                "{name}: `mdm {}` refused it in {:?}: {}",
                args[0],
                started.elapsed(),
                stderr.lines().last().unwrap_or_default()
            );
        }
    }
}
