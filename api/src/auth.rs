//! API clients, their keys, roles and field scopes.
//!
//! A client is registered by `mdm clients add` (an operator on the machine)
//! and gets a key of the form `mdm_<client id>_<secret>`, shown once. The
//! key is stored only as an Argon2id hash, in the `api_client` table of the
//! read-model database (beside the read models, but no projection owns or
//! rebuilds it). A request carries the key as `Authorization: Bearer <key>`
//! (or `X-API-Key`). Argon2 is slow on purpose (tens of milliseconds), so a
//! verified key is remembered in memory, by its SHA-256, for
//! [`VERIFIED_TTL`]: a revocation made by another process takes effect
//! within that time, one made through this process at once.
//!
//! Roles: `ingest` (the ingest endpoints), `reader` (queries and the feed,
//! limited to its field scopes), `steward` (queries, review queue, steward
//! commands), `compliance` (queries and privacy requests), `admin`
//! (everything, and operations such as webhooks). Field scopes name the
//! golden attributes a reader may see (`name`, `email`, `phone`, `address`,
//! `date_of_birth`); other roles see every field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use mdm_projections::db::{fit, parse_time, time_text};
use mdm_projections::ReadDb;
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use crate::http::problem::Problem;

/// How long a verified key is trusted without asking the database again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(10);

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Ingest,
    Reader,
    Steward,
    Compliance,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Ingest, Role::Reader, Role::Steward, Role::Compliance, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Reader => "reader",
            Role::Steward => "steward",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role may use endpoints that need `need`.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Ingest => matches!(self, Role::Ingest | Role::Admin),
            Need::Read => matches!(self, Role::Reader | Role::Steward | Role::Compliance | Role::Admin),
            Need::Steward => matches!(self, Role::Steward | Role::Admin),
            Need::Compliance => matches!(self, Role::Compliance | Role::Admin),
            Need::Admin => self == Role::Admin,
        }
    }
}

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Send source records.
    Ingest,
    /// Read customers (within the client's field scopes) and the feed.
    Read,
    /// Work the review queue and issue steward commands.
    Steward,
    /// Privacy requests.
    Compliance,
    /// Operations: webhooks, metrics.
    Admin,
}

/// The golden attributes a client may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes(Option<Vec<&'static str>>);

/// The golden attribute names scopes can name.
pub const SCOPE_NAMES: [&str; 5] = ["name", "email", "phone", "address", "date_of_birth"];

impl Scopes {
    /// Every field.
    pub fn all() -> Scopes {
        Scopes(None)
    }

    /// Parses `name,phone` (or `*` / `all`). Names the unknown scope.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let text = text.trim();
        if text == "*" || text == "all" {
            return Ok(Scopes::all());
        }
        let mut names = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let known = SCOPE_NAMES
                .iter()
                .find(|n| **n == part)
                .ok_or_else(|| format!("unknown scope `{part}`; use {}", SCOPE_NAMES.join(", ")))?;
            if !names.contains(known) {
                names.push(*known);
            }
        }
        Ok(Scopes(Some(names)))
    }

    /// Whether every field is visible.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// Whether the golden attribute `attribute` is visible.
    pub fn allows(&self, attribute: &str) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.contains(&attribute),
        }
    }

    /// Removes what may not be seen from a map keyed by golden attribute.
    pub fn filter(&self, attributes: &mut serde_json::Map<String, serde_json::Value>) {
        if self.0.is_some() {
            attributes.retain(|k, _| self.allows(k));
        }
    }

    /// The stored form: `*` or a comma-separated list.
    pub fn to_text(&self) -> String {
        match &self.0 {
            None => "*".to_owned(),
            Some(names) => names.join(","),
        }
    }
}

/// The authenticated client of a request (an axum extension).
#[derive(Clone, Debug)]
pub struct Principal {
    pub client_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The fields it may see: readers' own, everyone else all.
    pub scopes: Scopes,
}

