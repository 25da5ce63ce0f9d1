//! `POST /v1/privacy/erasures`: a compliance user erases a customer (CCPA).
//!
//! The command goes through the resolver like a steward's: it names every
//! source record of the customer (and of the customers merged into it) and
//! every override, appends one `CustomerErased` decision (no personal data:
//! tokens, pseudonymous record streams, the request id and the legal
//! basis), then destroys the data keys of those records and overrides, so
//! nothing of the person can be read from the log again, also after a
//! replay. The projections purge the read models when they apply the
//! decision; the token answers 410 for ever. Records the business must keep
//! are listed in `retain`, each with its legal exception: an explicit
//! option of the request, never a default.

// Helpers return the response to answer instead as their error.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mdm_domain::resolution::engine::{CommandRequest, StewardCommand};
use mdm_domain::resolution::events::Decision;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use mdm_domain::metadata::Actor;
use mdm_domain::privacy::{Recipient, RequestKind, Status};
use mdm_projections::query;

use super::customers::bad_request;
use super::problem::Problem;
use super::steward::{body, command_problem, record_stream, SourceRef};
use super::AppState;
use crate::auth::{Principal, Role};
use crate::privacy::{self as ledger, Caller, Command as LedgerCommand};

fn unprocessable(detail: &'static str, field: &str) -> Response {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Command not applicable", detail)
        .field(field)
        .into_response()
}

/// A source record kept under a legal exception.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetainedRecord {
    pub system: String,
    pub source_id: String,
    /// The exception the law allows (e.g. "CCPA 1798.105(d)(8): legal
    /// obligation"), kept in the decision.
    pub exception: String,
}

/// Erase a customer: by token or by one of its source records.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureBody {
    /// The customer's token (a merged token erases the customer it was
    /// merged into: the same person).
    pub token: Option<Uuid>,
    /// Or one of its source records.
    pub record: Option<SourceRef>,
    /// The privacy request this fulfils (from the request ledger).
    pub request_id: Option<Uuid>,
    /// The legal basis (e.g. "CCPA 1798.105 request to delete").
    pub legal_basis: String,
    /// Records to keep under a legal exception (default: none).
    #[serde(default)]
    pub retain: Vec<RetainedRecord>,
}

/// What the erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureResult {
    pub command_id: Uuid,
    /// The customer erased.
    pub token: Uuid,
    /// Tokens merged into it earlier, erased with it.
    pub absorbed: Vec<Uuid>,
    /// How many source records were erased (every version of each).
    pub records_erased: usize,
    /// How many were kept under an exception.
    pub records_retained: usize,
    /// How many steward overrides were erased.
    pub overrides_erased: usize,
    pub request_id: Option<Uuid>,
    /// The recipients the request ledger now lists as notified.
    #[schema(value_type = Vec<Object>)]
    pub notices: Vec<Recipient>,
}

