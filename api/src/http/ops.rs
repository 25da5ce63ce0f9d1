//! Operations endpoints: `/ready` (open, like `/health`: the resolver runs
//! and every projection is within [`READY_MAX_LAG_SECONDS`] of the head of
//! the log) and `/v1/metrics` (admin: Prometheus text), plus the middleware
//! that times every request by route.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mdm_commands::ingest::Tally;
use mdm_projections::runner::Progress;
use mdm_store::Position;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

use super::problem::Problem;
use super::AppState;

/// How far behind the head of the log a projection may be for `/ready`.
pub const READY_MAX_LAG_SECONDS: f64 = 5.0;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    system: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    band: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    reason: &'static str,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    ingest: Family<IngestLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram>,
    decisions: Family<DecisionLabels, Gauge>,
    projection_lag: Family<ProjectionLabels, Gauge<f64, AtomicU64>>,
    projection_position: Family<ProjectionLabels, Gauge>,
    log_head: Gauge,
    feed_subscribers: Gauge,
    resolver_up: Gauge,
    edge_turned_away: Family<EdgeLabels, Gauge>,
    resolver_position: Gauge,
    /// Set by the feed: how many subscribers are connected now.
    pub feed_connected: Arc<AtomicU64>,
    /// Records ingested since start, and per call in the last minute.
    ingested: std::sync::Mutex<(u64, std::collections::VecDeque<(std::time::Instant, u64)>)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mdm");
        let ingest = Family::<IngestLabels, Counter>::default();
        registry.register(
            "ingest_records",
            "Source records received over HTTP, by system and outcome",
            ingest.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_latency.clone(),
        );
        let decisions = Family::<DecisionLabels, Gauge>::default();
        registry.register(
            "resolver_decisions",
            "Decisions the running resolver appended since it started, by band (link, review, new, steward) and event type",
            decisions.clone(),
        );
        let projection_lag = Family::<ProjectionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "projection_lag_seconds",
            "Age of the newest event in the log minus that of the projection's last applied event (0 when caught up)",
            projection_lag.clone(),
        );
        let projection_position = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_position",
            "Global log position each projection has applied",
            projection_position.clone(),
        );
        let log_head = Gauge::default();
        registry.register(
            "log_head_position",
            "Global position of the newest visible event",
            log_head.clone(),
        );
        let feed_subscribers = Gauge::default();
        registry.register(
            "feed_subscribers",
            "Connected feed subscribers",
            feed_subscribers.clone(),
        );
        let resolver_up = Gauge::default();
        registry.register(
            "resolver_up",
            "1 when the resolver runs (holds its lease and has replayed)",
            resolver_up.clone(),
        );
        let edge_turned_away = Family::<EdgeLabels, Gauge>::default();
        registry.register(
            "http_turned_away",
            "Connections and requests the HTTP edge turned away since start (docs/hostile-input.md): \
             connection_limit (503 and close), in_flight_limit (503, load shedding), body_timeout (408)",
            edge_turned_away.clone(),
        );
        let resolver_position = Gauge::default();
        registry.register(
            "resolver_position",
            "Global log position the running resolver has decided up to (below log_head_position while it resolves; 0 while it replays)",
            resolver_position.clone(),
        );
        Metrics {
            registry,
            edge_turned_away,
            ingest,
            http_requests,
            http_latency,
            decisions,
            projection_lag,
            projection_position,
            log_head,
            feed_subscribers,
            resolver_up,
            resolver_position,
            feed_connected: Arc::default(),
            ingested: Default::default(),
        }
    }

    /// Records ingested since the service started, and in the last minute.
    pub fn ingest_rate(&self) -> (u64, u64) {
        let mut g = self.ingested.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        while g
            .1
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).as_secs() >= 60)
        {
            g.1.pop_front();
        }
        (g.0, g.1.iter().map(|(_, n)| n).sum())
    }

    /// Counts an ingest call's outcomes.
    pub fn ingested(&self, system: &str, tally: &Tally) {
        {
            let mut g = self.ingested.lock().unwrap_or_else(|e| e.into_inner());
            let n = tally.total();
            g.0 += n;
            let now = std::time::Instant::now();
            g.1.push_back((now, n));
            while g
                .1
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at).as_secs() >= 60)
            {
                g.1.pop_front();
            }
        }
        for (outcome, n) in [
            ("captured", tally.captured),
            ("changed", tally.changed),
            ("unchanged", tally.unchanged),
            ("stale", tally.stale),
            ("retracted", tally.retracted),
            ("ignored", tally.ignored),
            ("erased", tally.erased),
            ("held", tally.held),
            ("rejected", tally.rejected),
        ] {
            if n > 0 {
                self.ingest
                    .get_or_create(&IngestLabels {
                        system: system.to_owned(),
                        outcome,
                    })
                    .inc_by(n);
            }
        }
    }
}

