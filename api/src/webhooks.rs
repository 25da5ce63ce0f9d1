//! Webhooks: the customer change log pushed to subscribers that cannot hold
//! a feed connection open.
//!
//! An admin registers a subscriber (URL, secret, optional change types and
//! field scopes). A dispatcher task in `mdm serve` runs one worker per
//! subscriber, which delivers every change after the subscriber's
//! checkpoint, in log order, one at a time, as a `POST` of the change's
//! CloudEvent (the document the feed sends, with the subscriber's scopes
//! applied), signed:
//!
//! ```text
//! Webhook-Id: <event id, P or P:k>
//! Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! ```
//!
//! Any 2xx answer is a delivery; anything else (another status, no answer
//! within the timeout, no connection) is retried after a pause that doubles
//! from `retry_base` up to `retry_cap`, up to `max_attempts` tries in all.
//! Then the change goes to the subscriber's dead letters and delivery goes
//! on with the next change. After each delivered or dead-lettered change
//! the checkpoint moves, in the database, so a restart resumes after it.
//! Delivery is at least once (a crash between the answer and the
//! checkpoint sends that change again): receivers dedupe by `Webhook-Id`.
//! One subscriber's changes go out strictly in log order, so each
//! customer's changes do too; a slow subscriber delays only itself.
//!
//! Replaying dead letters marks them; a worker delivers marked dead
//! letters (oldest first) before it goes on with its normal sequence, so a
//! replayed change arrives after changes of the same customer that were
//! delivered meanwhile: its `Webhook-Id` (log position) and `data.version`
//! tell the receiver it is older. One that fails again stays a dead letter.
//!
//! Subscribers and dead letters live in the read-model database (tables
//! `webhook_subscriber` and `webhook_dead_letter`, created at start, owned
//! by no projection, never dropped by a rebuild). Dead letters name the
//! change by its cursor and hold no personal data; the body is rebuilt from
//! the change log when it is replayed. The secret is sealed (AES-256-GCM)
//! with a data key of the subscriber from the key store; deleting the
//! subscriber destroys that key. Secrets never reach logs, errors or
//! answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use mdm_projections::changes::{change_at, changes_after, last_change, ChangeCursor, ChangeType, CustomerChange};
use mdm_projections::db::{fit, time_text, Dialect};
use mdm_projections::runner::Progress;
use mdm_projections::ReadDb;
use mdm_store::keys::{KeyStore, KeyStoreError, SubjectKey};
use serde::Serialize;
use sha2::Sha256;
use sqlx::Row;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::auth::Scopes;
use crate::http::feed::visible_cloud_event;

/// How the dispatcher retries and paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Tries per change before it becomes a dead letter (at least 1).
    pub max_attempts: u32,
    /// The pause after the first failed try; it doubles after each.
    pub retry_base: Duration,
    /// The longest pause between two tries.
    pub retry_cap: Duration,
    /// How long one try waits for the answer.
    pub timeout: Duration,
    /// How often idle workers look for new changes when no projection in
    /// this process tells them, and how often the subscriber list is read.
    pub poll: Duration,
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            max_attempts: 8,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(500),
        }
    }
}

impl WebhookSettings {
    /// The pause after the `failed`-th failed try (1-based).
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32.checked_shl(failed.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.retry_base.saturating_mul(factor).min(self.retry_cap)
    }
}

/// What registering a subscriber takes (validated at the HTTP edge).
#[derive(Clone)]
pub struct NewSubscriber {
    pub url: reqwest::Url,
    pub secret: String,
    /// `None`: every type.
    pub types: Option<Vec<ChangeType>>,
    /// The golden attributes the subscriber sees.
    pub scopes: Scopes,
    /// Deliver the changes after this one; `None`: only changes from now on.
    pub after: Option<ChangeCursor>,
}

/// The secret is never shown.
impl std::fmt::Debug for NewSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSubscriber")
            .field("url", &self.url.as_str())
            .field("secret", &"<redacted>")
            .field("types", &self.types)
            .field("scopes", &self.scopes)
            .field("after", &self.after)
            .finish()
    }
}

/// A subscriber as the admin API lists it (never with its secret).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriberInfo {
    pub id: Uuid,
    pub url: String,
    /// The change types delivered (all when absent).
    pub types: Option<Vec<String>>,
    /// The golden attributes the bodies carry (all when absent).
    pub scopes: Option<Vec<String>>,
    /// The last change delivered or dead-lettered (`P` or `P:k`).
    pub checkpoint: String,
    /// Changes delivered so far.
    pub delivered: i64,
    /// Dead letters waiting (replayed or not).
    pub dead_letters: i64,
    pub created_at: String,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// Why the last try failed (`HTTP 503`, `timed out`, `connection
    /// failed`); never the receiver's answer.
    pub last_error: Option<String>,
}