/// Erases a customer: its records' and overrides' keys are destroyed, the
/// read models purge it, its token answers 410 for ever.
#[utoipa::path(post, path = "/v1/privacy/erasures", tag = "privacy",
    request_body = ErasureBody,
    responses(
        (status = 200, description = "Erased", body = ErasureResult),
        (status = 400, description = "Bad body: the field is named", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token or source record", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Erased already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not applicable (a retained record is not the customer's)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    bytes: Bytes,
) -> Response {
    let b: ErasureBody = try_or!(body(&bytes));
    let legal_basis = b.legal_basis.trim();
    if legal_basis.is_empty() {
        return bad_request("the legal basis is required", "legal_basis");
    }
    if legal_basis.chars().count() > 500 {
        return bad_request("the legal basis is longer than 500 characters", "legal_basis");
    }
    let mut retain = Vec::with_capacity(b.retain.len());
    for (i, r) in b.retain.iter().enumerate() {
        let field = format!("retain[{i}]");
        let source = SourceRef {
            system: r.system.clone(),
            source_id: r.source_id.clone(),
        };
        let stream = try_or!(record_stream(&state, &source, &field).await);
        if r.exception.trim().is_empty() {
            return bad_request(
                "each retained record needs its legal exception",
                &format!("{field}.exception"),
            );
        }
        retain.push((stream, r.exception.trim().to_owned()));
    }
    let Some(resolver) = state.resolver() else {
        return Problem::unavailable("resolver").into_response();
    };
    // The customer: by token, following a merge to the same person's
    // surviving customer, or by one of its records.
    let token = match (b.token, &b.record) {
        (Some(_), Some(_)) | (None, None) => {
            return bad_request("give either token or record", "token");
        }
        (Some(t), None) => t,
        (None, Some(r)) => {
            let stream = try_or!(record_stream(&state, r, "record").await);
            match resolver.token_of(&stream).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return Problem::new(
                        StatusCode::NOT_FOUND,
                        "Not found",
                        "no customer holds that source record",
                    )
                    .field("record")
                    .into_response()
                }
                Err(_) => return Problem::unavailable("resolver").into_response(),
            }
        }
    };
    let token = match resolver.customer(token).await {
        Ok(Some(c)) if c.erased => return super::customers::gone(token),
        Ok(Some(c)) => c.merged_into.unwrap_or(token),
        Ok(None) => {
            return Problem::new(StatusCode::NOT_FOUND, "Not found", "no customer with that token")
                .field("token")
                .into_response()
        }
        Err(_) => return Problem::unavailable("resolver").into_response(),
    };
    // The ledger's request, when named: an open, verified erasure request.
    if let Some(id) = b.request_id {
        match ledger::load(state.store.as_ref(), id).await {
            Ok(Some((r, _))) if r.kind != RequestKind::Erasure => {
                return unprocessable("the request is not an erasure request", "request_id")
            }
            Ok(Some((r, _))) if r.status != Status::Open => {
                return Problem::new(StatusCode::CONFLICT, "Request closed", "the request is closed already")
                    .field("request_id")
                    .into_response()
            }
            Ok(Some((r, _))) if r.verified.is_none() => {
                return unprocessable("verify the requester's identity first", "request_id")
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Problem::new(StatusCode::NOT_FOUND, "Not found", "no privacy request with that id")
                    .field("request_id")
                    .into_response()
            }
            Err(error) => {
                tracing::error!(error = %error, "erasure: the request ledger is unavailable");
                return Problem::unavailable("event store").into_response();
            }
        }
    }
    // The source systems that hold the person, to be told (read before the
    // purge; a record ingested in the last instant may not be listed yet).
    let systems: std::collections::BTreeSet<String> = match query::source_records_of(&state.read, token).await {
        Ok(rows) => rows.into_iter().map(|r| r.system).collect(),
        Err(error) => {
            tracing::warn!(error = %error, "erasure: source systems not read; no notices for them");
            Default::default()
        }
    };
    let request = CommandRequest {
        command_id: Uuid::now_v7(),
        steward: principal.name.clone(),
        reason: format!("erasure: {legal_basis}"),
        expected: Vec::new(),
        command: StewardCommand::Erase {
            token,
            request_id: b.request_id,
            legal_basis: legal_basis.to_owned(),
            retain,
        },
    };
    let command_id = request.command_id;
    let decided = match resolver.command(request).await {
        Err(error) => {
            tracing::error!(error = %error, "erasure: resolver unavailable");
            return Problem::unavailable("resolver").into_response();
        }
        Ok(Err(e)) => return command_problem(&e),
        Ok(Ok(applied)) => applied.decisions,
    };
    let Some(Decision::CustomerErased {
        absorbed,
        records,
        overrides,
        retained,
        request_id,
        ..
    }) = decided.into_iter().map(|d| d.decision).next()
    else {
        return Problem::unavailable("resolver").into_response();
    };
    tracing::info!(command_id = %command_id, records = records.len(), retained = retained.len(), "customer erased");
    // The ledger notes who must be told: the source systems that hold the
    // person and every webhook subscriber (whose feed of changes carries
    // the erasure notice). Feed subscribers read the same notice from the
    // feed and acknowledge like the others.
    let mut notified = Vec::new();
    if let Some(id) = request_id {
        let mut recipients: Vec<Recipient> = systems.into_iter().map(Recipient::SourceSystem).collect();
        match state.webhooks.list().await {
            Ok(subscribers) => recipients.extend(subscribers.into_iter().map(|s| Recipient::Webhook(s.id))),
            Err(error) => tracing::warn!(error = %error, "erasure: webhook subscribers not listed for notices"),
        }
        // Reader clients may hold the person from the feed or the query API.
        match state.clients.list().await {
            Ok(clients) => recipients.extend(
                clients
                    .into_iter()
                    .filter(|c| c.revoked_at.is_none() && c.role == Role::Reader)
                    .map(|c| Recipient::FeedSubscriber(c.name)),
            ),
            Err(error) => tracing::warn!(error = %error, "erasure: API clients not listed for notices"),
        }
        let caller = Caller {
            actor: Actor::Client(principal.client_id.to_string()),
            by: principal.name.clone(),
        };
        for recipient in recipients {
            let command = LedgerCommand::Notify {
                recipient: recipient.clone(),
            };
            match ledger::run(state.store.as_ref(), id, &command, &caller, chrono::Utc::now()).await {
                Ok(_) => notified.push(recipient),
                Err(error) => tracing::warn!(error = %error, "erasure: a notice was not recorded in the ledger"),
            }
        }
    }
    Json(ErasureResult {
        command_id,
        token,
        absorbed,
        records_erased: records.len(),
        records_retained: retained.len(),
        overrides_erased: overrides.len(),
        request_id,
        notices: notified,
    })
    .into_response()
}

