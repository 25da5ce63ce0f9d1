//! The HTTP API. For now only `/health`, which says whether the process is up
//! and its event store answers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mdm_domain::source::SourceDefinitions;
use mdm_store::EventStore;
use serde_json::json;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    /// The source systems from the sources file, validated at start-up.
    pub sources: Arc<SourceDefinitions>,
}

pub fn router(state: AppState) -> Router {
    Router::new().route("/health", get(health)).with_state(state)
}

/// `200 {"status":"ok", ...}` when the event store answers a read, otherwise
/// `503` as `application/problem+json`. The cause is logged, never returned.
async fn health(State(state): State<AppState>) -> Response {
    match state.store.head().await {
        Ok(head) => Json(json!({
            "status": "ok",
            "event_store": state.store.backend(),
            "log_head": head.0,
            "source_systems": state.sources.len(),
        }))
        .into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "health check: event store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/problem+json")],
                Json(json!({
                    "type": "about:blank",
                    "title": "Event store unavailable",
                    "status": 503,
                    "detail": "the event store does not answer; see the service log",
                })),
            )
                .into_response()
        }
    }
}
