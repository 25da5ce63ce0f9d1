//! The key store on PostgreSQL: a schema of its own (`mdm_keys` by default),
//! shared by every process of the deployment.
//!
//! Creating keys is race-free across processes without locks of our own:
//! subjects without a key are inserted in one statement with
//! `INSERT ... ON CONFLICT (subject) DO NOTHING RETURNING`, and the ones it
//! did not insert (another process won the race and committed, since
//! `ON CONFLICT` waits for it) are read back, so all processes agree on one
//! key per subject. The statement inserts in sorted subject order, so two
//! batches that overlap take their index locks in the same order and cannot
//! deadlock. Lookups are one round trip per slice, one index probe per
//! element of an `unnest`ed array.
//!
//! Destroying sets `wrapped` to NULL. PostgreSQL keeps the old row version
//! (with the wrapped bytes) in the table until vacuum, and in its WAL and
//! backups for as long as those are kept; the migration makes autovacuum
//! clean this table as soon as one row version is dead. Those leftovers hold
//! the key only wrapped under the master key, which never enters the
//! database.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

use super::{
    distinct, spread, unwrap_row, DataKey, KeyStore, KeyStoreError, Lookup, MasterKey, SubjectKey, NAMING_KEY_ID,
    NAMING_KEY_META, NAMING_KEY_SUBJECT,
};
use crate::sqlerr::SqlFailure;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres_keys");

/// Connections of the key store's pool. Calls are short (one or two
/// statements); a few connections serve many concurrent callers.
const MAX_CONNECTIONS: u32 = 8;

/// How long a call waits for a free connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The key store on PostgreSQL. Clones share one pool.
#[derive(Clone)]
pub struct PostgresKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    master: MasterKey,
    naming: DataKey,
}

/// Shows the schema only: no URL (it may hold a password), no key.
impl std::fmt::Debug for PostgresKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresKeyStore")
            .field("schema", &self.inner.schema)
            .finish()
    }
}

/// One `subject_key` row: key id, subject, wrapped key, destroyed.
type KeyRow = (Uuid, String, Option<Vec<u8>>, bool);

/// Rows by subject, one index probe per element of the array. Not
/// `WHERE subject = ANY($1)`: with 1,000 subjects and 100,000 rows the
/// planner chose a sequential scan for that (13 ms against 2.9 ms, and
/// growing with the table). The `LIMIT 1` keeps the lateral subquery from
/// being flattened into a join the planner could hash the same way.
const ROWS_BY_SUBJECT: &str = "SELECT k.key_id, k.subject, k.wrapped, k.destroyed_at IS NOT NULL \
     FROM unnest($1::text[]) AS s(subject) \
     CROSS JOIN LATERAL (SELECT * FROM subject_key WHERE subject_key.subject = s.subject LIMIT 1) k";

/// Rows by key id, likewise.
const ROWS_BY_ID: &str = "SELECT k.key_id, k.subject, k.wrapped, k.destroyed_at IS NOT NULL \
     FROM unnest($1::uuid[]) AS s(key_id) \
     CROSS JOIN LATERAL (SELECT * FROM subject_key WHERE subject_key.key_id = s.key_id LIMIT 1) k";

impl PostgresKeyStore {
    /// Connects to `url`, creates `schema` if needed (the caller usually
    /// passes `mdm_keys`), runs the key-store migrations in it and checks
    /// `master` against the store: a master key other than the one the
    /// store was created with is refused with [`KeyStoreError::WrongMasterKey`].
    /// No error shows the URL.
    pub async fn open(url: &str, schema: &str, master: MasterKey) -> Result<PostgresKeyStore, KeyStoreError> {
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(KeyStoreError::Internal(
                format!("invalid key store schema name {schema:?}: use letters, digits and underscores").into(),
            ));
        }
        // The parse error is dropped on purpose: the URL may hold a password.
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| KeyStoreError::Internal("the key store's PostgreSQL URL is not valid".into()))?
            .options([("search_path", schema)])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // No ping before each use (as in the event store): a dead
            // connection fails its next statement as `Unavailable`.
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(db_err)?;
        crate::postgres::create_schema(&pool, schema).await.map_err(db_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| KeyStoreError::Internal(Box::new(e)))?;
        let naming = load_naming_key(&pool, &master).await?;
        Ok(PostgresKeyStore {
            inner: Arc::new(Inner {
                pool,
                schema: schema.to_owned(),
                master,
                naming,
            }),
        })
    }

    /// Closes the pool. Later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Reads rows by subject into a map.
    async fn rows_by_subject(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectKey>, KeyStoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(ROWS_BY_SUBJECT)
            .bind(subjects)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|(key_id, subject, wrapped, destroyed)| {
                let key = unwrap_row(&self.inner.master, key_id, &subject, wrapped.as_deref(), destroyed)?;
                Ok((subject, key))
            })
            .collect()
    }
}