/// A change that could not be delivered.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The change's event id (`P` or `P:k`).
    pub id: String,
    /// The customer and change type, while the change log holds the change.
    pub token: Option<Uuid>,
    #[serde(rename = "type")]
    pub change_type: Option<String>,
    pub attempts: i64,
    /// The HTTP status of the last try, if the receiver answered.
    pub last_status: Option<i64>,
    pub last_error: String,
    pub failed_at: String,
    /// A replay was asked for and is pending.
    pub replay_requested: bool,
}

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No subscriber with that id (HTTP 404).
    #[error("no webhook subscriber with that id")]
    Unknown,
    /// The read-model database does not answer (HTTP 503).
    #[error("the webhook tables cannot be read or written")]
    Db(#[from] sqlx::Error),
    /// The key store does not answer or refused (HTTP 503).
    #[error("the key store failed")]
    Keys(#[from] KeyStoreError),
    /// A subscriber's secret does not open (its key was destroyed or the
    /// row altered) (HTTP 500).
    #[error("the secret of subscriber {0} cannot be opened")]
    Secret(Uuid),
    /// A stored subscriber row does not make sense (HTTP 500).
    #[error("the row of subscriber {0} is corrupt")]
    Corrupt(Uuid),
}

/// The webhook tables, the key store sealing the secrets, and the signal
/// that wakes the dispatcher. Cheap to clone; clones share the signal.
#[derive(Clone, Debug)]
pub struct Webhooks {
    db: ReadDb,
    keys: Arc<dyn KeyStore>,
    settings: WebhookSettings,
    wake: Arc<Notify>,
    /// Set once the tables are known to exist.
    ready: Arc<tokio::sync::OnceCell<()>>,
}

const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_subscriber (
        id text PRIMARY KEY,
        url text NOT NULL,
        types text NOT NULL,
        scopes text NOT NULL,
        key_id text NOT NULL,
        secret text NOT NULL,
        position bigint NOT NULL,
        ordinal bigint NOT NULL,
        delivered bigint NOT NULL,
        created_at text NOT NULL,
        last_success_at text,
        last_failure_at text,
        last_error text
    )",
    "COMMENT ON TABLE webhook_subscriber IS 'Webhook subscribers (POST /v1/webhooks) and their delivery checkpoints; not a projection, never rebuilt'",
    "COMMENT ON COLUMN webhook_subscriber.id IS 'Random id'",
    "COMMENT ON COLUMN webhook_subscriber.url IS 'Where changes are POSTed (http or https)'",
    "COMMENT ON COLUMN webhook_subscriber.types IS 'Change types delivered, comma-separated, or * for all'",
    "COMMENT ON COLUMN webhook_subscriber.scopes IS 'Golden attributes the bodies carry, comma-separated, or * for all'",
    "COMMENT ON COLUMN webhook_subscriber.key_id IS 'The key-store data key sealing the secret (destroyed with the subscriber)'",
    "COMMENT ON COLUMN webhook_subscriber.secret IS 'The signing secret sealed with that key (AES-256-GCM, base64); never stored in clear'",
    "COMMENT ON COLUMN webhook_subscriber.position IS 'Checkpoint: log position of the last change delivered or dead-lettered'",
    "COMMENT ON COLUMN webhook_subscriber.ordinal IS 'Checkpoint: its ordinal within that position'",
    "COMMENT ON COLUMN webhook_subscriber.delivered IS 'Changes delivered so far'",
    "COMMENT ON COLUMN webhook_subscriber.created_at IS 'When it was registered (RFC 3339, UTC)'",
    "COMMENT ON COLUMN webhook_subscriber.last_success_at IS 'When a delivery last succeeded'",
    "COMMENT ON COLUMN webhook_subscriber.last_failure_at IS 'When a try last failed'",
    "COMMENT ON COLUMN webhook_subscriber.last_error IS 'Why it failed (HTTP status, timed out, connection failed), never the answer body'",
    "CREATE TABLE IF NOT EXISTS webhook_dead_letter (
        subscriber text NOT NULL,
        position bigint NOT NULL,
        ordinal bigint NOT NULL,
        attempts bigint NOT NULL,
        last_status bigint,
        last_error text NOT NULL,
        failed_at text NOT NULL,
        replay_requested_at text,
        PRIMARY KEY (subscriber, position, ordinal)
    )",
    "COMMENT ON TABLE webhook_dead_letter IS 'Changes a subscriber did not accept within its tries; replayed on request'",
    "COMMENT ON COLUMN webhook_dead_letter.subscriber IS 'The webhook subscriber'",
    "COMMENT ON COLUMN webhook_dead_letter.position IS 'The change: log position (see customer_change)'",
    "COMMENT ON COLUMN webhook_dead_letter.ordinal IS 'The change: ordinal within that position'",
    "COMMENT ON COLUMN webhook_dead_letter.attempts IS 'Tries made in all'",
    "COMMENT ON COLUMN webhook_dead_letter.last_status IS 'HTTP status of the last try, null when there was no answer'",
    "COMMENT ON COLUMN webhook_dead_letter.last_error IS 'Why the last try failed, never the answer body'",
    "COMMENT ON COLUMN webhook_dead_letter.failed_at IS 'When the last try failed (RFC 3339, UTC)'",
    "COMMENT ON COLUMN webhook_dead_letter.replay_requested_at IS 'When an admin asked to replay it; null when no replay is pending'",
];

