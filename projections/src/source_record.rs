//! The `source_records` projection: each source record as its system sent
//! it (latest mapped attributes and raw payload, every earlier version) and
//! the customer it belongs to now and belonged to before.
//!
//! It opens (decrypts) source-record events; one whose key is gone projects
//! as `erased`, with no personal data written.
//!
//! It reads the decisions too: they give each record its customer, and an
//! erasure (`CustomerErased`) purges its records. Every version of an
//! erased record loses its content (attributes, payload, header) and shows
//! `erased`, the record its source id, as a rebuild shows them once the
//! record's key is destroyed (and as the purge leaves a rebuild too, so a
//! content-less retraction reads `erased` in both). Erased and retained
//! records leave their customer (`token` null, `previous_token` the erased
//! one); a retained record keeps its content, a legal exception. Their
//! history of customers holds tokens only and stays.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use mdm_commands::opened::OpenedEvent;
use mdm_domain::resolution::events::{Decision, RESOLUTION_STREAM};
use mdm_domain::source_record::STREAM_PREFIX;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db::{execute_rows, fetch_in, lap, time_text, to_i64, Dialect, Value};
use crate::decision::{decode_decision, split_after_erasures};
use crate::runner::{Batch, Names, Projection, ProjectionError};
use sqlx::Row;

/// Source records, their versions and their customers over time.
#[derive(Debug, Default)]
pub struct SourceRecordsProjection;

const TABLES: &[&str] = &["source_record", "source_record_version", "source_record_customer"];

const POSTGRES: &[&str] = &[
    "CREATE TABLE source_record{s} (
        record text PRIMARY KEY,
        system text NOT NULL,
        source_id text,
        state text NOT NULL,
        version bigint NOT NULL,
        position bigint NOT NULL,
        first_position bigint NOT NULL,
        first_seen_at text NOT NULL,
        updated_at text NOT NULL,
        token text,
        previous_token text,
        token_position bigint
    )",
    "COMMENT ON TABLE source_record{s} IS 'Each source record: its latest version (content in source_record_version) and its customer'",
    "COMMENT ON COLUMN source_record{s}.record IS 'The record''s stream (pseudonymous: a keyed hash of system and source id)'",
    "COMMENT ON COLUMN source_record{s}.system IS 'Source system name'",
    "COMMENT ON COLUMN source_record{s}.source_id IS 'The record''s id in its system (null once erased)'",
    "COMMENT ON COLUMN source_record{s}.state IS 'current, retracted (the source deleted it) or erased (its key is destroyed)'",
    "COMMENT ON COLUMN source_record{s}.version IS 'Stream version of the latest event (its content is in source_record_version)'",
    "COMMENT ON COLUMN source_record{s}.position IS 'Global log position of the latest event'",
    "COMMENT ON COLUMN source_record{s}.first_position IS 'Global log position of the first event'",
    "COMMENT ON COLUMN source_record{s}.first_seen_at IS 'When it was first captured (RFC 3339, UTC)'",
    "COMMENT ON COLUMN source_record{s}.updated_at IS 'When its latest event was recorded'",
    "COMMENT ON COLUMN source_record{s}.token IS 'The customer it belongs to now (null before the resolver decided, and once its customer was erased)'",
    "COMMENT ON COLUMN source_record{s}.previous_token IS 'The customer it belonged to before the last change'",
    "COMMENT ON COLUMN source_record{s}.token_position IS 'Log position of the decision that gave it its current customer'",
    "CREATE INDEX source_record_g{g}_system ON source_record{s} (system, source_id)",
    "CREATE INDEX source_record_g{g}_token ON source_record{s} (token)",
    "CREATE TABLE source_record_version{s} (
        record text NOT NULL,
        version bigint NOT NULL,
        position bigint NOT NULL,
        event_type text NOT NULL,
        state text NOT NULL,
        attributes text,
        raw text,
        raw_header text,
        recorded_at text NOT NULL,
        PRIMARY KEY (record, version)
    )",
    "COMMENT ON TABLE source_record_version{s} IS 'Every version of every source record, as received'",
    "COMMENT ON COLUMN source_record_version{s}.record IS 'The record''s stream'",
    "COMMENT ON COLUMN source_record_version{s}.version IS 'Version of the event in the record''s stream'",
    "COMMENT ON COLUMN source_record_version{s}.position IS 'Global log position of the event'",
    "COMMENT ON COLUMN source_record_version{s}.event_type IS 'SourceRecordCaptured, SourceRecordChanged or SourceRecordRetracted'",
    "COMMENT ON COLUMN source_record_version{s}.state IS 'current, retracted or erased'",
    "COMMENT ON COLUMN source_record_version{s}.attributes IS 'JSON canonical attributes of this version (null when retracted or erased)'",
    "COMMENT ON COLUMN source_record_version{s}.raw IS 'The payload of this version as received (null when erased)'",
    "COMMENT ON COLUMN source_record_version{s}.raw_header IS 'CSV header line, when CSV'",
    "COMMENT ON COLUMN source_record_version{s}.recorded_at IS 'When the event was recorded (RFC 3339, UTC)'",
    "CREATE TABLE source_record_customer{s} (
        record text NOT NULL,
        position bigint NOT NULL,
        token text NOT NULL,
        decision_type text NOT NULL,
        recorded_at text NOT NULL,
        PRIMARY KEY (record, position)
    )",
    "COMMENT ON TABLE source_record_customer{s} IS 'Which customer each record belonged to from which decision on'",
    "COMMENT ON COLUMN source_record_customer{s}.record IS 'The record''s stream'",
    "COMMENT ON COLUMN source_record_customer{s}.position IS 'Global log position of the decision'",
    "COMMENT ON COLUMN source_record_customer{s}.token IS 'The customer it belonged to from then on'",
    "COMMENT ON COLUMN source_record_customer{s}.decision_type IS 'The decision''s event type'",
    "COMMENT ON COLUMN source_record_customer{s}.recorded_at IS 'When the decision was recorded'",
];