/// Each projection's name and progress, for readiness and metrics.
pub type ProjectionProgress = Arc<Vec<(String, watch::Receiver<Progress>)>>;

/// The band a decision type stands for.
fn band(decision_type: &str) -> &'static str {
    match decision_type {
        "CustomerCreated" => "new",
        "RecordLinked" | "CustomersMerged" | "RecordMoved" => "link",
        "ReviewRequested" => "review",
        "HouseholdChanged" => "household",
        _ => "steward",
    }
}

/// Each projection's lag in seconds behind the head of the log.
async fn lags(state: &AppState) -> Result<(Position, Vec<(String, Position, f64)>), mdm_store::ReadError> {
    let head = state.store.head().await?;
    let mut head_at = None;
    let mut out = Vec::new();
    for (name, progress) in state.projections.iter() {
        let p = progress.borrow().clone();
        let lag = if p.position >= head {
            0.0
        } else {
            if head_at.is_none() {
                let page = state.store.read_all(Position(head.0.saturating_sub(1)), 1).await?;
                head_at = page.last().map(|e| e.recorded_at);
            }
            match (head_at, p.last_event_at) {
                (Some(h), Some(l)) => (h - l).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6,
                // Nothing applied yet while the log has events: as far
                // behind as the log is old.
                (Some(h), None) => (chrono::Utc::now() - h).num_seconds().max(0) as f64 + READY_MAX_LAG_SECONDS + 1.0,
                _ => 0.0,
            }
        };
        out.push((name.clone(), p.position, lag));
    }
    Ok((head, out))
}

/// `200` when the service can answer queries with fresh data: the resolver
/// runs and every projection is within [`READY_MAX_LAG_SECONDS`] of the
/// head; otherwise `503` naming what is behind.
pub async fn ready(State(state): State<AppState>) -> Response {
    let resolver = state.resolver().is_some();
    match lags(&state).await {
        Ok((head, lags)) => {
            let behind: Vec<&str> = lags
                .iter()
                .filter(|(_, _, lag)| *lag > READY_MAX_LAG_SECONDS)
                .map(|(n, _, _)| n.as_str())
                .collect();
            let projections: Vec<_> = lags
                .iter()
                .map(|(n, p, lag)| json!({"name": n, "position": p.0, "lag_seconds": lag}))
                .collect();
            if resolver && behind.is_empty() {
                Json(json!({"status": "ready", "log_head": head.0, "resolver": "running", "projections": projections}))
                    .into_response()
            } else {
                let mut detail = Vec::new();
                if !resolver {
                    detail.push("the resolver is replaying or restarting".to_owned());
                }
                if !behind.is_empty() {
                    detail.push(format!(
                        "projections more than {READY_MAX_LAG_SECONDS} s behind: {}",
                        behind.join(", ")
                    ));
                }
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Not ready", detail.join("; "))
                    .with("projections", json!(projections))
                    .into_response()
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "readiness: event store unavailable");
            Problem::unavailable("event store").into_response()
        }
    }
}

/// Prometheus text exposition of the service's metrics.
#[utoipa::path(get, path = "/v1/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format: ingest rate, decisions per band, projection lag, feed subscribers, HTTP latency", body = String, content_type = "text/plain"),
    ),
    security(("api_key" = [])))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    if let Ok((head, lags)) = lags(&state).await {
        m.log_head.set(head.0 as i64);
        for (name, position, lag) in lags {
            let labels = ProjectionLabels { projection: name };
            m.projection_lag.get_or_create(&labels).set(lag);
            m.projection_position.get_or_create(&labels).set(position.0 as i64);
        }
    }
    let resolver = state.resolver();
    m.resolver_up.set(i64::from(resolver.is_some()));
    m.resolver_position
        .set(resolver.as_ref().map(|r| r.processed().0 as i64).unwrap_or(0));
    if let Some(r) = resolver {
        for (t, n) in r.decision_counts() {
            m.decisions
                .get_or_create(&DecisionLabels {
                    band: band(t),
                    r#type: t,
                })
                .set(n as i64);
        }
    }
    m.feed_subscribers
        .set(m.feed_connected.load(std::sync::atomic::Ordering::Relaxed) as i64);
    let edge = &state.edge.counters;
    for (reason, count) in [
        ("connection_limit", &edge.connections_refused),
        ("in_flight_limit", &edge.requests_shed),
        ("body_timeout", &edge.bodies_timed_out),
    ] {
        m.edge_turned_away
            .get_or_create(&EdgeLabels { reason })
            .set(count.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &m.registry).is_err() {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Metrics unavailable",
            "encoding failed",
        )
        .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Counts and times every request by its route template (never the
/// concrete path: it may hold a source id).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
