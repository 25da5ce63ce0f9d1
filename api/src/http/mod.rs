//! The HTTP API: `/health` (is the process up and does its event store
//! answer), `/v1/sources/{system}/records` (ingest, see `ingest.rs`) and
//! `/v1/sources/{system}/pull` (per-customer REST sources, `pull.rs`).
//! Errors are `application/problem+json` (`problem.rs`).

/// Unwraps a helper's result, or returns the response it holds instead
/// (helpers return the error response to answer as their error).
macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

pub mod customers;
// The edge: connection and request limits, timeouts, problem answers.
pub mod edge;
pub mod erasure;
// Privacy: the right-to-know export, for the compliance role.
pub mod export;
// Feed and webhooks (issue 6): `GET /v1/feed` and the webhook admin routes.
pub mod feed;
pub mod ingest;
pub mod openapi;
pub mod ops;
// Privacy: the request ledger, for the compliance role.
pub mod privacy;
pub mod problem;
pub mod pull;
pub mod steward;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mdm_commands::ingest::Ingestor;
use mdm_commands::opened::SourceRecordOpener;
use mdm_commands::pull::Puller;
use mdm_commands::resolver::ResolverHandle;
use mdm_domain::matching::features::FeatureSettings;
use mdm_projections::{CustomerSettings, ReadDb};
use mdm_store::EventStore;
use serde_json::json;

use crate::auth::Clients;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    /// The ingest pipeline, with the source systems from the sources file
    /// (validated at start-up) and the key store.
    pub ingestor: Ingestor,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// One pull adapter per `rest_pull` system, sharing its rate limit.
    pub pullers: Arc<std::collections::HashMap<String, Puller>>,
    /// The running resolver, once it holds its lease and has replayed.
    pub resolver: ResolverSlot,
    /// How long a single-record ingest waits for its customer's token.
    pub resolve_timeout: std::time::Duration,
    /// The read models.
    pub read: ReadDb,
    /// API clients and their keys.
    pub clients: Clients,
    /// The customers projection's settings (as-of folds with them).
    pub customer_settings: Arc<CustomerSettings>,
    /// How search values normalize (as the customers projection indexed them).
    pub search_settings: Arc<FeatureSettings>,
    /// Decrypts source records for as-of folds.
    pub opener: SourceRecordOpener,
    /// Stewards' claims on review items.
    pub claims: steward::Claims,
    /// Prometheus metrics.
    pub metrics: Arc<ops::Metrics>,
    /// The projections' progress (set by `mdm serve` once they run).
    pub projections: ops::ProjectionProgress,
    // Feed and webhooks (issue 6): `mdm serve` replaces both with its
    // configured ones (settings, the customers runner's progress).
    /// `GET /v1/feed`: its settings, wake-up, stop signal and subscriber gauge.
    pub feed: feed::FeedState,
    /// Webhook subscribers (the admin routes; the dispatcher shares it).
    pub webhooks: crate::webhooks::Webhooks,
    /// The web console's signed-in sessions.
    pub console: crate::console::Sessions,
    /// Served over TLS: the console's cookies are `Secure`.
    pub secure_cookies: bool,
    /// The edge's limits (load shedding, body deadline) and its counters.
    pub edge: edge::EdgeState,
}

impl AppState {
    /// The state for `ingestor`, with a pull adapter for each pull source.
    pub fn new(
        ingestor: Ingestor,
        max_body_bytes: usize,
        read: ReadDb,
        clients: Clients,
        customer_settings: CustomerSettings,
    ) -> Result<AppState, mdm_commands::pull::PullError> {
        let mut pullers = std::collections::HashMap::new();
        for def in ingestor.sources().iter() {
            if def.pull.is_some() {
                pullers.insert(def.system.clone(), Puller::new(def)?);
            }
        }
        let opener = SourceRecordOpener::new(ingestor.keys().clone(), 100_000);
        // Feed and webhooks (issue 6), with default settings.
        let feed = feed::FeedState::new(read.clone(), Default::default());
        let webhooks = crate::webhooks::Webhooks::new(read.clone(), ingestor.keys().clone(), Default::default());
        Ok(AppState {
            store: ingestor.store().clone(),
            ingestor,
            max_body_bytes,
            pullers: Arc::new(pullers),
            resolver: ResolverSlot::default(),
            resolve_timeout: std::time::Duration::from_secs(2),
            read,
            clients,
            search_settings: Arc::new(customer_settings.features.clone()),
            customer_settings: Arc::new(customer_settings),
            opener,
            claims: steward::Claims::default(),
            metrics: Arc::default(),
            projections: Arc::default(),
            feed,
            webhooks,
            console: crate::console::Sessions::default(),
            secure_cookies: false,
            edge: edge::EdgeState::new(edge::HttpLimits::default()),
        })
    }
}

