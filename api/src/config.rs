//! Typed configuration from an optional TOML file and `MDM_*` environment
//! variables (the environment wins), parsed by a pure function.
//!
//! With nothing configured the service runs embedded: SQLite under
//! `./mdm-data`, HTTP on 127.0.0.1:8080.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::http::edge::HttpLimits;
use crate::http::feed::FeedSettings;
use crate::webhooks::WebhookSettings;

/// A value that must never be printed (URLs with passwords, keys).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which event store the service runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStoreConfig {
    /// The embedded default: one SQLite file.
    Sqlite { path: PathBuf, fsync_every_commit: bool },
    /// PostgreSQL; the URL may carry a password.
    Postgres { url: Secret, schema: String },
    /// EventStoreDB/KurrentDB (`esdb://` or `kurrentdb://` connection string).
    KurrentDb { url: Secret },
}

/// Where the per-subject data keys live (never in the event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStoreConfig {
    /// A SQLite file of its own (the embedded default: `<data_dir>/keys.db`).
    Sqlite { path: PathBuf },
    /// A schema of its own in PostgreSQL (the default when the event store
    /// is PostgreSQL: the same database, schema `mdm_keys`).
    Postgres { url: Secret, schema: String },
}

/// Where the master key that wraps every data key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeyConfig {
    /// Given inline (base64 of 32 bytes), e.g. from a secret manager through
    /// `MDM_MASTER_KEY`.
    Inline(Secret),
    /// Read from a file holding the base64 text. `generate`: create the file
    /// with a fresh key if it does not exist (embedded mode only).
    File { path: PathBuf, generate: bool },
}

/// Where the read models (projections) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadModelConfig {
    /// The embedded default: a SQLite file beside the event log.
    Sqlite { path: PathBuf },
    /// PostgreSQL, in a schema of its own.
    Postgres { url: Secret, schema: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    pub store: KeyStoreConfig,
    pub master_key: MasterKeyConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where embedded files live.
    pub data_dir: PathBuf,
    pub event_store: EventStoreConfig,
    pub listen: SocketAddr,
    /// The TOML file declaring the source systems (`[[sources]]` tables);
    /// none means no source system is configured yet.
    pub sources_file: Option<PathBuf>,
    pub keys: KeysConfig,
    pub read_models: ReadModelConfig,
    /// The largest request body the HTTP API accepts, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Keep-alive and polling of `GET /v1/feed`.
    pub feed: FeedSettings,
    /// Retries, timeouts and polling of webhook delivery.
    pub webhooks: WebhookSettings,
    /// HTTPS instead of plain HTTP: a PEM certificate chain and its key.
    pub tls: Option<TlsFiles>,
    /// Timeouts and connection and request limits of the HTTP edge.
    pub http_limits: HttpLimits,
}

/// The PEM files of the service's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config file: {0}")]
    File(String),
    #[error("{key}: {reason}")]
    Value { key: String, reason: String },
}