/// A reader client confirms it deleted what it held of an erased customer
/// (the notice it got from the feed or from the request ledger): the ledger
/// records the acknowledgement of the client's own notice.
#[utoipa::path(post, path = "/v1/privacy/notices/{request_id}/acknowledge", tag = "feed",
    params(("request_id" = Uuid, Path, description = "The erasure request of the notice")),
    responses(
        (status = 200, description = "Acknowledged"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Acknowledged already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This client was not notified", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn acknowledge_notice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    super::problem::PathParam(request_id): super::problem::PathParam<Uuid>,
) -> Response {
    let caller = Caller {
        actor: Actor::Client(principal.client_id.to_string()),
        by: principal.name.clone(),
    };
    let command = LedgerCommand::Acknowledge {
        recipient: Recipient::FeedSubscriber(principal.name.clone()),
    };
    match ledger::run(state.store.as_ref(), request_id, &command, &caller, chrono::Utc::now()).await {
        Ok(_) => Json(serde_json::json!({"request_id": request_id, "acknowledged_by": principal.name})).into_response(),
        Err(e) => super::privacy::failed(e),
    }
}

/// A webhook subscriber's acknowledgement of an erasure notice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookAckBody {
    /// The erasure's request (`data.detail.request_id` of the `erased`
    /// change delivered to the subscriber).
    pub request_id: Uuid,
}

/// A webhook subscriber confirms it deleted what it held of an erased
/// customer. Webhook receivers hold no API key: the request is signed like
/// the deliveries they receive, with the subscriber's own secret
/// (`Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
/// "<t>.<body>")>`, within 5 minutes of the service's clock). The ledger
/// records the acknowledgement of the subscriber's notice.
#[utoipa::path(post, path = "/v1/webhooks/{id}/acknowledge", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook subscriber"),
           ("Webhook-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>")),
    request_body = WebhookAckBody,
    responses(
        (status = 200, description = "Acknowledged"),
        (status = 400, description = "Bad body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, stale or wrong signature (or no such subscriber)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Acknowledged already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This subscriber was not notified", body = Problem, content_type = "application/problem+json"),
    ),
    security(("webhook_signature" = [])))]
pub async fn acknowledge_webhook_notice(
    State(state): State<AppState>,
    super::problem::PathParam(id): super::problem::PathParam<Uuid>,
    headers: axum::http::HeaderMap,
    bytes: Bytes,
) -> Response {
    let unsigned = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "sign the request with the subscriber's secret, as its deliveries are signed",
        )
        .field("Webhook-Signature")
        .into_response()
    };
    let Some(header) = headers.get("webhook-signature").and_then(|h| h.to_str().ok()) else {
        return unsigned();
    };
    match state
        .webhooks
        .signed_by(id, header, &bytes, chrono::Utc::now().timestamp())
        .await
    {
        Ok(true) => {}
        Ok(false) => return unsigned(),
        Err(error) => {
            tracing::warn!(error = %error, "webhook acknowledgement: the subscriber could not be read");
            return Problem::unavailable("webhook subscribers").into_response();
        }
    }
    let b: WebhookAckBody = try_or!(body(&bytes));
    let caller = Caller {
        actor: Actor::Client(format!("webhook:{id}")),
        by: format!("webhook {id}"),
    };
    let command = LedgerCommand::Acknowledge {
        recipient: Recipient::Webhook(id),
    };
    match ledger::run(
        state.store.as_ref(),
        b.request_id,
        &command,
        &caller,
        chrono::Utc::now(),
    )
    .await
    {
        Ok(_) => Json(serde_json::json!({"request_id": b.request_id, "webhook": id})).into_response(),
        Err(e) => super::privacy::failed(e),
    }
}