/// Where the running resolver's handle is published (empty while it
/// replays or restarts).
pub type ResolverSlot = Arc<std::sync::RwLock<Option<ResolverHandle>>>;

/// Publishes (or withdraws) the resolver's handle.
pub fn set_resolver(slot: &ResolverSlot, handle: Option<ResolverHandle>) {
    if let Ok(mut s) = slot.write() {
        *s = handle;
    }
}

impl AppState {
    /// The running resolver, if there is one now.
    pub fn resolver(&self) -> Option<ResolverHandle> {
        self.resolver.read().ok().and_then(|s| s.clone())
    }
}

/// Who may call a route that the OpenAPI document does not list (every
/// route the document lists needs an API key or a webhook signature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Open to anyone, for the reason given.
    Public(&'static str),
    /// A console page or form: needs a signed-in console session; without
    /// one it redirects to the sign-in page and does nothing.
    ConsoleSession,
}

/// A route outside the OpenAPI document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnlistedRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// The service's routes that the OpenAPI document does not list, one per
/// method and path, each with who may call it. [`router`] serves exactly
/// these and the document's operations; `api/tests/security.rs` walks both
/// lists without credentials (and checks that no other code adds routes).
pub fn unlisted_routes(
    doc: Arc<utoipa::openapi::OpenApi>,
) -> Vec<(UnlistedRoute, axum::routing::MethodRouter<AppState>)> {
    let public = |method, path, reason| UnlistedRoute {
        method,
        path,
        access: Access::Public(reason),
    };
    let mut routes = vec![
        (
            public(
                "GET",
                "/health",
                "liveness for load balancers and orchestrators; tells only that the store answers",
            ),
            get(health),
        ),
        (
            public(
                "GET",
                "/ready",
                "readiness for load balancers; tells only whether resolver and projections keep up",
            ),
            get(ops::ready),
        ),
        (
            public(
                "GET",
                "/openapi.json",
                "the API's description, so clients can be generated before they hold a key",
            ),
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        ),
    ];
    routes.extend(crate::console::routes());
    routes
}

/// The service's routes: [`unlisted_routes`] (health, readiness, the
/// document, the console) and the authenticated API with the role each
/// group needs.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let edge = state.edge.clone();
    let (api, mut doc) = openapi::api(&state).split_for_parts();
    openapi::document_edge_answers(&mut doc);
    let mut routes = Router::new();
    for (route, handler) in unlisted_routes(Arc::new(doc)) {
        routes = routes.route(route.path, handler);
    }
    routes
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), ops::track))
        .layer(DefaultBodyLimit::max(limit))
        // The edge (edge.rs), outermost last: every error a problem
        // document, the body's deadline, then load shedding.
        .layer(axum::middleware::from_fn(edge::problem_only))
        .layer(axum::middleware::from_fn_with_state(
            (edge.clone(), limit),
            edge::body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(edge, edge::shed))
        .with_state(state)
}

/// `200 {"status":"ok", ...}` when the event store answers a read, otherwise
/// `503` as `application/problem+json`. The cause is logged, never returned.
async fn health(State(state): State<AppState>) -> Response {
    match state.store.head().await {
        Ok(head) => Json(json!({
            "status": "ok",
            "event_store": state.store.backend(),
            "log_head": head.0,
            "source_systems": state.ingestor.sources().len(),
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
