//! The composition root: the only place that decides which event-store
//! adapter the application runs on.

use std::sync::Arc;

use anyhow::Context;
use mdm_store::keys::{KeyStore, MasterKey};
use mdm_store::sqlite::{Durability, SqliteEventStore, SqliteOptions};
use mdm_store::EventStore;

use crate::config::{Config, EventStoreConfig, KeyStoreConfig, MasterKeyConfig, ReadModelConfig};

/// Opens the configured key store with the configured master key.
pub async fn open_key_store(config: &Config) -> anyhow::Result<Arc<dyn KeyStore>> {
    let master = load_master_key(&config.keys.master_key)?;
    match &config.keys.store {
        KeyStoreConfig::Sqlite { path } => {
            let store = mdm_store::keys::sqlite::SqliteKeyStore::open(path, master)
                .await
                .with_context(|| format!("opening the key store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        KeyStoreConfig::Postgres { url, schema } => {
            let store = mdm_store::keys::postgres::PostgresKeyStore::open(url.expose(), schema, master)
                .await
                .context("opening the PostgreSQL key store")?;
            Ok(Arc::new(store))
        }
    }
}

/// Reads the master key, generating it on the first embedded start.
fn load_master_key(source: &MasterKeyConfig) -> anyhow::Result<MasterKey> {
    match source {
        MasterKeyConfig::Inline(secret) => {
            MasterKey::from_base64(secret.expose()).context("the master key (MDM_MASTER_KEY) is not valid")
        }
        MasterKeyConfig::File { path, generate } => match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_base64(text.trim())
                .with_context(|| format!("the master key file {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && *generate => {
                let key = MasterKey::generate();
                write_new_key_file(path, &key.to_base64())
                    .with_context(|| format!("writing a new master key to {}", path.display()))?;
                tracing::warn!(
                    path = %path.display(),
                    "generated a new master key: back it up and keep it apart from the data; without it no \
                     personal data in the event log can ever be read again"
                );
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading the master key file {}", path.display())),
        },
    }
}

/// Creates the key file, readable by its owner only; never overwrites one.
fn write_new_key_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Opens the configured event store.
pub async fn open_event_store(config: &Config) -> anyhow::Result<Arc<dyn EventStore>> {
    match &config.event_store {
        EventStoreConfig::Sqlite {
            path,
            fsync_every_commit,
        } => {
            let mut options = SqliteOptions::new(path);
            options.durability = if *fsync_every_commit {
                Durability::Full
            } else {
                Durability::Normal
            };
            let store = SqliteEventStore::open_with(options)
                .await
                .with_context(|| format!("opening the embedded event store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        EventStoreConfig::Postgres { url, schema } => {
            let mut options = mdm_store::postgres::PostgresOptions::new(url.expose());
            options.schema = schema.clone();
            let store = mdm_store::postgres::PostgresEventStore::connect_with(options)
                .await
                .context("opening the PostgreSQL event store")?;
            Ok(Arc::new(store))
        }
        EventStoreConfig::KurrentDb { url } => open_kurrentdb(url.expose()).await,
    }
}

#[cfg(feature = "kurrentdb")]
async fn open_kurrentdb(url: &str) -> anyhow::Result<Arc<dyn EventStore>> {
    let store = mdm_store::kurrent::KurrentEventStore::connect(url)
        .await
        .context("opening the KurrentDB event store")?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "kurrentdb"))]
async fn open_kurrentdb(_url: &str) -> anyhow::Result<Arc<dyn EventStore>> {
    anyhow::bail!("this build of mdm has no KurrentDB support (feature `kurrentdb`)")
}

/// The matching configuration and parameters: the `[matching]` table of the
/// sources file, and the parameters file it names (the built-in defaults
/// when it names none).
pub fn load_matching(
    config: &Config,
) -> anyhow::Result<(crate::sources::MatchingConfig, mdm_domain::matching::model::Scorer)> {
    use mdm_domain::matching::model::{MatchParameters, Scorer};
    let (matching, base) = match &config.sources_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let matching = crate::sources::parse_matching(&text).with_context(|| format!("in {}", path.display()))?;
            (
                matching,
                path.parent().map(std::path::Path::to_path_buf).unwrap_or_default(),
            )
        }
        None => Default::default(),
    };
    let parameters = match &matching.parameters {
        Some(file) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<MatchParameters>(&text)
                .with_context(|| format!("{} is not a parameters file written by `mdm train`", path.display()))?
        }
        None => MatchParameters::defaults(),
    };
    let scorer = Scorer::new(parameters, matching.rules.clone()).context("invalid matching parameters")?;
    Ok((matching, scorer))
}

/// Holds the resolver's lease while alive: on PostgreSQL a session advisory
/// lock on a connection of its own (released when the connection closes,
/// also when the process dies); on SQLite the event store's file lock
/// already keeps every other process out. KurrentDB has no lock to take:
/// there the resolver relies on the `resolution` stream's expected version,
/// which makes a second writer fail its first append.
#[derive(Debug)]
pub struct ResolverLease {
    _connection: Option<sqlx::PgConnection>,
}

/// The advisory-lock key of the resolver ("mdm-res" in ASCII).
const RESOLVER_LOCK_KEY: i64 = 0x006d_646d_2d72_6573;

/// Takes the resolver lease, waiting (and saying so) while another process
/// holds it.
pub async fn acquire_resolver_lease(config: &Config) -> anyhow::Result<ResolverLease> {
    let EventStoreConfig::Postgres { url, .. } = &config.event_store else {
        return Ok(ResolverLease { _connection: None });
    };
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url.expose())
        .await
        .context("connecting to PostgreSQL for the resolver lease")?;
    let mut said = false;
    loop {
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(RESOLVER_LOCK_KEY)
            .fetch_one(&mut connection)
            .await
            .context("taking the resolver lease")?;
        if got {
            return Ok(ResolverLease {
                _connection: Some(connection),
            });
        }
        if !said {
            tracing::info!("another process holds the resolver lease; this one waits as a standby");
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// Opens the configured read-model database.
pub async fn open_read_db(config: &Config) -> anyhow::Result<mdm_projections::ReadDb> {
    match &config.read_models {
        ReadModelConfig::Sqlite { path } => mdm_projections::ReadDb::open_sqlite(path)
            .await
            .with_context(|| format!("opening the read models at {}", path.display())),
        ReadModelConfig::Postgres { url, schema } => mdm_projections::ReadDb::open_postgres(url.expose(), schema)
            .await
            .context("opening the PostgreSQL read models"),
    }
}

/// What the golden records are built with: the `[survivorship]` rule set
/// of the sources file, each system's trust rank and the phone region.
pub fn customer_settings(config: &Config) -> anyhow::Result<mdm_projections::CustomerSettings> {
    let (matching, _) = load_matching(config)?;
    let (rules, trust) = match &config.sources_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let rules = crate::sources::parse_survivorship(&text).with_context(|| format!("in {}", path.display()))?;
            let sources = crate::sources::parse_sources(&text).with_context(|| format!("in {}", path.display()))?;
            let trust = sources.iter().map(|s| (s.system.clone(), s.trust_rank)).collect();
            (rules, trust)
        }
        None => Default::default(),
    };
    Ok(mdm_projections::CustomerSettings {
        rules,
        trust,
        features: matching.features,
    })
}
