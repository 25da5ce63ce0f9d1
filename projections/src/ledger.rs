//! The `privacy_ledger` projection: every privacy request (erasure, right
//! to know) with its due date and status, and the notices sent to each
//! recipient, for the compliance user's lists.
//!
//! The ledger's streams (`privacy-request-<request id>`) hold no personal
//! data beyond the customer's token (names and addresses never enter
//! them), so this projection never opens source records. Each batch folds
//! the requests it touches with the domain's own rules
//! (`mdm_domain::privacy::Request`): the due date and the retention date in
//! the rows are the domain's, not a second copy of the rule in SQL. Only
//! whether a request is overdue is left to the reader: it depends on the
//! time of the question, and projections take no wall clock.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mdm_domain::privacy::hold::{self, HoldEvent};
use mdm_domain::privacy::{LedgerEvent, Notice, Recipient, Request, RequestKind, Status, STREAM_PREFIX};
use mdm_domain::resolution::events::{Decision, RESOLUTION_STREAM};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::db::{execute_rows, fit, parse_time, time_text, to_i64, Dialect, Value};
use crate::decision::decode_decision;
use crate::runner::{Batch, Names, Projection, ProjectionError};

/// The privacy request ledger's read model.
#[derive(Debug, Default)]
pub struct LedgerProjection;

const TABLES: &[&str] = &[
    "privacy_request",
    "privacy_notice",
    "privacy_erased_record",
    "privacy_hold",
];

