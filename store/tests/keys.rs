//! The key store (crypto-shredding) on both adapters: the same test
//! functions run on SQLite (a file in a temporary folder) and on PostgreSQL
//! (a fresh database per test on the server named by
//! `MDM_TEST_DATABASE_URL`), followed by what only one adapter can show:
//! concurrent processes agreeing on keys (PostgreSQL) and destroyed key
//! bytes gone from the files (SQLite).
//!
//! This file cannot use `mdm-tests` (it depends on this crate), so it keeps
//! its own small copy of the per-test database setup.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdm_store::keys::postgres::PostgresKeyStore;
use mdm_store::keys::sqlite::SqliteKeyStore;
use mdm_store::keys::{DataKey, KeyStore, KeyStoreError, MasterKey, SubjectKey};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

// ----- Backends -----

/// The server the PostgreSQL tests use.
fn postgres_url() -> String {
    std::env::var("MDM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Replaces the database name (the URL's path) of a `postgres://` URL.
fn with_database(url: &str, database: &str) -> String {
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

/// Where a test's key store lives; removed when dropped.
enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { name: String, url: String },
}

impl Backend {
    async fn sqlite() -> Backend {
        Backend::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    async fn postgres() -> Backend {
        let name = format!("mdm_keys_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&postgres_url())
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at MDM_TEST_DATABASE_URL: {e}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let url = with_database(&postgres_url(), &name);
        Backend::Postgres { name, url }
    }

    fn sqlite_path(&self) -> PathBuf {
        match self {
            Backend::Sqlite { dir } => dir.path().join("keys.db"),
            Backend::Postgres { .. } => unreachable!("not a SQLite backend"),
        }
    }

    async fn try_open(&self, master: MasterKey) -> Result<Arc<dyn KeyStore>, KeyStoreError> {
        Ok(match self {
            Backend::Sqlite { .. } => Arc::new(SqliteKeyStore::open(&self.sqlite_path(), master).await?),
            Backend::Postgres { url, .. } => Arc::new(PostgresKeyStore::open(url, "mdm_keys", master).await?),
        })
    }

    async fn open(&self, master: &MasterKey) -> Arc<dyn KeyStore> {
        self.try_open(copy(master)).await.expect("open key store")
    }

    /// Swaps the wrapped bytes of two keys behind the store's back, as an
    /// attacker (or a botched restore) moving key bytes between rows would.
    async fn swap_wrapped(&self, a: Uuid, b: Uuid) {
        match self {
            Backend::Sqlite { .. } => {
                let conn = rusqlite::Connection::open(self.sqlite_path()).expect("open");
                conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
                let read = |id: Uuid| -> Vec<u8> {
                    conn.query_row(
                        "SELECT wrapped FROM subject_key WHERE key_id = ?1",
                        [&id.as_bytes()[..]],
                        |row| row.get(0),
                    )
                    .expect("read wrapped")
                };
                let (wa, wb) = (read(a), read(b));
                let write = |id: Uuid, wrapped: &[u8]| {
                    conn.execute(
                        "UPDATE subject_key SET wrapped = ?2 WHERE key_id = ?1",
                        rusqlite::params![&id.as_bytes()[..], wrapped],
                    )
                    .expect("write wrapped")
                };
                write(a, &wb);
                write(b, &wa);
            }
            Backend::Postgres { url, .. } => {
                let mut conn = PgConnection::connect(url).await.expect("connect");
                sqlx::query(
                    "UPDATE mdm_keys.subject_key s SET wrapped = o.wrapped FROM mdm_keys.subject_key o \
                     WHERE (s.key_id, o.key_id) IN (($1, $2), ($2, $1))",
                )
                .bind(a)
                .bind(b)
                .execute(&mut conn)
                .await
                .expect("swap");
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let Backend::Postgres { name, .. } = self else {
            return;
        };
        let name = name.clone();
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

// ----- Helpers -----

fn copy(master: &MasterKey) -> MasterKey {
    MasterKey::from_base64(&master.to_base64()).expect("round trip")
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn active(key: &SubjectKey) -> (Uuid, &DataKey) {
    match key {
        SubjectKey::Active { key_id, key } => (*key_id, key),
        SubjectKey::Destroyed { key_id } => panic!("key {key_id} is destroyed"),
    }
}

/// Two keys are the same key when each opens what the other sealed.
fn same_key(a: &DataKey, b: &DataKey) -> bool {
    let sealed = a.seal(b"check", b"value");
    b.open(b"check", &sealed).is_ok_and(|v| v == b"value")
}

// ----- The tests both adapters run -----

async fn created_keys_are_found_again(backend: Backend) {
    let master = MasterKey::generate();
    let store = backend.open(&master).await;
    let made = store.get_or_create(&names(&["a", "b"])).await.expect("create");
    assert_eq!(made.len(), 2);
    assert!(made.iter().all(|l| l.created));
    let (id_a, key_a) = active(&made[0].key);
    let (id_b, key_b) = active(&made[1].key);
    assert_ne!(id_a, id_b);
    assert!(!same_key(key_a, key_b));
    assert_eq!(id_a.get_version_num(), 7, "key ids are UUID v7");

    let found = store.find(&names(&["b", "zz", "a"])).await.expect("find");
    assert_eq!(found.len(), 3);
    let (fb, kb) = active(found[0].as_ref().expect("b"));
    assert!(found[1].is_none());
    let (fa, ka) = active(found[2].as_ref().expect("a"));
    assert_eq!((fa, fb), (id_a, id_b));
    assert!(same_key(key_a, ka) && same_key(key_b, kb));

    // Asking again creates nothing and returns the same keys, in the order asked.
    let again = store.get_or_create(&names(&["b", "c", "a"])).await.expect("again");
    assert_eq!(
        again.iter().map(|l| l.created).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(active(&again[0].key).0, id_b);
    assert_eq!(active(&again[2].key).0, id_a);
    assert!(same_key(key_a, active(&again[2].key).1));

    // And after reopening, with the same master key.
    drop(store);
    let store = backend.open(&master).await;
    let found = store.find(&names(&["a"])).await.expect("find");
    let (id, key) = active(found[0].as_ref().expect("a"));
    assert_eq!(id, id_a);
    assert!(same_key(key, key_a));

    assert!(store.get_or_create(&[]).await.expect("empty").is_empty());
    assert!(store.find(&[]).await.expect("empty").is_empty());
    assert!(store.by_ids(&[]).await.expect("empty").is_empty());
    assert_eq!(store.destroy(&[]).await.expect("empty"), 0);
}

async fn duplicates_in_one_call_get_one_key(backend: Backend) {
    let store = backend.open(&MasterKey::generate()).await;
    let made = store
        .get_or_create(&names(&["x", "y", "x", "x", "y"]))
        .await
        .expect("create");
    assert_eq!(
        made.iter().map(|l| l.created).collect::<Vec<_>>(),
        [true, true, false, false, false]
    );
    let ids: Vec<Uuid> = made.iter().map(|l| l.key.key_id()).collect();
    assert_eq!(ids[0], ids[2]);
    assert_eq!(ids[0], ids[3]);
    assert_eq!(ids[1], ids[4]);
    assert_ne!(ids[0], ids[1]);
    assert!(same_key(active(&made[0].key).1, active(&made[3].key).1));

    let found = store.find(&names(&["x", "x"])).await.expect("find");
    assert_eq!(found[0].as_ref().map(|k| k.key_id()), Some(ids[0]));
    assert_eq!(found[1].as_ref().map(|k| k.key_id()), Some(ids[0]));
}

/// Many calls at once (as single-record ingests make them), overlapping in
/// their subjects: each subject gets one key, exactly one call reports
/// creating it, and every call gets its own subjects' keys in its own order.
/// On SQLite such calls are served in groups, one transaction per group.
async fn concurrent_calls_get_their_own_answers_and_one_key_per_subject(backend: Backend) {
    let store = backend.open(&MasterKey::generate()).await;
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let subjects = vec![format!("s-{i}"), format!("shared-{}", i % 4), format!("s-{i}-b")];
            let answer = store.get_or_create(&subjects).await.expect("create");
            (subjects, answer)
        }));
    }
    let mut by_subject: std::collections::HashMap<String, (Uuid, u32)> = Default::default();
    for t in tasks {
        let (subjects, answer) = t.await.expect("task");
        assert_eq!(answer.len(), subjects.len());
        for (subject, lookup) in subjects.iter().zip(&answer) {
            let entry = by_subject.entry(subject.clone()).or_insert((lookup.key.key_id(), 0));
            assert_eq!(entry.0, lookup.key.key_id(), "one key for {subject}");
            entry.1 += u32::from(lookup.created);
        }
    }
    assert_eq!(by_subject.len(), 64 * 2 + 4);
    assert!(
        by_subject.values().all(|(_, created)| *created == 1),
        "exactly one creator per subject"
    );
    let found = store.find(&names(&["s-7", "shared-3"])).await.expect("find");
    assert_eq!(found[0].as_ref().map(|k| k.key_id()), Some(by_subject["s-7"].0));
    assert_eq!(found[1].as_ref().map(|k| k.key_id()), Some(by_subject["shared-3"].0));
}

async fn keys_are_found_by_id(backend: Backend) {
    let store = backend.open(&MasterKey::generate()).await;
    let made = store.get_or_create(&names(&["p", "q"])).await.expect("create");
    let (id_p, key_p) = active(&made[0].key);
    let (id_q, key_q) = active(&made[1].key);
    let unknown = Uuid::now_v7();
    let found = store.by_ids(&[id_q, unknown, id_p, id_q]).await.expect("by ids");
    assert_eq!(found.len(), 4);
    let (fq, kq) = active(found[0].as_ref().expect("q"));
    assert!(found[1].is_none());
    let (fp, kp) = active(found[2].as_ref().expect("p"));
    assert_eq!((fp, fq), (id_p, id_q));
    assert!(same_key(key_p, kp) && same_key(key_q, kq));
    assert_eq!(found[3].as_ref().map(|k| k.key_id()), Some(id_q));
}

async fn destroyed_keys_stay_destroyed(backend: Backend) {
    let master = MasterKey::generate();
    let store = backend.open(&master).await;
    let made = store.get_or_create(&names(&["gone", "kept"])).await.expect("create");
    let (gone, gone_key) = active(&made[0].key);
    let (kept, _) = active(&made[1].key);
    let sealed = gone_key.seal(b"e1", b"Ada Lovelace");

    assert_eq!(store.destroy(&[gone, gone, Uuid::now_v7()]).await.expect("destroy"), 1);
    assert_eq!(store.destroy(&[gone]).await.expect("again"), 0, "idempotent");

    let found = store.find(&names(&["gone", "kept"])).await.expect("find");
    assert!(matches!(found[0], Some(SubjectKey::Destroyed { key_id }) if key_id == gone));
    assert_eq!(found[1].as_ref().map(|k| k.is_destroyed()), Some(false));
    let by_id = store.by_ids(&[gone, kept]).await.expect("by ids");
    assert!(matches!(by_id[0], Some(SubjectKey::Destroyed { key_id }) if key_id == gone));
    assert!(by_id[0].as_ref().and_then(|k| k.key()).is_none());
    assert!(matches!(by_id[1], Some(SubjectKey::Active { key_id, .. }) if key_id == kept));

    // Never recreated: the subject is known as erased.
    let again = store
        .get_or_create(&names(&["gone", "new", "gone"]))
        .await
        .expect("get");
    assert!(matches!(again[0].key, SubjectKey::Destroyed { key_id } if key_id == gone));
    assert!(!again[0].created && !again[2].created);
    assert!(again[2].key.is_destroyed());
    assert!(again[1].created);

    // Still so after reopening; the kept key still opens nothing of the
    // destroyed one's, and nothing anywhere can open what it sealed.
    drop(store);
    let store = backend.open(&master).await;
    let found = store.find(&names(&["gone"])).await.expect("find");
    assert!(found[0].as_ref().is_some_and(SubjectKey::is_destroyed));
    let kept_key = store.by_ids(&[kept]).await.expect("by id");
    assert!(active(kept_key[0].as_ref().expect("kept"))
        .1
        .open(b"e1", &sealed)
        .is_err());
    assert!(store.get_or_create(&names(&["gone"])).await.expect("get")[0]
        .key
        .is_destroyed());
}

async fn the_naming_key_is_stable_across_opens(backend: Backend) {
    let master = MasterKey::generate();
    let store = backend.open(&master).await;
    let first = store.naming_key().mac(&[b"source-web", b"123"]);
    drop(store);
    let store = backend.open(&master).await;
    assert_eq!(store.naming_key().mac(&[b"source-web", b"123"]), first);
    // Two instances open at once share it too.
    let other = backend.open(&master).await;
    assert_eq!(other.naming_key().mac(&[b"source-web", b"123"]), first);
    assert!(!same_key(store.naming_key(), &DataKey::generate()));
}

async fn a_wrong_master_key_is_refused_at_open(backend: Backend) {
    let master = MasterKey::generate();
    let store = backend.open(&master).await;
    let made = store.get_or_create(&names(&["s"])).await.expect("create");
    drop(store);

    let wrong = MasterKey::generate();
    let wrong_text = wrong.to_base64();
    let err = backend.try_open(wrong).await.expect_err("refused");
    assert!(matches!(err, KeyStoreError::WrongMasterKey), "{err:?}");
    let message = err.to_string();
    assert_eq!(message, "the configured master key does not match the key store");
    assert!(!message.contains(&wrong_text) && !format!("{err:?}").contains(&wrong_text));
    assert!(!message.contains(&master.to_base64()));

    // The right key still opens it, with its keys intact.
    let store = backend.open(&master).await;
    let found = store.by_ids(&[made[0].key.key_id()]).await.expect("by id");
    assert!(same_key(
        active(found[0].as_ref().expect("s")).1,
        active(&made[0].key).1
    ));
}

async fn a_key_moved_to_another_row_is_refused_as_corrupt(backend: Backend) {
    let store = backend.open(&MasterKey::generate()).await;
    let made = store.get_or_create(&names(&["m1", "m2"])).await.expect("create");
    let (a, b) = (made[0].key.key_id(), made[1].key.key_id());
    backend.swap_wrapped(a, b).await;
    let err = store.by_ids(&[a]).await.expect_err("corrupt");
    assert!(matches!(err, KeyStoreError::Corrupt { .. }), "{err:?}");
    assert!(!err.to_string().contains("m1"));
    assert!(matches!(
        store.find(&names(&["m2"])).await,
        Err(KeyStoreError::Corrupt { .. })
    ));
}

async fn debug_output_shows_no_secret(backend: Backend) {
    let store = backend.open(&MasterKey::generate()).await;
    let shown = format!("{store:?}");
    assert!(
        !shown.contains("postgres:postgres") && !shown.contains("password"),
        "{shown}"
    );
    let made = store.get_or_create(&names(&["d"])).await.expect("create");
    let shown = format!("{:?}", made[0]);
    assert!(shown.contains("DataKey(<redacted>)"), "{shown}");
}

/// Prints how long `get_or_create` takes for batches of new subjects.
async fn creating_a_thousand_keys_takes_milliseconds(backend: Backend) {
    const BATCHES: usize = 100;
    const BATCH: usize = 1_000;
    let store = backend.open(&MasterKey::generate()).await;
    let mut times = Vec::with_capacity(BATCHES);
    for b in 0..BATCHES {
        let subjects: Vec<String> = (0..BATCH).map(|i| format!("source-bench-{b}-{i}")).collect();
        let start = Instant::now();
        let made = store.get_or_create(&subjects).await.expect("create");
        times.push(start.elapsed());
        assert!(made.iter().all(|l| l.created));
    }
    // The same subjects again: every key exists.
    let subjects: Vec<String> = (0..BATCH).map(|i| format!("source-bench-7-{i}")).collect();
    let start = Instant::now();
    let again = store.get_or_create(&subjects).await.expect("again");
    let existing = start.elapsed();
    assert!(again.iter().all(|l| !l.created));
    let start = Instant::now();
    store.find(&subjects).await.expect("find");
    let found = start.elapsed();

    // Where the time goes: one commit (a single new key), and the
    // cryptography of a batch without the database.
    let start = Instant::now();
    for i in 0..20 {
        store.get_or_create(&[format!("source-single-{i}")]).await.expect("one");
    }
    let one = start.elapsed() / 20;
    let master = MasterKey::generate();
    let ids: Vec<Uuid> = (0..BATCH).map(|_| Uuid::now_v7()).collect();
    let start = Instant::now();
    let wrapped: Vec<(Uuid, Vec<u8>)> = ids
        .iter()
        .map(|&id| (id, master.wrap(id, "source-bench-subject", &DataKey::generate())))
        .collect();
    let crypto_new = start.elapsed();
    let start = Instant::now();
    for (id, w) in &wrapped {
        master.unwrap(*id, "source-bench-subject", w).expect("unwraps");
    }
    let crypto_unwrap = start.elapsed();

    times.sort();
    let total: Duration = times.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "{}: get_or_create of {BATCH} new subjects, {BATCHES} batches: mean {:.2} ms, median {:.2} ms, \
         p95 {:.2} ms, max {:.2} ms; {BATCH} existing: {:.2} ms; find {BATCH}: {:.2} ms; \
         one new subject (one commit): {:.2} ms; crypto alone for {BATCH}, key by key: generate+wrap {:.2} ms, unwrap {:.2} ms",
        store.backend(),
        ms(total / BATCHES as u32),
        ms(times[BATCHES / 2]),
        ms(times[BATCHES * 95 / 100]),
        ms(times[BATCHES - 1]),
        ms(existing),
        ms(found),
        ms(one),
        ms(crypto_new),
        ms(crypto_unwrap),
    );
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::postgres().await).await
                }
            )*
        }
    };
}