/// A registered client, as `mdm clients list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ClientInfo {
    pub client_id: Uuid,
    pub name: String,
    pub role: Role,
    pub scopes: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("a client named `{0}` exists already")]
    Duplicate(String),
    #[error("no client with that id or name")]
    Unknown,
    #[error("client names are 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadName,
    #[error("the client store does not answer")]
    Database(#[from] sqlx::Error),
    #[error("cannot hash the key")]
    Hash,
}

/// Why a request was not authenticated. Never says which part was wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("the client store does not answer")]
    Unavailable(#[source] sqlx::Error),
}

/// The clients table and the cache of verified keys.
#[derive(Clone, Debug)]
pub struct Clients {
    db: ReadDb,
    verified: Arc<Mutex<VerifiedKeys>>,
}

/// Verified keys by SHA-256: the client, when it was last checked, and the
/// stored hash the key was verified against.
type VerifiedKeys = HashMap<[u8; 32], (Principal, Instant, String)>;

const DDL: &str = "CREATE TABLE IF NOT EXISTS api_client (\
    client_id TEXT PRIMARY KEY, \
    name TEXT NOT NULL UNIQUE, \
    role TEXT NOT NULL, \
    scopes TEXT NOT NULL, \
    key_hash TEXT NOT NULL, \
    created_at TEXT NOT NULL, \
    revoked_at TEXT)";

const COMMENTS: [&str; 8] = [
    "COMMENT ON TABLE api_client IS 'API clients (mdm clients add): role, field scopes and the Argon2id hash of their key; not a projection, never rebuilt'",
    "COMMENT ON COLUMN api_client.client_id IS 'Random id; also the middle part of the key'",
    "COMMENT ON COLUMN api_client.name IS 'Operator-given name of the client (a system, not a person)'",
    "COMMENT ON COLUMN api_client.role IS 'ingest, reader, steward, compliance or admin'",
    "COMMENT ON COLUMN api_client.scopes IS 'Golden attributes a reader may see, comma-separated, or * for all'",
    "COMMENT ON COLUMN api_client.key_hash IS 'Argon2id PHC string of the whole key; the key itself is never stored'",
    "COMMENT ON COLUMN api_client.created_at IS 'When the client was added (RFC 3339 UTC)'",
    "COMMENT ON COLUMN api_client.revoked_at IS 'When the client was revoked; its key no longer authenticates'",
];

impl Clients {
    /// Opens the clients table, creating it if needed.
    pub async fn open(db: ReadDb) -> Result<Clients, sqlx::Error> {
        sqlx::query(DDL).execute(db.pool()).await?;
        if db.dialect() == mdm_projections::db::Dialect::Postgres {
            for c in COMMENTS {
                sqlx::query(c).execute(db.pool()).await?;
            }
        }
        Ok(Clients {
            db,
            verified: Arc::default(),
        })
    }

