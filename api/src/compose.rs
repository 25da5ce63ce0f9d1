//! The composition root: the only place that decides which event-store
//! adapter the application runs on.

use std::sync::Arc;

use anyhow::Context;
use mdm_store::keys::{KeyStore, MasterKey};
use mdm_store::sqlite::{Durability, SqliteEventStore, SqliteOptions};
use mdm_store::EventStore;

use crate::config::{Config, EventStoreConfig, KeyStoreConfig, MasterKeyConfig};

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