const POSTGRES: &[&str] = &[
    "CREATE TABLE privacy_request{s} (
        request_id text PRIMARY KEY,
        kind text NOT NULL,
        token text,
        received_at text NOT NULL,
        received_by text NOT NULL,
        verified_by text,
        verification_method text,
        verified_at text,
        extension_reason text,
        extended_by text,
        due_at text NOT NULL,
        status text NOT NULL,
        outcome text,
        closed_at text,
        retained_until text,
        position bigint NOT NULL,
        updated_at text NOT NULL
    )",
    "COMMENT ON TABLE privacy_request{s} IS 'Every privacy request (CCPA erasure or right to know), folded from its stream privacy-request-<request_id>'",
    "COMMENT ON COLUMN privacy_request{s}.request_id IS 'Id of the request (UUID v7, given at receipt)'",
    "COMMENT ON COLUMN privacy_request{s}.kind IS 'erasure or right_to_know'",
    "COMMENT ON COLUMN privacy_request{s}.token IS 'The customer the request is about, when known at receipt'",
    "COMMENT ON COLUMN privacy_request{s}.received_at IS 'When the request was received (RFC 3339, UTC); the due date counts from it'",
    "COMMENT ON COLUMN privacy_request{s}.received_by IS 'The compliance user (API client name) who entered it'",
    "COMMENT ON COLUMN privacy_request{s}.verified_by IS 'Who verified the requester''s identity; null while unverified'",
    "COMMENT ON COLUMN privacy_request{s}.verification_method IS 'How the identity was verified (free text of the compliance user)'",
    "COMMENT ON COLUMN privacy_request{s}.verified_at IS 'When it was verified'",
    "COMMENT ON COLUMN privacy_request{s}.extension_reason IS 'Why the due date was extended (once, by 45 days); null when it was not'",
    "COMMENT ON COLUMN privacy_request{s}.extended_by IS 'Who extended it'",
    "COMMENT ON COLUMN privacy_request{s}.due_at IS 'When the answer is due: 45 days after receipt, 90 once extended'",
    "COMMENT ON COLUMN privacy_request{s}.status IS 'open, completed or denied'",
    "COMMENT ON COLUMN privacy_request{s}.outcome IS 'What was done (completed) or the basis of the denial (denied)'",
    "COMMENT ON COLUMN privacy_request{s}.closed_at IS 'When it was completed or denied'",
    "COMMENT ON COLUMN privacy_request{s}.retained_until IS 'When the ledger may drop it: 24 months after it closed'",
    "COMMENT ON COLUMN privacy_request{s}.position IS 'Global log position of the last event of the request applied'",
    "COMMENT ON COLUMN privacy_request{s}.updated_at IS 'When that event was recorded in the log (RFC 3339, UTC)'",
    "CREATE INDEX privacy_request_g{g}_received ON privacy_request{s} (received_at, request_id)",
    "CREATE INDEX privacy_request_g{g}_due ON privacy_request{s} (status, due_at)",
    "CREATE TABLE privacy_notice{s} (
        request_id text NOT NULL,
        recipient_kind text NOT NULL,
        recipient_id text NOT NULL,
        notified_at text NOT NULL,
        acknowledged_at text,
        acknowledged_by text,
        PRIMARY KEY (request_id, recipient_kind, recipient_id)
    )",
    "COMMENT ON TABLE privacy_notice{s} IS 'The notices of a privacy request: each recipient told of an erasure, and its acknowledgement'",
    "COMMENT ON COLUMN privacy_notice{s}.request_id IS 'The request (privacy_request.request_id)'",
    "COMMENT ON COLUMN privacy_notice{s}.recipient_kind IS 'feed_subscriber, webhook or source_system'",
    "COMMENT ON COLUMN privacy_notice{s}.recipient_id IS 'The recipient: API client name, webhook subscriber id or source system name'",
    "COMMENT ON COLUMN privacy_notice{s}.notified_at IS 'When the recipient was first told (a second notice keeps the first time)'",
    "COMMENT ON COLUMN privacy_notice{s}.acknowledged_at IS 'When the recipient confirmed it acted; null until then'",
    "COMMENT ON COLUMN privacy_notice{s}.acknowledged_by IS 'Who recorded the acknowledgement'",
    "CREATE TABLE privacy_erased_record{s} (
        record text PRIMARY KEY,
        token text NOT NULL,
        request_id text,
        position bigint NOT NULL
    )",
    "COMMENT ON TABLE privacy_erased_record{s} IS 'Every source record an erasure destroyed the keys of, and the request it fulfilled: where a hold of a re-sent record is filed'",
    "COMMENT ON COLUMN privacy_erased_record{s}.record IS 'The record''s pseudonymous stream'",
    "COMMENT ON COLUMN privacy_erased_record{s}.token IS 'The customer erased'",
    "COMMENT ON COLUMN privacy_erased_record{s}.request_id IS 'The privacy request the erasure fulfilled, when it named one'",
    "COMMENT ON COLUMN privacy_erased_record{s}.position IS 'Global log position of the CustomerErased decision'",
    "CREATE TABLE privacy_hold{s} (
        hold_id text PRIMARY KEY,
        record text NOT NULL,
        system text NOT NULL,
        token text,
        request_id text,
        held_at text NOT NULL,
        state text NOT NULL,
        decided_by text,
        decided_at text,
        reason text,
        successor text,
        position bigint NOT NULL
    )",
    "COMMENT ON TABLE privacy_hold{s} IS 'Records of erased people that a source system sent again (erased at source pending): nothing of them is stored; the source must be told and a compliance user decides'",
    "COMMENT ON COLUMN privacy_hold{s}.hold_id IS 'Id of the hold'",
    "COMMENT ON COLUMN privacy_hold{s}.record IS 'The erased record''s pseudonymous stream'",
    "COMMENT ON COLUMN privacy_hold{s}.system IS 'The source system that sent it again: it must be told to delete it'",
    "COMMENT ON COLUMN privacy_hold{s}.token IS 'The customer erased (null when the erasure is older than this read model knows)'",
    "COMMENT ON COLUMN privacy_hold{s}.request_id IS 'The privacy request of the erasure, when it named one'",
    "COMMENT ON COLUMN privacy_hold{s}.held_at IS 'When the record arrived again (RFC 3339, UTC)'",
    "COMMENT ON COLUMN privacy_hold{s}.state IS 'pending, suppressed (stays erased; re-sends store nothing) or released (the next re-send is a new record)'",
    "COMMENT ON COLUMN privacy_hold{s}.decided_by IS 'The compliance user who decided'",
    "COMMENT ON COLUMN privacy_hold{s}.decided_at IS 'When'",
    "COMMENT ON COLUMN privacy_hold{s}.reason IS 'Why (free text of the compliance user)'",
    "COMMENT ON COLUMN privacy_hold{s}.successor IS 'For a release: the pseudonymous stream the record is captured under from then on'",
    "COMMENT ON COLUMN privacy_hold{s}.position IS 'Global log position of the hold''s last event applied'",
    "CREATE INDEX privacy_hold_g{g}_request ON privacy_hold{s} (request_id)",
    "CREATE INDEX privacy_hold_g{g}_state ON privacy_hold{s} (state, held_at, hold_id)",
];

