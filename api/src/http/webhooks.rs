//! The webhook admin API: register, list and delete subscribers, list and
//! replay their dead letters. Admin only. Input is checked here, field by
//! field, and a problem names the field at fault (never its value: a URL
//! or a secret may be sensitive). Delivery itself is `crate::webhooks`.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mdm_projections::changes::{ChangeCursor, ChangeType};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::problem::{PathParam, Problem};
use super::AppState;
use crate::auth::{Scopes, SCOPE_NAMES};
use crate::webhooks::{DeadLetter, NewSubscriber, SubscriberInfo, WebhookError};

/// The admin routes under `/v1/webhooks`, documented; serve them behind
/// authentication with the `Admin` need (the handlers check it too). The
/// handlers use [`AppState::webhooks`].
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letters))
}

/// The shortest secret accepted: HMAC keys shorter than this are guessable.
pub const SECRET_MIN: usize = 16;
const SECRET_MAX: usize = 1024;

/// A new subscriber (the body of `POST /v1/webhooks`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct NewWebhook {
    /// Where changes are POSTed: an http or https URL.
    url: String,
    /// The signing secret, 16 to 1,024 characters; never shown again.
    secret: String,
    /// Only these change types (all when absent): created, updated,
    /// merged, unmerged, household_changed, erased.
    types: Option<Vec<String>>,
    /// The golden attributes the bodies carry (all when absent): name,
    /// email, phone, address, date_of_birth.
    scopes: Option<Vec<String>>,
    /// Deliver the changes after this event id (`P` or `P:k`; `0` for the
    /// whole log); when absent, only changes from now on.
    after: Option<String>,
}

/// The subscribers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<SubscriberInfo>,
}

/// A subscriber's dead letters, oldest change first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
}

/// How many dead letters a replay queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replay {
    pub requeued: u64,
}

fn bad_request(detail: impl Into<String>, field: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail).field(field)
}

fn failed(error: WebhookError) -> Response {
    match error {
        WebhookError::Unknown => Problem::new(StatusCode::NOT_FOUND, "Not found", "no webhook subscriber with that id")
            .field("id")
            .into_response(),
        WebhookError::Db(e) => {
            tracing::error!(error = %e, "webhooks: the read-model database failed");
            Problem::unavailable("read-model database").into_response()
        }
        WebhookError::Keys(e) => {
            tracing::error!(error = %e, "webhooks: the key store failed");
            Problem::unavailable("key store").into_response()
        }
        e @ (WebhookError::Secret(_) | WebhookError::Corrupt(_)) => {
            tracing::error!(error = %e, "webhooks: a stored subscriber is unusable");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "see the service log",
            )
            .into_response()
        }
    }
}

/// Checks a registration body field by field.
fn parse_new(body: &Value) -> Result<NewSubscriber, Problem> {
    let Some(object) = body.as_object() else {
        return Err(bad_request(
            "the body must be a JSON object with url and secret",
            "body",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "url" | "secret" | "types" | "scopes" | "after"))
    {
        return Err(bad_request(
            "unknown member; expected url, secret, types, scopes, after",
            unknown,
        ));
    }
    let url = match object.get("url").and_then(Value::as_str) {
        None => return Err(bad_request("url is required: an http or https URL", "url")),
        Some(text) => match reqwest::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => u,
            _ => return Err(bad_request("url must be an absolute http or https URL", "url")),
        },
    };
    let secret = match object.get("secret").and_then(Value::as_str) {
        Some(s) if (SECRET_MIN..=SECRET_MAX).contains(&s.chars().count()) => s.to_owned(),
        _ => {
            return Err(bad_request(
                format!("secret is required: a string of {SECRET_MIN} to {SECRET_MAX} characters"),
                "secret",
            ))
        }
    };
    let strings = |field: &str| -> Result<Option<Vec<String>>, Problem> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .map(Some)
                .ok_or_else(|| bad_request(format!("{field} must be a list of names"), field)),
            Some(_) => Err(bad_request(format!("{field} must be a list of names"), field)),
        }
    };
    let types = match strings("types")? {
        None => None,
        Some(names) => {
            let mut types = Vec::new();
            for name in &names {
                match ChangeType::parse(name) {
                    Some(t) if !types.contains(&t) => types.push(t),
                    Some(_) => {}
                    None => {
                        return Err(bad_request(
                            format!(
                                "types lists change types: {}",
                                ChangeType::ALL.map(ChangeType::as_str).join(", ")
                            ),
                            "types",
                        ))
                    }
                }
            }
            if types.is_empty() {
                return Err(bad_request(
                    "types must name at least one change type (or be left out)",
                    "types",
                ));
            }
            Some(types)
        }
    };
    let scopes = match strings("scopes")? {
        None => Scopes::all(),
        Some(names) => {
            if names.is_empty() || names.iter().any(|n| !SCOPE_NAMES.contains(&n.as_str())) {
                return Err(bad_request(
                    format!("scopes lists golden attributes: {}", SCOPE_NAMES.join(", ")),
                    "scopes",
                ));
            }
            Scopes::parse(&names.join(",")).map_err(|_| bad_request("scopes lists golden attributes", "scopes"))?
        }
    };
    let after = match object.get("after") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            match ChangeCursor::parse(&text) {
                Some(c) => Some(c),
                None => {
                    return Err(bad_request(
                        "after must be an event id: a log position P or P:k",
                        "after",
                    ))
                }
            }
        }
    };
    Ok(NewSubscriber {
        url,
        secret,
        types,
        scopes,
        after,
    })
}