    /// Registers a client and returns it with its key (shown once).
    pub async fn add(&self, name: &str, role: Role, scopes: &Scopes) -> Result<(ClientInfo, String), ClientError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ClientError::BadName);
        }
        let client_id = Uuid::new_v4();
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let key = format!(
            "mdm_{}_{}",
            client_id.simple(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(key.as_bytes(), &salt)
            .map_err(|_| ClientError::Hash)?
            .to_string();
        let scopes = if role == Role::Reader {
            scopes.clone()
        } else {
            Scopes::all()
        };
        let now = Utc::now();
        let mut conn = self.db.pool().acquire().await?;
        let sql = "INSERT INTO api_client (client_id, name, role, scopes, key_hash, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        let result = sqlx::query(&fit(&conn, sql))
            .bind(client_id.to_string())
            .bind(name)
            .bind(role.as_str())
            .bind(scopes.to_text())
            .bind(hash)
            .bind(time_text(now))
            .execute(&mut *conn)
            .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ClientError::Duplicate(name.to_owned()))
            }
            Err(e) => return Err(e.into()),
        }
        Ok((
            ClientInfo {
                client_id,
                name: name.to_owned(),
                role,
                scopes: scopes.to_text(),
                created_at: now,
                revoked_at: None,
            },
            key,
        ))
    }

    /// Every client, oldest first.
    pub async fn list(&self) -> Result<Vec<ClientInfo>, ClientError> {
        let rows = sqlx::query(
            "SELECT client_id, name, role, scopes, created_at, revoked_at FROM api_client ORDER BY created_at, name",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let role: String = row.try_get(2)?;
            let created: String = row.try_get(4)?;
            let revoked: Option<String> = row.try_get(5)?;
            out.push(ClientInfo {
                client_id: Uuid::parse_str(&id).unwrap_or_default(),
                name: row.try_get(1)?,
                role: Role::parse(&role).unwrap_or(Role::Reader),
                scopes: row.try_get(3)?,
                created_at: parse_time(&created).unwrap_or_default(),
                revoked_at: revoked.as_deref().and_then(parse_time),
            });
        }
        Ok(out)
    }

    /// Revokes the client with this id or name.
    pub async fn revoke(&self, id_or_name: &str) -> Result<ClientInfo, ClientError> {
        let client = self
            .list()
            .await?
            .into_iter()
            .find(|c| c.name == id_or_name || c.client_id.to_string() == id_or_name)
            .ok_or(ClientError::Unknown)?;
        let mut conn = self.db.pool().acquire().await?;
        let sql = "UPDATE api_client SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL";
        sqlx::query(&fit(&conn, sql))
            .bind(time_text(Utc::now()))
            .bind(client.client_id.to_string())
            .execute(&mut *conn)
            .await?;
        if let Ok(mut cache) = self.verified.lock() {
            cache.retain(|_, (p, _, _)| p.client_id != client.client_id);
        }
        Ok(client)
    }

    /// The client a presented key belongs to.
    ///
    /// The first use of a key runs Argon2 (tens of milliseconds). After
    /// that the key is known by its SHA-256: for [`VERIFIED_TTL`] it is
    /// trusted as is, then re-checked with one primary-key read (still
    /// registered, not revoked, same stored hash) rather than Argon2 again,
    /// so that many requests arriving as a key expires do not all pay for
    /// Argon2 at once.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let cached = self.verified.lock().ok().and_then(|c| c.get(&digest).cloned());
        if let Some((p, at, _)) = &cached {
            if at.elapsed() < VERIFIED_TTL {
                return Ok(p.clone());
            }
        }
        let client_id = parse_key(key).ok_or(AuthError::Invalid)?;
        let mut conn = self.db.pool().acquire().await.map_err(AuthError::Unavailable)?;
        let sql = "SELECT name, role, scopes, key_hash FROM api_client WHERE client_id = $1 AND revoked_at IS NULL";
        let row = sqlx::query(&fit(&conn, sql))
            .bind(client_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(AuthError::Unavailable)?;
        drop(conn);
        let Some(row) = row else {
            if let Ok(mut cache) = self.verified.lock() {
                cache.remove(&digest);
            }
            return Err(AuthError::Invalid);
        };
        let get = |i| row.try_get::<String, _>(i).map_err(AuthError::Unavailable);
        let (name, role, scopes, hash) = (get(0)?, get(1)?, get(2)?, get(3)?);
        let already = cached.as_ref().is_some_and(|(_, _, h)| *h == hash);
        if !already {
            let key_owned = key.to_owned();
            let hash_owned = hash.clone();
            // Argon2 takes tens of milliseconds of CPU: off the async threads.
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash_owned)
                    .map(|h| Argon2::default().verify_password(key_owned.as_bytes(), &h).is_ok())
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if !ok {
                return Err(AuthError::Invalid);
            }
        }
        let role = Role::parse(&role).ok_or(AuthError::Invalid)?;
        let principal = Principal {
            client_id,
            name,
            role,
            scopes: if role == Role::Reader {
                Scopes::parse(&scopes).map_err(|_| AuthError::Invalid)?
            } else {
                Scopes::all()
            },
        };
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, (_, at, _)| at.elapsed() < VERIFIED_TTL * 6);
            }
            cache.insert(digest, (principal.clone(), Instant::now(), hash));
        }
        Ok(principal)
    }
}

/// The client id inside a key of the form `mdm_<32 hex>_<secret>`.
fn parse_key(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix("mdm_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.is_empty() {
        return None;
    }
    Uuid::try_parse(id).ok()
}