const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_subscriber (
        id text PRIMARY KEY,
        url text NOT NULL,
        types text NOT NULL,
        scopes text NOT NULL,
        key_id text NOT NULL,
        secret text NOT NULL,
        position integer NOT NULL,
        ordinal integer NOT NULL,
        delivered integer NOT NULL,
        created_at text NOT NULL,
        last_success_at text,
        last_failure_at text,
        last_error text
    )",
    "CREATE TABLE IF NOT EXISTS webhook_dead_letter (
        subscriber text NOT NULL,
        position integer NOT NULL,
        ordinal integer NOT NULL,
        attempts integer NOT NULL,
        last_status integer,
        last_error text NOT NULL,
        failed_at text NOT NULL,
        replay_requested_at text,
        PRIMARY KEY (subscriber, position, ordinal)
    ) WITHOUT ROWID",
];

/// The key-store subject (and AAD) of a subscriber's secret.
fn subject(id: Uuid) -> String {
    format!("webhook:{id}")
}

fn list_text(items: Option<Vec<&str>>) -> String {
    match items {
        None => "*".to_owned(),
        Some(items) => items.join(","),
    }
}

fn text_list(text: &str) -> Option<Vec<String>> {
    (text != "*").then(|| text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

impl Webhooks {
    /// The webhooks kept in `db`, secrets sealed by `keys`. The tables are
    /// created (if missing) by the first operation that needs them.
    pub fn new(db: ReadDb, keys: Arc<dyn KeyStore>, settings: WebhookSettings) -> Webhooks {
        Webhooks {
            db,
            keys,
            settings,
            wake: Arc::new(Notify::new()),
            ready: Arc::default(),
        }
    }

    /// Creates the tables if they are missing (once per process).
    pub async fn ensure_tables(&self) -> Result<(), sqlx::Error> {
        self.ready.get_or_try_init(|| create_tables(&self.db)).await.map(|_| ())
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }
}

/// Creates the webhook tables if they are missing.
async fn create_tables(db: &ReadDb) -> Result<(), sqlx::Error> {
    let statements = match db.dialect() {
        Dialect::Postgres => POSTGRES,
        Dialect::Sqlite => SQLITE,
    };
    let mut tx = db.begin_write().await?;
    if db.dialect() == Dialect::Postgres {
        // Two services starting together would collide on the names
        // (`IF NOT EXISTS` is not atomic against a concurrent create).
        // "mdm-whk" in ASCII.
        sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_xact_lock(30791192536303467)) AS l")
            .execute(&mut *tx)
            .await?;
    }
    for s in statements {
        sqlx::query(s).execute(&mut *tx).await?;
    }
    tx.commit().await
}

impl Webhooks {
    /// Registers a subscriber; returns it as listed.
    pub async fn register(&self, new: NewSubscriber) -> Result<SubscriberInfo, WebhookError> {
        self.ensure_tables().await?;
        let id = Uuid::new_v4();
        let subject = subject(id);
        let lookup = self.keys.get_or_create(std::slice::from_ref(&subject)).await?;
        let (key_id, key) = match lookup.into_iter().next().map(|l| l.key) {
            Some(SubjectKey::Active { key_id, key }) => (key_id, key),
            _ => return Err(WebhookError::Secret(id)),
        };
        let sealed =
            base64::engine::general_purpose::STANDARD.encode(key.seal(subject.as_bytes(), new.secret.as_bytes()));
        let start = match new.after {
            Some(c) => c,
            // Before the customers projection created its tables (the
            // first seconds of a new deployment) there are no changes yet.
            None if !self.db.table_exists("customer_change").await? => ChangeCursor::START,
            None => last_change(&self.db).await?,
        };
        let types = list_text(new.types.as_ref().map(|t| t.iter().map(|t| t.as_str()).collect()));
        let scopes = new.scopes.to_text();
        let now = time_text(Utc::now());
        let mut conn = self.db.pool().acquire().await?;
        let sql =
            "INSERT INTO webhook_subscriber (id, url, types, scopes, key_id, secret, position, ordinal, delivered, \
                   created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)";
        sqlx::query(&fit(&conn, sql))
            .bind(id.to_string())
            .bind(new.url.as_str())
            .bind(&types)
            .bind(&scopes)
            .bind(key_id.to_string())
            .bind(sealed)
            .bind(start.position)
            .bind(start.ordinal)
            .bind(&now)
            .execute(&mut *conn)
            .await?;
        drop(conn);
        self.wake.notify_waiters();
        tracing::info!(subscriber = %id, "webhook subscriber registered");
        self.get(id).await
    }

    /// One subscriber.
    pub async fn get(&self, id: Uuid) -> Result<SubscriberInfo, WebhookError> {
        self.list()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(WebhookError::Unknown)
    }

    /// Every subscriber, oldest first.
    pub async fn list(&self) -> Result<Vec<SubscriberInfo>, WebhookError> {
        self.ensure_tables().await?;
        let rows = sqlx::query(
            "SELECT s.id, s.url, s.types, s.scopes, s.position, s.ordinal, s.delivered, s.created_at, \
             s.last_success_at, s.last_failure_at, s.last_error, \
             (SELECT count(*) FROM webhook_dead_letter d WHERE d.subscriber = s.id) AS dead \
             FROM webhook_subscriber s ORDER BY s.created_at, s.id",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let Ok(id) = Uuid::parse_str(&id) else { continue };
            let types: String = row.try_get(2)?;
            let scopes: String = row.try_get(3)?;
            out.push(SubscriberInfo {
                id,
                url: row.try_get(1)?,
                types: text_list(&types),
                scopes: text_list(&scopes),
                checkpoint: ChangeCursor::new(row.try_get(4)?, row.try_get(5)?).to_string(),
                delivered: row.try_get(6)?,
                created_at: row.try_get(7)?,
                last_success_at: row.try_get(8)?,
                last_failure_at: row.try_get(9)?,
                last_error: row.try_get(10)?,
                dead_letters: row.try_get(11)?,
            });
        }
        Ok(out)
    }

    /// Deletes a subscriber and its dead letters, and destroys the key
    /// sealing its secret. Its worker stops at its next step.
    pub async fn delete(&self, id: Uuid) -> Result<(), WebhookError> {
        self.ensure_tables().await?;
        let mut tx = self.db.begin_write().await?;
        let key_id: Option<(String,)> =
            sqlx::query_as(&fit(&tx, "SELECT key_id FROM webhook_subscriber WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((key_id,)) = key_id else {
            return Err(WebhookError::Unknown);
        };
        sqlx::query(&fit(&tx, "DELETE FROM webhook_dead_letter WHERE subscriber = $1"))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(&fit(&tx, "DELETE FROM webhook_subscriber WHERE id = $1"))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Ok(key_id) = Uuid::parse_str(&key_id) {
            // The rows are gone already; a key left behind by a failure
            // here seals nothing anyone can find.
            if let Err(error) = self.keys.destroy(&[key_id]).await {
                tracing::warn!(subscriber = %id, error = %error, "could not destroy a deleted webhook's key");
            }
        }
        self.wake.notify_waiters();
        tracing::info!(subscriber = %id, "webhook subscriber deleted");
        Ok(())
    }

    /// A subscriber's dead letters, oldest change first (at most 1,000).
    pub async fn dead_letters(&self, id: Uuid) -> Result<Vec<DeadLetter>, WebhookError> {
        self.get(id).await?;
        let rows = sqlx::query(
            "SELECT position, ordinal, attempts, last_status, last_error, failed_at, replay_requested_at \
             FROM webhook_dead_letter WHERE subscriber = $1 ORDER BY position, ordinal LIMIT 1000",
        )
        .bind(id.to_string())
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let cursor = ChangeCursor::new(row.try_get(0)?, row.try_get(1)?);
            let change = change_at(&self.db, cursor).await?;
            let requested: Option<String> = row.try_get(6)?;
            out.push(DeadLetter {
                id: cursor.to_string(),
                token: change.as_ref().map(|c| c.token),
                change_type: change.map(|c| c.change_type.as_str().to_owned()),
                attempts: row.try_get(2)?,
                last_status: row.try_get(3)?,
                last_error: row.try_get(4)?,
                failed_at: row.try_get(5)?,
                replay_requested: requested.is_some(),
            });
        }
        Ok(out)
    }

    /// Marks every dead letter of a subscriber for replay; returns how many.
    pub async fn replay(&self, id: Uuid) -> Result<u64, WebhookError> {
        self.get(id).await?;
        let mut conn = self.db.pool().acquire().await?;
        let sql = "UPDATE webhook_dead_letter SET replay_requested_at = $1 WHERE subscriber = $2";
        let done = sqlx::query(&fit(&conn, sql))
            .bind(time_text(Utc::now()))
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
        drop(conn);
        self.wake.notify_waiters();
        tracing::info!(subscriber = %id, dead_letters = done.rows_affected(), "webhook dead letters queued for replay");
        Ok(done.rows_affected())
    }

    async fn subscriber_ids(&self) -> Result<Vec<Uuid>, sqlx::Error> {
        self.ensure_tables().await?;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM webhook_subscriber")
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.into_iter().filter_map(|(id,)| Uuid::parse_str(&id).ok()).collect())
    }

    /// Whether a request from subscriber `id` is signed with its secret
    /// (see [`signature_valid`]); `false` for an unknown subscriber.
    pub async fn signed_by(&self, id: Uuid, header: &str, body: &[u8], now: i64) -> Result<bool, WebhookError> {
        self.ensure_tables().await?;
        Ok(match self.load(id).await? {
            Some(target) => signature_valid(&target.signer, header, body, now),
            None => false,
        })
    }

    /// What a worker needs of its subscriber, the secret opened.
    async fn load(&self, id: Uuid) -> Result<Option<Target>, WebhookError> {
        let row = sqlx::query(
            "SELECT url, types, scopes, key_id, secret, position, ordinal FROM webhook_subscriber WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let url: String = row.try_get(0)?;
        let types: String = row.try_get(1)?;
        let scopes: String = row.try_get(2)?;
        let key_id: String = row.try_get(3)?;
        let sealed: String = row.try_get(4)?;
        let key_id = Uuid::parse_str(&key_id).map_err(|_| WebhookError::Secret(id))?;
        let key = match self.keys.by_ids(&[key_id]).await?.into_iter().next().flatten() {
            Some(SubjectKey::Active { key, .. }) => key,
            _ => return Err(WebhookError::Secret(id)),
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| WebhookError::Secret(id))?;
        let secret = key
            .open(subject(id).as_bytes(), &sealed)
            .map_err(|_| WebhookError::Secret(id))?;
        let signer = Hmac::<Sha256>::new_from_slice(&secret).map_err(|_| WebhookError::Secret(id))?;
        let types = text_list(&types).map(|list| list.iter().filter_map(|t| ChangeType::parse(t)).collect());
        Ok(Some(Target {
            id,
            url,
            types,
            scopes: Scopes::parse(&scopes).map_err(|_| WebhookError::Corrupt(id))?,
            signer,
            checkpoint: ChangeCursor::new(row.try_get(5)?, row.try_get(6)?),
        }))
    }

    /// Moves the checkpoint from `from` to `to` (and counts a delivery),
    /// unless it moved meanwhile (another dispatcher, or the subscriber was
    /// deleted): then `false`.
    async fn advance(
        &self,
        id: Uuid,
        from: ChangeCursor,
        to: ChangeCursor,
        delivered: bool,
    ) -> Result<bool, sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        let sql = if delivered {
            "UPDATE webhook_subscriber SET delivered = delivered + 1, last_success_at = $1, position = $2, ordinal = $3 \
             WHERE id = $4 AND position = $5 AND ordinal = $6"
        } else {
            "UPDATE webhook_subscriber SET position = $1, ordinal = $2 WHERE id = $3 AND position = $4 AND ordinal = $5"
        };
        let sql = fit(&conn, sql);
        let mut query = sqlx::query(&sql);
        if delivered {
            query = query.bind(time_text(Utc::now()));
        }
        let done = query
            .bind(to.position)
            .bind(to.ordinal)
            .bind(id.to_string())
            .bind(from.position)
            .bind(from.ordinal)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn note_failure(&self, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        let sql = "UPDATE webhook_subscriber SET last_failure_at = $1, last_error = $2 WHERE id = $3";
        sqlx::query(&fit(&conn, sql))
            .bind(time_text(Utc::now()))
            .bind(error)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Records a change as dead (a new dead letter, or a replayed one that
    /// failed again).
    async fn bury(&self, id: Uuid, at: ChangeCursor, failure: &Failure, attempts: u32) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        let sql = "INSERT INTO webhook_dead_letter (subscriber, position, ordinal, attempts, last_status, last_error, \
                   failed_at, replay_requested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL) \
                   ON CONFLICT (subscriber, position, ordinal) DO UPDATE SET \
                   attempts = webhook_dead_letter.attempts + excluded.attempts, last_status = excluded.last_status, \
                   last_error = excluded.last_error, failed_at = excluded.failed_at, replay_requested_at = NULL";
        sqlx::query(&fit(&conn, sql))
            .bind(id.to_string())
            .bind(at.position)
            .bind(at.ordinal)
            .bind(i64::from(attempts))
            .bind(failure.status.map(i64::from))
            .bind(failure.reason())
            .bind(time_text(Utc::now()))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn exhume(&self, id: Uuid, at: ChangeCursor) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        let sql = "DELETE FROM webhook_dead_letter WHERE subscriber = $1 AND position = $2 AND ordinal = $3";
        sqlx::query(&fit(&conn, sql))
            .bind(id.to_string())
            .bind(at.position)
            .bind(at.ordinal)
            .execute(&mut *conn)
            .await?;
        let sql = "UPDATE webhook_subscriber SET delivered = delivered + 1, last_success_at = $1 WHERE id = $2";
        sqlx::query(&fit(&conn, sql))
            .bind(time_text(Utc::now()))
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Dead letters of `id` waiting for a replay, oldest first.
    async fn replays(&self, id: Uuid) -> Result<Vec<ChangeCursor>, sqlx::Error> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT position, ordinal FROM webhook_dead_letter WHERE subscriber = $1 AND replay_requested_at IS NOT NULL \
             ORDER BY position, ordinal LIMIT 100",
        )
        .bind(id.to_string())
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().map(|(p, o)| ChangeCursor::new(p, o)).collect())
    }
}

