//! `POST /v1/sources/{system}/records`: records pushed by a source system.
//!
//! The body's media type says how to split it: `application/json` (one
//! document, or a JSON array of documents), `application/x-ndjson` (one
//! document a line) or `text/csv` (a header row, then one record a row). A
//! system whose format is `debezium` takes Debezium change events in either
//! JSON form. The answer lists, per record, what happened: captured,
//! changed, unchanged, retracted, ignored, erased or rejected with the
//! reason and the field. A bad record never stops the others; a body over
//! the size limit gets 413 and nothing of it is stored.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mdm_commands::import::Syntax;
use mdm_commands::ingest::{IngestContext, IngestError, Outcome, RecordOutcome, Tally};
use mdm_commands::input::InputRecord;
use mdm_domain::metadata::Actor;
use mdm_domain::source::InputFormat;
use serde_json::json;
use uuid::Uuid;

use super::problem::{PathParam, Problem};
use super::AppState;

/// Records per ingest call; a body's records are ingested in such batches.
const BATCH: usize = 1000;

/// Ingests one record or a batch (JSON object, JSON array, NDJSON, or CSV
/// with a header line, per the system's format). A single record waits for
/// its customer's token.
#[utoipa::path(post, path = "/v1/sources/{system}/records", tag = "ingest",
    params(("system" = String, Path, description = "The source system, as the sources file names it")),
    request_body(description = "The record(s) as the system sends them: JSON object or array, NDJSON, or CSV with its header line",
        content(
            (String = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
    responses(
        (status = 200, description = "Each record's outcome (captured, changed, unchanged, stale, rejected) and, for a single record, its customer token", body = Object),
        (status = 400, description = "Unreadable body or a rejected record, naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown source system", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit: nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A content type the system's format does not take", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store does not answer: nothing lost, retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn post_records(
    State(state): State<AppState>,
    PathParam(system): PathParam<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(def) = state.ingestor.sources().get(&system) else {
        return Problem::unknown_system().into_response();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Body too large",
                format!(
                    "the body is larger than the limit of {} bytes; nothing was stored. Split it, or use `mdm import` for files",
                    state.max_body_bytes
                ),
            )
            .into_response();
        }
        Err(rejection) => {
            return Problem::new(
                rejection.status(),
                "Unreadable body",
                "the request body could not be read",
            )
            .into_response();
        }
    };
    let debezium = def.format == InputFormat::Debezium;
    let syntax = match media_type(&headers).as_deref() {
        Some("text/csv") => Syntax::Csv,
        Some("application/json" | "application/x-ndjson" | "application/ndjson" | "application/jsonl") if debezium => {
            Syntax::Debezium
        }
        Some("application/json" | "application/x-ndjson" | "application/ndjson" | "application/jsonl") => Syntax::Json,
        _ => {
            return Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "send application/json (one record or an array), application/x-ndjson or text/csv",
            )
            .field("Content-Type")
            .into_response();
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Empty body",
            "the body holds no record",
        )
        .field("body")
        .into_response();
    }
    // A single JSON object is answered as one record; anything else as a batch.
    let single = syntax != Syntax::Csv && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let records = match tokio::task::spawn_blocking(move || {
        syntax.records(std::io::Cursor::new(body)).collect::<Vec<InputRecord>>()
    })
    .await
    {
        Ok(records) => records,
        Err(_) => return Problem::unavailable("ingest pipeline").into_response(),
    };
    let single = single && records.len() == 1;
    // The single record's source id, for the customer lookup link.
    let single_source_id = if single {
        state.ingestor.sources().get(&system).and_then(|def| {
            let value = records.first()?.item.as_ref().ok()?.value.clone();
            mdm_domain::source::map_record(def, &value).ok().map(|m| m.source_id)
        })
    } else {
        None
    };

    let ctx = IngestContext {
        actor: Actor::Source(system.clone()),
        correlation_id: Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    let mut outcomes: Vec<RecordOutcome> = Vec::with_capacity(records.len());
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let batch: Vec<InputRecord> = records.by_ref().take(BATCH).collect();
        match state.ingestor.ingest(&system, batch, &ctx).await {
            Ok(done) => outcomes.extend(done),
            Err(error) => return ingest_failure(&error, outcomes.len()),
        }
    }
    let mut tally = Tally::default();
    for o in &outcomes {
        tally.add(&o.outcome);
    }
    state.metrics.ingested(&system, &tally);
    tracing::info!(
        system = %system,
        correlation_id = %ctx.correlation_id,
        records = outcomes.len(),
        captured = tally.captured,
        changed = tally.changed,
        unchanged = tally.unchanged,
        rejected = tally.rejected,
        held = tally.held,
        "records ingested"
    );
    if single {
        if let Some(RecordOutcome {
            outcome: Outcome::Rejected { field, reason },
            ..
        }) = outcomes.first()
        {
            let mut problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Record rejected", reason.clone());
            if let Some(field) = field {
                problem = problem.field(field.clone());
            }
            return problem
                .with("correlation_id", json!(ctx.correlation_id))
                .into_response();
        }
    }
    let mut status = if single && matches!(outcomes.first(), Some(o) if matches!(o.outcome, Outcome::Captured { .. })) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = json!({
        "system": system,
        "correlation_id": ctx.correlation_id,
        "summary": tally,
        "records": outcomes,
    });
    if single {
        let erased = |o: &RecordOutcome| matches!(o.outcome, Outcome::Erased | Outcome::Held { .. });
        if let (Some(outcome), Some(source_id)) = (outcomes.first().filter(|o| !erased(o)), single_source_id.as_deref())
        {
            let (customer, resolved) = customer_of(&state, &system, source_id, outcome).await;
            if !resolved {
                status = StatusCode::ACCEPTED;
            }
            body["customer"] = customer;
        }
    }
    (status, Json(body)).into_response()
}

/// Waits (at most the configured timeout) for the resolver to decide the
/// record just ingested, and answers its customer's token; or where to
/// look it up later. `true` when resolved.
async fn customer_of(
    state: &AppState,
    system: &str,
    source_id: &str,
    outcome: &RecordOutcome,
) -> (serde_json::Value, bool) {
    let href = format!(
        "/v1/sources/{system}/records/{}/customer",
        utf8_percent_encode(source_id)
    );
    let pending = json!({"status": "pending", "href": href});
    let stream = outcome
        .stream
        .clone()
        .unwrap_or_else(|| state.ingestor.stream_of(system, source_id));
    let stream = stream.as_str();
    // Right after start the resolver may still be replaying the log.
    let deadline = tokio::time::Instant::now() + state.resolve_timeout;
    let resolver = loop {
        if let Some(r) = state.resolver() {
            break r;
        }
        if tokio::time::Instant::now() >= deadline {
            return (pending, false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let version = match outcome.outcome {
        Outcome::Captured { stream_version } | Outcome::Changed { stream_version } => {
            mdm_store::StreamStart::Version(stream_version)
        }
        _ => mdm_store::StreamStart::Edge,
    };
    let direction = if matches!(version, mdm_store::StreamStart::Edge) {
        mdm_store::Direction::Backwards
    } else {
        mdm_store::Direction::Forwards
    };
    let Ok(page) = state.store.read_stream(stream, version, direction, 1).await else {
        return (pending, false);
    };
    let Some(event) = page.first() else {
        return (pending, false);
    };
    if !resolver.wait_for(event.position, state.resolve_timeout).await {
        return (pending, false);
    }
    match resolver.token_of(stream).await {
        Ok(Some(token)) => (json!({"status": "resolved", "token": token, "href": href}), true),
        _ => (pending, false),
    }
}

/// Percent-encodes a path segment.
fn utf8_percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /v1/sources/{system}/records/{source_id}/customer`: the token of the
/// customer a source record belongs to now, once the resolver has decided it.
#[utoipa::path(get, path = "/v1/sources/{system}/records/{source_id}/customer", tag = "ingest",
    params(("system" = String, Path, description = "The source system"), ("source_id" = String, Path, description = "The record's id there")),
    responses(
        (status = 200, description = "The token of the customer holding the record", body = Object),
        (status = 404, description = "Unknown system, or the record has no customer (yet)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The resolver is replaying or restarting", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_record_customer(
    State(state): State<AppState>,
    PathParam((system, source_id)): PathParam<(String, String)>,
) -> Response {
    if state.ingestor.sources().get(&system).is_none() {
        return Problem::unknown_system().into_response();
    }
    let Some(resolver) = state.resolver() else {
        return Problem::unavailable("resolver").into_response();
    };
    // The record's first stream answers but for a record released after its
    // person's erasure: only then is the chain of hold streams read.
    let first = resolver.token_of(&state.ingestor.stream_of(&system, &source_id)).await;
    let found = match first {
        Ok(None) => match state.ingestor.current_stream(&system, &source_id).await {
            Ok(stream) => resolver.token_of(&stream).await,
            Err(_) => return Problem::unavailable("event store").into_response(),
        },
        other => other,
    };
    match found {
        Ok(Some(token)) => Json(json!({"system": system, "token": token})).into_response(),
        Ok(None) => Problem::new(
            StatusCode::NOT_FOUND,
            "Not resolved",
            "no customer holds this source record (yet): it is unknown, not decided yet, retracted or erased",
        )
        .into_response(),
        Err(_) => Problem::unavailable("resolver").into_response(),
    }
}

/// The media type without parameters, lowercased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// A batch stopped by the storage side: 503 (or 404 for a system that went
/// away). Records of earlier batches are stored; re-sending the whole body
/// stores nothing twice.
fn ingest_failure(error: &IngestError, answered: usize) -> Response {
    match error {
        IngestError::UnknownSystem => Problem::unknown_system().into_response(),
        other => {
            tracing::error!(error = %other, answered, "ingest failed");
            Problem::unavailable("event store or key store")
                .with("records_stored_before_failure", json!(answered))
                .into_response()
        }
    }
}
