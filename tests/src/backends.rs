//! The databases the contract runs on, one fresh database per test.

use std::path::PathBuf;
use std::sync::Arc;

use mdm_store::postgres::{PostgresEventStore, PostgresOptions};
use mdm_store::sqlite::SqliteEventStore;
use mdm_store::EventStore;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::contract::Backend;

/// The server the PostgreSQL tests use.
pub fn postgres_url() -> String {
    std::env::var("MDM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A SQLite file in a temporary folder, removed with the backend.
#[derive(Debug)]
pub struct SqliteBackend {
    pub dir: tempfile::TempDir,
}

impl SqliteBackend {
    pub async fn new() -> Option<SqliteBackend> {
        Some(SqliteBackend {
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("events.db")
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(SqliteEventStore::open(self.path()).await.expect("open sqlite store"))
    }
}

/// A database of its own on the test server, dropped when the backend is.
#[derive(Debug)]
pub struct PostgresBackend {
    pub name: String,
    pub url: String,
}

impl PostgresBackend {
    pub async fn new() -> Option<PostgresBackend> {
        let admin = postgres_url();
        let name = format!("mdm_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at MDM_TEST_DATABASE_URL: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let url = with_database(&admin, &name);
        Some(PostgresBackend { name, url })
    }

    pub fn options(&self) -> PostgresOptions {
        PostgresOptions::new(self.url.clone())
    }
}

/// Replaces the database name (the URL's path) of a `postgres://` URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..host_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(
            PostgresEventStore::connect_with(self.options())
                .await
                .expect("open postgres store"),
        )
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code; a short-lived runtime on its own
        // thread drops the database even while the test's runtime shuts down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// A KurrentDB server named by `MDM_TEST_EVENTSTOREDB_URL`, shared by all tests.
#[derive(Debug)]
pub struct KurrentBackend {
    url: String,
}

impl KurrentBackend {
    pub async fn new() -> Option<KurrentBackend> {
        match std::env::var("MDM_TEST_EVENTSTOREDB_URL") {
            Ok(url) if !url.is_empty() => Some(KurrentBackend { url }),
            _ => {
                eprintln!(
                    "skipped: MDM_TEST_EVENTSTOREDB_URL is not set (e.g. esdb://127.0.0.1:2113?tls=false; \
                     `docker compose up eventstoredb` starts one)"
                );
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for KurrentBackend {
    async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(
            mdm_store::kurrent::KurrentEventStore::connect(&self.url)
                .await
                .expect("connect to KurrentDB"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let cases = [
            ("postgres://u:p@h:5432/postgres", "postgres://u:p@h:5432/x"),
            (
                "postgres://h/postgres?sslmode=disable",
                "postgres://h/x?sslmode=disable",
            ),
            ("postgres://h", "postgres://h/x"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x"), want);
        }
    }
}