/// The file's shape. Every field is optional: absent means default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    sources_file: Option<PathBuf>,
    #[serde(default)]
    event_store: FileEventStore,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    keys: FileKeys,
    #[serde(default)]
    read_models: FileReadModels,
    #[serde(default)]
    feed: FileFeed,
    #[serde(default)]
    webhooks: FileWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFeed {
    keep_alive_ms: Option<u64>,
    poll_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhooks {
    max_attempts: Option<u64>,
    retry_base_ms: Option<u64>,
    retry_cap_ms: Option<u64>,
    timeout_ms: Option<u64>,
    poll_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReadModels {
    url: Option<Secret>,
    postgres_schema: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    store_url: Option<Secret>,
    postgres_schema: Option<String>,
    master_key: Option<Secret>,
    master_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEventStore {
    url: Option<Secret>,
    postgres_schema: Option<String>,
    sqlite_fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    max_in_flight: Option<u64>,
}

impl Config {
    /// Builds the configuration from the file's text (if any) and the
    /// environment. Environment variables: `MDM_DATA_DIR`,
    /// `MDM_EVENT_STORE_URL`, `MDM_POSTGRES_SCHEMA`, `MDM_SQLITE_FSYNC`,
    /// `MDM_HTTP_LISTEN`, `MDM_HTTP_MAX_BODY_BYTES`, `MDM_SOURCES_FILE`,
    /// `MDM_KEY_STORE_URL`, `MDM_KEY_STORE_SCHEMA`, `MDM_MASTER_KEY`,
    /// `MDM_MASTER_KEY_FILE`, `MDM_READ_MODEL_URL`, `MDM_READ_MODEL_SCHEMA`,
    /// `MDM_FEED_KEEP_ALIVE_MS`, `MDM_FEED_POLL_MS`,
    /// `MDM_WEBHOOK_MAX_ATTEMPTS`, `MDM_WEBHOOK_RETRY_BASE_MS`,
    /// `MDM_WEBHOOK_RETRY_CAP_MS`, `MDM_WEBHOOK_TIMEOUT_MS`,
    /// `MDM_WEBHOOK_POLL_MS`, `MDM_HTTP_HEADER_READ_TIMEOUT_MS`,
    /// `MDM_HTTP_BODY_READ_TIMEOUT_MS`, `MDM_HTTP_MAX_CONNECTIONS`,
    /// `MDM_HTTP_MAX_IN_FLIGHT`.
    pub fn from_sources(file: Option<&str>, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let file: FileConfig = match file {
            // The error names the key at fault and never its value (which
            // may be a password or a key).
            Some(text) => serde_path_to_error::deserialize(toml::Deserializer::new(text))
                .map_err(|e| ConfigError::File(crate::sources::path_error(&e)))?,
            None => FileConfig::default(),
        };
        let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let http_limits = http_limits(&file.http, &var)?;

        let data_dir = var("MDM_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./mdm-data"));

        let fsync = match var("MDM_SQLITE_FSYNC") {
            Some(v) => parse_bool("MDM_SQLITE_FSYNC", &v)?,
            None => file.event_store.sqlite_fsync.unwrap_or(true),
        };
        let schema = var("MDM_POSTGRES_SCHEMA")
            .or(file.event_store.postgres_schema)
            .unwrap_or_else(|| "mdm_store".to_owned());
        let url = var("MDM_EVENT_STORE_URL").map(Secret::new).or(file.event_store.url);
        let event_store = match url {
            None => EventStoreConfig::Sqlite {
                path: data_dir.join("events.db"),
                fsync_every_commit: fsync,
            },
            Some(url) => parse_store_url(url, schema, fsync)?,
        };

        let listen_text = var("MDM_HTTP_LISTEN")
            .or(file.http.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen_text.parse().map_err(|_| ConfigError::Value {
            key: "http.listen / MDM_HTTP_LISTEN".into(),
            reason: "expected an address like 127.0.0.1:8080".into(),
        })?;
        let sources_file = var("MDM_SOURCES_FILE").map(PathBuf::from).or(file.sources_file);
        let max_body_bytes = match var("MDM_HTTP_MAX_BODY_BYTES") {
            Some(v) => v.parse().map_err(|_| ConfigError::Value {
                key: "MDM_HTTP_MAX_BODY_BYTES".into(),
                reason: "expected a number of bytes".into(),
            })?,
            None => file.http.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        };
        let tls = match (
            var("MDM_TLS_CERT").map(PathBuf::from).or(file.http.tls_cert),
            var("MDM_TLS_KEY").map(PathBuf::from).or(file.http.tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => {
                return Err(ConfigError::Value {
                    key: "http.tls_cert / MDM_TLS_CERT and http.tls_key / MDM_TLS_KEY".into(),
                    reason: "give both the certificate and its key, or neither".into(),
                })
            }
        };
        let keys = keys_config(&data_dir, &event_store, file.keys, &var)?;
        let read_models = read_model_config(&data_dir, &event_store, file.read_models, &var)?;
        let feed = feed_config(file.feed, &var)?;
        let webhooks = webhook_config(file.webhooks, &var)?;
        Ok(Config {
            data_dir,
            event_store,
            listen,
            sources_file,
            keys,
            read_models,
            max_body_bytes,
            feed,
            webhooks,
            tls,
            http_limits,
        })
    }
}

/// A positive whole number from the environment (`env_key`) or the file
/// (`file_key`), or `default`.
fn positive(
    var: &dyn Fn(&str) -> Option<String>,
    env_key: &str,
    file_key: &str,
    file: Option<u64>,
    default: u64,
) -> Result<u64, ConfigError> {
    let bad = || ConfigError::Value {
        key: format!("{file_key} / {env_key}"),
        reason: "expected a whole number above 0".into(),
    };
    let value = match var(env_key) {
        Some(v) => v.trim().parse::<u64>().map_err(|_| bad())?,
        None => file.unwrap_or(default),
    };
    if value == 0 {
        return Err(bad());
    }
    Ok(value)
}

fn http_limits(file: &FileHttp, var: &dyn Fn(&str) -> Option<String>) -> Result<HttpLimits, ConfigError> {
    let d = HttpLimits::default();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let count = |env_key: &str, file_key: &str, file: Option<u64>, default: usize| {
        positive(var, env_key, file_key, file, default as u64).map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    };
    Ok(HttpLimits {
        header_read_timeout: std::time::Duration::from_millis(positive(
            var,
            "MDM_HTTP_HEADER_READ_TIMEOUT_MS",
            "http.header_read_timeout_ms",
            file.header_read_timeout_ms,
            ms(d.header_read_timeout),
        )?),
        body_read_timeout: std::time::Duration::from_millis(positive(
            var,
            "MDM_HTTP_BODY_READ_TIMEOUT_MS",
            "http.body_read_timeout_ms",
            file.body_read_timeout_ms,
            ms(d.body_read_timeout),
        )?),
        max_connections: count(
            "MDM_HTTP_MAX_CONNECTIONS",
            "http.max_connections",
            file.max_connections,
            d.max_connections,
        )?,
        max_in_flight: count(
            "MDM_HTTP_MAX_IN_FLIGHT",
            "http.max_in_flight",
            file.max_in_flight,
            d.max_in_flight,
        )?,
    })
}

fn feed_config(file: FileFeed, var: &dyn Fn(&str) -> Option<String>) -> Result<FeedSettings, ConfigError> {
    let defaults = FeedSettings::default();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(FeedSettings {
        keep_alive: std::time::Duration::from_millis(positive(
            var,
            "MDM_FEED_KEEP_ALIVE_MS",
            "feed.keep_alive_ms",
            file.keep_alive_ms,
            ms(defaults.keep_alive),
        )?),
        poll: std::time::Duration::from_millis(positive(
            var,
            "MDM_FEED_POLL_MS",
            "feed.poll_ms",
            file.poll_ms,
            ms(defaults.poll),
        )?),
        page: defaults.page,
    })
}

fn webhook_config(file: FileWebhooks, var: &dyn Fn(&str) -> Option<String>) -> Result<WebhookSettings, ConfigError> {
    let defaults = WebhookSettings::default();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let duration = |env_key: &str, file_key: &str, file: Option<u64>, default: std::time::Duration| {
        positive(var, env_key, file_key, file, ms(default)).map(std::time::Duration::from_millis)
    };
    let max_attempts = positive(
        var,
        "MDM_WEBHOOK_MAX_ATTEMPTS",
        "webhooks.max_attempts",
        file.max_attempts,
        u64::from(defaults.max_attempts),
    )?;
    Ok(WebhookSettings {
        max_attempts: u32::try_from(max_attempts).map_err(|_| ConfigError::Value {
            key: "webhooks.max_attempts / MDM_WEBHOOK_MAX_ATTEMPTS".into(),
            reason: "too large".into(),
        })?,
        retry_base: duration(
            "MDM_WEBHOOK_RETRY_BASE_MS",
            "webhooks.retry_base_ms",
            file.retry_base_ms,
            defaults.retry_base,
        )?,
        retry_cap: duration(
            "MDM_WEBHOOK_RETRY_CAP_MS",
            "webhooks.retry_cap_ms",
            file.retry_cap_ms,
            defaults.retry_cap,
        )?,
        timeout: duration(
            "MDM_WEBHOOK_TIMEOUT_MS",
            "webhooks.timeout_ms",
            file.timeout_ms,
            defaults.timeout,
        )?,
        poll: duration("MDM_WEBHOOK_POLL_MS", "webhooks.poll_ms", file.poll_ms, defaults.poll)?,
    })
}

/// 32 MiB: a batch of tens of thousands of records; bigger loads go through
/// `mdm import`, which streams.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

fn keys_config(
    data_dir: &std::path::Path,
    event_store: &EventStoreConfig,
    file: FileKeys,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<KeysConfig, ConfigError> {
    let schema = var("MDM_KEY_STORE_SCHEMA")
        .or(file.postgres_schema)
        .unwrap_or_else(|| "mdm_keys".to_owned());
    if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ConfigError::Value {
            key: "keys.postgres_schema / MDM_KEY_STORE_SCHEMA".into(),
            reason: "use letters, digits and underscores".into(),
        });
    }
    let url = var("MDM_KEY_STORE_URL").map(Secret::new).or(file.store_url);
    let store = match url {
        Some(url) => {
            let text = url.expose();
            if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
                KeyStoreConfig::Sqlite {
                    path: PathBuf::from(path),
                }
            } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                KeyStoreConfig::Postgres { url, schema }
            } else {
                return Err(ConfigError::Value {
                    key: "keys.store_url / MDM_KEY_STORE_URL".into(),
                    reason: "expected sqlite: or postgres://".into(),
                });
            }
        }
        None => match event_store {
            EventStoreConfig::Postgres { url, .. } => KeyStoreConfig::Postgres {
                url: url.clone(),
                schema,
            },
            _ => KeyStoreConfig::Sqlite {
                path: data_dir.join("keys.db"),
            },
        },
    };
    let embedded =
        matches!(event_store, EventStoreConfig::Sqlite { .. }) && matches!(store, KeyStoreConfig::Sqlite { .. });
    let master_key =
        match (
            var("MDM_MASTER_KEY").map(Secret::new).or(file.master_key),
            var("MDM_MASTER_KEY_FILE").map(PathBuf::from).or(file.master_key_file),
        ) {
            (Some(key), _) => MasterKeyConfig::Inline(key),
            (None, Some(path)) => MasterKeyConfig::File {
                path,
                generate: embedded,
            },
            (None, None) if embedded => MasterKeyConfig::File {
                path: data_dir.join("master.key"),
                generate: true,
            },
            (None, None) => return Err(ConfigError::Value {
                key: "keys.master_key / MDM_MASTER_KEY (or MDM_MASTER_KEY_FILE)".into(),
                reason:
                    "a server deployment needs a master key from configuration; it is generated only in embedded mode"
                        .into(),
            }),
        };
    Ok(KeysConfig { store, master_key })
}

/// The read models follow the event store unless configured: PostgreSQL
/// (schema `mdm_read`) beside a PostgreSQL log, else `read.db` in the data
/// folder.
fn read_model_config(
    data_dir: &std::path::Path,
    event_store: &EventStoreConfig,
    file: FileReadModels,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<ReadModelConfig, ConfigError> {
    let schema = var("MDM_READ_MODEL_SCHEMA")
        .or(file.postgres_schema)
        .unwrap_or_else(|| "mdm_read".to_owned());
    if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ConfigError::Value {
            key: "read_models.postgres_schema / MDM_READ_MODEL_SCHEMA".into(),
            reason: "use letters, digits and underscores".into(),
        });
    }
    match var("MDM_READ_MODEL_URL").map(Secret::new).or(file.url) {
        Some(url) => {
            let text = url.expose();
            if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
                Ok(ReadModelConfig::Sqlite {
                    path: PathBuf::from(path),
                })
            } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                Ok(ReadModelConfig::Postgres { url, schema })
            } else {
                Err(ConfigError::Value {
                    key: "read_models.url / MDM_READ_MODEL_URL".into(),
                    reason: "expected sqlite: or postgres://".into(),
                })
            }
        }
        None => Ok(match event_store {
            EventStoreConfig::Postgres { url, .. } => ReadModelConfig::Postgres {
                url: url.clone(),
                schema,
            },
            _ => ReadModelConfig::Sqlite {
                path: data_dir.join("read.db"),
            },
        }),
    }
}