/// A subscriber as its worker holds it.
struct Target {
    id: Uuid,
    url: String,
    types: Option<Vec<ChangeType>>,
    scopes: Scopes,
    /// HMAC-SHA256 keyed with the secret (the secret itself is dropped).
    signer: Hmac<Sha256>,
    checkpoint: ChangeCursor,
}

/// Why one try failed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    status: Option<u16>,
    kind: &'static str,
}

impl Failure {
    fn reason(&self) -> String {
        match self.status {
            Some(s) => format!("HTTP {s}"),
            None => self.kind.to_owned(),
        }
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(signer: &Hmac<Sha256>, t: i64, body: &[u8]) -> String {
    let mut mac = signer.clone();
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How far a signed request's time may be from the service's clock.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Whether `header` (`t=<t>,v1=<hex>`, as [`signature`] writes it) signs
/// `body` with `signer`'s secret at a time within
/// [`SIGNATURE_TOLERANCE_SECS`] of `now` (unix seconds). The MAC is
/// compared in constant time.
pub fn signature_valid(signer: &Hmac<Sha256>, header: &str, body: &[u8], now: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > SIGNATURE_TOLERANCE_SECS {
        return false;
    }
    let mut mac = signer.clone();
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// How a delivery ended.
enum Outcome {
    Delivered,
    /// Nothing in it for this subscriber (an update of attributes its
    /// scopes hide): no request.
    Skipped,
    Dead(Failure, u32),
    /// The service is stopping.
    Stopped,
}

/// Runs the dispatcher until `stop` turns true: one worker per subscriber,
/// started and stopped as subscribers come and go. `progress` (the
/// customers runner's) wakes idle workers when new changes commit.
pub async fn run(webhooks: Webhooks, progress: Option<watch::Receiver<Progress>>, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(webhooks.settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mdm-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(error = %error, "webhooks: cannot build the HTTP client; no webhook will be delivered");
            return;
        }
    };
    let mut workers: HashMap<Uuid, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut failing = false;
    loop {
        // Ask to be woken before reading the list, so a registration made
        // while it is read is not missed.
        let woken = webhooks.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match webhooks.subscriber_ids().await {
            Ok(ids) => {
                failing = false;
                workers.retain(|id, handle| {
                    let keep = ids.contains(id) && !handle.is_finished();
                    if !keep {
                        handle.abort();
                    }
                    keep
                });
                for id in ids {
                    workers.entry(id).or_insert_with(|| {
                        let worker = Worker {
                            webhooks: webhooks.clone(),
                            client: client.clone(),
                            id,
                            wake: progress.clone(),
                            stop: stop.clone(),
                        };
                        tokio::spawn(worker.run())
                    });
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %error, "webhooks: cannot read the subscribers; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = woken => {}
            _ = tokio::time::sleep(webhooks.settings.poll) => {}
        }
    }
    for (_, handle) in workers {
        // Workers watch the same signal; one that does not stop soon is
        // cut off (its change goes out again after the restart).
        let abort = handle.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), handle).await.is_err() {
            abort.abort();
        }
    }
}

/// Starts [`run`] on its own task.
pub fn spawn(
    webhooks: Webhooks,
    progress: Option<watch::Receiver<Progress>>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(webhooks, progress, stop))
}

/// Delivers one subscriber's changes.
struct Worker {
    webhooks: Webhooks,
    client: reqwest::Client,
    id: Uuid,
    wake: Option<watch::Receiver<Progress>>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.deliver_all().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(subscriber = %self.id, error = %error, "webhook worker failed; retrying");
                }
            }
            if self.sleep(pause).await {
                return;
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Sleeps `pause` or until the service stops (then `true`).
    async fn sleep(&mut self, pause: Duration) -> bool {
        let stopped = tokio::select! {
            _ = self.stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(pause) => false,
        };
        stopped || *self.stop.borrow()
    }

    /// Delivers until the service stops or the subscriber is gone (`Ok`).
    async fn deliver_all(&mut self) -> Result<(), WebhookError> {
        let Some(mut target) = self.webhooks.load(self.id).await? else {
            return Ok(());
        };
        let page_size = 200;
        'pages: loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            // Replayed dead letters first.
            let replays = self.webhooks.replays(self.id).await?;
            if !replays.is_empty() {
                for at in replays {
                    let Some(change) = change_at(&self.webhooks.db, at).await? else {
                        // The change log no longer holds it (rebuilt with
                        // other rules): nothing to send.
                        self.webhooks.exhume(self.id, at).await?;
                        continue;
                    };
                    match self.deliver(&target, &change).await? {
                        Outcome::Delivered | Outcome::Skipped => self.webhooks.exhume(self.id, at).await?,
                        Outcome::Dead(failure, attempts) => self.webhooks.bury(self.id, at, &failure, attempts).await?,
                        Outcome::Stopped => return Ok(()),
                    }
                }
                continue;
            }
            if let Some(wake) = &mut self.wake {
                wake.borrow_and_update();
            }
            let notify = self.webhooks.wake.clone();
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let page = changes_after(&self.webhooks.db, target.checkpoint, page_size, target.types.as_deref()).await?;
            for change in &page.changes {
                let outcome = self.deliver(&target, change).await?;
                let to = change.cursor();
                let delivered = match outcome {
                    Outcome::Delivered => true,
                    Outcome::Skipped => false,
                    Outcome::Dead(failure, attempts) => {
                        tracing::warn!(subscriber = %self.id, change = %to, error = %failure.reason(), attempts,
                            "webhook delivery gave up; the change is a dead letter");
                        self.webhooks.bury(self.id, to, &failure, attempts).await?;
                        false
                    }
                    Outcome::Stopped => return Ok(()),
                };
                if !self.webhooks.advance(self.id, target.checkpoint, to, delivered).await? {
                    // Deleted, or moved by another dispatcher: carry on
                    // from what the database says.
                    match self.webhooks.load(self.id).await? {
                        None => return Ok(()),
                        Some(t) => target = t,
                    }
                    continue 'pages;
                }
                target.checkpoint = to;
            }
            if page.next != target.checkpoint {
                // The rest of the page was of other types: skip it for good.
                if !self
                    .webhooks
                    .advance(self.id, target.checkpoint, page.next, false)
                    .await?
                {
                    match self.webhooks.load(self.id).await? {
                        None => return Ok(()),
                        Some(t) => target = t,
                    }
                    continue 'pages;
                }
                target.checkpoint = page.next;
            }
            if page.full || !page.changes.is_empty() {
                continue;
            }
            let poll = tokio::time::sleep(self.webhooks.settings.poll);
            let stop = self.stop.wait_for(|s| *s);
            let mut runner_gone = false;
            match &mut self.wake {
                Some(wake) => {
                    tokio::select! {
                        changed = wake.changed() => runner_gone = changed.is_err(),
                        _ = woken => {}
                        _ = poll => {}
                        _ = stop => return Ok(()),
                    }
                }
                None => {
                    tokio::select! {
                        _ = woken => {}
                        _ = poll => {}
                        _ = stop => return Ok(()),
                    }
                }
            }
            if runner_gone {
                self.wake = None;
            }
        }
    }

