//! Crypto-shredding end to end on the embedded stores: records ingested,
//! read back in plaintext at the edge, one person's keys destroyed, and a
//! full replay of the log then yields nothing of that person, while everyone
//! else still reads. A re-send of the erased record stores nothing.

use std::sync::Arc;

use mdm_commands::ingest::{IngestContext, Ingestor, Outcome};
use mdm_commands::input::csv::{CsvOptions, CsvRecords};
use mdm_commands::opened::{OpenedEvent, SourceRecordOpener};
use mdm_domain::metadata::Actor;
use mdm_domain::source::{SourceDefinition, SourceDefinitions};
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::{KeyStore, MasterKey, SubjectKey};
use mdm_store::sqlite::SqliteEventStore;
use mdm_store::{EventStore, Position};

const LOYALTY: &str = r#"
[[sources]]
system = "loyalty"
trust_rank = 10
format = "csv"
id = "member_id"
name = { full = { path = "Member Name", form = "first_last" } }
emails = ["email"]
"#;

fn definitions() -> SourceDefinitions {
    #[derive(serde::Deserialize)]
    struct File {
        sources: Vec<SourceDefinition>,
    }
    let file: File = toml::from_str(LOYALTY).expect("parses");
    SourceDefinitions::new(file.sources).expect("valid")
}

fn csv(rows: &str) -> Vec<mdm_commands::input::InputRecord> {
    let text = format!("member_id,Member Name,email\n{rows}");
    CsvRecords::new(std::io::Cursor::new(text.into_bytes()), CsvOptions::default()).collect()
}

async fn replay(store: &dyn EventStore, opener: &SourceRecordOpener) -> Vec<OpenedEvent> {
    let events = store.read_all(Position::START, 1000).await.expect("read");
    opener.open_all(&events).await.expect("open")
}

#[tokio::test]
async fn destroying_a_records_key_erases_it_from_every_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(dir.path().join("events.db"))
            .await
            .expect("store"),
    );
    let keys: Arc<dyn KeyStore> = Arc::new(
        SqliteKeyStore::open(&dir.path().join("keys.db"), MasterKey::generate())
            .await
            .expect("keys"),
    );
    let ingestor = Ingestor::new(store.clone(), keys.clone(), Arc::new(definitions()));
    let ctx = IngestContext {
        actor: Actor::Operator,
        correlation_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let rows = "L-1,Ada Quillfeather,ada.q@example.test\nL-2,Boris Umbrage,boris.u@example.test\n";
    let out = ingestor.ingest("loyalty", csv(rows), &ctx).await.expect("ingest");
    assert!(
        out.iter().all(|o| matches!(o.outcome, Outcome::Captured { .. })),
        "{out:?}"
    );
    let changed = ingestor
        .ingest("loyalty", csv("L-2,Boris Umbrage,boris.new@example.test\n"), &ctx)
        .await
        .expect("ingest");
    assert!(matches!(changed[0].outcome, Outcome::Changed { .. }), "{changed:?}");

    let opener = SourceRecordOpener::new(keys.clone(), 1000);
    let before = replay(store.as_ref(), &opener).await;
    let plain: Vec<String> = before
        .iter()
        .map(|e| match e {
            OpenedEvent::Version { content, .. } => content.raw.clone(),
            other => panic!("not a readable version: {other:?}"),
        })
        .collect();
    assert_eq!(
        plain,
        [
            "L-1,Ada Quillfeather,ada.q@example.test",
            "L-2,Boris Umbrage,boris.u@example.test",
            "L-2,Boris Umbrage,boris.new@example.test"
        ]
    );

    // Erase Boris: destroy the key of his source record.
    let stream = ingestor.stream_of("loyalty", "L-2");
    let found = keys.find(std::slice::from_ref(&stream)).await.expect("find");
    let Some(SubjectKey::Active { key_id, .. }) = &found[0] else {
        panic!("Boris has a live key")
    };
    assert_eq!(keys.destroy(&[*key_id]).await.expect("destroy"), 1);
    opener.forget();

    let after = replay(store.as_ref(), &opener).await;
    assert!(matches!(&after[0], OpenedEvent::Version { content, .. } if content.source_id == "L-1"));
    assert_eq!(
        after[1],
        OpenedEvent::Erased {
            system: "loyalty".into()
        }
    );
    assert_eq!(
        after[2],
        OpenedEvent::Erased {
            system: "loyalty".into()
        }
    );
    let text = format!("{after:?}");
    assert!(!text.contains("Boris") && !text.contains("boris"), "{text}");

    // A fresh opener (a projection rebuilt from position 0) sees the same.
    let rebuilt = replay(store.as_ref(), &SourceRecordOpener::new(keys.clone(), 1000)).await;
    assert_eq!(rebuilt, after);

    // The source sends Boris again: nothing of him is stored; the record is
    // held for a compliance decision (one hold event, no personal data),
    // and a second re-send answers the same hold and appends nothing.
    let head = store.head().await.expect("head");
    let again = ingestor
        .ingest("loyalty", csv("L-2,Boris Umbrage,boris.u@example.test\n"), &ctx)
        .await
        .expect("ingest");
    let Outcome::Held { hold_id } = again[0].outcome else {
        panic!("held: {:?}", again[0].outcome)
    };
    let held = store.read_all(head, 10).await.expect("read");
    assert_eq!(held.len(), 1, "one hold event");
    assert_eq!(held[0].event_type, "RecordHeld");
    let text = String::from_utf8_lossy(held[0].data.as_bytes()).into_owned();
    assert!(
        !text.contains("Boris") && !text.contains("L-2") && !text.contains("boris"),
        "{text}"
    );
    let head = store.head().await.expect("head");
    let third = ingestor
        .ingest("loyalty", csv("L-2,Boris Umbrage,boris.u@example.test\n"), &ctx)
        .await
        .expect("ingest");
    assert_eq!(third[0].outcome, Outcome::Held { hold_id });
    assert_eq!(store.head().await.expect("head"), head, "nothing appended");
}