// SQLite has no COMMENT: the PostgreSQL comments above document both.
const SQLITE: &[&str] = &[
    "CREATE TABLE privacy_request{s} (
        request_id text PRIMARY KEY,
        kind text NOT NULL,
        token text,
        received_at text NOT NULL,
        received_by text NOT NULL,
        verified_by text,
        verification_method text,
        verified_at text,
        extension_reason text,
        extended_by text,
        due_at text NOT NULL,
        status text NOT NULL,
        outcome text,
        closed_at text,
        retained_until text,
        position integer NOT NULL,
        updated_at text NOT NULL
    )",
    "CREATE INDEX privacy_request_g{g}_received ON privacy_request{s} (received_at, request_id)",
    "CREATE INDEX privacy_request_g{g}_due ON privacy_request{s} (status, due_at)",
    "CREATE TABLE privacy_notice{s} (
        request_id text NOT NULL,
        recipient_kind text NOT NULL,
        recipient_id text NOT NULL,
        notified_at text NOT NULL,
        acknowledged_at text,
        acknowledged_by text,
        PRIMARY KEY (request_id, recipient_kind, recipient_id)
    ) WITHOUT ROWID",
    "CREATE TABLE privacy_erased_record{s} (
        record text PRIMARY KEY,
        token text NOT NULL,
        request_id text,
        position integer NOT NULL
    ) WITHOUT ROWID",
    "CREATE TABLE privacy_hold{s} (
        hold_id text PRIMARY KEY,
        record text NOT NULL,
        system text NOT NULL,
        token text,
        request_id text,
        held_at text NOT NULL,
        state text NOT NULL,
        decided_by text,
        decided_at text,
        reason text,
        successor text,
        position integer NOT NULL
    )",
    "CREATE INDEX privacy_hold_g{g}_request ON privacy_hold{s} (request_id)",
    "CREATE INDEX privacy_hold_g{g}_state ON privacy_hold{s} (state, held_at, hold_id)",
];

/// A recipient as the `privacy_notice` columns hold it: its kind and id.
pub fn recipient_parts(r: &Recipient) -> (&'static str, String) {
    match r {
        Recipient::FeedSubscriber(name) => ("feed_subscriber", name.clone()),
        Recipient::Webhook(id) => ("webhook", id.to_string()),
        Recipient::SourceSystem(name) => ("source_system", name.clone()),
    }
}

/// The recipient of stored columns, if they make one.
pub fn recipient_of(kind: &str, id: &str) -> Option<Recipient> {
    match kind {
        "feed_subscriber" => Some(Recipient::FeedSubscriber(id.to_owned())),
        "webhook" => Uuid::parse_str(id).ok().map(Recipient::Webhook),
        "source_system" => Some(Recipient::SourceSystem(id.to_owned())),
        _ => None,
    }
}

/// The kind of stored text.
pub fn kind_of(text: &str) -> Option<RequestKind> {
    match text {
        "erasure" => Some(RequestKind::Erasure),
        "right_to_know" => Some(RequestKind::RightToKnow),
        _ => None,
    }
}

/// The status of stored text.
pub fn status_of(text: &str) -> Option<Status> {
    match text {
        "open" => Some(Status::Open),
        "completed" => Some(Status::Completed),
        "denied" => Some(Status::Denied),
        _ => None,
    }
}

