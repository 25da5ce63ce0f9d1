//! `mdm privacy verify`: the proof that an erasure left nothing of the
//! person. The personal strings of the right-to-know export made before the
//! erasure ([`personal_values`]) are searched for in a fresh rebuild of
//! every projection, the live read models, the event log's stored bytes,
//! the key store and the service's log files. Every check reports where it
//! found a value by the value's index in the sorted list, never the value.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Row};
use uuid::Uuid;

use crate::config::{Config, EventStoreConfig, KeyStoreConfig, ReadModelConfig};

/// Every string leaf of a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The string leaves of a raw payload as received: a JSON document's
/// strings, or a CSV row's fields.
fn raw_strings(raw: &Value, out: &mut Vec<String>) {
    let Some(text) = raw.as_str() else {
        strings(raw, out);
        return;
    };
    if let Ok(parsed) = serde_json::from_str::<Value>(text) {
        strings(&parsed, out);
        return;
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    for record in reader.records().flatten() {
        out.extend(record.iter().map(|f| f.trim().to_owned()));
    }
}

/// Whether a string of an export is worth searching for: 4 characters or
/// more, not one of the `excluded` (system names, source ids, record
/// streams), not a UUID (tokens, ids), not an ISO timestamp and not a bare
/// digit run shorter than 8 (such runs turn up by chance in stored numbers:
/// scores, times, positions, so finding one proves nothing; the longer
/// strings holding them, "Evanston, IL 60201", are kept).
pub fn is_personal(s: &str, excluded: &BTreeSet<String>) -> bool {
    let short_digits = s.len() < 8 && s.chars().all(|c| c.is_ascii_digit());
    s.chars().count() >= 4
        && !excluded.contains(s)
        && Uuid::parse_str(s).is_err()
        && chrono::DateTime::parse_from_rfc3339(s).is_err()
        && !short_digits
}

/// The personal values of a right-to-know export (`GET
/// /v1/privacy/exports/{token}`): every string of the raw payloads (each
/// version; JSON documents and CSV rows), of the golden attributes and
/// lineage values and of the overrides' values that [`is_personal`] keeps.
/// Sorted: a value's index in this set is how the proof names it.
pub fn personal_values(export: &Value) -> BTreeSet<String> {
    let mut all = Vec::new();
    let mut excluded: BTreeSet<String> = BTreeSet::new();
    let empty = Vec::new();
    for r in export["source_records"].as_array().unwrap_or(&empty) {
        for key in ["system", "source_id", "record"] {
            if let Some(s) = r[key].as_str() {
                excluded.insert(s.to_owned());
            }
        }
        raw_strings(&r["raw"], &mut all);
        for v in r["versions"].as_array().unwrap_or(&empty) {
            raw_strings(&v["raw"], &mut all);
        }
    }
    let golden = &export["golden_record"];
    strings(&golden["attributes"], &mut all);
    if let Some(lineage) = golden["lineage"].as_object() {
        for l in lineage.values() {
            // The value as the engine stores it: tagged with its `kind`
            // (the attribute's name, not personal).
            let mut value = l["value"].clone();
            if let Some(o) = value.as_object_mut() {
                o.remove("kind");
            }
            strings(&value, &mut all);
        }
    }
    for o in export["overrides"].as_array().unwrap_or(&empty) {
        strings(&o["value"], &mut all);
    }
    all.into_iter().filter(|s| is_personal(s, &excluded)).collect()
}

/// What `mdm privacy verify` found: one JSON line per check, the summary
/// last; `clean` when nothing was found anywhere and the token is erased.
#[derive(Debug)]
pub struct Proof {
    pub lines: Vec<Value>,
    pub clean: bool,
}

/// One check's result.
struct Check {
    name: &'static str,
    searched: Value,
    /// Whether anything was searched at all (a check that searched nothing
    /// proves nothing).
    searched_any: bool,
    found: Vec<String>,
    extra: Option<(&'static str, Value)>,
}

impl Check {
    fn line(&self, values: usize) -> Value {
        let mut line = json!({
            "check": self.name,
            "searched": self.searched,
            "values": values,
            "found": self.found,
        });
        if let Some((k, v)) = &self.extra {
            line[*k] = v.clone();
        }
        line
    }
}

/// Runs every check for `token` with the values of the export in
/// `export_file`, and the service logs in `logs`.
pub async fn verify(config: &Config, token: Uuid, export_file: &Path, logs: &[PathBuf]) -> anyhow::Result<Proof> {
    let text = std::fs::read_to_string(export_file).with_context(|| format!("reading {}", export_file.display()))?;
    let export: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a right-to-know export (JSON)", export_file.display()))?;
    let named: Vec<&str> = ["token", "requested_token"]
        .iter()
        .filter_map(|k| export[*k].as_str())
        .collect();
    anyhow::ensure!(
        named.contains(&token.to_string().as_str()),
        "{} is not the export of {token} (it names {named:?})",
        export_file.display()
    );
    let values: Vec<String> = personal_values(&export).into_iter().collect();
    anyhow::ensure!(!values.is_empty(), "the export holds no personal value to search for");

    let mut checks = Vec::new();
    // The live read model: the status, then every column.
    let live = crate::compose::open_read_db(config).await?;
    let erased = is_erased(&live, token).await?;
    checks.push(fresh_rebuild(config, &values).await?);
    let (tables, columns, found) = match &config.read_models {
        ReadModelConfig::Sqlite { .. } => search_db(live.pool(), None, &values).await?,
        ReadModelConfig::Postgres { url, schema } => {
            let pool = pg_pool(url.expose()).await?;
            let result = search_db(&pool, Some(schema), &values).await;
            pool.close().await;
            result?
        }
    };
    live.close().await;
    checks.push(db_check("live_read_models", tables, columns, found));
    checks.push(match &config.event_store {
        EventStoreConfig::Sqlite { path, .. } => files_check("event_log", &sqlite_files(path)?, &values)?,
        EventStoreConfig::Postgres { url, schema } => {
            let pool = pg_pool(url.expose()).await?;
            let result = search_db(&pool, Some(schema), &values).await;
            pool.close().await;
            let (tables, columns, found) = result?;
            db_check("event_log", tables, columns, found)
        }
        EventStoreConfig::KurrentDb { .. } => Check {
            name: "event_log",
            searched: json!({"skipped": "a KurrentDB log cannot be searched byte by byte"}),
            searched_any: false,
            found: Vec::new(),
            extra: None,
        },
    });
    checks.push(match &config.keys.store {
        KeyStoreConfig::Sqlite { path } => files_check("key_store", &sqlite_files(path)?, &values)?,
        KeyStoreConfig::Postgres { url, schema } => {
            let pool = pg_pool(url.expose()).await?;
            let result = search_db(&pool, Some(schema), &values).await;
            pool.close().await;
            let (tables, columns, found) = result?;
            db_check("key_store", tables, columns, found)
        }
    });
    for log in logs {
        let mut check = files_check("log", std::slice::from_ref(log), &values)?;
        check.extra = Some(("file", json!(log.display().to_string())));
        checks.push(check);
    }

    let mut lines: Vec<Value> = checks.iter().map(|c| c.line(values.len())).collect();
    let clean = erased && checks.iter().all(|c| c.searched_any && c.found.is_empty());
    lines.push(json!({
        "check": "summary",
        "token": token,
        "erased": erased,
        "clean": clean,
    }));
    Ok(Proof { lines, clean })
}

/// Whether the live read model holds `token` as erased (a merged token:
/// its survivor).
async fn is_erased(db: &mdm_projections::ReadDb, token: Uuid) -> anyhow::Result<bool> {
    use mdm_projections::query::CustomerStatus;
    let mut token = token;
    for _ in 0..16 {
        let Some(row) = mdm_projections::query::customer(db, token).await? else {
            return Ok(false);
        };
        match (row.status, row.merged_into) {
            (CustomerStatus::Erased, _) => return Ok(true),
            (CustomerStatus::Merged, Some(survivor)) => token = survivor,
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// Every projection caught up from the start of the log into a brand-new
/// SQLite database in a temporary folder, then every column searched.
async fn fresh_rebuild(config: &Config, values: &[String]) -> anyhow::Result<Check> {
    let dir = tempfile::tempdir().context("creating a temporary folder for the rebuild")?;
    let db = mdm_projections::ReadDb::open_sqlite(&dir.path().join("read.db"))
        .await
        .context("opening the temporary read database")?;
    let store = crate::compose::open_event_store(config).await?;
    let keys = crate::compose::open_key_store(config).await?;
    let opener = mdm_commands::opened::SourceRecordOpener::new(keys, 1_000_000);
    let mut events = 0u64;
    let mut result = Ok(());
    for projection in mdm_projections::all(crate::compose::customer_settings(config)?) {
        let name = projection.name();
        let runner = mdm_projections::Runner::new(store.clone(), db.clone(), projection, opener.clone());
        match runner.catch_up().await {
            Ok(position) => events = events.max(position.0),
            Err(e) => {
                result = Err(anyhow::Error::new(e).context(format!("rebuilding {name}")));
                break;
            }
        }
    }
    store.close().await;
    result?;
    let searched = search_db(db.pool(), None, values).await;
    db.close().await;
    let (tables, columns, found) = searched?;
    let mut check = db_check("fresh_rebuild", tables, columns, found);
    check.extra = Some(("log_position", json!(events)));
    Ok(check)
}

fn db_check(name: &'static str, tables: usize, columns: usize, found: Vec<String>) -> Check {
    Check {
        name,
        searched: json!({"tables": tables, "columns": columns}),
        searched_any: tables > 0 && columns > 0,
        found,
        extra: None,
    }
}

/// A pool onto a PostgreSQL database, for reading its catalog and columns.
async fn pg_pool(url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let options: AnyConnectOptions = url
        .parse::<AnyConnectOptions>()
        .context("the PostgreSQL URL")?
        .disable_statement_logging();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// At most this many values per statement (PostgreSQL allows 1664 result
/// columns).
const VALUES_PER_STATEMENT: usize = 500;

/// Searches every text, JSON and binary column of every table (SQLite: of
/// the database `pool` opens; PostgreSQL: of `schema`) for every value, one
/// scan per column. Returns the tables and columns searched and where
/// values were found (`"<index> in <table>.<column>"`).
async fn search_db(
    pool: &AnyPool,
    schema: Option<&str>,
    values: &[String],
) -> anyhow::Result<(usize, usize, Vec<String>)> {
    // (table as named in SQL, label, column, binary)
    let mut columns: Vec<(String, String, String, bool)> = Vec::new();
    match schema {
        None => {
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .fetch_all(pool)
            .await
            .context("listing the tables")?;
            for (table,) in tables {
                let cols: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info($1)")
                    .bind(&table)
                    .fetch_all(pool)
                    .await
                    .with_context(|| format!("listing the columns of {table}"))?;
                for (column, kind) in cols {
                    let kind = kind.to_ascii_uppercase();
                    let textual = kind.is_empty()
                        || ["TEXT", "CHAR", "CLOB", "JSON", "BLOB"]
                            .iter()
                            .any(|t| kind.contains(t));
                    if textual {
                        columns.push((quote(&table), table.clone(), column, true));
                    }
                }
            }
        }
        Some(schema) => {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT c.table_name::text, c.column_name::text, c.data_type::text \
                 FROM information_schema.columns c JOIN information_schema.tables t \
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
                 WHERE c.table_schema = $1 AND t.table_type = 'BASE TABLE' \
                 AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea') \
                 ORDER BY 1, 2",
            )
            .bind(schema)
            .fetch_all(pool)
            .await
            .with_context(|| format!("listing the columns of schema {schema}"))?;
            for (table, column, kind) in rows {
                columns.push((
                    format!("{}.{}", quote(schema), quote(&table)),
                    format!("{schema}.{table}"),
                    column,
                    kind == "bytea",
                ));
            }
        }
    }
    let mut found = Vec::new();
    for (sql_table, label, column, binary) in &columns {
        let col = quote(column);
        for (chunk_no, chunk) in values.chunks(VALUES_PER_STATEMENT).enumerate() {
            let tests: Vec<String> = (1..=chunk.len())
                .map(|n| match (schema, binary) {
                    (None, _) => format!("coalesce(max(instr(CAST({col} AS BLOB), CAST(${n} AS BLOB)) > 0), 0)"),
                    (Some(_), true) => format!(
                        "coalesce(max(CASE WHEN position(convert_to(${n}, 'UTF8') in {col}) > 0 THEN 1 ELSE 0 END), \
                         0)::bigint"
                    ),
                    (Some(_), false) => {
                        format!("coalesce(max(CASE WHEN strpos({col}::text, ${n}) > 0 THEN 1 ELSE 0 END), 0)::bigint")
                    }
                })
                .collect();
            let sql = format!("SELECT {} FROM {sql_table}", tests.join(", "));
            let mut query = sqlx::query(&sql);
            for v in chunk {
                query = query.bind(v.as_str());
            }
            let row = query
                .fetch_one(pool)
                .await
                .with_context(|| format!("searching {label}.{column}"))?;
            for i in 0..chunk.len() {
                let hit: i64 = row.try_get(i).with_context(|| format!("searching {label}.{column}"))?;
                if hit > 0 {
                    found.push(format!("{} in {label}.{column}", chunk_no * VALUES_PER_STATEMENT + i));
                }
            }
        }
    }
    let tables: BTreeSet<&str> = columns.iter().map(|c| c.1.as_str()).collect();
    Ok((tables.len(), columns.len(), found))
}

/// The files of a SQLite database: the file and its `-wal`, `-shm` and
/// `-journal` companions, those that exist.
fn sqlite_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?
        .to_string_lossy()
        .into_owned();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading the folder {}", dir.display()))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && file.starts_with(&name) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Searches the bytes of each file for every value.
fn files_check(name: &'static str, files: &[PathBuf], values: &[String]) -> anyhow::Result<Check> {
    let mut bytes = 0u64;
    let mut found = Vec::new();
    for file in files {
        let (size, hits) = search_file(file, values).with_context(|| format!("reading {}", file.display()))?;
        bytes += size;
        found.extend(hits.into_iter().map(|i| format!("{i} in {}", file.display())));
    }
    Ok(Check {
        name,
        searched: json!({"files": files.len(), "bytes": bytes}),
        searched_any: !files.is_empty() && bytes > 0,
        found,
        extra: None,
    })
}

/// The size of the file and the indexes of the values its bytes hold,
/// read in chunks that overlap by the longest value.
fn search_file(path: &Path, values: &[String]) -> std::io::Result<(u64, Vec<usize>)> {
    const CHUNK: usize = 8 << 20;
    let finders: Vec<memchr::memmem::Finder<'_>> = values
        .iter()
        .map(|v| memchr::memmem::Finder::new(v.as_bytes()))
        .collect();
    let overlap = values.iter().map(String::len).max().unwrap_or(1).saturating_sub(1);
    let mut hit = vec![false; values.len()];
    let mut file = std::fs::File::open(path)?;
    let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK + overlap);
    let mut size = 0u64;
    loop {
        let kept = buffer.len();
        buffer.resize(kept + CHUNK, 0);
        let n = file.read(&mut buffer[kept..])?;
        buffer.truncate(kept + n);
        if n == 0 {
            break;
        }
        size += n as u64;
        for (i, finder) in finders.iter().enumerate() {
            if !hit[i] && finder.find(&buffer).is_some() {
                hit[i] = true;
            }
        }
        let keep_from = buffer.len().saturating_sub(overlap);
        buffer.drain(..keep_from);
    }
    Ok((
        size,
        hit.iter().enumerate().filter(|(_, h)| **h).map(|(i, _)| i).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_json_and_csv_payloads() {
        let export = json!({
            "source_records": [
                {"system": "web_signup", "source_id": "WS-1", "record": "0190a2b4-0000-7000-8000-000000000001",
                 "raw": "{\"signupId\": \"WS-1\", \"firstName\": \"Solveig\", \"zip\": \"60201\", \"at\": \"2024-05-01T10:00:00Z\"}",
                 "versions": [{"raw": "{\"firstName\": \"Solveig\", \"phone\": \"13125550187\"}"}]},
                {"system": "finance", "source_id": "F-9", "raw": "F-9,Quillmoor,\"Evanston, IL 60201\"", "versions": []}
            ],
            "golden_record": {"attributes": {"name": {"given": "Solveig"}, "email": "s@example.test"},
                              "lineage": {"name": {"value": {"kind": "name", "given": "Solveig"}}}},
            "overrides": [{"value": "solveig.private@example.test"}]
        });
        let values: Vec<String> = personal_values(&export).into_iter().collect();
        assert_eq!(
            values,
            [
                "13125550187",
                "Evanston, IL 60201",
                "Quillmoor",
                "Solveig",
                "s@example.test",
                "solveig.private@example.test"
            ]
        );
    }

    #[test]
    fn a_value_across_chunk_bounds_is_found() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let mut bytes = vec![0u8; (8 << 20) - 3];
        bytes.extend_from_slice(b"Marthinsen");
        std::fs::write(&path, &bytes).expect("write");
        let (size, hits) = search_file(&path, &["Marthinsen".to_owned(), "Solveig".to_owned()]).expect("search");
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(hits, [0]);
    }
}
