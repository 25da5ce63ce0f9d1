//! `POST /v1/sources/{system}/pull`: asks a per-customer REST source for
//! the given customers and ingests its answers like any pushed record.
//!
//! Body: `{"ids": ["..."], "emails": ["..."]}` (at most [`MAX_KEYS`] in all).
//! The answer lists one outcome per key, ids first, located "id 1",
//! "email 2" (never the key itself: it may be an e-mail address).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mdm_commands::ingest::IngestContext;
use mdm_commands::pull::PullKey;
use mdm_domain::metadata::Actor;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::problem::{PathParam, Problem};
use super::AppState;

/// Keys one request may ask for; the source's rate limit makes bigger
/// requests outlast any client timeout.
pub const MAX_KEYS: usize = 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    emails: Vec<String>,
}

/// Asks a per-customer REST source for these customers and ingests the answers.
#[utoipa::path(post, path = "/v1/sources/{system}/pull", tag = "ingest",
    params(("system" = String, Path, description = "A source system of format rest_pull")),
    request_body = PullRequest,
    responses(
        (status = 200, description = "Each key's outcome", body = Object),
        (status = 400, description = "Bad body, naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown system, or not a pull source", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn post_pull(
    State(state): State<AppState>,
    PathParam(system): PathParam<String>,
    body: Result<Json<PullRequest>, JsonRejection>,
) -> Response {
    if state.ingestor.sources().get(&system).is_none() {
        return Problem::unknown_system().into_response();
    }
    let Some(puller) = state.pullers.get(&system) else {
        return Problem::new(
            StatusCode::CONFLICT,
            "Not a pull source",
            "this source system pushes its records; only a system of format rest_pull can be asked",
        )
        .field("system")
        .into_response();
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            // serde's message may quote the input; say what shape is expected instead.
            return Problem::new(
                rejection.status(),
                "Invalid pull request",
                "expected a JSON object {\"ids\": [strings], \"emails\": [strings]}",
            )
            .field("body")
            .into_response();
        }
    };
    let total = request.ids.len() + request.emails.len();
    if total == 0 || total > MAX_KEYS {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid pull request",
            format!("ask for between 1 and {MAX_KEYS} customers (ids and emails together)"),
        )
        .field(if total == 0 { "ids" } else { "body" })
        .into_response();
    }
    let keys: Vec<PullKey> = request
        .ids
        .into_iter()
        .map(PullKey::Id)
        .chain(request.emails.into_iter().map(PullKey::Email))
        .collect();
    let ctx = IngestContext {
        actor: Actor::Source(system.clone()),
        correlation_id: Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
    };
    match puller.pull(&state.ingestor, &keys, &ctx).await {
        Ok(outcomes) => (
            StatusCode::OK,
            Json(json!({ "system": system, "correlation_id": ctx.correlation_id, "records": outcomes })),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %error, "pull failed");
            Problem::unavailable("event store or key store").into_response()
        }
    }
}