/// The request a ledger stream is about.
pub fn request_of_stream(stream: &str) -> Option<Uuid> {
    stream
        .strip_prefix(STREAM_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// A request touched by a batch, as folded so far.
struct Touched {
    request: Request,
    position: i64,
    updated_at: String,
}

fn corrupt(position: u64, reason: impl Into<String>) -> ProjectionError {
    ProjectionError::Corrupt {
        position,
        reason: reason.into(),
    }
}

fn stored_time(position: u64, column: &str, text: &str) -> Result<DateTime<Utc>, ProjectionError> {
    parse_time(text).ok_or_else(|| corrupt(position, format!("privacy_request.{column} is not a time")))
}

fn stored_opt_time(
    position: u64,
    column: &str,
    text: Option<String>,
) -> Result<Option<DateTime<Utc>>, ProjectionError> {
    text.map(|t| stored_time(position, column, &t)).transpose()
}

/// The request as the tables hold it now (`None`: not received yet). The
/// tables hold every part of the domain's `Request`, so folding on from
/// here gives what folding the whole stream gives.
async fn load(
    tx: &mut AnyConnection,
    names: &Names,
    request_id: Uuid,
    position: u64,
) -> Result<Option<Request>, ProjectionError> {
    let sql = names.sql(
        "SELECT kind, token, received_at, received_by, verified_by, verification_method, verified_at, \
         extension_reason, extended_by, status, outcome, closed_at FROM privacy_request{s} WHERE request_id = $1",
    );
    let Some(row) = sqlx::query(&fit(tx, &sql))
        .bind(request_id.to_string())
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let token: Option<String> = row.try_get("token")?;
    let received_at: String = row.try_get("received_at")?;
    let verified_by: Option<String> = row.try_get("verified_by")?;
    let method: Option<String> = row.try_get("verification_method")?;
    let verified_at = stored_opt_time(position, "verified_at", row.try_get("verified_at")?)?;
    let reason: Option<String> = row.try_get("extension_reason")?;
    let extended_by: Option<String> = row.try_get("extended_by")?;
    let mut request = Request {
        request_id,
        kind: kind_of(&kind).ok_or_else(|| corrupt(position, "privacy_request.kind is unknown"))?,
        token: token
            .map(|t| Uuid::parse_str(&t))
            .transpose()
            .map_err(|_| corrupt(position, "privacy_request.token is not a UUID"))?,
        received_at: stored_time(position, "received_at", &received_at)?,
        received_by: row.try_get("received_by")?,
        verified: match (verified_by, method, verified_at) {
            (Some(by), Some(method), Some(at)) => Some((by, method, at)),
            _ => None,
        },
        extension: reason.zip(extended_by),
        status: status_of(&status).ok_or_else(|| corrupt(position, "privacy_request.status is unknown"))?,
        outcome: row.try_get("outcome")?,
        closed_at: stored_opt_time(position, "closed_at", row.try_get("closed_at")?)?,
        notices: Vec::new(),
    };
    let sql = names.sql(
        "SELECT recipient_kind, recipient_id, notified_at, acknowledged_at, acknowledged_by \
         FROM privacy_notice{s} WHERE request_id = $1 ORDER BY notified_at, recipient_kind, recipient_id",
    );
    let rows = sqlx::query(&fit(tx, &sql))
        .bind(request_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
    for row in rows {
        let kind: String = row.try_get("recipient_kind")?;
        let id: String = row.try_get("recipient_id")?;
        let notified_at: String = row.try_get("notified_at")?;
        request.notices.push(Notice {
            recipient: recipient_of(&kind, &id)
                .ok_or_else(|| corrupt(position, "privacy_notice holds an unknown recipient"))?,
            notified_at: stored_time(position, "notified_at", &notified_at)?,
            acknowledged_at: stored_opt_time(position, "acknowledged_at", row.try_get("acknowledged_at")?)?,
            acknowledged_by: row.try_get("acknowledged_by")?,
        });
    }
    Ok(Some(request))
}

fn request_row(t: &Touched) -> Vec<Value> {
    let r = &t.request;
    let (verified_by, method, verified_at) = match &r.verified {
        Some((by, method, at)) => (Some(by.clone()), Some(method.clone()), Some(time_text(*at))),
        None => (None, None, None),
    };
    let (reason, extended_by) = match &r.extension {
        Some((reason, by)) => (Some(reason.clone()), Some(by.clone())),
        None => (None, None),
    };
    vec![
        Value::text(r.request_id.to_string()),
        Value::text(r.kind.as_str()),
        Value::opt_text(r.token.map(|t| t.to_string())),
        Value::text(time_text(r.received_at)),
        Value::text(r.received_by.clone()),
        Value::opt_text(verified_by),
        Value::opt_text(method),
        Value::opt_text(verified_at),
        Value::opt_text(reason),
        Value::opt_text(extended_by),
        Value::text(time_text(r.due())),
        Value::text(r.status.as_str()),
        Value::opt_text(r.outcome.clone()),
        Value::opt_text(r.closed_at.map(time_text)),
        Value::opt_text(r.retained_until().map(time_text)),
        Value::int(t.position),
        Value::text(t.updated_at.clone()),
    ]
}

fn notice_rows(r: &Request) -> impl Iterator<Item = Vec<Value>> + '_ {
    r.notices.iter().map(move |n| {
        let (kind, id) = recipient_parts(&n.recipient);
        vec![
            Value::text(r.request_id.to_string()),
            Value::text(kind),
            Value::text(id),
            Value::text(time_text(n.notified_at)),
            Value::opt_text(n.acknowledged_at.map(time_text)),
            Value::opt_text(n.acknowledged_by.clone()),
        ]
    })
}

#[async_trait]
impl Projection for LedgerProjection {
    fn name(&self) -> &'static str {
        "privacy_ledger"
    }

    fn schema_version(&self) -> i64 {
        // 2: erased records and the holds of re-sent ones.
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
        false
    }

    async fn apply(&self, tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError> {
        // The requests this batch touches, in the order it first touches them.
        let mut order: Vec<Uuid> = Vec::new();
        let mut touched: HashMap<Uuid, Touched> = HashMap::new();
        for event in batch.events {
            if !event.stream.starts_with(STREAM_PREFIX) {
                continue;
            }
            let position = event.position.0;
            let request_id = request_of_stream(&event.stream)
                .ok_or_else(|| corrupt(position, "a privacy stream whose name is not privacy-request-<UUID>"))?;
            let e: LedgerEvent = event
                .data
                .decode()
                .map_err(|e| corrupt(position, format!("ledger event does not decode: {e}")))?;
            let updated_at = time_text(event.recorded_at);
            if let Some(t) = touched.get_mut(&request_id) {
                t.request.apply(&e);
                t.position = to_i64(position);
                t.updated_at = updated_at;
                continue;
            }
            let request = match &e {
                LedgerEvent::RequestReceived { .. } => Request::fold([&e]),
                _ => match load(tx, names, request_id, position).await? {
                    Some(mut r) => {
                        r.apply(&e);
                        Ok(r)
                    }
                    None => Request::fold([&e]),
                },
            }
            .map_err(|e| corrupt(position, format!("privacy request {request_id}: {e}")))?;
            order.push(request_id);
            touched.insert(
                request_id,
                Touched {
                    request,
                    position: to_i64(position),
                    updated_at,
                },
            );
        }
        let touched: Vec<&Touched> = order.iter().filter_map(|id| touched.get(id)).collect();
        let requests: Vec<Vec<Value>> = touched.iter().map(|t| request_row(t)).collect();
        let notices: Vec<Vec<Value>> = touched.iter().flat_map(|t| notice_rows(&t.request)).collect();
        execute_rows(
            tx,
            &names.sql(
                "INSERT INTO privacy_request{s} (request_id, kind, token, received_at, received_by, verified_by, \
                 verification_method, verified_at, extension_reason, extended_by, due_at, status, outcome, closed_at, \
                 retained_until, position, updated_at)",
            ),
            "ON CONFLICT (request_id) DO UPDATE SET kind = excluded.kind, token = excluded.token, \
             received_at = excluded.received_at, received_by = excluded.received_by, \
             verified_by = excluded.verified_by, verification_method = excluded.verification_method, \
             verified_at = excluded.verified_at, extension_reason = excluded.extension_reason, \
             extended_by = excluded.extended_by, due_at = excluded.due_at, status = excluded.status, \
             outcome = excluded.outcome, closed_at = excluded.closed_at, retained_until = excluded.retained_until, \
             position = excluded.position, updated_at = excluded.updated_at",
            17,
            &requests,
        )
        .await?;
        execute_rows(
            tx,
            &names.sql(
                "INSERT INTO privacy_notice{s} (request_id, recipient_kind, recipient_id, notified_at, acknowledged_at, \
                 acknowledged_by)",
            ),
            "ON CONFLICT (request_id, recipient_kind, recipient_id) DO UPDATE SET notified_at = excluded.notified_at, \
             acknowledged_at = excluded.acknowledged_at, acknowledged_by = excluded.acknowledged_by",
            6,
            &notices,
        )
        .await?;
        apply_holds(tx, names, batch).await
    }
}

/// The erasures' records and the holds of records sent again after them.
/// An erasure comes before any hold of its records in the log, so the rows
/// of the erased records are written first.
async fn apply_holds(tx: &mut AnyConnection, names: &Names, batch: &Batch<'_>) -> Result<(), ProjectionError> {
    let mut erased: Vec<Vec<Value>> = Vec::new();
    let mut holds: Vec<(u64, HoldEvent)> = Vec::new();
    for event in batch.events {
        let position = event.position.0;
        if event.stream == RESOLUTION_STREAM && event.event_type == "CustomerErased" {
            if let Decision::CustomerErased {
                token,
                records,
                request_id,
                ..
            } = decode_decision(event)?.decision
            {
                erased.extend(records.into_iter().map(|record| {
                    vec![
                        Value::text(record),
                        Value::text(token.to_string()),
                        Value::opt_text(request_id.map(|r| r.to_string())),
                        Value::int(to_i64(position)),
                    ]
                }));
            }
        } else if hold::record_of_stream(&event.stream).is_some() {
            let e: HoldEvent = event
                .data
                .decode()
                .map_err(|e| corrupt(position, format!("hold event does not decode: {e}")))?;
            holds.push((position, e));
        }
    }
    execute_rows(
        tx,
        &names.sql("INSERT INTO privacy_erased_record{s} (record, token, request_id, position)"),
        "ON CONFLICT (record) DO NOTHING",
        4,
        &erased,
    )
    .await?;
    for (position, e) in holds {
        match e {
            HoldEvent::RecordHeld {
                hold_id,
                system,
                record,
                at,
            } => {
                let sql = names.sql("SELECT token, request_id FROM privacy_erased_record{s} WHERE record = $1");
                let erasure = sqlx::query(&fit(tx, &sql))
                    .bind(record.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let (token, request_id): (Option<String>, Option<String>) = match erasure {
                    Some(row) => (row.try_get("token")?, row.try_get("request_id")?),
                    None => (None, None),
                };
                let sql = names.sql(
                    "INSERT INTO privacy_hold{s} (hold_id, record, system, token, request_id, held_at, state, position) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (hold_id) DO NOTHING",
                );
                sqlx::query(&fit(tx, &sql))
                    .bind(hold_id.to_string())
                    .bind(record)
                    .bind(system)
                    .bind(token)
                    .bind(request_id)
                    .bind(time_text(at))
                    .bind(to_i64(position))
                    .execute(&mut *tx)
                    .await?;
            }
            HoldEvent::HoldDecided {
                hold_id,
                decision,
                by,
                reason,
                at,
                successor,
            } => {
                let sql = names.sql(
                    "UPDATE privacy_hold{s} SET state = $1, decided_by = $2, decided_at = $3, reason = $4, \
                     successor = $5, position = $6 WHERE hold_id = $7",
                );
                sqlx::query(&fit(tx, &sql))
                    .bind(decision.as_str())
                    .bind(by)
                    .bind(time_text(at))
                    .bind(reason)
                    .bind(successor)
                    .bind(to_i64(position))
                    .bind(hold_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    Ok(())
}