fn parse_store_url(url: Secret, schema: String, fsync: bool) -> Result<EventStoreConfig, ConfigError> {
    let bad = |reason: &str| ConfigError::Value {
        key: "event_store.url / MDM_EVENT_STORE_URL".into(),
        reason: reason.into(),
    };
    let text = url.expose();
    if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(bad("a sqlite URL needs a file path, e.g. sqlite:./mdm-data/events.db"));
        }
        return Ok(EventStoreConfig::Sqlite {
            path: PathBuf::from(path),
            fsync_every_commit: fsync,
        });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Value {
                key: "event_store.postgres_schema / MDM_POSTGRES_SCHEMA".into(),
                reason: "use letters, digits and underscores".into(),
            });
        }
        return Ok(EventStoreConfig::Postgres { url, schema });
    }
    if text.starts_with("esdb://") || text.starts_with("esdb+discover://") || text.starts_with("kurrentdb://") {
        return Ok(EventStoreConfig::KurrentDb { url });
    }
    // The URL is secret: name the accepted schemes, never echo the value.
    Err(bad("expected sqlite:, postgres://, esdb:// or kurrentdb://"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Value {
            key: key.to_owned(),
            reason: "expected true or false".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn nothing_configured_means_embedded_sqlite_under_mdm_data() {
        let c = Config::from_sources(None, &env(&[])).expect("valid");
        assert_eq!(
            c.event_store,
            EventStoreConfig::Sqlite {
                path: PathBuf::from("./mdm-data/events.db"),
                fsync_every_commit: true
            }
        );
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sources_file, None);
        assert_eq!(
            c.keys,
            KeysConfig {
                store: KeyStoreConfig::Sqlite {
                    path: PathBuf::from("./mdm-data/keys.db")
                },
                master_key: MasterKeyConfig::File {
                    path: PathBuf::from("./mdm-data/master.key"),
                    generate: true
                },
            }
        );
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(
            c.read_models,
            ReadModelConfig::Sqlite {
                path: PathBuf::from("./mdm-data/read.db")
            }
        );
    }

    #[test]
    fn read_models_follow_a_postgres_event_store_into_their_own_schema() {
        let pg = [
            ("MDM_EVENT_STORE_URL", "postgres://u:pw@db/mdm"),
            ("MDM_MASTER_KEY", "c2VjcmV0"),
        ];
        let c = Config::from_sources(None, &env(&pg)).expect("valid");
        assert!(matches!(c.read_models, ReadModelConfig::Postgres { ref schema, .. } if schema == "mdm_read"));
        let c = Config::from_sources(None, &env(&[("MDM_READ_MODEL_URL", "sqlite:/tmp/r.db")])).expect("valid");
        assert_eq!(
            c.read_models,
            ReadModelConfig::Sqlite {
                path: PathBuf::from("/tmp/r.db")
            }
        );
        let e = Config::from_sources(None, &env(&[("MDM_READ_MODEL_URL", "mysql://x")])).expect_err("refused");
        assert!(e.to_string().contains("MDM_READ_MODEL_URL"), "{e}");
        let e = Config::from_sources(None, &env(&[("MDM_READ_MODEL_SCHEMA", "a;b")])).expect_err("refused");
        assert!(e.to_string().contains("MDM_READ_MODEL_SCHEMA"), "{e}");
    }

    #[test]
    fn a_server_deployment_keeps_keys_in_postgres_and_needs_a_master_key() {
        let pg = [("MDM_EVENT_STORE_URL", "postgres://u:pw@db/mdm")];
        let e = Config::from_sources(None, &env(&pg)).expect_err("no master key");
        assert!(e.to_string().contains("MDM_MASTER_KEY"), "{e}");
        let c = Config::from_sources(None, &env(&[pg[0], ("MDM_MASTER_KEY", "c2VjcmV0")])).expect("valid");
        assert!(matches!(c.keys.store, KeyStoreConfig::Postgres { ref schema, .. } if schema == "mdm_keys"));
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
        let c = Config::from_sources(None, &env(&[pg[0], ("MDM_MASTER_KEY_FILE", "/run/secrets/mk")])).expect("valid");
        assert_eq!(
            c.keys.master_key,
            MasterKeyConfig::File {
                path: PathBuf::from("/run/secrets/mk"),
                generate: false
            }
        );
    }

    #[test]
    fn the_sources_file_comes_from_the_file_or_the_environment() {
        let file = "sources_file = \"/etc/mdm/sources.toml\"\n";
        let c = Config::from_sources(Some(file), &env(&[])).expect("valid");
        assert_eq!(c.sources_file, Some(PathBuf::from("/etc/mdm/sources.toml")));
        let c = Config::from_sources(Some(file), &env(&[("MDM_SOURCES_FILE", "s.toml")])).expect("valid");
        assert_eq!(c.sources_file, Some(PathBuf::from("s.toml")));
    }

    #[test]
    fn environment_overrides_the_file() {
        let file =
            "data_dir = \"/srv/mdm\"\n[event_store]\nurl = \"sqlite:/srv/a.db\"\n[http]\nlisten = \"0.0.0.0:9000\"\n";
        let c = Config::from_sources(Some(file), &env(&[("MDM_HTTP_LISTEN", "127.0.0.1:7000")])).expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/srv/mdm"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        let c = Config::from_sources(
            Some(file),
            &env(&[
                ("MDM_EVENT_STORE_URL", "postgres://u:pw@db/mdm"),
                ("MDM_MASTER_KEY", "k"),
            ]),
        )
        .expect("valid");
        assert!(matches!(c.event_store, EventStoreConfig::Postgres { ref schema, .. } if schema == "mdm_store"));
    }

    #[test]
    fn store_urls_pick_the_adapter() {
        let cases = [
            ("sqlite:x.db", Some("sqlite")),
            ("sqlite://x.db", Some("sqlite")),
            ("postgres://h/db", Some("postgres")),
            ("postgresql://h/db", Some("postgres")),
            ("esdb://h:2113?tls=false", Some("kurrentdb")),
            ("kurrentdb://h:2113", Some("kurrentdb")),
            ("mysql://h/db", None),
            ("sqlite:", None),
        ];
        for (url, want) in cases {
            let got = Config::from_sources(None, &env(&[("MDM_EVENT_STORE_URL", url), ("MDM_MASTER_KEY", "k")]))
                .ok()
                .map(|c| match c.event_store {
                    EventStoreConfig::Sqlite { .. } => "sqlite",
                    EventStoreConfig::Postgres { .. } => "postgres",
                    EventStoreConfig::KurrentDb { .. } => "kurrentdb",
                });
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn errors_name_the_setting_and_never_echo_a_secret() {
        let e = Config::from_sources(None, &env(&[("MDM_EVENT_STORE_URL", "mysql://root:hunter2@h/db")]))
            .expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("MDM_EVENT_STORE_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let e = Config::from_sources(Some("[http]\nlisten = \"nowhere\"\n"), &env(&[])).expect_err("refused");
        assert!(e.to_string().contains("http.listen"));
        let e = Config::from_sources(Some("colour = \"blue\"\n"), &env(&[])).expect_err("refused");
        assert!(e.to_string().contains("colour"));
        let e = Config::from_sources(None, &env(&[("MDM_SQLITE_FSYNC", "maybe")])).expect_err("refused");
        assert!(e.to_string().contains("MDM_SQLITE_FSYNC"));
    }

    #[test]
    fn http_limits_come_from_the_file_or_the_environment() {
        let c = Config::from_sources(None, &env(&[])).expect("valid");
        assert_eq!(c.http_limits, HttpLimits::default());
        assert_eq!(c.http_limits.header_read_timeout, std::time::Duration::from_secs(10));
        let file = "[http]\nheader_read_timeout_ms = 2000\nbody_read_timeout_ms = 3000\nmax_connections = 50\nmax_in_flight = 8\n";
        let c = Config::from_sources(Some(file), &env(&[("MDM_HTTP_MAX_IN_FLIGHT", "4")])).expect("valid");
        assert_eq!(
            c.http_limits,
            HttpLimits {
                header_read_timeout: std::time::Duration::from_secs(2),
                body_read_timeout: std::time::Duration::from_secs(3),
                max_connections: 50,
                max_in_flight: 4,
            }
        );
        let e = Config::from_sources(None, &env(&[("MDM_HTTP_MAX_CONNECTIONS", "0")])).expect_err("refused");
        assert!(e.to_string().contains("http.max_connections"), "{e}");
    }

    #[test]
    fn feed_and_webhook_settings_come_from_the_file_or_the_environment() {
        let c = Config::from_sources(None, &env(&[])).expect("valid");
        assert_eq!(c.feed, FeedSettings::default());
        assert_eq!(c.feed.keep_alive, std::time::Duration::from_secs(15));
        assert_eq!(c.webhooks, WebhookSettings::default());
        assert_eq!(c.webhooks.max_attempts, 8);
        let file = "[feed]\nkeep_alive_ms = 250\n[webhooks]\nmax_attempts = 2\nretry_base_ms = 10\n";
        let c = Config::from_sources(Some(file), &env(&[("MDM_WEBHOOK_RETRY_CAP_MS", "40")])).expect("valid");
        assert_eq!(c.feed.keep_alive, std::time::Duration::from_millis(250));
        assert_eq!(c.webhooks.max_attempts, 2);
        assert_eq!(c.webhooks.retry_base, std::time::Duration::from_millis(10));
        assert_eq!(c.webhooks.retry_cap, std::time::Duration::from_millis(40));
        let c = Config::from_sources(Some(file), &env(&[("MDM_WEBHOOK_MAX_ATTEMPTS", "3")])).expect("valid");
        assert_eq!(c.webhooks.max_attempts, 3, "the environment wins");
        for (key, value) in [
            ("MDM_WEBHOOK_MAX_ATTEMPTS", "0"),
            ("MDM_FEED_POLL_MS", "soon"),
            ("MDM_WEBHOOK_TIMEOUT_MS", "-5"),
        ] {
            let e = Config::from_sources(None, &env(&[(key, value)])).expect_err("refused");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn debug_output_redacts_the_store_url() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("MDM_EVENT_STORE_URL", "postgres://u:hunter2@h/db"),
                ("MDM_MASTER_KEY", "k"),
            ]),
        )
        .expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