on_both_backends!(
    created_keys_are_found_again,
    duplicates_in_one_call_get_one_key,
    concurrent_calls_get_their_own_answers_and_one_key_per_subject,
    keys_are_found_by_id,
    destroyed_keys_stay_destroyed,
    the_naming_key_is_stable_across_opens,
    a_wrong_master_key_is_refused_at_open,
    a_key_moved_to_another_row_is_refused_as_corrupt,
    debug_output_shows_no_secret,
    creating_a_thousand_keys_takes_milliseconds,
);

// ----- PostgreSQL only -----

/// Two processes (two stores, two pools) creating keys for overlapping
/// subjects at the same time, in opposite orders, agree on one key per
/// subject, and exactly one of them reports having created it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_stores_agree_on_one_key_per_subject() {
    let backend = Backend::postgres().await;
    let master = MasterKey::generate();
    // Opening together also races the first migration and naming key.
    let (a, b) = tokio::join!(backend.try_open(copy(&master)), backend.try_open(copy(&master)));
    let (a, b) = (a.expect("open a"), b.expect("open b"));
    assert_eq!(a.naming_key().mac(&[b"n"]), b.naming_key().mac(&[b"n"]));

    for round in 0..20 {
        let forwards: Vec<String> = (0..300).map(|i| format!("source-race-{round}-{i}")).collect();
        let backwards: Vec<String> = forwards.iter().rev().cloned().collect();
        let (ra, rb) = tokio::join!(
            {
                let a = a.clone();
                let s = forwards.clone();
                tokio::spawn(async move { a.get_or_create(&s).await })
            },
            {
                let b = b.clone();
                let s = backwards.clone();
                tokio::spawn(async move { b.get_or_create(&s).await })
            },
        );
        let ra = ra.expect("task a").expect("a creates");
        let rb = rb.expect("task b").expect("b creates");
        for (i, la) in ra.iter().enumerate() {
            let lb = &rb[forwards.len() - 1 - i];
            assert_eq!(la.key.key_id(), lb.key.key_id(), "round {round}, subject {i}");
            assert!(
                la.created ^ lb.created,
                "round {round}, subject {i}: exactly one creator"
            );
            assert!(same_key(active(&la.key).1, active(&lb.key).1));
        }
    }
}

