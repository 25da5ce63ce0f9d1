//! The event-store contract on the embedded SQLite adapter, plus what only
//! SQLite has: the one-process lock and durability options.

use mdm_store::sqlite::{OpenError, SqliteEventStore};
use mdm_tests::backends::SqliteBackend;

mdm_tests::event_store_contract!(SqliteBackend::new());
mdm_tests::sql_event_store_guarantees!(SqliteBackend::new());

#[tokio::test]
async fn a_second_process_cannot_open_a_store_in_use() {
    let backend = SqliteBackend::new().await.expect("backend");
    let _first = SqliteEventStore::open(backend.path()).await.expect("first opener");
    match SqliteEventStore::open(backend.path()).await {
        Err(OpenError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unusable_path_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").expect("write");
    match SqliteEventStore::open(file.join("events.db")).await {
        Err(OpenError::Io { .. }) => {}
        other => panic!("expected Io, got {other:?}"),
    }
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).expect("write");
    match SqliteEventStore::open(&garbage).await {
        Err(OpenError::Database { .. }) => {}
        other => panic!("expected a database error, got {other:?}"),
    }
}