/// Registers a webhook subscriber.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses(
        (status = 201, description = "Registered (Location names it); the secret is not shown again", body = SubscriberInfo),
        (status = 400, description = "A field is missing or invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn create_webhook(State(state): State<AppState>, body: Result<Json<Value>, JsonRejection>) -> Response {
    let webhooks = &state.webhooks;
    let Ok(Json(body)) = body else {
        return bad_request("the body must be JSON (Content-Type: application/json)", "body").into_response();
    };
    let new = match parse_new(&body) {
        Ok(n) => n,
        Err(p) => return p.into_response(),
    };
    match webhooks.register(new).await {
        Ok(info) => {
            let mut response = (StatusCode::CREATED, Json(&info)).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/v1/webhooks/{}", info.id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => failed(e),
    }
}

/// Lists the webhook subscribers with their checkpoints and counts.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "Every subscriber, oldest first", body = WebhookList)),
    security(("api_key" = [])))]
pub async fn list_webhooks(State(state): State<AppState>) -> Response {
    let webhooks = &state.webhooks;
    match webhooks.list().await {
        Ok(list) => Json(WebhookList { webhooks: list }).into_response(),
        Err(e) => failed(e),
    }
}

/// Deletes a subscriber, its dead letters and the key of its secret.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The subscriber")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such subscriber", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn delete_webhook(State(state): State<AppState>, PathParam(id): PathParam<Uuid>) -> Response {
    let webhooks = &state.webhooks;
    match webhooks.delete(id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failed(e),
    }
}

/// The changes a subscriber did not accept within its tries.
#[utoipa::path(get, path = "/v1/webhooks/{id}/dead-letters", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The subscriber")),
    responses(
        (status = 200, description = "Its dead letters, oldest change first (at most 1,000)", body = DeadLetterList),
        (status = 404, description = "No such subscriber", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_dead_letters(State(state): State<AppState>, PathParam(id): PathParam<Uuid>) -> Response {
    let webhooks = &state.webhooks;
    match webhooks.dead_letters(id).await {
        Ok(list) => Json(DeadLetterList { dead_letters: list }).into_response(),
        Err(e) => failed(e),
    }
}

/// Queues every dead letter of a subscriber for delivery again; they go
/// out, oldest first, before its next new change.
#[utoipa::path(post, path = "/v1/webhooks/{id}/dead-letters/replay", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The subscriber")),
    responses(
        (status = 202, description = "Queued", body = Replay),
        (status = 404, description = "No such subscriber", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn replay_dead_letters(State(state): State<AppState>, PathParam(id): PathParam<Uuid>) -> Response {
    let webhooks = &state.webhooks;
    match webhooks.replay(id).await {
        Ok(n) => (StatusCode::ACCEPTED, Json(json!({ "requeued": n }))).into_response(),
        Err(e) => failed(e),
    }
}