/// Reads the naming key, creating it in a new store. It is the master-key
/// check: if it does not unwrap, the configured master key is not the one
/// this store was created with.
async fn load_naming_key(pool: &PgPool, master: &MasterKey) -> Result<DataKey, KeyStoreError> {
    let select = "SELECT value FROM key_store_meta WHERE name = $1";
    let mut stored: Option<Vec<u8>> = sqlx::query_scalar(select)
        .bind(NAMING_KEY_META)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    if stored.is_none() {
        // A new store. Processes opening it together race here; ON CONFLICT
        // makes the losers wait for the winner and keep its key. A store
        // holding keys but no naming key had its meta table emptied: a new
        // naming key would accept any master key and rename every stream.
        let key = DataKey::generate();
        sqlx::query(
            "INSERT INTO key_store_meta (name, value) SELECT $1, $2 \
             WHERE NOT EXISTS (SELECT 1 FROM subject_key) ON CONFLICT (name) DO NOTHING",
        )
        .bind(NAMING_KEY_META)
        .bind(master.wrap(NAMING_KEY_ID, NAMING_KEY_SUBJECT, &key))
        .execute(pool)
        .await
        .map_err(db_err)?;
        stored = sqlx::query_scalar(select)
            .bind(NAMING_KEY_META)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
    }
    let wrapped = stored.ok_or_else(|| KeyStoreError::corrupt("the store holds keys but no naming key"))?;
    master
        .unwrap(NAMING_KEY_ID, NAMING_KEY_SUBJECT, &wrapped)
        .map_err(|_| KeyStoreError::WrongMasterKey)
}

fn db_err(e: sqlx::Error) -> KeyStoreError {
    SqlFailure::from(e).into()
}

#[async_trait]
impl KeyStore for PostgresKeyStore {
    async fn get_or_create(&self, subjects: &[String]) -> Result<Vec<Lookup>, KeyStoreError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let (unique, slots) = distinct(subjects);
        // Most calls find every key already there: one round trip.
        let mut found = self.rows_by_subject(&unique).await?;
        let mut missing: Vec<&str> = unique.iter().copied().filter(|s| !found.contains_key(*s)).collect();
        let mut created: HashMap<Uuid, (&str, DataKey)> = HashMap::with_capacity(missing.len());
        if !missing.is_empty() {
            // Byte order, the same in every process: overlapping batches
            // lock their subjects in one order and cannot deadlock.
            missing.sort_unstable();
            let mut ids = Vec::with_capacity(missing.len());
            let mut wrapped = Vec::with_capacity(missing.len());
            for (new, &subject) in self.inner.master.new_keys(&missing).into_iter().zip(&missing) {
                ids.push(new.key_id);
                wrapped.push(new.wrapped);
                created.insert(new.key_id, (subject, new.key));
            }
            // One statement, so one transaction: all of the slice's new keys
            // are committed together before it returns.
            let inserted: Vec<Uuid> = sqlx::query_scalar(
                "INSERT INTO subject_key (key_id, subject, wrapped) \
                 SELECT i.key_id, i.subject, i.wrapped \
                 FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY AS i(key_id, subject, wrapped, n) \
                 ORDER BY i.n \
                 ON CONFLICT (subject) DO NOTHING RETURNING key_id",
            )
            .bind(&ids)
            .bind(&missing)
            .bind(&wrapped)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db_err)?;
            let inserted: HashSet<Uuid> = inserted.into_iter().collect();
            created.retain(|key_id, _| inserted.contains(key_id));
            if created.len() < missing.len() {
                // Another process created some of them first (and
                // committed: ON CONFLICT waited for it). Use its keys.
                let ours: HashSet<&str> = created.values().map(|(s, _)| *s).collect();
                let theirs: Vec<&str> = missing.iter().copied().filter(|s| !ours.contains(s)).collect();
                found.extend(self.rows_by_subject(&theirs).await?);
            }
        }
        let mut by_subject: HashMap<&str, (SubjectKey, bool)> = created
            .into_iter()
            .map(|(key_id, (subject, key))| (subject, (SubjectKey::Active { key_id, key }, true)))
            .collect();
        let answers = unique
            .iter()
            .map(|subject| match by_subject.remove(subject) {
                Some(answer) => Ok(answer),
                None => found
                    .remove(*subject)
                    .map(|key| (key, false))
                    .ok_or_else(|| KeyStoreError::Internal("a subject's key was neither created nor found".into())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(spread(answers, &slots))
    }

    async fn find(&self, subjects: &[String]) -> Result<Vec<Option<SubjectKey>>, KeyStoreError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let (unique, _) = distinct(subjects);
        let found = self.rows_by_subject(&unique).await?;
        Ok(subjects.iter().map(|s| found.get(s).cloned()).collect())
    }

    async fn by_ids(&self, key_ids: &[Uuid]) -> Result<Vec<Option<SubjectKey>>, KeyStoreError> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<KeyRow> = sqlx::query_as(ROWS_BY_ID)
            .bind(key_ids)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db_err)?;
        let found = rows
            .into_iter()
            .map(|(key_id, subject, wrapped, destroyed)| {
                let key = unwrap_row(&self.inner.master, key_id, &subject, wrapped.as_deref(), destroyed)?;
                Ok((key_id, key))
            })
            .collect::<Result<HashMap<_, _>, KeyStoreError>>()?;
        Ok(key_ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    async fn destroy(&self, key_ids: &[Uuid]) -> Result<usize, KeyStoreError> {
        if key_ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE subject_key SET wrapped = NULL, destroyed_at = now() \
             WHERE key_id = ANY($1) AND wrapped IS NOT NULL",
        )
        .bind(key_ids)
        .execute(&self.inner.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() as usize)
    }

    fn naming_key(&self) -> &DataKey {
        &self.inner.naming
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
