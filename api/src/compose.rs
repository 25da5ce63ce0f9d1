//! The composition root: the only place that decides which event-store
//! adapter the application runs on.

use std::sync::Arc;

use anyhow::Context;
use mdm_store::sqlite::{Durability, SqliteEventStore, SqliteOptions};
use mdm_store::EventStore;

use crate::config::{Config, EventStoreConfig};

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