    /// Tries to deliver one change until it is accepted or the tries run
    /// out. A change the subscriber's scopes leave empty (an update of
    /// attributes it may not see) counts as delivered without a request.
    async fn deliver(&mut self, target: &Target, change: &CustomerChange) -> Result<Outcome, WebhookError> {
        let Some(document) = visible_cloud_event(change, &target.scopes) else {
            return Ok(Outcome::Skipped);
        };
        let body = serde_json::to_vec(&document).unwrap_or_default();
        let id = change.cursor().to_string();
        let attempts = self.webhooks.settings.max_attempts.max(1);
        let mut last = Failure {
            status: None,
            kind: "not tried",
        };
        for attempt in 1..=attempts {
            let t = Utc::now().timestamp();
            let sent = self
                .client
                .post(&target.url)
                .header(reqwest::header::CONTENT_TYPE, "application/cloudevents+json")
                .header("Webhook-Id", &id)
                .header("Webhook-Signature", signature(&target.signer, t, &body))
                .body(body.clone())
                .send();
            let result = tokio::select! {
                r = sent => r,
                _ = self.stop.wait_for(|s| *s) => return Ok(Outcome::Stopped),
            };
            last = match result {
                Ok(response) if response.status().is_success() => return Ok(Outcome::Delivered),
                Ok(response) => Failure {
                    status: Some(response.status().as_u16()),
                    kind: "rejected",
                },
                // The error's text may carry the URL: only its kind is kept.
                Err(e) if e.is_timeout() => Failure {
                    status: None,
                    kind: "timed out",
                },
                Err(e) if e.is_connect() => Failure {
                    status: None,
                    kind: "connection failed",
                },
                Err(_) => Failure {
                    status: None,
                    kind: "request failed",
                },
            };
            self.webhooks.note_failure(target.id, &last.reason()).await?;
            if attempt < attempts && self.sleep(self.webhooks.settings.backoff(attempt)).await {
                return Ok(Outcome::Stopped);
            }
        }
        Ok(Outcome::Dead(last, attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let s = WebhookSettings {
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_millis(1000),
            ..WebhookSettings::default()
        };
        let pauses: Vec<u128> = (1..=6).map(|n| s.backoff(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(s.backoff(100), Duration::from_millis(1000));
    }

    #[test]
    fn a_signature_is_valid_only_for_its_body_secret_and_time() {
        let signer = Hmac::<Sha256>::new_from_slice(b"s3cret-s3cret-s3cret").expect("key");
        let other = Hmac::<Sha256>::new_from_slice(b"another-secret-0000").expect("key");
        let now = 1_700_000_000;
        let header = signature(&signer, now, b"{\"a\":1}");
        assert!(signature_valid(&signer, &header, b"{\"a\":1}", now));
        assert!(signature_valid(
            &signer,
            &header,
            b"{\"a\":1}",
            now + SIGNATURE_TOLERANCE_SECS
        ));
        assert!(!signature_valid(
            &signer,
            &header,
            b"{\"a\":1}",
            now + SIGNATURE_TOLERANCE_SECS + 1
        ));
        assert!(!signature_valid(&signer, &header, b"{\"a\":2}", now), "another body");
        assert!(!signature_valid(&other, &header, b"{\"a\":1}", now), "another secret");
        for bad in ["", "t=x,v1=00", "v1=00", &format!("t={now}"), &format!("t={now},v1=zz")] {
            assert!(!signature_valid(&signer, bad, b"{\"a\":1}", now), "{bad}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_time_dot_body_in_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signer = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("any key length");
        let mut mac = signer.clone();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let a = signature(&signer, 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(&signer, 1_700_000_001, b"{}"), "the time is signed");
    }

    #[test]
    fn lists_are_stored_as_text_with_a_star_for_all() {
        assert_eq!(list_text(None), "*");
        assert_eq!(list_text(Some(vec!["created", "merged"])), "created,merged");
        assert_eq!(text_list("*"), None);
        assert_eq!(
            text_list("name,phone"),
            Some(vec!["name".to_owned(), "phone".to_owned()])
        );
    }
}
