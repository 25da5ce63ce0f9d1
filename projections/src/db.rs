//! The read-model database: PostgreSQL in production, a SQLite file for the
//! embedded default, behind one `sqlx::Any` pool.
//!
//! One schema design, two dialects: every projection writes its DDL once per
//! dialect (types and comments differ) and its queries once, in the SQL both
//! accept (`$1` placeholders, `INSERT ... ON CONFLICT ... DO UPDATE`,
//! `UPDATE ... FROM (VALUES ...)`, whose columns both name `column1`,
//! `column2`, ...). Values cross the pool as `text` and `bigint` only, the
//! types `Any` carries on both: tokens are UUID text, times RFC 3339 text in
//! UTC with microseconds (so they sort as text), documents JSON text.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Executor, Transaction};

/// Which SQL the database speaks where the two differ (DDL, locking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Why the read-model database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the read-model schema name {0:?} must be letters, digits and underscores")]
    Schema(String),
    #[error("cannot open the read-model database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the read-model folder")]
    Folder(#[source] std::io::Error),
}

/// A pool onto the read-model database.
#[derive(Clone, Debug)]
pub struct ReadDb {
    pool: AnyPool,
    dialect: Dialect,
}

static DRIVERS: Once = Once::new();

fn install_drivers() {
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

impl ReadDb {
    /// Opens (creating when missing) the embedded read-model file.
    pub async fn open_sqlite(path: &Path) -> Result<ReadDb, OpenError> {
        install_drivers();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(OpenError::Folder)?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        // No statement logging: sqlx would log every slow statement's text
        // at WARN (a rebuild's multi-row inserts are long and slow by design).
        let options: AnyConnectOptions = url
            .parse::<AnyConnectOptions>()
            .map_err(OpenError::Connect)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets the API read while a projection writes; NORMAL
                    // is safe in WAL (a crash loses at most the last commits,
                    // which the checkpoint in the same transaction then
                    // replays); writers wait for each other instead of failing.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 30000").await?;
                    conn.execute("PRAGMA cache_size = -262144").await?;
                    // Statement journals (a multi-row insert that may hit a
                    // key) in memory, not a temporary file; reads through
                    // mmap instead of a pread copy per page; checkpoints every
                    // 64 MiB of WAL, so a page rewritten by many batches is
                    // copied back once (perf showed the kernel copying pages
                    // for half of a rebuild's time without these).
                    conn.execute("PRAGMA temp_store = MEMORY").await?;
                    conn.execute("PRAGMA mmap_size = 1073741824").await?;
                    conn.execute("PRAGMA wal_autocheckpoint = 16384").await?;
                    // Deleted and rewritten content is overwritten with
                    // zeros, so an erasure's purge leaves nothing of the
                    // person in free pages (see `scrub` for the WAL).
                    conn.execute("PRAGMA secure_delete = ON").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        Ok(ReadDb {
            pool,
            dialect: Dialect::Sqlite,
        })
    }

    /// Connects to PostgreSQL and keeps the read models in `schema`, apart
    /// from the event store's and the key store's schemas.
    pub async fn open_postgres(url: &str, schema: &str) -> Result<ReadDb, OpenError> {
        install_drivers();
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(OpenError::Schema(schema.to_owned()));
        }
        let options: AnyConnectOptions = url
            .parse::<AnyConnectOptions>()
            .map_err(OpenError::Connect)?
            .disable_statement_logging();
        {
            let setup = AnyPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(OpenError::Connect)?;
            // Two processes starting together may both create it; the loser
            // gets a unique violation, which means it exists.
            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            if let Err(e) = setup.execute(create.as_str()).await {
                let exists = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "23505" || c == "42P06");
                if !exists {
                    return Err(OpenError::Connect(e));
                }
            }
            setup.close().await;
        }
        let search_path = format!("SET search_path TO {schema}");
        let pool = AnyPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    conn.execute(search_path.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        Ok(ReadDb {
            pool,
            dialect: Dialect::Postgres,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`), so two writers queue on the busy
    /// timeout instead of one failing when it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Postgres => self.pool.begin().await,
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
    }

    /// Whether a table exists (in the read-model schema).
    /// After an erasure's purge: SQLite copies the WAL back into the
    /// database and truncates it, so no old page image with the person's
    /// data stays in the WAL file. (PostgreSQL keeps dead row versions until
    /// VACUUM reuses their space: see ARCHITECTURE.md, Privacy.)
    pub async fn scrub(&self) -> Result<(), sqlx::Error> {
        if self.dialect == Dialect::Sqlite {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    pub async fn table_exists(&self, table: &str) -> Result<bool, sqlx::Error> {
        let sql = match self.dialect {
            Dialect::Postgres => {
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
            }
            Dialect::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        };
        let (n,): (i64,) = sqlx::query_as(sql).bind(table).fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A time as stored: RFC 3339 in UTC with microseconds, so that text order
/// is time order.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a stored time.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Milliseconds since `clock`, which then restarts: the per-step timings
/// of the debug logs.
pub fn lap(clock: &mut std::time::Instant) -> f64 {
    let now = std::time::Instant::now();
    let ms = (now - *clock).as_secs_f64() * 1e3;
    *clock = now;
    ms
}

/// A position or version as a SQL `bigint`.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The most bind parameters one statement carries: below SQLite's 32,766
/// and PostgreSQL's 65,535.
pub const MAX_PARAMS: usize = 30_000;

/// `($1, $2, $3), ($4, $5, $6), ...`: the VALUES rows of a multi-row
/// statement with `rows` rows of `width` parameters.
pub fn values_rows(rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&n.to_string());
            n += 1;
        }
        out.push(')');
    }
    out
}

/// How many rows of `width` parameters fit in one statement.
pub fn rows_per_statement(width: usize) -> usize {
    (MAX_PARAMS / width.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_rows_number_parameters_row_by_row() {
        assert_eq!(values_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_rows(1, 1), "($1)");
    }

    #[test]
    fn in_order_placeholders_become_positional_and_others_stay() {
        assert_eq!(positional("a = $1 AND b IN ($2, $3)"), "a = ? AND b IN (?, ?)");
        assert_eq!(positional("SET x = $2 WHERE y = $1"), "SET x = $2 WHERE y = $1");
        assert_eq!(positional("x = $1 OR y = $1"), "x = $1 OR y = $1");
        assert_eq!(positional("no parameters, $ alone"), "no parameters, $ alone");
        assert_eq!(positional("($1, $2), ($3, $4)"), "(?, ?), (?, ?)");
    }

    #[test]
    fn stored_times_sort_as_text_and_read_back() {
        let a = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000001Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let b = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.1Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let (Some(a), Some(b)) = (a, b) else {
            panic!("test times parse")
        };
        assert!(time_text(a) < time_text(b));
        assert_eq!(parse_time(&time_text(a)), Some(a));
    }
}

/// A bind parameter of a multi-row statement.
#[derive(Clone, PartialEq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
}

impl Value {
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(Some(s.into()))
    }
    pub fn opt_text(s: Option<impl Into<String>>) -> Value {
        Value::Text(s.map(Into::into))
    }
    pub fn int(v: i64) -> Value {
        Value::Int(Some(v))
    }
}

/// Values are personal data: `Debug` shows the kind only.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(_) => f.write_str("Text(..)"),
            Value::Int(_) => f.write_str("Int(..)"),
            Value::Real(_) => f.write_str("Real(..)"),
        }
    }
}

/// Runs `head VALUES (...), (...) tail` over `rows` (each `width` values),
/// as many rows per statement as the parameter limit allows. `head` and
/// `tail` are complete SQL (table names already filled in).
pub async fn execute_rows(
    conn: &mut sqlx::AnyConnection,
    head: &str,
    tail: &str,
    width: usize,
    rows: &[Vec<Value>],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(rows_per_statement(width)) {
        let sql = format!("{head} VALUES {} {tail}", values_rows(chunk.len(), width));
        let sql = fit(conn, &sql);
        let mut query = sqlx::query(&sql);
        for row in chunk {
            debug_assert_eq!(row.len(), width);
            for v in row {
                query = match v {
                    Value::Text(t) => query.bind(t.as_deref()),
                    Value::Int(i) => query.bind(*i),
                    Value::Real(r) => query.bind(*r),
                };
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The statement as the connection's database runs it fastest. On SQLite a
/// statement whose placeholders are exactly `$1, $2, ... $n` in text order
/// gets anonymous `?` placeholders instead: SQLite looks a named parameter
/// up by walking a list of all names, so binding n named parameters costs
/// n² (a 15,000-parameter insert spent 80 % of its time there, measured with
/// perf), while anonymous ones bind by position. Anything else is kept.
pub fn fit<'a>(conn: &sqlx::AnyConnection, sql: &'a str) -> std::borrow::Cow<'a, str> {
    if conn.backend_name() != "SQLite" {
        return std::borrow::Cow::Borrowed(sql);
    }
    positional(sql)
}

/// Rewrites `$1..$n` (in order, each once) to `?`; see [`fit`].
pub fn positional(sql: &str) -> std::borrow::Cow<'_, str> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1usize;
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end > start {
                let n: usize = sql[start..end].parse().unwrap_or(0);
                if n != expected {
                    return std::borrow::Cow::Borrowed(sql);
                }
                expected += 1;
                out.push_str(&sql[last..i]);
                out.push('?');
                last = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    if expected == 1 {
        return std::borrow::Cow::Borrowed(sql);
    }
    out.push_str(&sql[last..]);
    std::borrow::Cow::Owned(out)
}

/// Runs `template` once per 1,000 of `keys`, with `{in}` replaced by that
/// many placeholders bound to them, and returns every row. For statements
/// without rows (a `DELETE ... IN`) the result is simply empty.
pub async fn fetch_in(
    conn: &mut sqlx::AnyConnection,
    template: &str,
    keys: &[String],
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut out = Vec::new();
    for chunk in keys.chunks(1000) {
        let sql = template.replace("{in}", &placeholders(chunk.len(), 1));
        let sql = fit(conn, &sql);
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q.bind(k.as_str());
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// `$from, $from+1, ...`: a list of `n` placeholders for `IN (...)`.
pub fn placeholders(n: usize, from: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