const SQLITE: &[&str] = &[
    "CREATE TABLE source_record{s} (
        record text PRIMARY KEY,
        system text NOT NULL,
        source_id text,
        state text NOT NULL,
        version integer NOT NULL,
        position integer NOT NULL,
        first_position integer NOT NULL,
        first_seen_at text NOT NULL,
        updated_at text NOT NULL,
        token text,
        previous_token text,
        token_position integer
    )",
    "CREATE INDEX source_record_g{g}_system ON source_record{s} (system, source_id)",
    "CREATE INDEX source_record_g{g}_token ON source_record{s} (token)",
    "CREATE TABLE source_record_version{s} (
        record text NOT NULL,
        version integer NOT NULL,
        position integer NOT NULL,
        event_type text NOT NULL,
        state text NOT NULL,
        attributes text,
        raw text,
        raw_header text,
        recorded_at text NOT NULL,
        PRIMARY KEY (record, version)
    ) WITHOUT ROWID",
    "CREATE TABLE source_record_customer{s} (
        record text NOT NULL,
        position integer NOT NULL,
        token text NOT NULL,
        decision_type text NOT NULL,
        recorded_at text NOT NULL,
        PRIMARY KEY (record, position)
    ) WITHOUT ROWID",
];

/// What one source-record event says, ready for the tables.
struct Version {
    state: &'static str,
    system: String,
    source_id: Option<String>,
    attributes: Option<String>,
    raw: Option<String>,
    raw_header: Option<String>,
}

fn version_of(opened: &OpenedEvent, position: u64) -> Result<Option<Version>, ProjectionError> {
    Ok(match opened {
        OpenedEvent::Version { system, content, .. } => Some(Version {
            state: "current",
            system: system.clone(),
            source_id: Some(content.source_id.clone()),
            attributes: Some(
                serde_json::to_string(&content.attributes).map_err(|e| ProjectionError::Corrupt {
                    position,
                    reason: e.to_string(),
                })?,
            ),
            raw: Some(content.raw.clone()),
            raw_header: content.raw_header.clone(),
        }),
        OpenedEvent::Retracted { system, content, .. } => Some(Version {
            state: "retracted",
            system: system.clone(),
            source_id: content.as_ref().map(|c| c.source_id.clone()),
            attributes: None,
            raw: content.as_ref().map(|c| c.raw.clone()),
            raw_header: None,
        }),
        OpenedEvent::Erased { system } => Some(Version {
            state: "erased",
            system: system.clone(),
            source_id: None,
            attributes: None,
            raw: None,
            raw_header: None,
        }),
        OpenedEvent::Override { .. } | OpenedEvent::Other => None,
    })
}