/// The key a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// 401: no key, or one that does not authenticate.
pub fn unauthorized() -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "send a valid API key as `Authorization: Bearer <key>`",
    )
    .field("Authorization")
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

/// 403: authenticated, but the role does not allow this endpoint.
pub fn forbidden(role: Role) -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("the `{}` role may not use this endpoint", role.as_str()),
    )
    .into_response()
}

/// Middleware: authenticates the request and checks that its role meets
/// `need`; on success the [`Principal`] is a request extension.
pub async fn require(State((clients, need)): State<(Clients, Need)>, mut request: Request, next: Next) -> Response {
    let Some(key) = presented(request.headers()) else {
        return unauthorized();
    };
    let principal = match clients.authenticate(key).await {
        Ok(p) => p,
        Err(AuthError::Unavailable(error)) => {
            tracing::warn!(error = %error, "authentication: the client store does not answer");
            return Problem::unavailable("client store").into_response();
        }
        Err(_) => return unauthorized(),
    };
    if !principal.role.allows(need) {
        return forbidden(principal.role);
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_table_says() {
        let needs = [Need::Ingest, Need::Read, Need::Steward, Need::Compliance, Need::Admin];
        let table = [
            (Role::Ingest, [true, false, false, false, false]),
            (Role::Reader, [false, true, false, false, false]),
            (Role::Steward, [false, true, true, false, false]),
            (Role::Compliance, [false, true, false, true, false]),
            (Role::Admin, [true, true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (need, want) in needs.into_iter().zip(allowed) {
                assert_eq!(role.allows(need), want, "{role:?} {need:?}");
            }
        }
    }

    #[test]
    fn scopes_parse_filter_and_name_the_unknown_one() {
        let s = Scopes::parse("name, phone").expect("valid");
        assert!(s.allows("name") && s.allows("phone") && !s.allows("email"));
        let mut m = serde_json::Map::new();
        for k in ["name", "email", "phone"] {
            m.insert(k.to_owned(), serde_json::Value::Null);
        }
        s.filter(&mut m);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["name", "phone"]);
        assert_eq!(s.to_text(), "name,phone");
        assert!(Scopes::parse("*").expect("all").is_all());
        let e = Scopes::parse("name,salary").expect_err("unknown");
        assert!(e.contains("salary"), "{e}");
    }

    #[test]
    fn keys_carry_the_client_id() {
        let id = Uuid::new_v4();
        assert_eq!(parse_key(&format!("mdm_{}_abc", id.simple())), Some(id));
        assert_eq!(parse_key("mdm_short_abc"), None);
        assert_eq!(parse_key(&format!("mdm_{}_", id.simple())), None);
        assert_eq!(parse_key("Bearer x"), None);
    }

    #[tokio::test]
    async fn added_keys_authenticate_until_revoked() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ReadDb::open_sqlite(&dir.path().join("read.db")).await.expect("db");
        let clients = Clients::open(db).await.expect("open");
        let (info, key) = clients
            .add("dealer-1", Role::Reader, &Scopes::parse("name,phone").expect("scopes"))
            .await
            .expect("add");
        let p = clients.authenticate(&key).await.expect("valid key");
        assert_eq!((p.client_id, p.role), (info.client_id, Role::Reader));
        assert!(!p.scopes.allows("email"));
        assert!(matches!(
            clients.add("dealer-1", Role::Admin, &Scopes::all()).await,
            Err(ClientError::Duplicate(_))
        ));
        let mut wrong = key.clone();
        wrong.push('x');
        assert!(matches!(clients.authenticate(&wrong).await, Err(AuthError::Invalid)));
        clients.revoke("dealer-1").await.expect("revoke");
        assert!(matches!(clients.authenticate(&key).await, Err(AuthError::Invalid)));
        let listed = clients.list().await.expect("list");
        assert!(listed[0].revoked_at.is_some());
        // A steward's scopes are always all.
        let (_, key) = clients
            .add("steward-1", Role::Steward, &Scopes::parse("name").expect("scopes"))
            .await
            .expect("add");
        assert!(clients.authenticate(&key).await.expect("valid").scopes.is_all());
    }
}