// ----- SQLite only -----

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of the database and its write-ahead log.
fn database_files(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read keys.db");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
        bytes.extend(more);
    }
    bytes
}

/// With secure_delete and the checkpoint after a destroy, the wrapped bytes
/// of a destroyed key are nowhere in the files any more, while those of
/// the keys kept are (so the search does find what is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_destroyed_key_bytes_are_gone_from_the_files() {
    let backend = Backend::sqlite().await;
    let path = backend.sqlite_path();
    let store = SqliteKeyStore::open(&path, MasterKey::generate()).await.expect("open");
    // Enough keys over several commits for page splits and moves.
    let mut ids = Vec::new();
    for batch in 0..6 {
        let subjects: Vec<String> = (0..500).map(|i| format!("source-shred-{batch}-{i}")).collect();
        ids.extend(
            store
                .get_or_create(&subjects)
                .await
                .expect("create")
                .iter()
                .map(|l| l.key.key_id()),
        );
    }
    let doomed: Vec<Uuid> = ids.iter().copied().step_by(37).collect();
    let kept: Vec<Uuid> = ids
        .iter()
        .copied()
        .skip(1)
        .step_by(41)
        .filter(|id| !doomed.contains(id))
        .collect();
    let mut doomed_bytes = Vec::new();
    for id in &doomed {
        doomed_bytes.push(store.wrapped_bytes_for_test(*id).await.expect("read").expect("active"));
    }
    let mut kept_bytes = Vec::new();
    for id in &kept {
        kept_bytes.push(store.wrapped_bytes_for_test(*id).await.expect("read").expect("active"));
    }
    let before = database_files(&path);
    assert!(
        doomed_bytes.iter().all(|w| contains(&before, w)),
        "the search finds stored keys"
    );

    assert_eq!(store.destroy(&doomed).await.expect("destroy"), doomed.len());
    assert!(store.wrapped_bytes_for_test(doomed[0]).await.expect("read").is_none());

    // The store is still open, as in a running service.
    let after = database_files(&path);
    for (id, wrapped) in doomed.iter().zip(&doomed_bytes) {
        assert!(
            !contains(&after, wrapped),
            "wrapped bytes of destroyed key {id} are still in the files"
        );
    }
    for (id, wrapped) in kept.iter().zip(&kept_bytes) {
        assert!(contains(&after, wrapped), "kept key {id} is missing from the files");
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_len = std::fs::metadata(PathBuf::from(wal)).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the checkpoint truncates the WAL");
}