/// Loads the current customer of each of `records` from the table.
async fn tokens_of(
    tx: &mut AnyConnection,
    names: &Names,
    tokens: &[Uuid],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let keys: Vec<String> = tokens.iter().map(Uuid::to_string).collect();
    let sql = names.sql("SELECT record, token FROM source_record{s} WHERE token IN ({in})");
    let mut out = Vec::new();
    for row in fetch_in(tx, &sql, &keys).await? {
        out.push((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(out)
}

#[async_trait]
impl Projection for SourceRecordsProjection {
    fn name(&self) -> &'static str {
        "source_records"
    }

    fn schema_version(&self) -> i64 {
        // 2: the latest content is read from source_record_version (one copy).
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn schema(&self, dialect: Dialect) -> Vec<&'static str> {
        match dialect {
            Dialect::Postgres => POSTGRES.to_vec(),
            Dialect::Sqlite => SQLITE.to_vec(),
        }
    }

    fn opens_source_records(&self) -> bool {
        true
    }

    async fn apply(&self, tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError> {
        // Cut after each erasure, so that its purge finds every row the
        // events before it wrote (the rows do not depend on batch cuts).
        for segment in split_after_erasures(batch) {
            if let Some(erasure) = apply_segment(tx, names, &segment).await? {
                purge(tx, names, &erasure).await?;
            }
        }
        Ok(())
    }
}

/// The records an erasure purges, and its position.
struct Erasure {
    erased: Vec<String>,
    retained: Vec<String>,
    position: i64,
}

/// Applies events of which only the last may be an erasure; returns that
/// erasure.
async fn apply_segment(
    tx: &mut AnyConnection,
    names: &Names,
    batch: &Batch<'_>,
) -> Result<Option<Erasure>, ProjectionError> {
    let mut erasure: Option<Erasure> = None;
    let mut versions: Vec<Vec<Value>> = Vec::new();
    // The latest version per record in this batch (log order: last wins).
    let mut latest: HashMap<String, Vec<Value>> = HashMap::new();
    let mut latest_order: Vec<String> = Vec::new();
    // Customer assignments in this batch: record -> (token, position,
    // the token before it when that was assigned in this batch too), so
    // that `previous_token` does not depend on where batches end.
    let mut assigned: HashMap<String, (Uuid, i64, Option<Uuid>)> = HashMap::new();
    let mut assigned_order: Vec<String> = Vec::new();
    let mut history: Vec<Vec<Value>> = Vec::new();
    for (i, event) in batch.events.iter().enumerate() {
        let position = to_i64(event.position.0);
        let at = time_text(event.recorded_at);
        if event.stream.starts_with(STREAM_PREFIX) {
            let Some(opened) = batch.opened(i) else { continue };
            let Some(v) = version_of(opened, event.position.0)? else {
                continue;
            };
            versions.push(vec![
                Value::text(event.stream.clone()),
                Value::int(to_i64(event.version)),
                Value::int(position),
                Value::text(event.event_type.clone()),
                Value::text(v.state),
                Value::opt_text(v.attributes),
                Value::opt_text(v.raw),
                Value::opt_text(v.raw_header),
                Value::text(at.clone()),
            ]);
            let row = vec![
                Value::text(event.stream.clone()),
                Value::text(v.system),
                Value::opt_text(v.source_id),
                Value::text(v.state),
                Value::int(to_i64(event.version)),
                Value::int(position),
                Value::int(position),
                Value::text(at.clone()),
                Value::text(at),
            ];
            match latest.get_mut(&event.stream) {
                Some(existing) => {
                    // Keep the first sighting of this batch.
                    let first_position = existing[6].clone();
                    let first_seen = existing[7].clone();
                    *existing = row;
                    existing[6] = first_position;
                    existing[7] = first_seen;
                }
                None => {
                    latest_order.push(event.stream.clone());
                    latest.insert(event.stream.clone(), row);
                }
            }
            continue;
        }
        if event.stream != RESOLUTION_STREAM {
            continue;
        }
        let decided = decode_decision(event)?;
        let mut moves: Vec<(String, Uuid)> = Vec::new();
        match &decided.decision {
            Decision::CustomerCreated { token, record, .. } | Decision::RecordLinked { token, record, .. } => {
                moves.push((record.clone(), *token))
            }
            Decision::RecordMoved { record, to, .. } | Decision::RecordSplit { record, to, .. } => {
                moves.push((record.clone(), *to))
            }
            Decision::CustomerErased { records, retained, .. } => {
                erasure = Some(Erasure {
                    erased: records.clone(),
                    retained: retained.iter().map(|k| k.record.clone()).collect(),
                    position,
                });
            }
            Decision::CustomersMerged { survivor, absorbed, .. } => {
                let absorbed_set: HashSet<Uuid> = absorbed.iter().copied().collect();
                let mut records: Vec<String> = tokens_of(tx, names, absorbed)
                    .await?
                    .into_iter()
                    .filter(|(r, _)| !assigned.contains_key(r))
                    .map(|(r, _)| r)
                    .collect();
                records.extend(
                    assigned
                        .iter()
                        .filter(|(_, (t, _, _))| absorbed_set.contains(t))
                        .map(|(r, _)| r.clone()),
                );
                records.sort();
                moves.extend(records.into_iter().map(|r| (r, *survivor)));
            }
            _ => {}
        }
        for (record, token) in moves {
            history.push(vec![
                Value::text(record.clone()),
                Value::int(position),
                Value::text(token.to_string()),
                Value::text(decided.decision.event_type()),
                Value::text(at.clone()),
            ]);
            let previous = assigned.get(&record).map(|(t, _, _)| *t);
            if assigned.insert(record.clone(), (token, position, previous)).is_none() {
                assigned_order.push(record);
            }
        }
    }
    execute_rows(
        tx,
        &names.sql(
            "INSERT INTO source_record_version{s} (record, version, position, event_type, state, attributes, raw, \
                 raw_header, recorded_at)",
        ),
        "",
        9,
        &versions,
    )
    .await?;
    let rows: Vec<Vec<Value>> = latest_order.iter().filter_map(|r| latest.remove(r)).collect();
    execute_rows(
        tx,
        &names.sql(
            "INSERT INTO source_record{s} (record, system, source_id, state, version, position, first_position, \
                 first_seen_at, updated_at)",
        ),
        &names.sql(
            "ON CONFLICT (record) DO UPDATE SET system = excluded.system, \
                 source_id = CASE WHEN excluded.state = 'erased' THEN NULL \
                 ELSE COALESCE(excluded.source_id, source_record{s}.source_id) END, \
                 state = excluded.state, version = excluded.version, position = excluded.position, \
                 updated_at = excluded.updated_at",
        ),
        9,
        &rows,
    )
    .await?;
    let assignments: Vec<Vec<Value>> = assigned_order
        .iter()
        .filter_map(|r| {
            assigned.get(r).map(|(t, p, previous)| {
                vec![
                    Value::text(r.clone()),
                    Value::text(t.to_string()),
                    Value::int(*p),
                    Value::Text(previous.map(|t| t.to_string())),
                ]
            })
        })
        .collect();
    execute_rows(
        tx,
        &names.sql(
            "UPDATE source_record{s} SET previous_token = COALESCE(v.column4, source_record{s}.token), \
                 token = v.column2, token_position = v.column3 FROM (",
        ),
        &names.sql(") AS v WHERE source_record{s}.record = v.column1"),
        4,
        &assignments,
    )
    .await?;
    execute_rows(
        tx,
        &names.sql("INSERT INTO source_record_customer{s} (record, position, token, decision_type, recorded_at)"),
        "",
        5,
        &history,
    )
    .await?;
    Ok(erasure)
}

/// Purges the records of an erasure, once the rows before it are written:
/// the erased ones lose their content in every version and their source
/// id; both the erased and the retained ones leave their customer.
async fn purge(tx: &mut AnyConnection, names: &Names, erasure: &Erasure) -> Result<(), sqlx::Error> {
    let mut clock = std::time::Instant::now();
    fetch_in(
        tx,
        &names.sql(
            "UPDATE source_record_version{s} SET state = 'erased', attributes = NULL, raw = NULL, raw_header = NULL \
             WHERE record IN ({in})",
        ),
        &erasure.erased,
    )
    .await?;
    let versions_ms = lap(&mut clock);
    fetch_in(
        tx,
        &names.sql("UPDATE source_record{s} SET state = 'erased', source_id = NULL WHERE record IN ({in})"),
        &erasure.erased,
    )
    .await?;
    let records_ms = lap(&mut clock);
    let leaving: Vec<Vec<Value>> = erasure
        .erased
        .iter()
        .chain(&erasure.retained)
        .map(|r| vec![Value::text(r.clone()), Value::int(erasure.position)])
        .collect();
    execute_rows(
        tx,
        &names.sql(
            "UPDATE source_record{s} SET previous_token = source_record{s}.token, token = NULL, \
             token_position = v.column2 FROM (",
        ),
        &names.sql(") AS v WHERE source_record{s}.record = v.column1 AND source_record{s}.token IS NOT NULL"),
        2,
        &leaving,
    )
    .await?;
    tracing::debug!(
        erased = erasure.erased.len(),
        retained = erasure.retained.len(),
        versions_ms,
        records_ms,
        customers_ms = lap(&mut clock),
        "source_records purge"
    );
    Ok(())
}
